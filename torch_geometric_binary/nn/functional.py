r"""Binarizers and the EMA offset: the one place each of them is defined.

Conventions used throughout the package (training and packed inference):

* :math:`\mathrm{sign}(0) = +1`. A packed bit of ``1`` means :math:`+1` and a
  bit of ``0`` means :math:`-1`, so the sign of every real value has a bit.
* The straight-through estimator (STE) is *clipped*: the gradient of the sign
  passes unchanged where :math:`|x| \le 1` and is zero elsewhere.
"""
import math
from functools import lru_cache
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_geometric_binary import _ext


def _use_ext(x: Tensor) -> bool:
    return (_ext.enabled and _ext.fused is not None
            and x.device.type == 'cpu' and not torch.compiler.is_compiling())


def sign(x: Tensor) -> Tensor:
    r"""The forward sign of the package: :math:`+1` for :math:`x \ge 0`,
    :math:`-1` otherwise (no gradient)."""
    if _use_ext(x):  # One pass (ATen's form makes several).
        return _ext.fused.sign(x)
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class SignSTE(torch.autograd.Function):
    r"""Sign with the clipped straight-through estimator.

    .. math::
        \mathrm{forward}(x) = \mathrm{sign}(x), \qquad
        \frac{\partial \mathcal{L}}{\partial x} =
        \frac{\partial \mathcal{L}}{\partial \mathrm{sign}(x)}
        \cdot \mathbb{1}_{|x| \le 1}
    """
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        x, = ctx.saved_tensors
        if _use_ext(grad_out):
            return _ext.fused.ste_backward(grad_out, x)
        return grad_out.masked_fill(x.abs() > 1, 0.0)


class ApproxSign(torch.autograd.Function):
    r"""Sign with the piecewise-polynomial gradient of Bi-Real Net (`Liu et
    al., ECCV 2018 <https://arxiv.org/abs/1808.00278>`_):

    .. math::
        \frac{\partial \mathcal{L}}{\partial x} =
        \frac{\partial \mathcal{L}}{\partial \mathrm{sign}(x)}
        \cdot \max(0, 2 - 2|x|)
    """
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        x, = ctx.saved_tensors
        return grad_out * (2 - 2 * x.abs()).clamp_min(0).to(grad_out.dtype)


