r"""Fusion of consecutive packed modules into one
:class:`~torch_geometric_binary.deploy.BinaryChain` operation.

:class:`Segment` runs the layers of consecutive packed MLPs, with a max
pooling between two of them, as one chain: the bits between binary layers
never leave the kernels. The fused classifiers build their segments by
hand; :class:`Pending` finds them in any model's own :meth:`forward`:

With fusion on (:meth:`PackedModel <torch_geometric_binary.deploy.
PackedModel>` turns it on for its MLPs), a
:class:`~torch_geometric_binary.deploy.PackedMLP` returns a
:class:`Pending` value instead of its float output: a tensor of that
shape whose values are not computed yet, recording the MLPs that produce
it. The next packed module extends it (an MLP of binary layers, a global or
per-group max pooling, a non-decreasing activation after the pooling), and
an MLP that reads the pooled features runs the whole sequence as one
:class:`Segment`. Any other use of a pending value (any torch function or
tensor method besides shape queries) computes it module by module first, so
the model's forward runs unchanged and gives the same outputs.

A pooled value gathered back to rows and concatenated with other rows (a
segmentation network's global feature, PointNet++'s features at the next
level's neighbours) becomes a :class:`Joined` value; a packed MLP whose
first layer is binary reads it without building the float rows: once per
group (:func:`joined_into`), or from the parts' bits (:meth:`Joined.bits`).
"""
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._pytree import tree_map

from torch_geometric_binary.deploy import kernels
from torch_geometric_binary.deploy.chain import (BinaryChain,
                                                 NonFiniteInput,
                                                 sign_thresholds)
from torch_geometric_binary.deploy.fold import fold_epilogue
from torch_geometric_binary.deploy.linear import PackedBiLinear
from torch_geometric_binary.deploy.replay import recorded


class NotFusable(Exception):
    r"""A layer sequence that :class:`Segment` cannot run as one chain."""


