r"""The bit layout of packed binary rows, shared by the packed kernels
(:mod:`torch_geometric_binary.deploy.kernels`) and the graph construction
on binary codes
(:func:`torch_geometric_binary.nn.neighbors.knn_hamming_edges`).

A row of :math:`K` binary values is stored in :math:`W = \lceil K / 64
\rceil` :obj:`int64` words: bit :math:`k \bmod 64` of word :math:`\lfloor k /
64 \rfloor` is :math:`1` for :math:`+1` (:obj:`True`) and :math:`0` for
:math:`-1`; the padding bits of the last word are :math:`0`.
"""
import sys

import torch
from torch import Tensor


def num_words(channels: int) -> int:
    r"""The number of :obj:`int64` words holding :obj:`channels` bits."""
    return (channels + 63) // 64


def pack_bool(b: Tensor) -> Tensor:
    r"""Packs a :obj:`[M, K]` boolean tensor into :obj:`[M, W]` words."""
    M, K = b.shape
    W = num_words(K)
    b = torch.nn.functional.pad(b.to(torch.uint8), (0, 64 * W - K))
    if sys.byteorder == 'little':  # Build bytes, then view them as words.
        shifts = torch.arange(8, dtype=torch.uint8, device=b.device)
        by = (b.view(M, 8 * W, 8) << shifts).sum(-1, dtype=torch.uint8)
        return by.view(torch.int64)
    shifts = torch.arange(64, dtype=torch.int64, device=b.device)
    # Distinct powers of two: the sum is the bitwise OR (bit 63 wraps).
    return (b.view(M, W, 64).to(torch.int64) << shifts).sum(-1)


def unpack_bool(bits: Tensor, K: int) -> Tensor:
    r"""The inverse of :func:`pack_bool`: :obj:`[M, K]` booleans from
    :obj:`[M, W]` words."""
    M, W = bits.shape
    if sys.byteorder == 'little':
        shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
        by = bits.contiguous().view(torch.uint8)
        b = (by.unsqueeze(-1) >> shifts) & 1
    else:
        shifts = torch.arange(64, dtype=torch.int64, device=bits.device)
        b = (bits.unsqueeze(-1) >> shifts) & 1
    return b.reshape(M, 64 * W)[:, :K].bool()
