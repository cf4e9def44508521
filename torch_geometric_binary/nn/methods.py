r"""Binarization methods, selectable by name.

A method is a small immutable object that the binary layers and models take:
how activations and weights are binarized, and two switches, EMA (shift the
max aggregations by :math:`\delta(n)`) and LSR (a learnable scale on each
binary layer). Layers never copy this logic; a new method (XNOR, Bi-Real,
IR-Net, ...) is a subclass that overrides :meth:`binarize_input` and/or
:meth:`binarize_weight`, registered with :func:`register_method`.
"""
import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Union

from torch import Tensor

from torch_geometric_binary.nn import functional as F


@dataclass(frozen=True)
class BinaryMethod:
    r"""A binarization method.

    Args:
        name (str): The registry name.
        binary (bool): :obj:`False` for full precision (the :obj:`"fp"`
            method): layers are plain linear layers.
        ema (bool): Entropy-Maximizing Aggregation on every max.
        lsr (bool): Layer-wise Scale Recovery on every binary layer.
    """
    name: str
    binary: bool = True
    ema: bool = False
    lsr: bool = False

    def binarize_input(self, x: Tensor) -> Tensor:
        return F.binarize(x)

    def binarize_weight(self, weight: Tensor) -> Tensor:
        return F.binarize_weight(weight)

    def replace(self, **changes) -> 'BinaryMethod':
        r"""A copy with some switches changed, *e.g.*
        :obj:`method.replace(ema=False)`."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class BNN(BinaryMethod):
    r"""Plain sign/STE binarization (Hubara et al., 2016): no weight
    centering, no EMA, no LSR. The baseline BiPointNet fixes."""
    def binarize_weight(self, weight: Tensor) -> Tensor:
        return F.binarize(weight)


METHODS: Dict[str, BinaryMethod] = {}


def register_method(method: BinaryMethod) -> BinaryMethod:
    r"""Registers :obj:`method` under :obj:`method.name`."""
    if method.name in METHODS:
        raise ValueError(f"A method named '{method.name}' is already "
                         f"registered")
    METHODS[method.name] = method
    return method


def method_names() -> List[str]:
    return sorted(METHODS)


SWITCHES = ('ema', 'lsr')


def resolve_method(method: Union[str, BinaryMethod, None],
                   **switches) -> BinaryMethod:
    r"""Returns the method registered as :obj:`method` (or :obj:`method`
    itself), with :obj:`switches` (:obj:`ema=...`, :obj:`lsr=...`) applied.
    :obj:`None` means :obj:`"fp"`. A name may add switches with :obj:`+`:
    :obj:`"bnn+ema"`, :obj:`"bnn+ema+lsr"` (the ablation of BiPointNet's
    two fixes on plain binarization)."""
    if method is None:
        method = 'fp'
    if isinstance(method, str):
        base, *extra = method.lower().split('+')
        if base not in METHODS:
            raise ValueError(f"Unknown binarization method '{method}' "
                             f"(available: {', '.join(method_names())}, "
                             f"with '+ema' and/or '+lsr')")
        for switch in extra:
            if switch not in SWITCHES:
                raise ValueError(f"Unknown switch '+{switch}' in '{method}' "
                                 f"(available: +ema, +lsr)")
            if not METHODS[base].binary:
                raise ValueError(f"'{method}': full precision has no "
                                 f"'+{switch}'")
            if switches.get(switch) is None:  # An explicit value wins.
                switches[switch] = True
        method = METHODS[base]
        if extra:
            method = method.replace(name=method.name + ''.join(
                f'+{s}' for s in sorted(set(extra))))
    if not isinstance(method, BinaryMethod):
        raise TypeError(f"Expected a method name or a BinaryMethod "
                        f"(got {type(method).__name__})")
    switches = {k: v for k, v in switches.items() if v is not None}
    return method.replace(**switches) if switches else method


FP = register_method(BinaryMethod('fp', binary=False))
BIPOINTNET = register_method(BinaryMethod('bipointnet', ema=True, lsr=True))
register_method(BNN('bnn'))
