r"""Bit-packed XNOR-popcount kernels for binary layers.

A row of :math:`K` binary values :math:`s_k \in \{-1, +1\}` is stored in
:math:`W = \lceil K / 64 \rceil` :obj:`int64` words: bit :math:`k \bmod 64`
of word :math:`\lfloor k / 64 \rfloor` is :math:`1` for :math:`+1` and
:math:`0` for :math:`-1`; the padding bits of the last word are :math:`0`.
For two packed rows :math:`\mathbf{a}, \mathbf{w}`,

.. math::
    \mathbf{s}_a \cdot \mathbf{s}_w = K - 2\,\mathrm{popcount}(\mathbf{a}
    \oplus \mathbf{w}),

as the padding bits XOR to :math:`0`.

Two interchangeable backends compute bit-identical results:

* :obj:`"cpp"`: the C++ extension :mod:`torch_geometric_binary.deploy._xnor`
  (:obj:`torch.ops.torch_geometric_binary.*`; OpenMP; AVX-512 VPOPCNTDQ,
  AVX2 or scalar POPCNT kernels picked at run time), for CPU tensors.
* :obj:`"torch"`: pure PyTorch (any device), used when the extension is not
  built, for non-CPU tensors, or when the environment variable
  :obj:`TORCH_GEOMETRIC_BINARY_KERNELS=torch` is set.
"""
import os
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from torch_geometric_binary.utils.bits import num_words  # noqa: F401
from torch_geometric_binary.utils.bits import pack_bool as _pack_bool
from torch_geometric_binary.utils.bits import unpack_bool as _unpack_bool

ENV_BACKEND = 'TORCH_GEOMETRIC_BINARY_KERNELS'

try:  # Registers torch.ops.torch_geometric_binary.*.
    from torch_geometric_binary.deploy import _xnor  # noqa: F401
    _EXT_ERROR: Optional[str] = None
except ImportError as e:  # Not built: the torch backend takes over.
    _EXT_ERROR = str(e)


def cpp_available() -> bool:
    r"""Whether the C++ extension is built and loaded."""
    return _EXT_ERROR is None


def backend() -> str:
    r"""The default backend: :obj:`"cpp"` if the extension is loaded and not
    overridden by :obj:`TORCH_GEOMETRIC_BINARY_KERNELS=torch`, otherwise
    :obj:`"torch"`."""
    choice = os.environ.get(ENV_BACKEND, 'auto').strip().lower() or 'auto'
    if choice not in ('auto', 'cpp', 'torch'):
        raise ValueError(f"{ENV_BACKEND} must be 'auto', 'cpp' or 'torch' "
                         f"(got '{choice}')")
    if choice == 'torch' or (choice == 'auto' and not cpp_available()):
        return 'torch'
    return 'cpp'


def isa() -> Optional[str]:
    r"""The instruction set the C++ kernels run on (:obj:`"avx512_vpopcntdq"`,
    :obj:`"avx2"`, :obj:`"popcnt"` or :obj:`"generic"`), :obj:`None` without
    the extension."""
    return torch.ops.torch_geometric_binary.xnor_isa() if cpp_available() \
        else None


def supported_isas() -> List[str]:
    r"""The instruction sets of the C++ kernels this CPU can run."""
    if not cpp_available():
        return []
    return list(torch.ops.torch_geometric_binary.xnor_supported_isas())


def set_isa(name: str) -> str:
    r"""Forces the C++ kernels onto one instruction set (:obj:`"auto"`
    restores the fastest); returns the previous one. For tests and
    benchmarks."""
    _require_cpp()
    return torch.ops.torch_geometric_binary.xnor_set_isa(name)


def _require_cpp():
    if not cpp_available():
        raise RuntimeError(f"The torch_geometric_binary C++ extension is not "
                           f"available ({_EXT_ERROR}); reinstall with "
                           f"'pip install --no-build-isolation -e .'")


def _use_cpp(name: Optional[str], *tensors: Tensor) -> bool:
    name = backend() if name is None else name
    if name not in ('cpp', 'torch'):
        raise ValueError(f"Unknown kernel backend '{name}' (use 'cpp' or "
                         f"'torch')")
    if name == 'torch':
        return False
    _require_cpp()
    # The C++ kernels are CPU-only; other devices take the torch path.
    return all(t.device.type == 'cpu' for t in tensors)


# --------------------------------------------------------------------------
# The torch backend.

