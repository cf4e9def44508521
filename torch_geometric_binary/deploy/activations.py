r"""The activations that packed models support, in one table.

Every supported activation is non-decreasing, so the sign of its output is
a threshold test on its input and a max pooling commutes with it. Each
kind has one :class:`ActKind` entry: how to read its arguments from a
module (what files store), how to rebuild it, whether it preserves signs
(:math:`[\mathrm{act}(x) \ge 0] = [x \ge 0]`), and whether it is a clamp
:math:`[lo, hi]` (which :class:`~torch_geometric_binary.deploy.
AffineEpilogue` evaluates in its compact form).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch

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
