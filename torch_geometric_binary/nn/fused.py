r"""A linear layer, its BatchNorm and a max over groups, without storing the
layer's output.

The wide per-point layer of a point-cloud classifier (128 to 1024 channels)
is followed by a BatchNorm and a max over each cloud (EMA or plain); an edge
convolution's last layer by a BatchNorm and a max over each neighbourhood.
Stored, that output (:math:`16\,\mathrm{M}` values for 32 clouds of 512
points) is read and written many times by BatchNorm, the max and their
backward passes, and these memory-bound passes dominate a CPU training step.
None of them is needed, for :math:`\mathbf{y} = \alpha \, \mathbf{h}
\mathbf{W}^{\top}` over the rows :math:`\mathbf{h}_i` of the input:

* BatchNorm's batch statistics follow from the mean and the :math:`K \times
  K` covariance of the input: :math:`\mu = \alpha \mathbf{W}
  \bar{\mathbf{h}}`, :math:`\sigma^2 = \alpha^2 \mathrm{diag}(\mathbf{W}
  \mathrm{Cov}(\mathbf{h}) \mathbf{W}^{\top})`; autograd differentiates
  these small products;
* BatchNorm is then :math:`y \mapsto a y + b` per channel, so the max of
  its output over a group is :math:`|a| \max_i (\mathrm{sign}(a) \, y_i) +
  b`: a max of a product, computed tile by tile (:class:`GroupMaxProduct`);
* the max's gradient reaches only the maximal rows (shared evenly among
  ties, as :class:`~torch_geometric_binary.nn.aggr.DenseMax` and PyG's
  max do), so the backward pass recomputes the product tile by tile
  instead of keeping it.

The result equals BatchNorm followed by the max (up to rounding), with
the same running statistics. Under :func:`torch.autocast` the products run
in the autocast dtype (bf16 products of :math:`\pm 1` matrices are exact,
:func:`~torch_geometric_binary.nn.functional.sign_product`); the statistics
stay in float32.
"""
import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor

from torch_geometric_binary.nn.functional import (EXACT_SIGN_CHANNELS,
                                                  autocast_dtype,
                                                  sign_product)
from torch_geometric_binary import _ext
from torch_geometric_binary.nn import functional

# Elements of one tile of the product: about 4 MB in float32, so that the
# tile stays in cache between the product and its reductions.
TILE_ELEMENTS = 2**20


def fused_enabled() -> bool:
    r"""Whether the fused paths are on (:func:`use_fused`)."""
    return _ext.enabled and not torch.compiler.is_compiling()


@contextlib.contextmanager
def use_fused(enabled: bool) -> Iterator[None]:
    r"""Turns the fused paths of :class:`~torch_geometric_binary.nn.BiMLP`
    (:meth:`~torch_geometric_binary.nn.BiMLP.max_pool`,
    :meth:`~torch_geometric_binary.nn.BiMLP.group_max`) and
    :class:`~torch_geometric_binary.nn.BiEdgeConv` and the C++ sign
    kernels on or off inside the block; off runs every layer, BatchNorm
    and max separately with ATen's operators (the reference that tests and
    benchmarks compare with)."""
    previous, _ext.enabled = _ext.enabled, enabled
    try:
        yield
    finally:
        _ext.enabled = previous


