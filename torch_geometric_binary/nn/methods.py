r"""Binarization methods, selectable by name.

A method is a small immutable object that the binary layers and models take.
It *declares* what a binary layer computes, and the layers, the fused
training paths and :func:`~torch_geometric_binary.deploy.pack` all read the
same declaration:

.. math::
    \mathbf{y} = \beta(\mathbf{x}) \cdot \boldsymbol{\gamma} \odot \Big(
    \mathrm{sign}(\mathbf{x} - \boldsymbol{\theta}) \,
    \mathrm{sign}\big(c(\mathbf{W})\big)^{\top} \Big) \cdot \alpha
    + \mathbf{b}

* :obj:`weight_center` :math:`c`: :obj:`"none"`, :obj:`"layer"` (minus the
  layer-wide mean, BiPointNet) or :obj:`"standardize"` (per output channel
  to zero mean and unit variance, IR-Net's balanced weights);
* :obj:`weight_scale` :math:`\boldsymbol{\gamma}` per output channel:
  :obj:`None`, :obj:`"mean_abs"` (:math:`\lVert \mathbf{W}_n \rVert_1 / K`,
  XNOR-Net, Bi-Real), :obj:`"learned"` (XNOR-Net++) or :obj:`"pow2"`
  (:math:`2^{\mathrm{round}(\log_2 \lVert c(\mathbf{W})_n \rVert_1 / K)}`,
  IR-Net);
* :obj:`input_scale` :math:`\beta`: :obj:`None` or :obj:`"mean_abs"`
  (XNOR-Net's per-row :math:`\lVert \mathbf{x} \rVert_1 / K`);
* :obj:`input_threshold`: a learned threshold
  :math:`\boldsymbol{\theta}` per input channel (ReActNet's RSign);
* :obj:`estimator`: the sign's gradient, :obj:`"ste"`, :obj:`"approx"`
  (Bi-Real) or :obj:`"ede"` (IR-Net, with its schedule advanced by
  :func:`advance_schedule`);
* :obj:`activation` between layers: :obj:`None` for the models' default
  (:obj:`Hardtanh` for binary methods, :obj:`ReLU` in full precision) or
  :obj:`"rprelu"` (ReActNet's
  :class:`~torch_geometric_binary.nn.RPReLU`, one module with its own
  parameters per place and channel count);
* and the two switches of BiPointNet: :obj:`ema` (shift the max
  aggregations by :math:`\delta(n)`) and :obj:`lsr` (the learnable layer
  scale :math:`\alpha`).

:meth:`BinaryMethod.pack_problem` says whether packed inference can
reproduce a method exactly, and if not, why.
"""
import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor

from torch_geometric_binary.nn import functional as F

WEIGHT_CENTERS = ('none', 'layer', 'standardize')
WEIGHT_SCALES = (None, 'mean_abs', 'learned', 'pow2')
INPUT_SCALES = (None, 'mean_abs')
ACTIVATIONS = (None, 'rprelu')


