from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from torch_geometric_binary.nn.conv import BiPointConv
from torch_geometric_binary.nn.methods import BinaryMethod
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.models.common import (PointCloudClassifier,
                                                     activation,
                                                     max_aggregation)
from torch_geometric_binary.nn.neighbors import fps, radius_edges


class SetAbstraction(torch.nn.Module):
    r"""A PointNet++ set abstraction level: farthest point sampling of a
    :obj:`ratio` of the points, radius grouping (at most
    :obj:`max_num_neighbors` within :obj:`r`) and a
    :class:`~torch_geometric_binary.nn.BiPointConv` over each group.
    Sampling starts from a random point in training and from the first
    point in evaluation, so that evaluation is deterministic."""
    def __init__(self, ratio: float, r: float, nn: torch.nn.Module,
                 method: BinaryMethod, max_num_neighbors: int = 64):
        super().__init__()
        self.ratio = ratio
        self.r = r
        self.max_num_neighbors = max_num_neighbors
        self.conv = BiPointConv(nn, activation(method, nn.out_channels),
                                add_self_loops=False,
                                aggr=max_aggregation(method))

    def forward(self, x: Optional[Tensor], pos: Tensor,
                batch: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        idx = fps(pos, batch, self.ratio, random_start=self.training)
        edge_index = radius_edges(pos, pos[idx], self.r, batch, batch[idx],
                                  self.max_num_neighbors)
        x_dst = None if x is None else x[idx]
        x = self.conv((x, x_dst), (pos, pos[idx]), edge_index)
        return x, pos[idx], batch[idx]

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(ratio={self.ratio}, r={self.r}, '
                f'conv={self.conv})')


class PointNet2(PointCloudClassifier):
    r"""The PointNet++ (single-scale grouping) classifier from the
    `"PointNet++: Deep Hierarchical Feature Learning on Point Sets in a
    Metric Space" <https://arxiv.org/abs/1706.02413>`_ paper, as in PyG's
    :obj:`examples/pointnet2_classification.py`: set abstractions
    (ratio 0.5, radius 0.2, MLP 3-64-64-128) and (0.25, 0.4, 131-128-128-256),
    a global set abstraction (259-256-512-1024, max over the cloud) and the
    head 1024-512-256-:obj:`num_classes`. Full precision or binary from the
    same code: for a binary :obj:`method` every linear layer is binary except
    the first (it reads coordinate offsets) and the last, and every max
    (local and global) is an EMA max with the size of its own group when the
    method has EMA. Each level normalizes its features before the max and
    applies the activation after it.

    Args:
        num_classes (int): Number of classes.
        method (str or BinaryMethod, optional): :obj:`"fp"` or a binary
            method. (default: :obj:`"fp"`)
        in_channels (int, optional): Point features besides the
            coordinates. (default: :obj:`0`)
        dropout (float, optional): Dropout in the head. (default: :obj:`0.5`)
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
    """
    def __init__(
        self,
        num_classes: int,
        method: Union[str, BinaryMethod] = 'fp',
        in_channels: int = 0,
        dropout: float = 0.5,
        ema: Optional[bool] = None,
        lsr: Optional[bool] = None,
    ):
        super().__init__(num_classes, method, in_channels, (dropout, dropout),
                         ema, lsr)
        method = self.method
        self.sa1 = SetAbstraction(
            0.5, 0.2,
            BiMLP([in_channels + 3, 64, 64, 128], method, first_fp=True,
                  norm_last=True), method)
        self.sa2 = SetAbstraction(
            0.25, 0.4, BiMLP([128 + 3, 128, 128, 256], method,
                             norm_last=True), method)
        self.global_mlp = BiMLP([256 + 3, 256, 512, 1024], method,
                                norm_last=True)

    POINT_MLP = 'global_mlp'

    def point_inputs(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                     size: int) -> Tuple[Tensor, Tensor]:
        x, pos, batch = self.sa1(x, pos, batch)
        x, pos, batch = self.sa2(x, pos, batch)
        return torch.cat([x, pos], dim=1), batch
