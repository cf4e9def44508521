r"""Recorded forwards: the fast path of
:class:`~torch_geometric_binary.deploy.PackedModel` for repeated calls.

A packed model runs its trained model's own :meth:`forward`: input checks,
module calls and the bookkeeping of deferred values
(:mod:`~torch_geometric_binary.deploy.fusion`). For one small cloud that
Python costs about as much as the fused kernels. :func:`record` runs one
forward under a :class:`~torch.overrides.TorchFunctionMode` and writes it
down as a straight-line program (:class:`Plan`):

* every tensor operation on the inputs or on values computed from them,
  each fused chain as one step (:func:`recorded`: the C++ plans inside it
  are not seen by the mode);
* a **guard** for every Python value the forward read from such a tensor
  (a shape, a :obj:`bool` or an :obj:`int` of a tensor): the Python of the
  forward chose its path from these values, so the program holds only for
  inputs that give the same ones.

:meth:`Plan.__call__` runs the program on new inputs of the same kind and
raises :class:`Miss` where a guard differs; the caller then runs the
forward as written. Recording is refused (:class:`Unrecordable`) where the
forward uses a tensor that is neither an input, nor computed by a recorded
step, nor state of the model (an operation the mode does not see), reads a
Python value a guard cannot compare, writes in place to the model's state,
or catches an error of an operation.
"""
import re
import sys
from typing import Any, Callable, Dict, List, Sequence, Set

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode, _pop_mode_temporarily
from torch.utils._pytree import tree_flatten

from torch_geometric_binary.utils.recording import local as _local
from torch_geometric_binary.utils.recording import recorded


class Miss(Exception):
    r"""A guard of a :class:`Plan` failed: the forward takes another path
    for these inputs."""


class Unrecordable(Exception):
    r"""The forward cannot be recorded as a :class:`Plan` (the reason is
    the message)."""


#: Python values a guard compares with :obj:`!=`.
_GUARDED = (bool, int, float, str, type(None), torch.dtype, torch.device,
            torch.Size, torch.layout)

#: Queries whose answer for an input tensor its shape, type and device
#: give (see :func:`record`).
_INPUT_FACTS = frozenset([
    Tensor.size, Tensor.dim, Tensor.numel, Tensor.is_floating_point,
    Tensor.__len__, Tensor.shape.__get__, Tensor.dtype.__get__,
    Tensor.device.__get__, Tensor.ndim.__get__, Tensor.is_cuda.__get__,
])


def state_tensors(root: Any) -> Set[int]:
    r"""The ids of the tensors reachable from :obj:`root` (a module: its
    parameters, buffers and the attributes of the package's objects it
    holds, such as cached chains) and from the package's module globals:
    what a recorded forward may take as constants."""
    package = [vars(m) for name, m in list(sys.modules.items())
               if name.split('.')[0] == 'torch_geometric_binary']
    found: Set[int] = set()
    seen: Set[int] = set()
    stack: List[Any] = [root] + package
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            found.add(id(obj))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, torch.nn.Module) or \
                type(obj).__module__.split('.')[0] == \
                'torch_geometric_binary':
            attrs = getattr(obj, '__dict__', None)
            if attrs is not None:
                stack.append(attrs)
    return found


def _is_deferred(x: Any) -> bool:
    from torch_geometric_binary.deploy.fusion import Deferred
    return isinstance(x, Deferred)


#: Operations whose result differs between calls with the same arguments
#: (never folded into constants), by a part of their name.
_RANDOM = ('rand', 'normal', 'bernoulli', 'multinomial', 'dropout', 'empty',
           'uniform', 'exponential', 'cauchy', 'geometric', 'poisson')


def _writes(func: Callable, kwargs: dict) -> bool:
    name = getattr(func, '__name__', '')
    return kwargs.get('out') is not None or name == '__setitem__' or (
        name.endswith('_') and not name.endswith('__'))


