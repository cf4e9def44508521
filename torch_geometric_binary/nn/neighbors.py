r"""Sampling and neighbour search, straight from :mod:`torch_cluster`.

PyG 2.8 routes its own :obj:`fps`, :obj:`knn` and :obj:`radius` through
pyg-lib; we call torch-cluster, our declared dependency, in this one place.
Its kernels have no fake-tensor implementation, so they run eagerly under
:func:`torch.compile` (a graph break, as for any data-dependent graph
construction) instead of failing the trace.
"""
from typing import Optional

import torch
import torch_cluster
from torch import Tensor


@torch.compiler.disable
def fps(pos: Tensor, batch: Optional[Tensor] = None, ratio: float = 0.5,
        random_start: bool = True) -> Tensor:
    r"""Farthest point sampling of a :obj:`ratio` of each cloud's points;
    returns their indices."""
    return torch_cluster.fps(pos, batch, ratio=ratio,
                             random_start=random_start)


@torch.compiler.disable
def radius(x: Tensor, y: Tensor, r: float, batch_x: Optional[Tensor] = None,
           batch_y: Optional[Tensor] = None,
           max_num_neighbors: int = 32) -> Tensor:
    r"""For each point of :obj:`y`, the points of :obj:`x` within distance
    :obj:`r` (at most :obj:`max_num_neighbors`), as edges
    :obj:`[2, E]` from :obj:`x` (row 0) to :obj:`y` (row 1)."""
    row, col = torch_cluster.radius(x, y, r, batch_x, batch_y,
                                    max_num_neighbors=max_num_neighbors)
    return torch.stack([col, row], dim=0)


@torch.compiler.disable
def knn(x: Tensor, y: Tensor, k: int, batch_x: Optional[Tensor] = None,
        batch_y: Optional[Tensor] = None, num_workers: int = 1) -> Tensor:
    r"""For each point of :obj:`y`, its :obj:`k` nearest points of :obj:`x`
    (the point itself included when :obj:`x` is :obj:`y`), as edges
    :obj:`[2, E]` from :obj:`x` (row 0) to :obj:`y` (row 1)."""
    row, col = torch_cluster.knn(x, y, k, batch_x, batch_y,
                                 num_workers=num_workers)
    return torch.stack([col, row], dim=0)
