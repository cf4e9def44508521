r"""The packed model: what :func:`~torch_geometric_binary.deploy.pack`
gives for every trained model (PointNet, PointNet++, DGCNN, the
segmentation networks, models converted by
:func:`~torch_geometric_binary.binarize`, your own models).

:func:`pack_modules` copies the model and walks its module tree
(:meth:`~torch.nn.Module.named_children`, recursively). Every submodule
whose class has a converter (:func:`~torch_geometric_binary.deploy.converter`)
is replaced by its packed form: a
:class:`~torch_geometric_binary.nn.BiMLP` by a
:class:`~torch_geometric_binary.deploy.PackedMLP`, a
:class:`~torch_geometric_binary.nn.BiLinear` by a
:class:`~torch_geometric_binary.deploy.PackedBiLinear`, a PointNet T-Net,
set abstraction, dynamic edge convolution or feature propagation by its
packed counterpart, an RPReLU, full-precision linear layer or batch
normalization by its frozen form. A submodule without parameters or
buffers (activations, dropout, aggregations) is kept; any other is walked
into, and one that holds parameters or buffers of its own that no
converter packs raises a :class:`TypeError` naming its path and class.
The model's own :meth:`forward` then runs unchanged, with the packed
modules in place of the trained ones: the packed modules give what the
trained ones give in inference mode (binary layers with integer dot
products and their batch normalization, scale and sign folded into
thresholds; binary activations packed between the binary layers of an
MLP), so the outputs are the trained model's up to float rounding.

The packed MLPs of a :class:`PackedModel` fuse (:mod:`~torch_geometric_
binary.deploy.fusion`): consecutive MLPs of binary layers, a max pooling
(:meth:`~torch_geometric_binary.nn.BiMLP.max_pool`,
:func:`~torch_geometric_binary.nn.global_ema_max_pool`,
:func:`~torch_geometric_binary.nn.global_max_pool`) and the activation
after it run as one chain when an MLP reads the pooled features.
:meth:`PackedModel.forward_layers` runs the packed
modules one by one (the reference).

A :class:`PackedModel` holds the result. It saves as the name of the
trained class (one of :obj:`nn.models.MODELS` or
:obj:`nn.models.SEG_MODELS`), its constructor arguments and the packed
submodules by path; :func:`~torch_geometric_binary.deploy.load` builds the
class from those arguments and puts the packed submodules in place.
"""
import copy
import inspect
import os
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor
from torch.utils._pytree import tree_map
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from torch_geometric.nn.norm import BatchNorm as PyGBatchNorm

from torch_geometric_binary.deploy import kernels
from torch_geometric_binary.deploy.activations import convert_act
from torch_geometric_binary.deploy.fusion import Deferred, Segment
from torch_geometric_binary.deploy.linear import PackedBiLinear
from torch_geometric_binary.deploy.models import (PackedEdgeConv,
                                                  PackedPointConv,
                                                  PackedSetAbstraction,
                                                  PackedTNet,
                                                  _check_children, theta_of)
from torch_geometric_binary.deploy.modules import (FrozenBatchNorm,
                                                   PackedLinear, PackedMLP,
                                                   check_method)
from torch_geometric_binary.deploy.replay import (Miss, Plan, Unrecordable,
                                                  record, state_tensors)
from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    converter,
                                                    converter_for,
                                                    is_packed,
                                                    register_packed,
                                                    run_converter)
from torch_geometric_binary.deploy.threads import run_with_policy
from torch_geometric_binary.nn import neighbors
from torch_geometric_binary.nn.conv import BiDynamicEdgeConv
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method
from torch_geometric_binary.nn.models import MODELS, SEG_MODELS, PointNet
from torch_geometric_binary.nn.models.common import PointCloudClassifier
from torch_geometric_binary.nn.models.pointnet import TNet
from torch_geometric_binary.nn.models.pointnet2 import SetAbstraction
from torch_geometric_binary.nn.models.segmentation import FeaturePropagation
from torch_geometric_binary.nn.rprelu import RPReLU

#: The trained classes a :class:`PackedModel` file can name, by name.
TRAINED: Dict[str, type] = {cls.__name__: cls for cls in
                            (*MODELS.values(), *SEG_MODELS.values())}


# --------------------------------------------------------------------------
# Converters of the parts of the models (besides BiMLP and BiLinear, which
# deploy.models registers).