class EDESign(torch.autograd.Function):
    r"""Sign with the Error Decay Estimator of IR-Net (`Qin et al., CVPR
    2020 <https://arxiv.org/abs/1909.10788>`_),

    .. math::
        \frac{\partial \mathcal{L}}{\partial x} =
        \frac{\partial \mathcal{L}}{\partial \mathrm{sign}(x)}
        \cdot k t \left(1 - \tanh^2(t x)\right),

    the derivative of :math:`k \tanh(t x)`, which tends to the sign as
    :math:`t` grows over training (:func:`ede_schedule`)."""
    @staticmethod
    def forward(ctx, x: Tensor, t: float, k: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.tk = (t, k)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, = ctx.saved_tensors
        t, k = ctx.tk
        g = k * t * (1 - torch.tanh(t * x.float()).square())
        return grad_out * g.to(grad_out.dtype), None, None


ESTIMATORS = ('ste', 'approx', 'ede')


def ede_schedule(progress: float, t_min: float = 0.1,
                 t_max: float = 10.0) -> tuple:
    r"""IR-Net's :math:`(t, k)` at :obj:`progress` :math:`p \in [0, 1]` of
    training: :math:`t = t_{min} \cdot 10^{p \log_{10}(t_{max}/t_{min})}`,
    :math:`k = \max(1/t, 1)`."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"ede_schedule: progress must be in [0, 1] (got "
                         f"{progress})")
    t = t_min * 10 ** (progress * math.log10(t_max / t_min))
    return t, max(1.0 / t, 1.0)


def binarize(x: Tensor, estimator: str = 'ste',
             ede: Optional[tuple] = None) -> Tensor:
    r"""Binarizes :obj:`x` to :math:`\{-1, +1\}`. The forward is always
    :func:`sign`; :obj:`estimator` picks the gradient: :obj:`"ste"` (the
    clipped straight-through estimator, :class:`SignSTE`),
    :obj:`"approx"` (:class:`ApproxSign`) or :obj:`"ede"`
    (:class:`EDESign` with :obj:`ede = (t, k)`)."""
    if estimator == 'ste':
        return SignSTE.apply(x)
    if estimator == 'approx':
        return ApproxSign.apply(x)
    if estimator == 'ede':
        t, k = ede_schedule(0.0) if ede is None else ede
        return EDESign.apply(x, float(t), float(k))
    raise ValueError(f"Unknown estimator '{estimator}' (available: "
                     f"{', '.join(ESTIMATORS)})")


# Inputs the float32 C++ kernels of the elementwise steps take: a 16-bit
# float (autocast) is computed in float32 and rounded once to its dtype.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class ShiftedSign(torch.autograd.Function):
    r""":math:`\mathrm{sign}(\mathbf{x} - \boldsymbol{\theta})` with the
    clipped STE (:obj:`estimator` 0) or ApproxSign's gradient (1), in one
    pass each way (C++, float32; a 16-bit input computed in float32), the
    thresholds' gradient :math:`-\sum_{rows} \partial \mathcal{L} /
    \partial \mathbf{x}` included. The same results as :func:`binarize` of
    :math:`\mathbf{x} - \boldsymbol{\theta}` in float32, without the
    difference and the estimator's weights as tensors."""
    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor, estimator: int) -> Tensor:
        ctx.save_for_backward(x, theta)
        ctx.estimator = estimator
        return _ext.fused.shifted_sign(x.float(), theta).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, theta = ctx.saved_tensors
        grad_x, grad_theta = _ext.fused.shifted_sign_backward(
            grad_out.float(), x.float(), theta, ctx.estimator)
        return grad_x.to(x.dtype), grad_theta, None


_SHIFTED_ESTIMATORS = {'ste': 0, 'approx': 1}


def binarize_shifted(x: Tensor, theta: Tensor, estimator: str = 'ste',
                     ede: Optional[tuple] = None) -> Tensor:
    r""":func:`binarize` of :math:`\mathbf{x} - \boldsymbol{\theta}`, with
    one threshold per channel of the last dimension (ReActNet's RSign): one
    pass each way where the kernels apply (STE or ApproxSign; float32, or a
    16-bit input computed in float32 against float32 thresholds)."""
    if estimator in _SHIFTED_ESTIMATORS and x.dtype in KERNEL_DTYPES and \
            theta.dtype == torch.float32 and theta.dim() == 1 and \
            x.dim() >= 1 and theta.size(0) == x.size(-1) and _use_ext(x):
        return ShiftedSign.apply(x, theta, _SHIFTED_ESTIMATORS[estimator])
    return binarize(x - theta.to(x.dtype), estimator, ede)


def binarize_weight(weight: Tensor) -> Tensor:
    r"""Binarizes a weight matrix after centering it on its layer-wide mean,
    :math:`\mathrm{sign}(W - \bar{W})`, with the clipped STE."""
    return binarize(weight - weight.mean())


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    r"""The lower-precision dtype of :func:`torch.autocast` when it is on
    for :obj:`device_type` (:obj:`"cpu"`, :obj:`"cuda"`, ...), else
    :obj:`None`."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


# A 16-bit float holds every integer up to 256 (bf16: 8 significant bits),
# so a product of +-1 matrices over at most 256 input channels is exact in
# bf16 and fp16 whatever the accumulation precision of the kernel.
EXACT_SIGN_CHANNELS = 256


def packed_signs(x: Tensor, weight: Tensor) -> tuple:
    r"""The packed signs (rows of bits) of the :math:`\pm 1` operands of
    :math:`\mathbf{x} \mathbf{W}^{\top}`, for the XNOR-popcount kernels of
    packed inference, or :obj:`()` where those do not apply: not float32,
    or the kernels not built."""
    ops = _ext.xnor_ops()
    if ops is None or x.dtype != torch.float32 or \
            weight.dtype != torch.float32:
        return ()
    return ops.pack_bits(x.reshape(-1, x.size(-1))), ops.pack_bits(weight)


# Input channels from which :func:`sign_product` packs float32 signs.
PACKED_MIN_CHANNELS = 32


def sign_product(x: Tensor, weight: Tensor, signs: bool = False) -> Tensor:
    r""":math:`\mathbf{x} \mathbf{W}^{\top}` in the dtype of :obj:`x` and
    :obj:`weight`, exact for :math:`\pm 1` entries in 16-bit floats: the
    input channels are taken in chunks of at most 256, whose integer
    products a 16-bit float holds exactly, and the chunks are summed in
    float32 (then the result is float32). In float32 and float64 it is
    :func:`torch.nn.functional.linear`, except that with :obj:`signs`
    (both operands hold :math:`\pm 1` only) float32 products over at least
    :obj:`PACKED_MIN_CHANNELS` channels come from the packed signs by
    XNOR-popcount (the packed inference kernels; the same exact integers,
    a few times faster than a float32 product on CPUs without fast 16-bit
    products)."""
    k = x.size(-1)
    bits = packed_signs(x, weight) \
        if signs and k >= PACKED_MIN_CHANNELS and _use_ext(x) else ()
    if bits:
        rows = _ext.xnor_ops().xnor_gemm(*bits, k)
        return rows.to(x.dtype).view(*x.shape[:-1], weight.size(0))
    if x.element_size() > 2 or k <= EXACT_SIGN_CHANNELS:
        return F.linear(x, weight)
    out = None
    for start in range(0, k, EXACT_SIGN_CHANNELS):
        part = F.linear(x[..., start:start + EXACT_SIGN_CHANNELS],
                        weight[:, start:start + EXACT_SIGN_CHANNELS]).float()
        out = part if out is None else out.add_(part)
    return out


class ScaledLinear(torch.autograd.Function):
    r""":math:`(\mathbf{x} \mathbf{W}^{\top}) \cdot \alpha` for a scalar
    :math:`\alpha` or one :math:`\alpha_n` per output channel, with a
    backward pass that never touches the output:
    :math:`\partial \mathcal{L} / \partial \alpha = \sum (\mathbf{G}^{\top}
    \mathbf{x}) \odot \mathbf{W}`, where :math:`\mathbf{G}^{\top}
    \mathbf{x}` is the weight gradient's product anyway. Autograd's
    :obj:`out * scale` would spend two passes over the (large) activations
    on it. The forward multiplies the product by :math:`\alpha` last, so
    that binary products stay exact integers until one final rounding, as
    in packed inference.

    Under :func:`torch.autocast` the product runs in the autocast dtype
    (bf16 on CPUs, fp16/bf16 on GPUs) with the exact :func:`sign_product`;
    the scaled output is in that dtype, the bare product
    (:obj:`scale=None`) in float32 (exact integers), and gradients come
    back in the dtypes of the inputs."""
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, scale: Tensor,
                signs: bool = False) -> Tensor:
        dtype = autocast_dtype(x.device.type)
        ctx.dtypes = (x.dtype, weight.dtype)
        with torch.autocast(x.device.type, enabled=False):
            if dtype is not None:
                x, weight = x.to(dtype), weight.to(dtype)
            out = sign_product(x, weight, signs)
            if scale is not None:  # One rounding of the exact product.
                out = out.mul_(scale).to(x.dtype)
            elif dtype is not None:  # The bare product stays exact.
                out = out.float()
        ctx.save_for_backward(x, weight, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, scale = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        grad_x = grad_w = grad_scale = None
        g = grad_out.to(x.dtype)
        channel = scale is not None and scale.dim() == 1
        if ctx.needs_input_grad[0]:
            if channel:
                grad_x = (g * scale.to(g.dtype)) @ weight
            else:
                grad_x = g @ weight
                if scale is not None:
                    grad_x = grad_x.mul_(scale)
            grad_x = grad_x.to(x_dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gw = (g.reshape(-1, g.size(-1)).t() @
                  x.reshape(-1, x.size(-1))).to(w_dtype)
            if ctx.needs_input_grad[1]:
                grad_w = gw if scale is None else \
                    gw * (scale.unsqueeze(1) if channel else scale)
            if ctx.needs_input_grad[2]:
                per_row = (gw * weight.to(gw.dtype)).sum(dim=1)
                grad_scale = (per_row if channel else per_row.sum()).to(
                    scale.dtype).reshape(scale.shape)
        return grad_x, grad_w, grad_scale, None


def scaled_linear(x: Tensor, weight: Tensor,
                  scale: Optional[Tensor] = None,
                  signs: bool = False) -> Tensor:
    r""":math:`(\mathbf{x} \mathbf{W}^{\top}) \cdot \alpha` with a cheap
    backward pass (:class:`ScaledLinear`); :obj:`scale` is a 0-dim
    tensor, one per output channel, or :obj:`None` for the bare product.
    :obj:`signs` says that :obj:`x` and :obj:`weight` hold :math:`\pm 1`
    only (see :func:`sign_product`)."""
    return ScaledLinear.apply(x, weight, scale, signs)


def ema_delta(n: Union[int, Tensor]) -> Union[float, Tensor]:
    r"""The offset of Entropy-Maximizing Aggregation for groups of size
    :math:`n`,

    .. math::
        \delta(n) = \Phi^{-1}\left(2^{-1/n}\right),

    so that for :math:`n` i.i.d. :math:`\mathcal{N}(0, 1)` features
    :math:`P(\max_i x_i - \delta(n) \ge 0) = 1/2`.

    It is evaluated as :math:`-\Phi^{-1}(1 - 2^{-1/n})` with
    :math:`1 - 2^{-1/n} = -\mathrm{expm1}(-\ln 2 / n)`, which keeps full
    precision for any group size (the naive form loses digits for large
    :math:`n`). :math:`\delta(1) = 0`.

    Args:
        n (int or torch.Tensor): Group size(s), each :math:`\ge 1`.

    Returns:
        :obj:`float` for an integer :obj:`n`, otherwise a tensor of the
        same shape in :obj:`torch.get_default_dtype()`.
    """
    if isinstance(n, Tensor):
        return _ema_delta64(n).to(torch.get_default_dtype())
    return _ema_delta_scalar(int(n))


def _ema_delta64(n: Tensor) -> Tensor:
    tail = -torch.expm1(-math.log(2.0) / n.to(torch.float64))
    return -torch.special.ndtri(tail)


@lru_cache(maxsize=4096)
def _ema_delta_scalar(n: int) -> float:
    if n < 1:
        raise ValueError(f"EMA needs a group size of at least 1 (got {n})")
    return _ema_delta64(torch.tensor(n)).item()