class Segment:
    r"""Layers of consecutive packed MLPs run as one
    :class:`BinaryChain`: an optional full-precision first layer, binary
    layers, an optional max pooling after the last layer of :obj:`pre`, the
    binary layers of :obj:`post` and an optional full-precision last
    layer (computed inside the chain operation with :obj:`fuse_last`: for
    classifiers, not for outputs that are binarized later, like T-Net
    transforms, which keep the trained layer's exact operation)."""
    def __init__(self, pre: Sequence[torch.nn.Module],
                 post: Sequence[torch.nn.Module] = (), pool: bool = False,
                 ema: bool = False, pool_act: Optional[torch.nn.Module] = None,
                 out: Optional[str] = None, fuse_last: bool = False,
                 pool_size: Optional[int] = None,
                 pool_theta: Optional[Tensor] = None):
        pre_lins = [(m, i) for m in pre for i in range(len(m.lins))]
        post_lins = [(m, i) for m in post for i in range(len(m.lins))]
        self.first = self.last = None
        if pre_lins and not pre_lins[0][0].is_binary(pre_lins[0][1]):
            self.first = pre_lins.pop(0)
        if post_lins and not post_lins[-1][0].is_binary(post_lins[-1][1]):
            self.last = post_lins.pop()
        elif not post and not pool and len(pre_lins) > 1 and \
                not pre_lins[-1][0].is_binary(pre_lins[-1][1]):
            self.last = pre_lins.pop()  # An MLP's full-precision last layer.
        if not pre_lins or any(not m.is_binary(i)
                               for m, i in pre_lins + post_lins):
            raise NotFusable
        if pool and self.last is not None and not post_lins:
            raise NotFusable  # A float layer right after the pooling.
        if out is None:
            out = 'float' if post_lins or self.last is not None else 'bits'
        layers = [m.lins[i] for m, i in pre_lins + post_lins]
        self.chain = BinaryChain(layers, out,
                                 len(pre_lins) - 1 if pool else None, ema,
                                 pool_act, pool_size, pool_theta)
        # The learned input threshold of the first binary layer (RSign).
        self.theta = layers[0].input_threshold
        self.first_threshold = self.first_lin = None
        if self.first is not None:
            # The normalization and activation of the first layer, and the
            # next layer's sign, folded into per-channel float thresholds
            # on its linear output.
            m, i = self.first
            self.first_lin = m.lins[i]
            self.first_threshold = sign_thresholds(
                lambda z: self._shift(m.fp_tail(i, z)),
                m.lins[i].out_channels)
        # With fuse_last, a plain full-precision last layer (a classifier,
        # nothing binarized after it) runs inside the chain operation
        # (float64 accumulation: its outputs agree up to rounding).
        self.final = None
        if fuse_last and self.last is not None and out == 'float':
            m, i = self.last
            plain = i == len(m.lins) - 1 and m.plain_last \
                and m.last_norm is None
            if plain:
                lin = m.lins[i]
                self.final = (lin.weight32, lin.bias32)
        # The fast path of one group (see _one_group): where the chain's
        # operation alone gives the segment's output.
        # (A full-precision last layer left out of the chain runs after
        # it.)
        self._one_group_ok = self.chain.pool is not None and \
            self.chain.one_op(self.final)
        self._group_args: Dict[int, tuple] = {}

    def __getstate__(self) -> Dict[str, Any]:
        # The C++ plans (in the cached arguments) are rebuilt on use.
        state = self.__dict__.copy()
        state['_group_args'] = {}
        return state

    def _shift(self, x: Tensor) -> Tensor:
        # The binary layer's input x - theta (RSign), as it computes it.
        return x if self.theta is None else x - self.theta.to(x.dtype)

    @recorded
    def __call__(self, x: Tensor, counts: Union[Tensor, int, None] = None
                 ) -> Tensor:
        if self.first_lin is None and x.is_floating_point():
            x = self._shift(x)
        if isinstance(counts, int) and self._one_group_ok:
            out = self._one_group(x, counts)
            if out is not None:
                return self._last(out)
        thr, x_in = None, x
        if self.first_lin is not None:
            x = self.first_lin(x)
            thr = self.first_threshold
        try:
            out = self.chain(x, counts, in_threshold=thr, final=self.final)
        except NonFiniteInput:
            if not bool(torch.isfinite(x_in).all()):
                raise  # Non-finite inputs: the caller reports them.
            # A finite input whose linear map overflows: the thresholds hold
            # for finite values only, so take the layer's own operations.
            m, i = self.first
            tail = m.fp_tail(i, x, sign_only=self.theta is None)
            out = self.chain(self._shift(tail), counts, final=self.final)
        return self._last(out)

    def _last(self, out: Tensor) -> Tensor:
        # The full-precision last layer, where it is not in the chain.
        if self.last is not None and self.final is None:
            m, i = self.last
            out = m.fp_layer(i, out)
        return out

    def _one_group(self, x: Tensor, n: int) -> Optional[Tensor]:
        # One group (one cloud) straight through the C++ operation: the
        # general path costs tens of microseconds of Python per call, a
        # fifth of a PointNet at batch 1. None where the input is not one
        # the operation takes as it is (another backend or device, dtype or
        # shape: the general path converts or reports it), or where its
        # float input is not finite (the general path tells an overflow of
        # the first layer from a bad input).
        if kernels.backend() != 'cpp' or x.device.type != 'cpu' \
                or x.dim() != 2 or x.size(0) != n:
            return None
        K = self.chain.in_channels
        if self.first_lin is not None:
            width, dtype = self.first_lin.in_channels, torch.float32
        elif x.is_floating_point():
            width, dtype = K, torch.float32
        else:
            width, dtype = kernels.num_words(K), torch.int64
        if x.dtype != dtype or x.size(1) != width:
            return None
        args = self._group_args.get(n)
        if args is None:
            lin = self.first_lin  # Its operation runs inside the chain's.
            first = None if lin is None else (lin.weight32, lin.bias32)
            # A group size that the pooling does not take raises here as
            # on the general path.
            args = self.chain.one_group_args(n, self.first_threshold,
                                             self.final, first)
            if len(self._group_args) < 64:
                self._group_args[n] = args
        try:
            return BinaryChain.run_one_group(x, args)
        except NonFiniteInput:
            return None


def bits_layer(layer: PackedBiLinear, theta: Optional[Tensor]
               ) -> PackedBiLinear:
    r""":obj:`layer` with packed-bit output for a binary layer that reads
    it (with the learned input threshold :obj:`theta`, if any): its
    thresholds then fold :obj:`theta`, and it keeps no float epilogue."""
    threshold, flip = layer.threshold, layer.flip
    if theta is not None:
        threshold, flip = fold_epilogue(layer.epilogue, layer.in_channels,
                                        theta)
    return PackedBiLinear(layer.weight, layer.in_channels, threshold, flip,
                          None, 'bits', layer.input_threshold)