@converter(TNet)
def _pack_tnet(tnet, fp_dtype, epilogue_dtype, num_points, where='TNet'):
    # Its transform is binarized later: float32 (see pack's fp_dtype).
    return PackedTNet.from_tnet(tnet, where, torch.float32, epilogue_dtype)


@converter(SetAbstraction)
def _pack_set_abstraction(sa, fp_dtype, epilogue_dtype, num_points,
                          where='SetAbstraction'):
    _check_children(sa, ('conv', ))
    return PackedSetAbstraction(
        sa.ratio, sa.r, sa.max_num_neighbors,
        PackedPointConv.from_conv(sa.conv, f'{where}.conv', torch.float32,
                                  epilogue_dtype))


@converter(BiDynamicEdgeConv)
def _pack_dynamic_edge_conv(conv, fp_dtype, epilogue_dtype, num_points,
                            where='BiDynamicEdgeConv'):
    return PackedEdgeConv.from_conv(conv, where, torch.float32,
                                    epilogue_dtype)


@register_packed
class PackedFeaturePropagation(FeaturePropagation):
    r"""A packed PointNet++ feature propagation level
    (:class:`~torch_geometric_binary.nn.models.segmentation.FeaturePropagation`):
    the same interpolation of float features, and a
    :class:`~torch_geometric_binary.deploy.PackedMLP`."""
    def __init__(self, k: int, nn: PackedMLP):
        super().__init__(k, nn)

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return {'k': self.k}, {}, {'nn': self.nn}

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]
                           ) -> 'PackedFeaturePropagation':
        return cls(attrs['k'], children['nn'])


@converter(FeaturePropagation)
def _pack_feature_propagation(fp, fp_dtype, epilogue_dtype, num_points,
                              where='FeaturePropagation'):
    _check_children(fp, ('nn', ))
    return PackedFeaturePropagation(fp.k, PackedMLP.from_bimlp(
        fp.nn, torch.float32, epilogue_dtype, f'{where}.nn'))


@converter(RPReLU)
def _pack_rprelu(act, fp_dtype, epilogue_dtype, num_points, where='RPReLU'):
    return convert_act(act, where)


@converter(torch.nn.Linear, PyGLinear, part_only=True)
def _pack_linear(lin, fp_dtype, epilogue_dtype, num_points, where='Linear'):
    try:
        return PackedLinear.from_linear(lin, fp_dtype)
    except TypeError:
        raise TypeError(f"pack: {where} is a {type(lin).__name__}, which "
                        f"pack does not know") from None


@converter(torch.nn.BatchNorm1d, PyGBatchNorm, part_only=True)
def _pack_batch_norm(norm, fp_dtype, epilogue_dtype, num_points,
                     where='BatchNorm'):
    try:
        return FrozenBatchNorm.from_module(norm)
    except (TypeError, ValueError) as e:
        raise TypeError(f"pack: {where}: {e}") from None


# --------------------------------------------------------------------------
# The walk.

def _has_state(module: torch.nn.Module, recurse: bool = True) -> bool:
    return any(True for _ in module.parameters(recurse=recurse)) or \
        any(True for _ in module.buffers(recurse=recurse))


def _convert_children(module: torch.nn.Module, prefix: str, path: str,
                      epilogue_dtype: torch.dtype, converted: List[str],
                      head_dtype: torch.dtype = torch.float32):
    r"""Replaces the children of :obj:`module` (at :obj:`path` in the
    model, :obj:`prefix` for error messages) by their packed forms,
    recursively; appends the paths replaced to :obj:`converted`. The
    model's classifier (the top-level :obj:`head`) stores its
    full-precision layers in :obj:`head_dtype`."""
    for name, child in list(module.named_children()):
        where, sub = f'{prefix}.{name}', f'{path}{name}'
        if child is None or is_packed(child):
            continue
        fn = converter_for(child)
        if fn is not None:
            fp_dtype = head_dtype if sub == 'head' else torch.float32
            setattr(module, name, run_converter(
                fn, child, fp_dtype, epilogue_dtype, None, where))
            converted.append(sub)
        elif _has_state(child):
            _convert_children(child, where, sub + '.', epilogue_dtype,
                              converted)
            _refuse_own_state(child, where)


def _refuse_own_state(module: torch.nn.Module, where: str):
    names = [n for n, _ in module.named_parameters(recurse=False)] + \
        [n for n, _ in module.named_buffers(recurse=False)]
    if names:
        raise TypeError(f"pack: {where} is a {type(module).__name__} with "
                        f"parameters or buffers ({', '.join(names[:4])}), "
                        f"which no converter packs (register one with "
                        f"deploy.converter)")


