r"""The activations that packed models support, in one table.

Every supported activation is non-decreasing, so the sign of its output is
a threshold test on its input and a max pooling commutes with it. Each
kind has one :class:`ActKind` entry: how to read its arguments from a
module (what files store), how to rebuild it, whether it preserves signs
(:math:`[\mathrm{act}(x) \ge 0] = [x \ge 0]`), and whether it is a clamp
:math:`[lo, hi]` (which :class:`~torch_geometric_binary.deploy.
AffineEpilogue` evaluates in its compact form).

Activations with parameters per channel (ReActNet's
:class:`~torch_geometric_binary.nn.RPReLU`) are packed modules of their own
(:class:`PackedRPReLU`); :func:`convert_act` gives the packed form of any
supported activation.
"""
import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    register_packed)
from torch_geometric_binary.nn.rprelu import RPReLU

INF = float('inf')

Spec = Tuple[str, Dict[str, Any]]


@dataclass(frozen=True)
class ActKind:
    r"""One supported activation kind.

    Args:
        name (str): The name files store.
        cls (type): The module class (matched exactly, not subclasses).
        args (callable): The constructor arguments of a module, or
            :obj:`None` if this instance is not supported (*e.g.* a
            negative slope).
        sign_preserving (callable): Whether the activation with these
            arguments keeps the sign of every input.
        bounds (callable): The clamp :math:`(lo, hi)` it is, or
            :obj:`None` if it is not a clamp.
    """
    name: str
    cls: type
    args: Callable[[torch.nn.Module], Optional[Dict[str, Any]]]
    sign_preserving: Callable[[Dict[str, Any]], bool]
    bounds: Callable[[Dict[str, Any]], Optional[Tuple[float, float]]]


def _none(kwargs: Dict[str, Any]):
    return None


ACTIVATIONS: Tuple[ActKind, ...] = (
    ActKind('identity', torch.nn.Identity, lambda m: {},
            lambda a: True, lambda a: (-INF, INF)),
    ActKind('hardtanh', torch.nn.Hardtanh,
            lambda m: {'min_val': float(m.min_val),
                       'max_val': float(m.max_val)},
            lambda a: a['min_val'] < 0 <= a['max_val'],
            lambda a: (a['min_val'], a['max_val'])),
    ActKind('relu', torch.nn.ReLU, lambda m: {},
            lambda a: False, lambda a: (0.0, INF)),
    ActKind('relu6', torch.nn.ReLU6, lambda m: {},
            lambda a: False, lambda a: (0.0, 6.0)),
    ActKind('tanh', torch.nn.Tanh, lambda m: {},
            lambda a: True, _none),
    ActKind('leaky_relu', torch.nn.LeakyReLU,
            lambda m: ({'negative_slope': float(m.negative_slope)}
                       if m.negative_slope >= 0 else None),
            lambda a: a['negative_slope'] > 0, _none),
)
_BY_CLASS = {kind.cls: kind for kind in ACTIVATIONS}
_BY_NAME = {kind.name: kind for kind in ACTIVATIONS}
SUPPORTED = ('Identity, Hardtanh, ReLU, ReLU6, Tanh, LeakyReLU with a '
             'non-negative slope')


def act_kind(act: Optional[torch.nn.Module], where: str = ''
             ) -> Tuple[Optional[ActKind], Dict[str, Any]]:
    r"""The table entry and arguments of :obj:`act` (:obj:`(None, {})` for
    no activation), or a :class:`TypeError` naming its class."""
    if act is None:
        return None, {}
    kind = _BY_CLASS.get(type(act))
    args = None if kind is None else kind.args(act)
    if args is None:
        prefix = f"{where}: " if where else ''
        raise TypeError(f"{prefix}pack does not support the activation "
                        f"{type(act).__name__}{_why(act)} (supported: "
                        f"{SUPPORTED})")
    return kind, args


def _why(act: torch.nn.Module) -> str:
    slope = getattr(act, 'negative_slope', None)
    if type(act) is torch.nn.LeakyReLU and slope is not None and slope < 0:
        return f" with negative_slope={slope} (not monotone)"
    return ''


def act_spec(act: Optional[torch.nn.Module], where: str = ''
             ) -> Optional[Spec]:
    r"""The name and arguments of a supported activation, or a
    :class:`TypeError` naming its class."""
    kind, args = act_kind(act, where)
    return None if kind is None else (kind.name, args)