def _bits_out(mlp, nxt):
    r"""A copy of the packed MLP :obj:`mlp` whose binary last layer gives
    the bits that the packed MLP :obj:`nxt` reads."""
    lins = list(mlp.lins)
    lins[-1] = bits_layer(lins[-1], nxt.lins[0].input_threshold)
    return type(mlp)(mlp.channel_list, lins, list(mlp.norms), mlp.act,
                     mlp.plain_last, mlp.last_norm,
                     None if mlp.acts is None else list(mlp.acts))


def _float_last(mlp) -> bool:
    # A float output, or the pooled bits of an MLP specialized to pool.
    last = mlp.lins[-1]
    return isinstance(last, PackedBiLinear) and (
        last.output == 'float' and last.epilogue is not None
        or mlp.pool_size is not None)


def starts_chain(mlp) -> bool:
    r"""Whether the packed MLP :obj:`mlp` can begin a fused sequence: an
    optional full-precision first layer, then binary layers only, the
    last with float output."""
    first_fp = not mlp.is_binary(0)
    if first_fp and getattr(mlp.lins[0], 'weight32', None) is None:
        return False
    return len(mlp.lins) > first_fp and _float_last(mlp) and all(
        mlp.is_binary(i) for i in range(int(first_fp), len(mlp.lins)))


def continues_chain(mlp) -> bool:
    r"""Whether the packed MLP :obj:`mlp` can extend a fused sequence:
    binary layers only, the last with float output."""
    return _float_last(mlp) and all(
        mlp.is_binary(i) for i in range(len(mlp.lins)))


#: Activations that may follow a pending pooling (each non-decreasing;
#: the value says whether these arguments keep it so).
_MONOTONE: Dict[Callable, Callable[[tuple, dict], bool]] = {
    F.hardtanh: lambda a, k: True,
    F.relu: lambda a, k: True,
    torch.relu: lambda a, k: True,
    F.relu6: lambda a, k: True,
    torch.tanh: lambda a, k: True,
    F.tanh: lambda a, k: True,
    F.leaky_relu: lambda a, k: k.get(
        'negative_slope', a[1] if len(a) > 1 else 0.01) >= 0,
}

#: Tensor functions that a pending value answers from its shape.
_SHAPE_QUERIES = frozenset([
    Tensor.size, Tensor.dim, Tensor.numel, Tensor.is_floating_point,
    Tensor.__len__, Tensor.shape.__get__, Tensor.dtype.__get__,
    Tensor.device.__get__, Tensor.ndim.__get__,
    Tensor.requires_grad.__get__, Tensor.layout.__get__,
    Tensor.is_sparse.__get__, Tensor.is_cuda.__get__,
    Tensor.is_meta.__get__, Tensor.is_quantized.__get__,
    Tensor.is_nested.__get__, Tensor.grad_fn.__get__,
])


def _to_float32(func: Callable, args: tuple, kwargs: dict) -> bool:
    # x.to(torch.float32) (as x.to(h.dtype)) of a float32 value: itself.
    return func is Tensor.to and not kwargs and len(args) > 1 and \
        all(a is torch.float32 for a in args[1:])


def _value(x: Any) -> Any:
    return x.value() if isinstance(x, Deferred) else x


def _function_act(func: Callable, args: tuple, kwargs: dict):
    kwargs = {k: v for k, v in kwargs.items() if k != 'inplace'}
    rest = args[1:]
    if func in (F.hardtanh, F.relu, F.relu6, F.leaky_relu) and \
            len(rest) and isinstance(rest[-1], bool):
        rest = rest[:-1]  # The positional inplace flag.

    def act(v: Tensor) -> Tensor:
        return func(v, *rest, **kwargs)
    return (func, rest, tuple(sorted(kwargs.items()))), act