def _tiles(groups: int, group_size: int, channels: int):
    step = max(1, TILE_ELEMENTS // max(1, group_size * channels))
    return [(start, min(start + step, groups))
            for start in range(0, groups, step)]


class GroupMaxProduct(torch.autograd.Function):
    r"""The max over each group of rows of a product,

    .. math::
        \mathbf{M}_{g} = \max_{i \in g} \, (\mathbf{h}_i
        \mathbf{W}^{\top}),

    for :obj:`h` of shape :obj:`[R, K]`, :obj:`weight` :obj:`[C, K]` and
    groups of consecutive rows given by the CSR offsets :obj:`ptr`
    (:obj:`[G + 1]`, no empty group), returning :obj:`[G, C]` in float32.
    With :obj:`signs` (both operands hold :math:`\pm 1` only, as a binary
    layer's), the C++ forward forms the product from their packed signs.
    Neither pass keeps the :obj:`[R, C]` product. The C++ kernel
    (:obj:`torch_geometric_binary._fused`) reduces it tile by tile and lists
    the rows equal to each max; the backward pass sends each max's gradient
    to those rows, split evenly among ties, with :math:`O(K)` work per
    row. Without the extension (groups of equal size :obj:`group_size`
    only), the backward pass recomputes the product tile by tile."""
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, ptr: Tensor,
                group_size: Optional[int], signs: bool = False) -> Tensor:
        dtype = autocast_dtype(h.device.type)
        ctx.dtypes = (h.dtype, weight.dtype)
        with torch.autocast(h.device.type, enabled=False):
            if dtype is not None:
                h, weight = h.to(dtype), weight.to(dtype)
            C = weight.size(0)
            if ext_available(h):
                bits = functional.packed_signs(h, weight) if signs else ()
                out, rows, cols, groups, count = \
                    _ext.fused.group_max_forward(h, weight, ptr,
                                                 max(1, TILE_ELEMENTS // C),
                                                 *bits)
                ctx.save_for_backward(h, weight, rows, cols, groups, count,
                                      ptr)
                return out
            if group_size is None:
                raise RuntimeError("GroupMaxProduct: groups of different "
                                   "sizes need the C++ extension")
            h = h.view(-1, group_size, h.size(-1))
            G = h.size(0)
            out = torch.empty(G, C, dtype=torch.float32, device=h.device)
            for a, b in _tiles(G, group_size, C):
                out[a:b] = sign_product(h[a:b], weight).amax(1)
        ctx.save_for_backward(h, weight, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        h_dtype, w_dtype = ctx.dtypes
        if len(ctx.saved_tensors) == 7:
            h, weight, rows, cols, groups, count, ptr = ctx.saved_tensors
            grad_h, grad_w = _ext.fused.group_max_backward(
                rows, cols, groups, count, grad_out, h, weight, ptr,
                ctx.needs_input_grad[0])
            if grad_h is not None:
                grad_h = grad_h.to(h_dtype)
            return grad_h, grad_w.to(w_dtype), None, None, None
        grad_h, grad_w = _recomputed_backward(ctx, grad_out)
        if grad_h is not None:
            grad_h = grad_h.view(-1, grad_h.size(-1))
        return grad_h, grad_w, None, None, None


# Input channels below which :func:`narrow_linear` forms the weight gradient
# in the transposed order.
NARROW_CHANNELS = 16


class NarrowLinear(torch.autograd.Function):
    r""":math:`\mathbf{x} \mathbf{W}^{\top} + \mathbf{b}` for inputs with
    few channels (a first layer reading coordinates or edge vectors), whose
    weight gradient is formed as :math:`(\mathbf{x}^{\top}
    \mathbf{G})^{\top}`: the same sum as ATen's :math:`\mathbf{G}^{\top}
    \mathbf{x}`, which its CPU matrix product runs at under 1 GMAC/s for
    hundreds of thousands of rows and fewer than 16 columns (15x slower at
    6 columns on an AVX2 CPU)."""
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor,
                bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        rows = grad_out.reshape(-1, grad_out.size(-1))
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_w = (x.reshape(-1, x.size(-1)).t() @ rows).t() \
            if ctx.needs_input_grad[1] else None
        grad_b = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] \
            else None
        return grad_x, grad_w, grad_b


def narrow_linear(x: Tensor, weight: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    r""":func:`torch.nn.functional.linear`, through :class:`NarrowLinear`
    where it applies: fewer than :obj:`NARROW_CHANNELS` input channels,
    float32 on the CPU outside autocast, fused paths on."""
    if (x.size(-1) < NARROW_CHANNELS and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.device.type == 'cpu'
            and fused_enabled() and torch.is_grad_enabled()
            and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling()):
        return NarrowLinear.apply(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def ext_available(x: Tensor) -> bool:
    r"""Whether the C++ kernels serve :obj:`x` (built, on the CPU, fused
    paths on)."""
    return (_ext.fused is not None and x.device.type == 'cpu'
            and fused_enabled())


def _recomputed_backward(ctx, grad_out: Tensor):
    h, weight, out = ctx.saved_tensors
    h_dtype, w_dtype = ctx.dtypes
    G, n, K = h.shape
    grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
    grad_out = grad_out.float()
    for a, b in _tiles(G, n, weight.size(0)):
        prod = sign_product(h[a:b], weight)
        is_max = prod == out[a:b].to(prod.dtype).unsqueeze(1)
        # A recomputed product equals the forward's (same kernel, same
        # shapes); clamp anyway so that a mismatch cannot divide by 0.
        count = is_max.sum(1).clamp_(min=1)
        share = (grad_out[a:b] / count).to(h.dtype).unsqueeze(1)
        grad_prod = is_max.to(h.dtype).mul_(share)
        if grad_h is not None:
            grad_h[a:b] = grad_prod @ weight
        grad_w += (grad_prod.reshape(-1, grad_prod.size(-1)).t() @
                   h[a:b].reshape(-1, K)).float()
    if grad_h is not None:
        grad_h = grad_h.to(h_dtype)
    return grad_h, grad_w.to(w_dtype)


class MeanCovariance(torch.autograd.Function):
    r"""The mean :math:`\bar{\mathbf{h}}` and the (biased) covariance
    :math:`\frac{1}{N} \sum_i \mathbf{h}_i \mathbf{h}_i^{\top} -
    \bar{\mathbf{h}} \bar{\mathbf{h}}^{\top}` of the rows of :obj:`h`, in
    float32 (float64 for float64 input), with a backward pass of one matrix
    product, :math:`\partial \mathcal{L} / \partial \mathbf{h}_i =
    \frac{1}{N} \big((\mathbf{G} + \mathbf{G}^{\top})(\mathbf{h}_i -
    \bar{\mathbf{h}}) + \mathbf{g}\big)`.

    A 16-bit :obj:`h` (autocast) stays 16-bit: the Gram matrix is summed
    over chunks of 256 rows, whose products a 16-bit float holds exactly
    for :math:`\pm 1` rows, in float32; the backward product runs in
    :obj:`h`'s dtype."""
    @staticmethod
    def forward(ctx, h: Tensor):
        n, k = h.shape
        acc = torch.promote_types(h.dtype, torch.float32)
        mean = h.sum(0, dtype=acc) / n
        if h.element_size() > 2:
            gram = h.t().to(acc) @ h.to(acc)
        else:
            rows = n - n % EXACT_SIGN_CHANNELS
            chunks = h[:rows].view(-1, EXACT_SIGN_CHANNELS, k)
            gram = torch.bmm(chunks.transpose(1, 2), chunks).sum(
                0, dtype=acc)
            if rows < n:
                tail = h[rows:]
                gram += (tail.t() @ tail).to(acc)
        cov = gram / n - torch.outer(mean, mean)
        ctx.save_for_backward(h, mean)
        return mean, cov

    @staticmethod
    def backward(ctx, grad_mean: Tensor, grad_cov: Tensor):
        h, mean = ctx.saved_tensors
        n = h.size(0)
        sym = (grad_cov + grad_cov.t()) / n
        shift = grad_mean / n - mean @ sym  # The same for every row.
        return (h @ sym.to(h.dtype)).add_(shift.to(h.dtype))


def batch_norm_module(norm: torch.nn.Module) -> Optional[torch.nn.Module]:
    r"""The :class:`torch.nn.BatchNorm1d` behind :obj:`norm` (PyG's
    :class:`~torch_geometric.nn.norm.BatchNorm` wraps one), or :obj:`None`
    for any other normalization."""
    module = getattr(norm, 'module', norm)
    if type(module) is torch.nn.BatchNorm1d:
        return module
    return None


def linear_norm_group_max(h: Tensor, weight: Tensor, scale: Optional[Tensor],
                          norm: torch.nn.BatchNorm1d, ptr: Tensor,
                          group_size: Optional[int] = None,
                          signs: bool = False) -> Tensor:
    r"""The max over each group of consecutive rows (CSR offsets
    :obj:`ptr`, no empty group) of :obj:`norm(scale * h @ weight.T)`, of
    shape :obj:`[G, C]`, without storing the product (see the module's
    description). In training mode it updates :obj:`norm`'s running
    statistics as :obj:`norm` itself would.

    Args:
        h (torch.Tensor): The layer's input :obj:`[N, K]`, already binarized
            for a binary layer.
        weight (torch.Tensor): The layer's (binarized) weight :obj:`[C, K]`.
        scale (torch.Tensor, optional): The scale of the product, 0-dim or
            one per output channel (:meth:`BiLinear.output_scale`).
        norm (torch.nn.BatchNorm1d): The normalization over :obj:`C`.
        ptr (torch.Tensor): The groups' offsets :obj:`[G + 1]`.
        group_size (int, optional): The size of every group, where they
            are equal (the pure PyTorch path needs it).
        signs (bool, optional): Whether :obj:`h` and :obj:`weight` hold
            :math:`\pm 1` only (a binary layer without an activation
            scale), so that the product can be formed from packed signs.
            (default: :obj:`False`)
    """
    N, K = h.shape
    batch_stats = norm.training or not norm.track_running_stats
    lowp = autocast_dtype(h.device.type)
    with torch.autocast(h.device.type, enabled=False):
        if batch_stats:
            # Float32 statistics of the input: cheap (K is small) and exact
            # enough to match BatchNorm's own.
            dtype = torch.promote_types(h.dtype, torch.float32)
            w = weight.to(dtype)
            mean_h, cov = MeanCovariance.apply(
                h if lowp is None else h.to(lowp))
            mean = w @ mean_h
            var = ((w @ cov) * w).sum(1).clamp_min(0)
            if scale is not None:
                mean = mean * scale
                var = var * scale**2
            if norm.training and norm.track_running_stats:
                _update_running_stats(norm, mean.detach(), var.detach(), N)
        else:
            mean, var = norm.running_mean, norm.running_var
        a = torch.rsqrt(var + norm.eps)
        if norm.weight is not None:
            a = a * norm.weight
        b = -a * mean
        if norm.bias is not None:
            b = b + norm.bias
        if scale is not None:
            a = a * scale  # Now the coefficient of the bare product.
        sign = torch.where(a >= 0, 1.0, -1.0).detach().to(weight.dtype)
    top = GroupMaxProduct.apply(h, weight * sign.unsqueeze(1), ptr,
                                group_size, signs)
    out = a.abs() * top + b
    # Under autocast, the dtype a linear layer and BatchNorm would give.
    return out if lowp is None else out.to(lowp)


@torch.no_grad()
def _update_running_stats(norm: torch.nn.BatchNorm1d, mean: Tensor,
                          var: Tensor, n: int):
    r"""The running-statistics update of :class:`torch.nn.BatchNorm1d` in
    training mode (unbiased variance; cumulative average without a
    momentum)."""
    norm.num_batches_tracked.add_(1)
    if norm.momentum is None:
        factor = 1.0 / float(norm.num_batches_tracked)
    else:
        factor = norm.momentum
    unbiased = var * (n / max(n - 1, 1))
    norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
    norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), factor)
