import math
from typing import Optional

import torch
from torch import Tensor

from torch_geometric_binary.utils.recording import recorded


@recorded  # One step of a recorded forward: its reads need no guards.
def check_points(pos: Tensor, name: str = 'pos',
                 batch: Optional[Tensor] = None, where: str = ''):
    r"""Raises a :class:`ValueError` naming the problem for point
    coordinates that are not a finite :obj:`[N, D]` matrix, or whose
    :obj:`batch` vector has another length. Skipped under
    :func:`torch.compile` (the checks would break the graph)."""
    if torch.compiler.is_compiling():
        return
    prefix = f"{where}: " if where else ''
    if pos.dim() != 2:
        raise ValueError(f"{prefix}'{name}' must be a [num_points, dims] "
                         f"matrix (got shape {tuple(pos.shape)})")
    if pos.size(0) == 0:
        raise ValueError(f"{prefix}'{name}' holds no points")
    if not pos.is_floating_point():
        raise ValueError(f"{prefix}'{name}' must hold floating-point "
                         f"coordinates (got {pos.dtype}); convert it with "
                         f"'.float()'")
    # A sum is finite if every value is (one pass, no mask); a non-finite
    # sum of finite values (an overflow) is checked value by value.
    if not math.isfinite(pos.detach().sum().item()) and \
            not bool(torch.isfinite(pos).all()):
        bad = (~torch.isfinite(pos)).any(dim=-1).nonzero().view(-1)
        raise ValueError(f"{prefix}'{name}' has {bad.numel()} point(s) with "
                         f"NaN or Inf coordinates (first at row "
                         f"{int(bad[0])})")
    if batch is not None and batch.numel() != pos.size(0):
        raise ValueError(f"{prefix}'batch' has {batch.numel()} entries but "
                         f"'{name}' has {pos.size(0)} points")