class Deferred(Tensor):
    r"""A float value of packed modules not computed yet (:class:`Pending`,
    :class:`Joined`): shape queries answer from its shape, a few functions
    keep it deferred (:obj:`x.to(torch.float32)`, a non-decreasing
    activation of a pending pooling, row gathers and concatenations of
    pooled values), and any other computes it (:meth:`value`) first."""
    def value(self) -> Tensor:
        raise NotImplementedError

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SHAPE_QUERIES:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        x = args[0] if args else None
        if _to_float32(func, args, kwargs):
            return x
        if isinstance(x, Pending) and func in _MONOTONE and \
                _MONOTONE[func](args, kwargs):
            out = x.activated(*_function_act(func, args, kwargs))
            if out is not None:
                return out
        joined = Joined.intercept(func, args, kwargs)
        if joined is not None:
            return joined
        args, kwargs = tree_map(_value, (args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        args, kwargs = tree_map(_value, (args, kwargs or {}))
        return func(*args, **kwargs)


class Pending(Deferred):
    r"""The float output of packed modules, not computed yet (see the
    module documentation): :obj:`[rows, channels]` float32, from the input
    :obj:`source` of the packed MLPs :obj:`mlps`, optionally max-pooled
    over groups after the last one (:obj:`pool`) and passed through a
    non-decreasing activation (:obj:`act`).

    Each value is one step from its :obj:`parent` (the value it extends):
    computing it (:meth:`value`) computes the parent first, so a value
    that is also used on its own is computed once.

    Args:
        source (torch.Tensor): The float input of :obj:`mlps[0]` (its rows
            grouped by pooling group when pooled).
        mlps (Tuple[PackedMLP]): Consecutive MLPs
            (:func:`starts_chain`, then :func:`continues_chain`).
        rows (int): The rows of the output.
        pool (tuple, optional): :obj:`(counts, ema, index)`: the rows of
            each group of :obj:`source` (a tensor, or an :obj:`int` for one
            group), whether the pooling subtracts :math:`\delta(n)`, and
            the group of each row of the parent.
        act (tuple, optional): :obj:`(key, act)`: the activation after the
            pooling and a key that identifies it.
        parent (Pending, optional): The value this one extends.
    """
    @staticmethod
    def __new__(cls, source: Tensor, mlps: Sequence[torch.nn.Module],
                rows: int, pool: Optional[tuple] = None,
                act: Optional[tuple] = None,
                parent: Optional['Pending'] = None):
        return Tensor._make_wrapper_subclass(
            cls, (rows, mlps[-1].out_channels), dtype=torch.float32,
            device=source.device)

    def __init__(self, source: Tensor, mlps: Sequence[torch.nn.Module],
                 rows: int, pool: Optional[tuple] = None,
                 act: Optional[tuple] = None,
                 parent: Optional['Pending'] = None):
        self.source = source
        self.mlps = tuple(mlps)
        self.pool = pool
        self.act = act
        self.parent = parent
        self.rows = rows  # (size(0) goes through __torch_function__.)
        self._value: Optional[Tensor] = None

    def __repr__(self, *args, **kwargs) -> str:
        names = '-'.join(str(m.channel_list) for m in self.mlps)
        return (f'Pending(shape={tuple(self.shape)}, mlps={names}, '
                f'pooled={self.pool is not None})')

    # The extensions -----------------------------------------------------

    def extend(self, mlp: torch.nn.Module) -> Optional['Pending']:
        r"""The output of :obj:`mlp` on this value, pending, or
        :obj:`None` if it does not extend the sequence."""
        if self.pool is not None or not _roles(mlp)[1] or \
                self.mlps[-1].pool_size is not None:
            return None
        return Pending(self.source, self.mlps + (mlp, ), self.rows,
                       parent=self)

    def pooled(self, index: Tensor, num_groups: int,
               ema: bool) -> Optional['Pending']:
        r"""The max over the rows of each group (:obj:`index`, minus
        :math:`\delta(n)` with :obj:`ema`), pending; :obj:`None` where the
        fused chain does not take these groups (empty groups, a bad
        index: the modules then pool, or report them)."""
        if self.pool is not None or index.dim() != 1 or \
                index.numel() != self.rows or index.numel() == 0 or \
                index.is_floating_point():
            return None
        source, rows = self.source, index
        if num_groups == 1:  # One group: every index 0.
            if bool(index.any()):
                return None
            n: Union[int, Tensor] = index.numel()
        else:
            if bool(index.min() < 0):
                return None
            counts = torch.bincount(index, minlength=num_groups)
            if counts.numel() != num_groups or bool((counts == 0).any()):
                return None
            if bool((index[1:] < index[:-1]).any()):
                # Rows are independent up to the pooling: group them.
                perm = torch.argsort(index, stable=True)
                source, index = source[perm], index[perm]
            n = counts
        return Pending(source, self.mlps, num_groups, (n, ema, rows),
                       parent=self)

    def activated(self, key: Any, act: Callable[[Tensor], Tensor]
                  ) -> Optional['Pending']:
        r"""The non-decreasing :obj:`act` of this pooled value, pending
        (:obj:`None` if the value is not pooled or already activated)."""
        if self.pool is None or self.act is not None:
            return None
        return Pending(self.source, self.mlps, self.rows, self.pool,
                       (key, act), self)

    def into(self, mlp: torch.nn.Module) -> Optional[Tensor]:
        r"""The output of :obj:`mlp` on this pooled value, computed as one
        chain with the layers before the pooling; :obj:`None` where they
        do not fuse."""
        if self.pool is None or not mlp.is_binary(0):
            return None
        counts, ema, _ = self.pool
        seg = _segment(self.mlps, mlp, ema, self.act)
        return None if seg is None else seg(self.source, counts)

    # The value ----------------------------------------------------------

    def value(self) -> Tensor:
        r"""The values (once), from the parent's: each MLP as one segment
        where it forms one, the pooling and the activation as the modules
        compute them."""
        if self._value is None:
            parent = self.parent
            if self.act is not None:
                x = self.act[1](parent.value())
            elif self.pool is not None:
                # The last MLP pools its own output, on the dot products of
                # its last layer (from one chain where the MLPs form one).
                counts, ema, index = self.pool
                mlps = self.mlps
                seg = None if mlps[-1].pool_size is not None else \
                    _cached_segment(mlps, (mlps, 'dots'), out='dots')
                # The unpooled rows, in the order of index (a grouped
                # value has no unpooled parent).
                rows = self.source if parent is None else parent.source
                if seg is not None:
                    x = mlps[-1].pool_dots(seg(rows), index, self.rows, ema)
                else:
                    x = rows if parent is None or parent.parent is None \
                        else parent.parent.value()
                    x = mlps[-1].pool_layers(x, index, self.rows, ema)
            elif parent is not None and parent._value is not None:
                x = run_mlps((self.mlps[-1], ), parent._value)
            else:
                x = run_mlps(self.mlps, self.source)
            self._value = x
        return self._value


def _row_index(func: Callable, args: tuple, kwargs: dict
               ) -> Optional[Tensor]:
    # The index of x[index] or x.index_select(0, index): a 1-D int64 tensor.
    if func is Tensor.__getitem__ and len(args) == 2 and not kwargs:
        index = args[1]
    elif func in (Tensor.index_select, torch.index_select) and \
            len(args) == 3 and not kwargs and args[1] == 0:
        index = args[2]
    else:
        return None
    if type(index) is Tensor and index.dim() == 1 and \
            index.dtype == torch.long:
        return index
    return None


def _channel_cat(func: Callable, args: tuple, kwargs: dict
                 ) -> Optional[Sequence[Tensor]]:
    # The tensors of torch.cat(tensors, dim=1 or -1) of 2-D float32 rows.
    if func is not torch.cat:
        return None
    tensors = args[0] if args else kwargs.get('tensors')
    dim = args[1] if len(args) > 1 else kwargs.get('dim', 0)
    if set(kwargs) - {'tensors', 'dim'} or dim not in (1, -1) or \
            not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    for t in tensors:
        if not isinstance(t, Tensor) or t.dim() != 2 or \
                t.dtype != torch.float32 or t.size(0) != tensors[0].size(0):
            return None
    return tensors


def _is_pooled(x: Any) -> bool:
    return isinstance(x, Pending) and x.pool is not None


class Joined(Deferred):
    r"""Float rows not built yet: the concatenation along the channels of
    :obj:`parts`, each :obj:`(value, index)`, the rows :obj:`value[index]`
    (:obj:`value` itself where :obj:`index` is :obj:`None`); a value is a
    tensor or a :class:`Pending` one.

    It arises where a model concatenates a pooled value (a cloud's global
    feature, pending) back to the rows of its groups,
    :obj:`torch.cat([h, g[batch]], dim=-1)`, as segmentation networks do.
    A packed MLP whose first layer is binary reads it without building the
    rows (:func:`joined_into`): a binary dot product is the sum of the dot
    products over the parts' channels, so the pooled part's is computed
    once per group, from its bits straight out of the fused chain, and
    enters each row's threshold; for many small groups (neighbourhoods)
    the parts' bits are gathered and joined instead (:meth:`bits`). Any
    other use builds the rows.

    Args:
        parts (List[tuple]): :obj:`(value, index)` pairs, in channel order.
        rows (int): The rows.
    """
    @staticmethod
    def __new__(cls, parts: Sequence[Tuple[Tensor, Optional[Tensor]]],
                rows: int):
        channels = sum(v.size(1) for v, _ in parts)
        return Tensor._make_wrapper_subclass(
            cls, (rows, channels), dtype=torch.float32,
            device=parts[0][0].device)

    def __init__(self, parts: Sequence[Tuple[Tensor, Optional[Tensor]]],
                 rows: int):
        self.parts = list(parts)
        self.rows = rows
        self._value: Optional[Tensor] = None

    def __repr__(self, *args, **kwargs) -> str:
        kinds = ', '.join(f'{v.size(1)}{"" if i is None else " gathered"}'
                          for v, i in self.parts)
        return f'Joined(shape={tuple(self.shape)}, parts=[{kinds}])'

    @staticmethod
    def intercept(func: Callable, args: tuple, kwargs: dict
                  ) -> Optional['Joined']:
        r"""The result of :obj:`func` as a joined value where it gathers
        rows of, or concatenates, pooled or joined values; else
        :obj:`None`."""
        x = args[0] if args else None
        index = _row_index(func, args, kwargs)
        if index is not None and (_is_pooled(x) or isinstance(x, Joined)):
            parts = x.parts if isinstance(x, Joined) else [(x, None)]
            return Joined([(v, index if i is None else i[index])
                           for v, i in parts], index.numel())
        tensors = _channel_cat(func, args, kwargs)
        if tensors is None or not any(
                _is_pooled(t) or isinstance(t, Joined) for t in tensors):
            return None
        parts = []
        for t in tensors:
            parts += t.parts if isinstance(t, Joined) else [(t, None)]
        return Joined(parts, tensors[0].size(0))

    def bits(self, mlp: torch.nn.Module) -> Tensor:
        r"""The packed signs of the rows that the binary first layer of the
        packed MLP :obj:`mlp` takes (against its input thresholds, if any):
        each part's, a pooled value's straight from its fused chain, a
        gathered part's once per group and then gathered, joined."""
        theta = mlp.lins[0].input_threshold
        parts, start = [], 0
        for p, (v, i) in enumerate(self.parts):
            c = v.size(1)
            bits = value_bits(mlp, p, v, None if theta is None
                              else theta[start:start + c])
            parts.append((bits if i is None else bits.index_select(0, i),
                          c))
            start += c
        return kernels.cat_bits(parts)

    def value(self) -> Tensor:
        r"""The rows (once)."""
        if self._value is None:
            self._value = torch.cat(
                [_value(v) if i is None else _value(v).index_select(0, i)
                 for v, i in self.parts], dim=1)
        return self._value


class _JoinedPlan:
    r"""What :func:`joined_into` needs for one layout of parts (their
    channels, which are gathered) and the MLP :obj:`mlp`: its first layer's
    weights and input thresholds split into the row channels and each
    gathered part's, and the rest of the MLP (:obj:`rest`, or
    :obj:`None`)."""
    def __init__(self, mlp: torch.nn.Module,
                 layout: Tuple[Tuple[int, bool], ...]):
        layer = mlp.lins[0]
        w = kernels._unpack_bool(layer.weight, layer.in_channels)
        theta = layer.input_threshold
        cols, start, self.gathered, self.row_parts = [], 0, [], []
        for c, gathered in layout:
            span = torch.arange(start, start + c)
            part_theta = None if theta is None else theta[span]
            if gathered:
                self.gathered.append(
                    (kernels._pack_bool(w[:, span]), c, part_theta))
            else:
                cols.append(span)
                self.row_parts.append((c, part_theta))
            start += c
        cols = torch.cat(cols)
        self.row_weight = kernels._pack_bool(w[:, cols])
        self.row_channels = cols.numel()
        self.rest = None
        if len(mlp.lins) > 1:
            acts = None if mlp.acts is None else list(mlp.acts)[1:]
            self.rest = type(mlp)(mlp.channel_list[1:], list(mlp.lins)[1:],
                                  list(mlp.norms)[1:], mlp.act,
                                  mlp.plain_last, mlp.last_norm, acts)

    def run_rest(self, x: Tensor) -> Tensor:
        if self.rest is None:
            return x
        seg = _cached_segment((self.rest, ), (self.rest, None), out='float')
        return self.rest.forward_layers(x) if seg is None else seg(x)


def value_bits(mlp: torch.nn.Module, k: int, v: Tensor,
               theta: Optional[Tensor]) -> Tensor:
    r"""The packed signs of :obj:`v` - :obj:`theta`, part :obj:`k` of
    :obj:`mlp`'s input: a pending pooled value's straight from its fused
    chain (pooled bits for the binary layer that reads them), unless its
    float value is computed already."""
    if _is_pooled(v) and v._value is None:
        counts, ema, _ = v.pool
        act = v.act
        seg = _cached_segment(
            v.mlps, (v.mlps, 'bits', ema, None if act is None else act[0],
                     mlp, k),
            pool=True, ema=ema, pool_act=None if act is None else act[1],
            pool_theta=theta)
        if seg is not None:
            return seg(v.source, counts)
    return kernels.pack_bits(_value(v) if theta is None
                             else _value(v) - theta)


#: :func:`joined_into` runs one thresholded product per group for at most
#: this many groups, of at least this many rows on average.
MAX_JOINED_GROUPS, MIN_JOINED_ROWS = 64, 16


def joined_into(mlp: torch.nn.Module, x: Joined) -> Optional[Tensor]:
    r"""The output of the packed MLP :obj:`mlp` on the joined rows
    :obj:`x`, without building them: its binary first layer's dot products
    are those over the row channels plus, for the rows of each group, the
    group's dot products over the gathered channels (exact integers), so
    each group's rows run as one thresholded product with the thresholds
    lowered by their group's part. :obj:`None` where this does not apply
    (a full-precision first layer, many small groups, gathered parts with
    different indices, unsorted groups, no row part)."""
    layer = mlp.lins[0]
    if not isinstance(layer, PackedBiLinear) or layer.output != 'bits':
        return None
    rows = [(p, v) for p, (v, i) in enumerate(x.parts) if i is None]
    per_group = [(p, v, i) for p, (v, i) in enumerate(x.parts)
                 if i is not None]
    if not rows or not per_group:
        return None
    _, groups, index = per_group[0]
    # One product per group: for a few large groups (clouds), not for
    # neighbourhoods (the caller joins the parts' bits there).
    if groups.size(0) > MAX_JOINED_GROUPS or \
            index.numel() < MIN_JOINED_ROWS * groups.size(0):
        return None
    if index.numel() == 0 or any(
            i is not index and not torch.equal(i, index)
            for _, _, i in per_group[1:]) or \
            bool((index[1:] < index[:-1]).any()):
        return None
    layout = tuple((v.size(1), i is not None) for v, i in x.parts)
    plan = mlp.fusions.get(('joined', layout))
    if plan is None:
        plan = mlp.fusions[('joined', layout)] = _JoinedPlan(mlp, layout)
    row_bits = kernels.cat_bits([
        (value_bits(mlp, p, v, theta), c)
        for (p, v), (c, theta) in zip(rows, plan.row_parts)])
    group_dots = None
    for (p, v, _), (weight, c, theta) in zip(per_group, plan.gathered):
        dots = kernels.xnor_gemm(value_bits(mlp, p, v, theta), weight, c)
        group_dots = dots if group_dots is None else group_dots + dots
    counts = torch.bincount(index, minlength=group_dots.size(0)).tolist()
    out, start = [], 0
    for g, n in enumerate(counts):
        if n:
            out.append(kernels.xnor_gemm_threshold(
                row_bits[start:start + n], plan.row_weight,
                plan.row_channels, layer.threshold - group_dots[g],
                layer.flip))
            start += n
    bits = out[0] if len(out) == 1 else torch.cat(out)
    return plan.run_rest(bits)


def _cached_segment(mlps: Tuple[torch.nn.Module, ...], key: Any,
                    **kwargs) -> Optional[Segment]:
    r"""The :class:`Segment` of the consecutive packed MLPs :obj:`mlps` (each
    giving the next its bits) with :obj:`kwargs`, kept by the first MLP
    under :obj:`key`; :obj:`None` where they do not fuse."""
    cache = mlps[0].fusions
    seg = cache.get(key)
    if seg is None:
        pre = [_bits_out(m, nxt) for m, nxt in zip(mlps, mlps[1:])]
        try:
            seg = Segment(pre + [mlps[-1]], **kwargs)
        except NotFusable:
            seg = False
        if len(cache) < 64:
            cache[key] = seg
    return seg or None


def _segment(mlps: Tuple[torch.nn.Module, ...], post: torch.nn.Module,
             ema: bool, act: Optional[tuple]) -> Optional[Segment]:
    r"""The segment of :obj:`mlps`, a max pooling (with :obj:`ema` and the
    activation :obj:`act`) and :obj:`post`."""
    # The last layer of post stays the module's own operation unless post
    # gives the model's output: other outputs may be binarized later (see
    # Segment).
    return _cached_segment(mlps, (mlps, post, ema,
                                  None if act is None else act[0]),
                           post=[post], pool=True, ema=ema,
                           pool_act=None if act is None else act[1],
                           fuse_last=post.is_output,
                           pool_size=mlps[-1].pool_size)


def run_mlps(mlps: Tuple[torch.nn.Module, ...], x: Tensor) -> Tensor:
    r"""The output of the consecutive packed MLPs :obj:`mlps` on the float
    rows :obj:`x` (or the packed bits that a binary first layer takes): one
    segment where they form one, else module by module."""
    seg = _cached_segment(mlps, (mlps, None), out='float')
    if seg is not None and x.dim() == 2 and (
            x.dtype == torch.float32 or
            x.dtype == torch.int64 and mlps[0].is_binary(0)):
        return seg(x)
    for mlp in mlps:
        x = mlp.forward_layers(x)
    return x


def pending(mlp: torch.nn.Module, x: Tensor) -> Optional[Pending]:
    r"""The output of the packed MLP :obj:`mlp` on :obj:`x`, pending, where
    it starts a fused sequence or extends the unpooled pending :obj:`x`;
    else :obj:`None`."""
    if isinstance(x, Pending):
        return x.extend(mlp)
    if isinstance(x, Joined):  # From its bits, where the MLP reads bits.
        if not (mlp.is_binary(0) and _roles(mlp)[0]):
            return None
        return Pending(x.bits(mlp), (mlp, ), x.rows)
    if not _starts_on(mlp, x):
        return None
    return Pending(x, (mlp, ), x.size(0))


def grouped(mlp: torch.nn.Module, x: Tensor, index: Tensor, counts: Tensor,
            ema: bool) -> Optional[Pending]:
    r"""The max of the packed MLP :obj:`mlp`'s output on the rows
    :obj:`x` over consecutive groups (:obj:`counts` rows each, none empty;
    :obj:`index` the group of each row), minus :math:`\delta(n)` with
    :obj:`ema`, pending where the MLP starts a fused sequence on :obj:`x`;
    else :obj:`None`. Unlike :meth:`Pending.pooled` it neither checks the
    groups nor reads the number of rows, so a recorded forward
    (:mod:`~torch_geometric_binary.deploy.replay`) serves inputs whose
    groups differ in size (a set abstraction's neighbourhoods)."""
    if not _starts_on(mlp, x):
        return None
    return Pending(x, (mlp, ), counts.numel(), (counts, ema, index))


def _starts_on(mlp: torch.nn.Module, x: Tensor) -> bool:
    # Whether mlp starts a fused sequence on the computed rows x: floats,
    # or the packed signs that its binary first layer reads.
    return x.dim() == 2 and _roles(mlp)[0] and (
        x.dtype == torch.float32 or (
            x.dtype == torch.int64 and mlp.is_binary(0)
            and x.size(1) == kernels.num_words(mlp.in_channels)))


def fuse(mlp: torch.nn.Module, x: Tensor) -> Optional[Tensor]:
    r"""The output of the packed MLP :obj:`mlp` (with fusion on) on
    :obj:`x`: pending where it starts or extends a fused sequence
    (:func:`pending`), computed as one chain where it reads a pending
    pooling or where nothing extends it (e.g. it ends in a full-precision
    layer); :obj:`None` where the MLP runs on its own."""
    if isinstance(x, Pending) and x.pool is not None:
        return x.into(mlp)
    if isinstance(x, Joined):
        out = joined_into(mlp, x)
        if out is None and mlp.is_binary(0):  # The rows' bits.
            out = run_mlps((mlp, ), x.bits(mlp))
        return out
    out = pending(mlp, x)
    if out is not None:
        return out
    if isinstance(x, Pending):
        # An MLP that ends the sequence (a full-precision last layer, as a
        # per-point classifier) reads the pending rows' bits in the chain.
        if x._value is not None or not mlp.is_binary(0):
            return None
        return run_mlps(x.mlps + (mlp, ), x.source)
    if x.dtype == torch.float32 and x.dim() == 2:
        return run_mlps((mlp, ), x)
    return None


def _roles(mlp: torch.nn.Module) -> Tuple[bool, bool]:
    # (starts_chain, continues_chain), kept with the MLP's segments.
    roles = mlp.fusions.get(None)
    if roles is None:
        roles = mlp.fusions[None] = (starts_chain(mlp),
                                     continues_chain(mlp))
    return roles


__all__ = ['Segment', 'NotFusable', 'Deferred', 'Pending', 'Joined',
           'fuse', 'pending', 'grouped', 'bits_layer',
           'starts_chain', 'continues_chain']