def _is_binary(module: torch.nn.Module) -> bool:
    return any(isinstance(m, PackedBiLinear) for m in module.modules())


def pack_modules(model: torch.nn.Module,
                 fp_dtype: torch.dtype = torch.float32,
                 epilogue_dtype: torch.dtype = torch.float32,
                 num_points: Optional[int] = None) -> 'PackedModel':
    r"""Packs :obj:`model` module by module (see the module documentation):
    what :func:`~torch_geometric_binary.deploy.pack` does for a model
    without a converter of its own class."""
    cls = type(model)
    name = cls.__name__
    if num_points is not None and not isinstance(model, PointNet):
        raise ValueError(f"pack: 'num_points' (a fixed cloud size) is "
                         f"supported for PointNet only (got a {name})")
    method = getattr(model, 'method', None)
    if isinstance(method, BinaryMethod):
        check_method(method, name)
    copied = copy.deepcopy(model)
    converted: List[str] = []
    _convert_children(copied, name, '', epilogue_dtype, converted, fp_dtype)
    _refuse_own_state(copied, name)
    if not _is_binary(copied):
        raise TypeError(f"pack: cannot pack a {cls.__module__}."
                        f"{cls.__qualname__}: it has no binary layer that "
                        f"pack knows (pack is for binary models: BiLinear, "
                        f"BiMLP and the modules built of them)")
    trained = name if TRAINED.get(name) is cls else None
    kwargs = constructor_kwargs(model) if trained is not None else None
    packed = PackedModel(copied, converted, trained, kwargs)
    return packed if num_points is None else packed.fix_num_points(num_points)


def constructor_kwargs(model: torch.nn.Module) -> Dict[str, Any]:
    r"""The arguments that rebuild :obj:`model`'s architecture with its
    class: each argument of the constructor read back from the attribute of
    the same name (the method as its name and switches); arguments the
    model does not keep (dropout rates) take their defaults, as they do not
    change the modules that stay after packing (:meth:`PackedModel.rebuild`
    checks it)."""
    out: Dict[str, Any] = {}
    method = getattr(model, 'method', None)
    params = list(inspect.signature(type(model).__init__).parameters.items())
    for name, p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if isinstance(method, BinaryMethod) and name in ('method', 'ema',
                                                         'lsr'):
            value = method.name if name == 'method' else \
                getattr(method, name)
        elif hasattr(model, name):
            value = getattr(model, name)
        else:
            continue
        if value is not None and not isinstance(value, (bool, int, float,
                                                        str)):
            continue  # Not plain data: rebuild checks the default.
        out[name] = value
    return out


def _plain(out: Any) -> Any:
    r"""The outputs with pending values computed."""
    if type(out) is Tensor:
        return out
    return tree_map(lambda t: t.value() if isinstance(t, Deferred) else t,
                    out)


#: A :class:`PackedModel` keeps recorded forwards for at most this many
#: kinds of input, and tries at most :obj:`MAX_PLANS` recordings per kind
#: (one per path its forward takes); where they all miss, it runs that
#: kind as written from then on.
MAX_KINDS, MAX_PLANS = 16, 3


class _Recordings:
    def __init__(self):
        self.plans: List[Plan] = []
        self.tries = 0


def _input_kind(args: tuple, kwargs: dict) -> Optional[tuple]:
    r"""What a recorded forward is specific to: which arguments are
    tensors (the others :obj:`None`), their shapes, types and devices, the
    kernels chosen by the environment and whether autocast is on (state
    the forward may read without a tensor); :obj:`None` for other
    arguments (the forward then always runs as written)."""
    get = os.environ.get
    key = [get(kernels.ENV_BACKEND), get(neighbors.ENV_BACKEND),
           torch.is_autocast_enabled('cpu')]
    if kwargs:
        key.append(tuple(kwargs))
        args = args + tuple(kwargs.values())
    for a in args:
        if a is None:
            key.append(None)
        elif type(a) is Tensor:
            key += (a.shape, a.dtype, a.device)
        else:
            return None
    return tuple(key)