@dataclass(frozen=True)
class BinaryMethod:
    r"""A binarization method (see the module's description for the
    fields).

    Args:
        name (str): The registry name.
        binary (bool): :obj:`False` for full precision (the :obj:`"fp"`
            method): layers are plain linear layers.
        ema (bool): Entropy-Maximizing Aggregation on every max.
        lsr (bool): Layer-wise Scale Recovery on every binary layer.
        weight_center (str): How weights are centered before the sign.
        weight_scale (str, optional): The per-output-channel weight scale.
        input_scale (str, optional): The per-row activation scale.
        input_threshold (bool): A learned threshold per input channel.
        estimator (str): The sign's gradient.
        activation (str, optional): The activation between layers;
            :obj:`None` for the models' default.
    """
    name: str
    binary: bool = True
    ema: bool = False
    lsr: bool = False
    weight_center: str = 'layer'
    weight_scale: Optional[str] = None
    input_scale: Optional[str] = None
    input_threshold: bool = False
    estimator: str = 'ste'
    activation: Optional[str] = None

    def __post_init__(self):
        for field, value, allowed in (
                ('weight_center', self.weight_center, WEIGHT_CENTERS),
                ('weight_scale', self.weight_scale, WEIGHT_SCALES),
                ('input_scale', self.input_scale, INPUT_SCALES),
                ('estimator', self.estimator, F.ESTIMATORS),
                ('activation', self.activation, ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"Method '{self.name}': unknown "
                                 f"{field} {value!r} (available: "
                                 f"{', '.join(map(str, allowed))})")

    # The layer's parameters and state that the method owns.
    def init_layer(self, layer: torch.nn.Module):
        r"""Adds the method's parameters to a binary :obj:`layer` with
        :obj:`weight` :obj:`[out, in]`: :obj:`weight_gain` (learned weight
        scale), :obj:`input_threshold`, and the estimator's schedule."""
        out_channels, in_channels = layer.weight.shape
        layer.weight_gain = torch.nn.Parameter(torch.ones(out_channels)) \
            if self.weight_scale == 'learned' else None
        layer.input_threshold = torch.nn.Parameter(torch.zeros(in_channels)) \
            if self.input_threshold else None
        layer.register_buffer(
            'ede_progress', torch.zeros(()) if self.estimator == 'ede'
            else None)

    @torch.no_grad()
    def reset_layer(self, layer: torch.nn.Module):
        if layer.weight_gain is not None:  # XNOR-Net++ starts at mean|W|.
            layer.weight_gain.copy_(self._centered(layer.weight).abs()
                                    .mean(dim=1))
        if layer.input_threshold is not None:
            layer.input_threshold.zero_()
        if layer.ede_progress is not None:
            layer.ede_progress.zero_()

    # The forward (training and inference) of the binarizers.
    def _ede(self, layer: Optional[torch.nn.Module]) -> Optional[tuple]:
        if self.estimator == 'ede' and layer is not None:
            return F.ede_schedule(float(layer.ede_progress))
        return None

    def _sign(self, x: Tensor, layer: Optional[torch.nn.Module]) -> Tensor:
        return F.binarize(x, self.estimator, self._ede(layer))

    def _centered(self, weight: Tensor) -> Tensor:
        if self.weight_center == 'layer':
            return weight - weight.mean()
        if self.weight_center == 'standardize':
            centered = weight - weight.mean(dim=1, keepdim=True)
            return centered / centered.std(dim=1, keepdim=True).clamp_min(
                1e-12)
        return weight

    def binarize_input(self, x: Tensor,
                       layer: Optional[torch.nn.Module] = None) -> Tensor:
        r""":math:`\mathrm{sign}(\mathbf{x} - \boldsymbol{\theta})` with the
        method's estimator."""
        if self.input_threshold and layer is not None:
            return F.binarize_shifted(x, layer.input_threshold,
                                      self.estimator, self._ede(layer))
        return self._sign(x, layer)

    def binarize_weight(self, weight: Tensor,
                        layer: Optional[torch.nn.Module] = None) -> Tensor:
        r""":math:`\mathrm{sign}(c(\mathbf{W}))` with the method's
        estimator."""
        return self._sign(self._centered(weight), layer)

    def channel_scale(self, layer: torch.nn.Module) -> Optional[Tensor]:
        r"""The weight scale :math:`\boldsymbol{\gamma}` of :obj:`layer`,
        shape :obj:`[out_channels]`, or :obj:`None`."""
        if self.weight_scale is None:
            return None
        if self.weight_scale == 'learned':
            return layer.weight_gain
        magnitude = self._centered(layer.weight).abs().mean(dim=1)
        if self.weight_scale == 'pow2':  # A shift in hardware: no gradient.
            return magnitude.detach().clamp_min(1e-30).log2().round().exp2()
        return magnitude

    def row_scale(self, x: Tensor) -> Optional[Tensor]:
        r"""The activation scale :math:`\beta(\mathbf{x})`, shape
        :obj:`[*, 1]`, or :obj:`None`."""
        if self.input_scale is None:
            return None
        return x.abs().mean(dim=-1, keepdim=True)

    def advance(self, layer: torch.nn.Module, progress: float):
        r"""Sets the estimator's schedule of :obj:`layer` to
        :obj:`progress` :math:`\in [0, 1]` of training."""
        if layer.ede_progress is not None:
            if not 0.0 <= progress <= 1.0:
                raise ValueError(f"progress must be in [0, 1] (got "
                                 f"{progress})")
            layer.ede_progress.fill_(progress)

    def pack_problem(self) -> Optional[str]:
        r"""Why packed inference cannot reproduce this method exactly, or
        :obj:`None` if it can: the signs, the learned input thresholds, the
        per-channel scales, the layer scale and the activations (RPReLU
        with a positive slope; :func:`~torch_geometric_binary.deploy.pack`
        names a channel with another) fold into the packed thresholds and
        epilogues."""
        if not self.binary:
            return "it is full precision; only binary models can be packed"
        for hook in ('binarize_input', 'binarize_weight', 'channel_scale',
                     'row_scale'):
            if getattr(type(self), hook) is not getattr(BinaryMethod, hook):
                return (f"{type(self).__name__} overrides '{hook}', so pack "
                        f"cannot tell what it computes at inference")
        if self.input_scale is not None:
            return ("its activation scale (mean |x| of each row, XNOR-Net's "
                    "K) depends on the magnitude of every input, which the "
                    "packed bits do not keep")
        return None

    def replace(self, **changes) -> 'BinaryMethod':
        r"""A copy with some switches changed, *e.g.*
        :obj:`method.replace(ema=False)`."""
        return dataclasses.replace(self, **changes)


def advance_schedule(model: torch.nn.Module, epoch: int,
                     epochs: int) -> int:
    r"""Advances the estimators' schedules (IR-Net's EDE) of every binary
    layer in :obj:`model` to the start of :obj:`epoch` (1-based) of
    :obj:`epochs`; the training loop calls it once per epoch. Returns the
    number of layers with a schedule."""
    if epochs < 1 or not 1 <= epoch <= epochs:
        raise ValueError(f"advance_schedule: epoch {epoch} of {epochs}")
    progress = (epoch - 1) / max(epochs - 1, 1)
    count = 0
    for module in model.modules():
        method = getattr(module, 'method', None)
        if isinstance(method, BinaryMethod) and \
                getattr(module, 'ede_progress', None) is not None:
            method.advance(module, progress)
            count += 1
    return count


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


def _split_switches(name: str):
    r"""``"xnor++ema+lsr"`` -> ``("xnor++", ["ema", "lsr"])``: the longest
    registered name the string starts with (names may contain ``+``)."""
    for base in sorted(METHODS, key=len, reverse=True):
        if name == base:
            return base, []
        if name.startswith(base + '+'):
            return base, name[len(base) + 1:].split('+')
    base, *extra = name.split('+')
    return base, extra


def resolve_method(method: Union[str, BinaryMethod, None],
                   **switches) -> BinaryMethod:
    r"""Returns the method registered as :obj:`method` (or :obj:`method`
    itself), with :obj:`switches` (:obj:`ema=...`, :obj:`lsr=...`) applied.
    :obj:`None` means :obj:`"fp"`. A name may add switches with :obj:`+`:
    :obj:`"bnn+ema"`, :obj:`"xnor+ema+lsr"` (the ablation of BiPointNet's
    two fixes on any binarization)."""
    if method is None:
        method = 'fp'
    if isinstance(method, str):
        base, extra = _split_switches(method.lower())
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
# BiPointNet (Qin et al., ICLR 2021): EMA and LSR.
BIPOINTNET = register_method(BinaryMethod('bipointnet', ema=True, lsr=True))
# BNN (Hubara et al., NeurIPS 2016): plain sign, the baseline BiPointNet
# fixes.
register_method(BinaryMethod('bnn', weight_center='none'))
# XNOR-Net (Rastegari et al., ECCV 2016): weight scale mean|W_n| and the
# activation scale mean|x|.
register_method(BinaryMethod('xnor', weight_center='none',
                             weight_scale='mean_abs', input_scale='mean_abs'))
# XNOR-Net++ (Bulat and Tzimiropoulos, BMVC 2019): a learned scale per
# output channel.
register_method(BinaryMethod('xnor++', weight_center='none',
                             weight_scale='learned'))
# Bi-Real Net (Liu et al., ECCV 2018): ApproxSign and magnitude-aware
# weights.
register_method(BinaryMethod('bireal', weight_center='none',
                             weight_scale='mean_abs', estimator='approx'))
# IR-Net (Qin et al., CVPR 2020): balanced, standardized weights, a
# power-of-two scale, and EDE.
register_method(BinaryMethod('irnet', weight_center='standardize',
                             weight_scale='pow2', estimator='ede'))
# ReActNet (Liu et al., ECCV 2020): RSign (learned thresholds) and RPReLU
# on Bi-Real's binarizers.
register_method(BinaryMethod('react', weight_center='none',
                             weight_scale='mean_abs', input_threshold=True,
                             estimator='approx', activation='rprelu'))