def _rows_per_chunk(K: int, N: int) -> int:
    # Bounds the unpacked temporaries to a few million elements.
    return max(1, (1 << 22) // max(K, N, 1))


def _xnor_gemm_torch(a: Tensor, w: Tensor, K: int) -> Tensor:
    # The +-1 products summed in float32 are exact: every partial sum is an
    # integer of magnitude <= K < 2^24.
    dtype = torch.float32 if K < 2**24 else torch.float64
    wf = _unpack_bool(w, K).to(dtype) * 2 - 1
    out = torch.empty(a.size(0), w.size(0), dtype=torch.int32,
                      device=a.device)
    step = _rows_per_chunk(K, w.size(0))
    for i in range(0, a.size(0), step):
        af = _unpack_bool(a[i:i + step], K).to(dtype) * 2 - 1
        out[i:i + step] = (af @ wf.t()).to(torch.int32)
    return out


def _xnor_gemm_threshold_torch(a: Tensor, w: Tensor, K: int,
                               threshold: Tensor, flip: Tensor) -> Tensor:
    N = w.size(0)
    out = torch.empty(a.size(0), num_words(N), dtype=torch.int64,
                      device=a.device)
    threshold = threshold.to(torch.int64)
    step = _rows_per_chunk(K, N)
    for i in range(0, a.size(0), step):
        dot = _xnor_gemm_torch(a[i:i + step], w, K)
        out[i:i + step] = _pack_bool((dot >= threshold) ^ flip)
    return out


# --------------------------------------------------------------------------
# The public operators.

def _check_packed(t: Tensor, name: str, K: int) -> Tensor:
    if t.dtype != torch.int64 or t.dim() < 1:
        raise TypeError(f"Expected '{name}' to be an int64 tensor of packed "
                        f"bits (got {t.dtype} of shape {tuple(t.shape)})")
    if t.size(-1) != num_words(K):
        raise ValueError(f"'{name}' has {t.size(-1)} words per row, but "
                         f"K={K} channels need {num_words(K)}")
    return t.reshape(-1, t.size(-1))


def cat_bits(parts: Sequence[Tuple[Tensor, int]]) -> Tensor:
    r"""Concatenates packed rows along the channels: :obj:`parts` are
    :obj:`(bits [M, ceil(K_i / 64)], K_i)`. Word-aligned parts (every
    :math:`K_i` but the last a multiple of 64) are joined word by word."""
    if all(K % 64 == 0 for _, K in parts[:-1]):
        return torch.cat([b for b, _ in parts], dim=-1)
    bools = [_unpack_bool(b, K) for b, K in parts]
    return _pack_bool(torch.cat(bools, dim=-1))


def pack_bits(x: Tensor, backend: Optional[str] = None) -> Tensor:
    r"""Packs the signs of :obj:`x`: bit :math:`k` of a row is set iff
    :math:`x_k \ge 0` (so :math:`\mathrm{sign}(0) = +1`, :obj:`NaN` gives
    :math:`-1`).

    Args:
        x (torch.Tensor): Floating-point values of shape :math:`(*, K)`.
        backend (str, optional): :obj:`"cpp"` or :obj:`"torch"`; defaults to
            :func:`backend()`.

    Returns:
        :obj:`int64` tensor of shape :math:`(*, \lceil K / 64 \rceil)`.
    """
    if not x.is_floating_point() or x.dim() < 1:
        raise TypeError(f"pack_bits expects a floating-point tensor of shape "
                        f"(*, K) (got {x.dtype} of shape {tuple(x.shape)})")
    lead, K = x.shape[:-1], x.size(-1)
    x2 = x.reshape(-1, K)
    if _use_cpp(backend, x):
        out = torch.ops.torch_geometric_binary.pack_bits(x2)
    else:
        out = _pack_bool(x2 >= 0)
    return out.view(*lead, num_words(K))


def edge_diff_bits(x: Tensor, src: Tensor, k: int,
                   theta: Optional[Tensor] = None,
                   backend: Optional[str] = None) -> Tensor:
    r"""The packed signs of EdgeConv's differences :math:`\mathbf{x}_j -
    \mathbf{x}_i - \boldsymbol{\theta}` on a graph with :obj:`k` sources
    :obj:`src` per point, listed point by point (edge :math:`e` targets
    point :math:`\lfloor e / k \rfloor`), without forming the float
    messages: equal to :obj:`pack_bits((x[src].view(N, k, C) - x[:, None])
    .view(-1, C) - theta)`, with the same float operations.

    Returns:
        :obj:`int64` tensor of shape :math:`(N k, \lceil C / 64 \rceil)`.
    """
    N, C = x.shape
    if src.dim() != 1 or src.numel() != N * k:
        raise ValueError(f"edge_diff_bits: 'src' must list k = {k} sources "
                         f"per point of 'x' ({N} points; got "
                         f"{list(src.shape)})")
    if (x.dtype == torch.float32 and (theta is None or theta.dtype ==
                                      torch.float32)
            and _use_cpp(backend, x, src)):
        return torch.ops.torch_geometric_binary.edge_diff_bits(
            x, src, int(k), theta)
    diff = (x[src].view(N, k, C) - x.unsqueeze(1)).view(-1, C)
    if theta is not None:
        diff = diff - theta.to(diff.dtype)
    return pack_bits(diff, backend)


def unpack_bits(bits: Tensor, K: int,
                dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The inverse of :func:`pack_bits`: :math:`\pm 1` values of shape
    :math:`(*, K)` from packed words of shape :math:`(*, \lceil K / 64
    \rceil)`."""
    b2 = _check_packed(bits, 'bits', K)
    out = _unpack_bool(b2, K).to(dtype) * 2 - 1
    return out.view(*bits.shape[:-1], K)


def xnor_gemm(a: Tensor, w: Tensor, K: int,
              backend: Optional[str] = None) -> Tensor:
    r"""The binary matrix product of packed rows,

    .. math::
        \mathbf{D}_{m,n} = \mathbf{s}_{a,m} \cdot \mathbf{s}_{w,n}
        = K - 2\,\mathrm{popcount}(\mathbf{a}_m \oplus \mathbf{w}_n),

    equal to :obj:`unpack_bits(a, K) @ unpack_bits(w, K).T`.

    Args:
        a (torch.Tensor): Packed inputs of shape :math:`(*, W)`.
        w (torch.Tensor): Packed weights of shape :math:`(N, W)`.
        K (int): The number of channels, :math:`W = \lceil K / 64 \rceil`.
        backend (str, optional): :obj:`"cpp"` or :obj:`"torch"`.

    Returns:
        :obj:`int32` tensor of shape :math:`(*, N)`.
    """
    a2 = _check_packed(a, 'a', K)
    if w.dim() != 2:
        raise ValueError(f"Expected 'w' of shape (N, W) (got "
                         f"{tuple(w.shape)})")
    w = _check_packed(w, 'w', K)
    if _use_cpp(backend, a, w):
        out = torch.ops.torch_geometric_binary.xnor_gemm(a2, w, K)
    else:
        out = _xnor_gemm_torch(a2, w, K)
    return out.view(*a.shape[:-1], w.size(0))


def xnor_gemm_threshold(a: Tensor, w: Tensor, K: int, threshold: Tensor,
                        flip: Tensor, backend: Optional[str] = None) -> Tensor:
    r"""The fused binary matrix product and binarization, writing packed
    output bits,

    .. math::
        \mathrm{bit}_{m,n} = \left[\mathbf{D}_{m,n} \ge t_n\right]
        \oplus f_n,

    with :math:`\mathbf{D}` as in :func:`xnor_gemm`. A threshold of
    :math:`-2^{31}` (or any :math:`t_n \le -K`) makes channel :math:`n`
    constant :math:`1 \oplus f_n`, and :math:`2^{31} - 1` (or any
    :math:`t_n > K`) constant :math:`f_n`. Padding bits are :math:`0`.

    Args:
        a (torch.Tensor): Packed inputs of shape :math:`(*, W)`.
        w (torch.Tensor): Packed weights of shape :math:`(N, W)`.
        K (int): The number of input channels.
        threshold (torch.Tensor): Integer thresholds of shape :math:`(N,)`.
        flip (torch.Tensor): Booleans of shape :math:`(N,)`.
        backend (str, optional): :obj:`"cpp"` or :obj:`"torch"`.

    Returns:
        :obj:`int64` tensor of shape :math:`(*, \lceil N / 64 \rceil)`.
    """
    a2 = _check_packed(a, 'a', K)
    if w.dim() != 2:
        raise ValueError(f"Expected 'w' of shape (N, W) (got "
                         f"{tuple(w.shape)})")
    w = _check_packed(w, 'w', K)
    N = w.size(0)
    if threshold.shape != (N, ) or threshold.is_floating_point():
        raise ValueError(f"Expected an integer 'threshold' of shape ({N},) "
                         f"(got {threshold.dtype} of shape "
                         f"{tuple(threshold.shape)})")
    if flip.shape != (N, ) or flip.is_floating_point():
        raise ValueError(f"Expected a boolean 'flip' of shape ({N},) (got "
                         f"{flip.dtype} of shape {tuple(flip.shape)})")
    flip = flip.to(torch.bool)
    if _use_cpp(backend, a, w, threshold, flip):
        out = torch.ops.torch_geometric_binary.xnor_gemm_threshold(
            a2, w, K, threshold, flip)
    else:
        out = _xnor_gemm_threshold_torch(a2, w, K, threshold, flip)
    return out.view(*a.shape[:-1], num_words(N))