@register_packed
class PackedModel(torch.nn.Module):
    r"""A trained model packed module by module (:func:`pack_modules`): a
    copy of it, :obj:`model`, in which every trained module with a converter
    is replaced by its packed form, run by the model's own :meth:`forward`.
    Inference only: it holds no parameters, runs without gradients, and
    stays in evaluation mode.

    Args:
        model (torch.nn.Module): The copy with the packed modules.
        paths (List[str]): The paths of the packed modules in
            :obj:`model` (what :func:`~torch_geometric_binary.deploy.save`
            stores).
        trained (str, optional): The name of the trained class in
            :obj:`nn.models.MODELS` or :obj:`nn.models.SEG_MODELS` (needed
            to save).
        kwargs (dict, optional): Its constructor arguments.
    """
    def __init__(self, model: torch.nn.Module, paths: List[str],
                 trained: Optional[str] = None,
                 kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.model = model.eval()
        self.paths = list(paths)
        self.trained = trained
        self.kwargs = kwargs
        self._plans: Dict[Any, _Recordings] = {}
        head = getattr(model, 'head', None)
        if isinstance(model, PointCloudClassifier) and \
                isinstance(head, PackedMLP):
            head.is_output = True  # The logits: forward returns them.
        self._set_fusion(True)

    def __getattr__(self, name: str) -> Any:
        # The packed model's parts, by the trained model's names
        # (packed.head, packed.conv1).
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == 'model':
                raise
            return getattr(self.model, name)

    def _set_fusion(self, on: bool):
        for module in self.model.modules():
            if isinstance(module, PackedMLP):
                module.fuse = on

    def forward(self, *args, **kwargs):
        r"""The trained model's :meth:`forward`, with the packed modules
        (consecutive ones fused into chains, see
        :mod:`~torch_geometric_binary.deploy.fusion`).

        From the second call with inputs of one kind (which arguments are
        tensors, their shapes, types and devices), the call is recorded
        and later calls of that kind replay the recording
        (:mod:`~torch_geometric_binary.deploy.replay`) where the forward
        would take the same path; the others run the forward as
        written. Small inputs run on one thread
        (:mod:`~torch_geometric_binary.deploy.threads`)."""
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.forward(*args, **kwargs)
        first = args[0] if args else next(iter(kwargs.values()), None)
        if torch.get_num_threads() > 1 and type(first) is Tensor and \
                first.dim() > 0:
            return run_with_policy(lambda: self._forward(*args, **kwargs),
                                   first.size(0))
        return self._forward(*args, **kwargs)

    def _forward(self, *args, **kwargs):
        key = _input_kind(args, kwargs)
        if key is None:
            return self._run(*args, **kwargs)
        entry = self._plans.get(key)
        if entry is None:  # The first call also fills the caches.
            if len(self._plans) < MAX_KINDS:
                self._plans[key] = _Recordings()
            return self._run(*args, **kwargs)
        inputs = [a for a in args if a is not None] + \
            [v for v in kwargs.values() if v is not None]
        for plan in entry.plans:
            try:
                return plan(*inputs)
            except Miss:
                continue
            except Exception:  # Reported by the forward as written.
                break
        else:
            if entry.tries < MAX_PLANS:
                entry.tries += 1
                try:
                    out, plan = record(self._run, inputs,
                                       state_tensors(self), *args, **kwargs)
                except Unrecordable:
                    pass
                else:
                    entry.plans.append(plan)
                    return out
            else:
                # Each call takes another path (shapes that depend on the
                # values, as radius neighbourhoods): stop trying.
                entry.plans = []
        return self._run(*args, **kwargs)

    def _run(self, *args, **kwargs):
        return _plain(self.model(*args, **kwargs))

    def fused_segments(self) -> List[Segment]:
        r"""The fused chains (:class:`~torch_geometric_binary.deploy.
        fusion.Segment`) the forward has built so far, in module order."""
        return [seg for m in self.model.modules() if isinstance(m, PackedMLP)
                for seg in m.fusions.values() if isinstance(seg, Segment)]

    @property
    def num_points(self) -> Optional[int]:
        r"""The cloud size a packed PointNet is specialized to
        (:obj:`pack(..., num_points=n)`, :meth:`fix_num_points`), or
        :obj:`None` (any size)."""
        if not isinstance(self.model, PointNet):
            return None
        return getattr(self.model, self.model.POINT_MLP).pool_size

    def fix_num_points(self, n: int) -> 'PackedModel':
        r"""Specializes a packed PointNet to clouds of exactly :obj:`n`
        points: every pooled layer (T-Nets included) stores integer
        thresholds instead of its float epilogue (a smaller file), and
        clouds of other sizes raise a :class:`ValueError`. The outputs stay
        exact."""
        model = self.model
        if not isinstance(model, PointNet):
            raise ValueError(f"pack: 'num_points' (a fixed cloud size) is "
                             f"supported for PointNet only (got a "
                             f"{type(model).__name__})")
        name = type(model).__name__
        mlp = getattr(model, model.POINT_MLP)
        mlp.fix_pool_size(n, model.method.ema, model.act,
                          theta_of(model.head), f'{name}.{model.POINT_MLP}')
        for tnet in (model.input_tnet, model.feature_tnet):
            if tnet is not None:
                tnet.fix_num_points(n)
        self._plans = {}
        return self

    def _apply(self, fn, *args, **kwargs):
        self._plans = {}  # Recordings hold the model's tensors.
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state['_plans'] = {}
        return state

    @torch.no_grad()
    def forward_layers(self, *args, **kwargs):
        r"""The trained model's :meth:`forward` with the packed modules,
        each on its own (the reference of :meth:`forward`)."""
        self._set_fusion(False)
        try:
            return _plain(self.model(*args, **kwargs))
        finally:
            self._set_fusion(True)

    def train(self, mode: bool = True) -> 'PackedModel':
        super().train(mode)
        self.model.eval()  # Dropout and sampling as in evaluation, always.
        return self

    def packed_config(self, add: AddTensor) -> PackedConfig:
        if self.trained is None:
            raise TypeError(f"save: cannot save a packed "
                            f"{type(self.model).__name__}: load rebuilds a "
                            f"packed model from its class, and only the "
                            f"package's models (nn.models.MODELS, "
                            f"SEG_MODELS) are known by name")
        method = self.kwargs.get('method')
        if isinstance(method, str):
            try:
                resolve_method(method)
            except ValueError:
                raise TypeError(
                    f"save: cannot save a packed {self.trained} whose method "
                    f"'{method}' is not registered: load rebuilds the model "
                    f"from its method's name (register it with "
                    f"nn.methods.register_method)") from None
        children = {p: self.model.get_submodule(p) for p in self.paths}
        self.rebuild(self.trained, self.kwargs, children, self.model)
        return ({'model': self.trained, 'kwargs': self.kwargs}, {},
                children)

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedModel':
        model = cls.rebuild(attrs['model'], attrs['kwargs'], children)
        return cls(model, list(children), attrs['model'], attrs['kwargs'])

    @staticmethod
    def rebuild(trained: str, kwargs: Dict[str, Any],
                children: Dict[str, torch.nn.Module],
                like: Optional[torch.nn.Module] = None) -> torch.nn.Module:
        r"""The class :obj:`trained` built with :obj:`kwargs`, its modules
        at the paths of :obj:`children` replaced by them; a
        :class:`ValueError` if a trained module with parameters stays, or
        if the modules differ from those of :obj:`like`."""
        if trained not in TRAINED:
            raise ValueError(f"PackedModel: unknown trained class "
                             f"'{trained}' (known: {', '.join(TRAINED)})")
        # On the meta device: the trained weights are replaced, so nothing
        # is initialized (and no random numbers are drawn).
        with torch.device('meta'):
            model = TRAINED[trained](**kwargs)
        for path, child in children.items():
            model.get_submodule(path)  # It must exist.
            model.set_submodule(path, child)
        model.eval()
        left = [n for n, _ in model.named_parameters()] + \
            [n for n, t in model.named_buffers() if t.is_meta]
        if left:
            raise ValueError(f"PackedModel: the rebuilt {trained} keeps "
                             f"trained parameters ({', '.join(left[:4])})")
        if like is not None:
            def modules(m):
                return [(n, type(c)) for n, c in m.named_modules()]
            if modules(model) != modules(like) or getattr(
                    model, 'method', None) != getattr(like, 'method', None):
                raise ValueError(f"save: {trained}({kwargs}) does not "
                                 f"rebuild the packed model (its modules or "
                                 f"its method differ); the file could not "
                                 f"be loaded")
        return model

    def __repr__(self) -> str:
        parts = ', '.join(f'{p}={type(self.model.get_submodule(p)).__name__}'
                          for p in self.paths)
        return f'{self.__class__.__name__}({self.model!r}; {parts})'


__all__ = ['PackedModel', 'PackedFeaturePropagation', 'pack_modules',
           'constructor_kwargs', 'TRAINED']