class _Recorder(TorchFunctionMode):
    r"""Writes down the operations of one forward (see :func:`record`).

    An operation of constants only (the model's state, values of such
    operations) is not written down: its tensors become constants of the
    plan and its Python values need no guard."""
    def __init__(self, inputs: Sequence[Tensor], state: Set[int]):
        super().__init__()
        self.state = set(state)
        self.folded: Set[int] = set()
        self.names: Dict[int, str] = {}
        self.keep: List[Any] = list(inputs)  # Ids stay unique.
        self.lines: List[str] = []
        self.consts: List[Any] = []
        self.inside = False
        self.varying = False  # Whether the last call() read a value.
        self.count = 0  # Of values named.
        for k, t in enumerate(inputs):
            self.names[id(t)] = f'a{k}'

    def const(self, obj: Any) -> str:
        self.consts.append(obj)
        return f'C[{len(self.consts) - 1}]'

    def expr(self, obj: Any, fresh: bool = False) -> str:
        if isinstance(obj, Tensor):
            name = self.names.get(id(obj))
            if name is not None:
                self.varying = True
                return name
            if _is_deferred(obj) or id(obj) not in self.state:
                raise Unrecordable(
                    f"the forward uses a tensor of shape "
                    f"{tuple(obj.shape)} that no recorded operation "
                    f"computed and that is not the model's state")
            # A folded value given out is a copy (the caller may write).
            return self.const(obj) + ('.clone()' if fresh and id(obj) in
                                      self.folded else '')
        if type(obj) in (list, tuple):
            inner = ''.join(f'{self.expr(o, fresh)}, ' for o in obj)
            return f'[{inner}]' if type(obj) is list else f'({inner})'
        if type(obj) is dict and all(type(k) is str for k in obj):
            return '{' + ', '.join(f'{k!r}: {self.expr(v, fresh)}'
                                   for k, v in obj.items()) + '}'
        return self.const(obj)

    def call(self, fn: Callable, args: tuple, kwargs: dict) -> str:
        self.varying = False
        parts = [self.expr(a) for a in args] + \
            [f'**{{{k!r}: {self.expr(v)}}}' for k, v in kwargs.items()]
        return f'{self.const(fn)}({", ".join(parts)})'

    def result(self, code: str, out: Any, skip_guard: bool = False,
               fold: bool = False) -> Any:
        if isinstance(out, Tensor) and not _is_deferred(out):
            tensors = [out]
        elif isinstance(out, (tuple, list)) and out and all(
                type(t) is Tensor for t in out):
            tensors = list(out)
        elif isinstance(out, _GUARDED) or (
                type(out) in (list, tuple)
                and all(isinstance(v, _GUARDED) for v in out)):
            if not (skip_guard or fold):
                self.lines.append(f'if {code} != {self.const(out)}: '
                                  f'raise Miss')
            return out
        else:
            raise Unrecordable(f"the forward reads a {type(out).__name__} "
                               f"from a tensor")
        self.keep.extend(tensors)
        if fold:
            for t in tensors:
                self.state.add(id(t))
                self.folded.add(id(t))
            return out
        names = []
        for t in tensors:
            self.count += 1
            names.append(f'v{self.count},')
            self.names[id(t)] = names[-1][:-1]
        if type(out) is Tensor or not isinstance(out, (tuple, list)):
            names[0] = names[0][:-1]
        self.lines.append(f'{" ".join(names)} = {code}')
        return out

    def check_write(self, name: str, target: Any):
        # Only to values the forward computed (a folded one becomes a
        # value here), none sharing memory with a constant (a replay reuses
        # constants) or an input (a replay that misses a guard runs the
        # forward again on its inputs).
        if isinstance(target, Tensor) and id(target) in self.folded:
            self.unfold(target, name)
        if not isinstance(target, Tensor) or \
                self.names.get(id(target), 'a')[0] == 'a':
            raise Unrecordable(f"the forward writes in place ({name}) to a "
                               f"tensor that it did not compute")
        ptr = target.untyped_storage().data_ptr()
        if any(t.untyped_storage().data_ptr() == ptr
               for t in self.keep if t is not target and (
                   id(t) not in self.names or self.names[id(t)][0] == 'a')):
            raise Unrecordable(f"the forward writes in place ({name}) to "
                               f"memory of a constant or an input")

    def folds_write(self, func: Callable, name: str, target: Any,
                    rest: tuple, kwargs: dict) -> bool:
        r"""Whether the in-place :obj:`func` writes constants only into a
        folded tensor (a buffer filled from constants): then it runs once,
        here, and the steps before read a snapshot of the buffer."""
        if not isinstance(target, Tensor) or id(target) not in self.folded \
                or target._base is not None or \
                any(r in name for r in _RANDOM) or any(
                    isinstance(a, Tensor) and id(a) in self.names
                    for a in tree_flatten((rest, kwargs))[0]):
            return False
        self.snapshot(target)
        return True

    def snapshot(self, t: Tensor):
        # The constants written so far that share t's memory, as they are
        # before a write to t.
        ptr = t.untyped_storage().data_ptr()
        self.consts = [c.clone() if isinstance(c, Tensor) and
                       c.untyped_storage().data_ptr() == ptr else c
                       for c in self.consts]

    def unfold(self, t: Tensor, name: str):
        r"""Turns the folded tensor :obj:`t`, about to be written in place
        (a buffer the forward fills, as :obj:`zeros(n).scatter_add_(...)`),
        into a value of the plan: a copy of it, made where it is written;
        the steps before read a snapshot of it."""
        ptr = t.untyped_storage().data_ptr()
        if t._base is not None or any(
                u is not t and u.untyped_storage().data_ptr() == ptr
                for u in self.keep):
            raise Unrecordable(f"the forward writes in place ({name}) to a "
                               f"view of a constant")
        self.snapshot(t)
        snapshot = t.clone()
        self.folded.discard(id(t))
        self.state.discard(id(t))
        self.count += 1
        self.names[id(t)] = f'v{self.count}'
        self.lines.append(f'v{self.count} = {self.const(snapshot)}.clone()')

    def run(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException:
            # The forward may catch it and take another path, which no
            # guard would see.
            raise Unrecordable("an operation of the forward raised")

    def step(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        r"""A call of a :func:`recorded` function, as one step."""
        if any(_is_deferred(a) for a in tree_flatten((args, kwargs))[0]):
            # A deferred value has no name in the plan: the function runs
            # as any code, its operations recorded (or refused) one by one.
            return fn(*args, **kwargs)
        code = self.call(fn, args, kwargs)
        self.inside = True
        try:
            with _pop_mode_temporarily():
                out = self.run(fn, args, kwargs)
        finally:
            self.inside = False
        return self.result(code, out)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.inside:
            return func(*args, **kwargs)
        deferred = [a for a in tree_flatten((args, kwargs))[0]
                    if _is_deferred(a)]
        if deferred:
            # Bookkeeping of deferred values: what they compute is
            # recorded as it runs.
            from torch_geometric_binary.deploy.fusion import _SHAPE_QUERIES
            if func in _SHAPE_QUERIES:
                with torch._C.DisableTorchFunctionSubclass():
                    return func(*args, **kwargs)
            with self:
                return type(deferred[0]).__torch_function__(
                    func, types, args, kwargs)
        name = getattr(func, '__name__', '')
        if _writes(func, kwargs):  # Before call(): it may unfold.
            target = args[0] if args else None
            if self.folds_write(func, name, target, args[1:], kwargs):
                return self.run(func, args, kwargs)
            self.check_write(name, target)
        code = self.call(func, args, kwargs)
        fold = not self.varying and not any(r in name for r in _RANDOM)
        of_input = func in _INPUT_FACTS and \
            self.names.get(id(args[0]), 'v')[0] == 'a' and \
            all(type(a) is int for a in args[1:]) and not kwargs
        return self.result(code, self.run(func, args, kwargs), of_input,
                           fold)


class Plan:
    r"""A recorded forward (see the module documentation): call it with
    the input tensors in the order given to :func:`record`."""
    def __init__(self, source: str, consts: List[Any]):
        self.source = source
        self.num_steps = source.count('\n') - 2 - source.count(' del ')
        scope = {'C': consts, 'Miss': Miss}
        exec(compile(source, '<recorded forward>', 'exec'), scope)
        self._fn = scope['plan']

    def __call__(self, *inputs: Tensor) -> Any:
        return self._fn(*inputs)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(steps={self.num_steps})'


def record(fn: Callable, inputs: Sequence[Tensor], state: Set[int],
           *args, **kwargs):
    r"""Runs :obj:`fn(*args, **kwargs)` and records it: returns its output
    and the :class:`Plan` that computes it from the tensors :obj:`inputs`
    (those among the arguments that a replay takes anew), with the tensors
    whose ids are in :obj:`state` as constants. The plan holds for inputs
    of the same shapes, types and devices only (it has no guard on them:
    the caller keeps plans by these). Raises
    :class:`Unrecordable` (after running :obj:`fn` to its end, or at the
    point where recording fails) where the forward cannot be recorded."""
    if getattr(_local, 'active', None) is not None:
        raise Unrecordable("a recording is running")
    if len({id(t) for t in inputs}) != len(inputs):
        raise Unrecordable("an input tensor is passed twice")
    rec = _Recorder(inputs, state)
    _local.active = rec
    try:
        with rec:
            out = fn(*args, **kwargs)
    finally:
        _local.active = None
    ret = rec.expr(out, fresh=True)
    params = ''.join(f'a{k}, ' for k in range(len(inputs)))
    body = ''.join(f'    {line}\n' for line in _free_after_last_use(
        rec.lines, set(_VALUE.findall(ret))))
    source = f'def plan({params}):\n{body}    return {ret}\n'
    return out, Plan(source, rec.consts)


_VALUE = re.compile(r'\bv\d+\b')


def _free_after_last_use(lines: List[str], kept: Set[str]) -> List[str]:
    # Each value is released after the last step that reads it, as the
    # forward's own locals are: a plan that held all of them would hold
    # more memory at once (slower, fresh allocations) than the forward.
    last: Dict[str, int] = {}
    for i, line in enumerate(lines):
        for name in _VALUE.findall(line):
            last[name] = i
    free: Dict[int, List[str]] = {}
    for name, i in last.items():
        if name not in kept:
            free.setdefault(i, []).append(name)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in free:
            out.append(f'del {", ".join(sorted(free[i]))}')
    return out


__all__ = ['Plan', 'Miss', 'Unrecordable', 'record', 'recorded',
           'state_tensors']
