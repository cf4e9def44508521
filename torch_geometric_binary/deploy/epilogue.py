r"""A compact, exactly verified form of a binary layer's float tail.

:class:`~torch_geometric_binary.deploy.BinaryEpilogue` stores the scale, the
bias and the four batch-normalization tensors of a binary layer, and
evaluates them with the trained modules' own operations. Where the layer's
float output is needed at inference (before a max pooling, or before a
full-precision layer), :class:`AffineEpilogue` holds the same function in
two per-channel tensors,

.. math::
    y_n = \mathrm{act}\big(\mathrm{fma}(\alpha_{\mathrm{LSR}} D_n
    \,[+\, b_n],\; a_n,\; c_n)\big),

with one rounding for the fused multiply-add. Batch normalization in
inference mode is evaluated by PyTorch's CPU kernel in this form, so
:meth:`AffineEpilogue.from_epilogue` finds :math:`a, c` and *verifies* on
every reachable dot product :math:`D_n \in \{-K, -K+2, \dots, K\}` that the
result equals the trained modules' output exactly; otherwise it returns
:obj:`None` and the full :class:`BinaryEpilogue` is kept.

:func:`fma32` evaluates the fused multiply-add of float32 tensors exactly
(round to odd in float64), on any device and without FMA hardware, so that
tables computed from an :class:`AffineEpilogue` do not depend on the
machine.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_geometric_binary.deploy.activations import act_bounds
from torch_geometric_binary.deploy.fold import (BinaryEpilogue, on_dots,
                                                scale_then_bias)
from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    register_packed)

INF = float('inf')


def fma32(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    r"""The correctly rounded float32 :math:`x a + b` (a single rounding),
    computed exactly: the float64 product of float32 values is exact, the
    float64 sum is rounded to odd (its error term found by TwoSum), and the
    final rounding to float32 is then correct (53 >= 24 + 2 bits)."""
    x, a, b = x.double(), a.double(), b.double()
    p = x * a  # Exact: 24 + 24 significant bits.
    s = p + b
    bb = s - p
    err = (p - (s - bb)) + (b - bb)  # TwoSum: p + b = s + err exactly.
    even = (s.view(torch.int64) & 1) == 0
    toward = torch.where(err > 0, INF, -INF).to(s)
    s = torch.where((err != 0) & even & torch.isfinite(s),
                    torch.nextafter(s, toward), s)
    return s.float()


@register_packed
class AffineEpilogue(torch.nn.Module):
    r"""The float tail of a binary layer as a per-channel fused
    multiply-add and a clamp,

    .. math::
        \mathbf{y} = \mathrm{clamp}\big(\mathrm{fma}(\alpha\mathbf{D}
        \,[+\,\mathbf{b}], \mathbf{a}, \mathbf{c}), lo, hi\big).

    Build it with :meth:`from_epilogue`, which verifies it against the
    trained layer on all reachable dot products. :obj:`dtype` (float32 by
    default) is the storage type of :math:`\mathbf{a}, \mathbf{c}`; the
    computation is in float32 (float16 storage is approximate).

    Args:
        channels (int): Output channels :math:`N`.
        alpha (torch.Tensor): :math:`\mathbf{a}`, shape :obj:`[N]`.
        beta (torch.Tensor): :math:`\mathbf{c}`, shape :obj:`[N]`.
        scale (torch.Tensor, optional): The scale :math:`\alpha` of the
            product: the LSR scale (0-dim), or one per channel (the LSR
            scale times a method's weight scale).
        bias (torch.Tensor, optional): The layer bias :math:`\mathbf{b}`.
        lo (float, optional): Lower clamp. (default: :obj:`-inf`)
        hi (float, optional): Upper clamp. (default: :obj:`inf`)
    """
    def __init__(self, channels: int, alpha: Tensor, beta: Tensor,
                 scale: Optional[Tensor] = None,
                 bias: Optional[Tensor] = None, lo: float = -INF,
                 hi: float = INF):
        super().__init__()
        self.channels = channels
        self.lo = float(lo)
        self.hi = float(hi)
        for name, t in (('alpha', alpha), ('beta', beta)):
            if t.shape != (channels, ) or not t.is_floating_point():
                raise ValueError(f"AffineEpilogue: '{name}' must be a float "
                                 f"tensor of shape ({channels},)")
        self.register_buffer('alpha', alpha)
        self.register_buffer('beta', beta)
        if scale is not None and scale.shape not in ((), (channels, )):
            raise ValueError(f"AffineEpilogue: 'scale' must be 0-dim or of "
                             f"shape ({channels},) (got "
                             f"{tuple(scale.shape)})")
        self.register_buffer('scale', None if scale is None else
                             scale.detach().float())
        self.register_buffer('bias', None if bias is None else
                             bias.detach().float())

    @property
    def dtype(self) -> torch.dtype:
        return self.alpha.dtype

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'channels': self.channels, 'lo': self.lo, 'hi': self.hi},
                {k: add(getattr(self, k), 'epilogues')
                 for k in ('alpha', 'beta', 'scale', 'bias')}, {})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'AffineEpilogue':
        return cls(attrs['channels'], tensors['alpha'], tensors['beta'],
                   tensors['scale'], tensors['bias'], attrs['lo'],
                   attrs['hi'])

    @classmethod
    @torch.no_grad()
    def from_epilogue(cls, epilogue: BinaryEpilogue, K: int,
                      dtype: torch.dtype = torch.float32
                      ) -> Optional['AffineEpilogue']:
        r"""The compact form of :obj:`epilogue` for :math:`K` input
        channels, or :obj:`None` if no candidate reproduces it exactly on
        all :math:`K + 1` reachable dot products (or its activation is not a
        clamp, or it is not float32)."""
        bounds = act_bounds(epilogue.act)
        if bounds is None or epilogue.dtype != torch.float32:
            return None
        N = epilogue.channels
        expected = on_dots(epilogue, K, N)
        for alpha, beta in _candidates(epilogue, N):
            out = cls(N, alpha, beta, epilogue.scale, epilogue.bias, *bounds)
            if torch.equal(on_dots(out, K, N), expected):
                return out.to_dtype(dtype)
        return None

    def to_dtype(self, dtype: torch.dtype) -> 'AffineEpilogue':
        r"""A copy storing :math:`\mathbf{a}, \mathbf{c}` in :obj:`dtype`."""
        return AffineEpilogue(self.channels, self.alpha.to(dtype),
                              self.beta.to(dtype), self.scale, self.bias,
                              self.lo, self.hi)

    @property
    def channel_scale(self) -> bool:
        return self.scale is not None and self.scale.dim() == 1

    def pre_affine(self, dot: Tensor) -> Tensor:
        # With a scale per channel the kernel adds a (zero) bias row.
        return scale_then_bias(dot.to(torch.float32), self.scale, self.bias,
                               zero_bias=self.channel_scale)

    def forward(self, dot: Tensor) -> Tensor:
        out = fma32(self.pre_affine(dot), self.alpha.float(),
                    self.beta.float())
        if self.lo != -INF or self.hi != INF:
            out = out.clamp(self.lo, self.hi)
        return out

    def kernel_args(self) -> Tuple[Tensor, float, float, float]:
        r"""The arguments of the fused C++ epilogue: :obj:`([bias,] alpha,
        beta)` stacked as float32, or :obj:`(scale, bias, alpha, beta)`
        with a scale per channel (a zero bias where the layer has none),
        then the scalar scale, lo, hi."""
        rows = [self.alpha.float(), self.beta.float()]
        if self.bias is not None or self.channel_scale:
            rows.insert(0, torch.zeros_like(rows[0]) if self.bias is None
                        else self.bias.float())
        if self.channel_scale:
            rows.insert(0, self.scale.float())
            scale = 1.0
        else:
            scale = 1.0 if self.scale is None else float(self.scale)
        return torch.stack(rows).contiguous(), scale, self.lo, self.hi

    def extra_repr(self) -> str:
        return (f'{self.channels}, scale={self.scale is not None}, '
                f'bias={self.bias is not None}, clamp=({self.lo}, '
                f'{self.hi}), dtype={str(self.dtype).split(".")[-1]}')


def _candidates(ep: BinaryEpilogue, N: int):
    r"""Per-channel :math:`(a, c)` in the orders of operations PyTorch's
    inference batch normalization uses."""
    if ep.running_mean is None:  # No normalization: y = fma(x, 1, 0) = x.
        yield torch.ones(N), torch.zeros(N)
        return
    var, mean = ep.running_var.float(), ep.running_mean.float()
    w = ep.norm_weight.float() if ep.norm_weight is not None \
        else torch.ones(N)
    b = ep.norm_bias.float() if ep.norm_bias is not None else torch.zeros(N)
    for invstd in (torch.rsqrt(var + ep.eps), 1 / torch.sqrt(var + ep.eps)):
        alpha = invstd * w
        yield alpha, fma32(-mean, alpha, b)
        yield alpha, b - mean * alpha


def batch_norm_is_fma() -> bool:
    r"""Whether this PyTorch evaluates inference batch normalization as
    :class:`AffineEpilogue` does (diagnostics; packing verifies each
    layer)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 37, generator=g) * 3
    m, v = torch.randn(37, generator=g), torch.rand(37, generator=g) + .1
    w, b = torch.randn(37, generator=g), torch.randn(37, generator=g)
    ref = F.batch_norm(x, m, v, w, b, False, 0.0, 1e-5)
    alpha = torch.rsqrt(v + 1e-5) * w
    return torch.equal(fma32(x, alpha, fma32(-m, alpha, b)), ref)
