from typing import Optional, Union

import torch
from torch import Tensor

from torch_geometric_binary.nn.conv import BiDynamicEdgeConv
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.models.common import (activation,
                                                     batch_or_zeros,
                                                     global_pool,
                                                     max_aggregation)
from torch_geometric_binary.utils import check_points


class DGCNN(torch.nn.Module):
    r"""The DGCNN classifier from the `"Dynamic Graph CNN for Learning on
    Point Clouds" <https://arxiv.org/abs/1801.07829>`_ paper, as in PyG's
    :obj:`examples/dgcnn_classification.py`: two dynamic edge convolutions
    on the :math:`k`-NN graph (:math:`k = 20`; MLPs 6-64-64-64 and
    128-128), a linear layer to a 1024-d point feature over both, a max over
    each cloud and the head 1024-512-256-:obj:`num_classes`. Full precision
    or binary from the same code: for a binary :obj:`method` every linear
    layer is binary except the first and the last, and every max (per
    neighbourhood and per cloud) is an EMA max with the size of its own
    group when the method has EMA.

    Args:
        num_classes (int): Number of classes.
        method (str or BinaryMethod, optional): :obj:`"fp"` or a binary
            method. (default: :obj:`"fp"`)
        k (int, optional): Number of neighbours. (default: :obj:`20`)
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
        k: int = 20,
        in_channels: int = 0,
        dropout: float = 0.5,
        ema: Optional[bool] = None,
        lsr: Optional[bool] = None,
    ):
        super().__init__()
        self.method = method = resolve_method(method, ema=ema, lsr=lsr)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.k = k

        c = 3 + in_channels
        self.conv1 = BiDynamicEdgeConv(
            BiMLP([2 * c, 64, 64, 64], method, first_fp=True, norm_last=True),
            k, aggr=max_aggregation(method))
        self.conv2 = BiDynamicEdgeConv(
            BiMLP([2 * 64, 128], method, norm_last=True), k,
            aggr=max_aggregation(method))
        self.lin1 = BiMLP([128 + 64, 1024], method, norm_last=True)
        self.pool = global_pool(method)
        self.act = activation(method)
        self.head = BiMLP([1024, 512, 256, num_classes], method,
                          last_fp=True, dropout=[dropout, dropout, 0.0])

    def reset_parameters(self):
        for module in [self.conv1, self.conv2, self.lin1, self.head]:
            module.reset_parameters()

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                x: Optional[Tensor] = None) -> Tensor:
        check_points(pos, 'pos', batch, where=self.__class__.__name__)
        batch = batch_or_zeros(pos, batch)
        size = int(batch.max()) + 1
        h = pos if x is None else torch.cat([pos, x], dim=-1)
        x1 = self.act(self.conv1(h, batch))
        x2 = self.act(self.conv2(x1, batch))
        out = self.lin1(torch.cat([x1, x2], dim=1))
        out = self.act(self.pool(out, batch, size))
        return self.head(out)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'method={self.method.name}, k={self.k}, '
                f'ema={self.method.ema}, lsr={self.method.lsr})')