def make_act(spec: Optional[Spec]) -> Optional[torch.nn.Module]:
    r"""The activation :func:`act_spec` describes."""
    if spec is None:
        return None
    name, kwargs = spec
    if name not in _BY_NAME:
        raise ValueError(f"Unknown activation '{name}' (known: "
                         f"{', '.join(_BY_NAME)})")
    return _BY_NAME[name].cls(**kwargs)


def sign_preserving(act: Optional[torch.nn.Module]) -> bool:
    r"""Whether :math:`[\mathrm{act}(x) \ge 0] = [x \ge 0]` for every
    :math:`x` (so the sign of the input can skip the activation)."""
    kind = _BY_CLASS.get(type(act)) if act is not None else None
    if act is None:
        return True
    args = None if kind is None else kind.args(act)
    return args is not None and kind.sign_preserving(args)


def act_bounds(act: Optional[torch.nn.Module]
               ) -> Optional[Tuple[float, float]]:
    r"""The clamp :math:`[lo, hi]` an activation is, or :obj:`None` if it is
    not a clamp (no activation is :math:`[-\infty, \infty]`)."""
    if act is None:
        return -INF, INF
    kind = _BY_CLASS.get(type(act))
    args = None if kind is None else kind.args(act)
    return None if args is None else kind.bounds(args)


@register_packed
class PackedRPReLU(torch.nn.Module):
    r"""A trained :class:`~torch_geometric_binary.nn.RPReLU` for packed
    inference: the same operations on frozen :math:`\boldsymbol{\gamma},
    \boldsymbol{\beta}, \boldsymbol{\zeta}`. Every slope must be
    positive: the activation is then increasing, so the sign of its output
    (minus any threshold) is a threshold test on its input, and it commutes
    with a max pooling. Build it with :meth:`from_module`."""
    def __init__(self, gamma: Tensor, beta: Tensor, zeta: Tensor):
        super().__init__()
        self.channels = gamma.numel()
        for name, t in (('gamma', gamma), ('beta', beta), ('zeta', zeta)):
            if t.shape != (self.channels, ) or not t.is_floating_point():
                raise ValueError(f"PackedRPReLU: '{name}' must be a float "
                                 f"tensor of shape ({self.channels},)")
            self.register_buffer(name, t)

    @classmethod
    def from_module(cls, act: RPReLU, where: str = '') -> 'PackedRPReLU':
        bad = (~(act.beta > 0)).nonzero().flatten().tolist()
        if bad:
            prefix = f"{where}: " if where else ''
            raise ValueError(f"{prefix}pack cannot fold an RPReLU whose "
                             f"slope beta is not positive (channels "
                             f"{bad[:8]}): its output is then not increasing "
                             f"in its input, so its sign is no threshold "
                             f"test and it does not commute with max "
                             f"pooling")
        return cls(*(t.detach().clone()
                     for t in (act.gamma, act.beta, act.zeta)))

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({}, {k: add(getattr(self, k), 'fp_norms')
                     for k in ('gamma', 'beta', 'zeta')}, {})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedRPReLU':
        return cls(tensors['gamma'], tensors['beta'], tensors['zeta'])

    def forward(self, x: Tensor) -> Tensor:
        # A pending pooled value (deploy.fusion.Pending, which imports this
        # module) takes the activation into its chain.
        activated = getattr(x, 'activated', None)
        if activated is not None:
            out = activated(self, self._act)
            if out is not None:
                return out
        return self._act(x)

    def _act(self, x: Tensor) -> Tensor:
        # The trained module's own operations (on these buffers), so that
        # thresholds derived by evaluating it hold bit for bit.
        return RPReLU.forward(self, x)

    def extra_repr(self) -> str:
        return f'{self.channels}'


def freeze_act(act):
    r"""An inference copy of an activation (or any monotone callable):
    :class:`PackedRPReLU` for an RPReLU, else a deep copy."""
    if type(act) is RPReLU:
        return PackedRPReLU.from_module(act)
    return copy.deepcopy(act)


def convert_act(act: Optional[torch.nn.Module], where: str = ''
                ) -> Optional[torch.nn.Module]:
    r"""The packed form of a supported activation (:obj:`None` stays
    :obj:`None`): a :class:`PackedRPReLU` for an RPReLU, else a copy;
    a :class:`TypeError` names an unsupported one."""
    if type(act) is RPReLU:
        return PackedRPReLU.from_module(act, where)
    if type(act) is PackedRPReLU:
        return act
    act_spec(act, where)
    return copy.deepcopy(act)
