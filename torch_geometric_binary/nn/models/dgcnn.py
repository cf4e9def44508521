from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from torch_geometric_binary.nn.conv import BiDynamicEdgeConv
from torch_geometric_binary.nn.methods import BinaryMethod
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.models.common import (PointCloudClassifier,
                                                     graph_repr_args,
                                                     max_aggregation,
                                                     place_activation,
                                                     place_activations)


class DGCNN(PointCloudClassifier):
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
        graph_metric (str, optional): How the second convolution builds its
            graph on the first one's features: :obj:`"euclidean"` (DGCNN's)
            or, for a binary method, :obj:`"hamming"` on the signs its
            binary first layer takes (see
            :class:`~torch_geometric_binary.nn.BiDynamicEdgeConv`).
            (default: :obj:`"euclidean"`)
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
        graph_metric: str = 'euclidean',
    ):
        super().__init__(num_classes, method, in_channels, (dropout, dropout),
                         ema, lsr)
        method = self.method
        self.k = k

        c = 3 + in_channels
        self.conv1 = BiDynamicEdgeConv(
            BiMLP([2 * c, 64, 64, 64], method, first_fp=True, norm_last=True),
            k, aggr=max_aggregation(method))
        self.conv2 = BiDynamicEdgeConv(
            BiMLP([2 * 64, 128], method, norm_last=True), k,
            aggr=max_aggregation(method), metric=graph_metric)
        self.lin1 = BiMLP([128 + 64, 1024], method, norm_last=True)
        # The convolutions' activations, where they have parameters.
        self.place_acts = place_activations(method, (64, 128))

    POINT_MLP = 'lin1'

    def point_inputs(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                     size: int) -> Tuple[Tensor, Tensor]:
        h = pos if x is None else torch.cat([pos, x], dim=-1)
        x1 = place_activation(self, 0)(self.conv1(h, batch))
        x2 = place_activation(self, 1)(self.conv2(x1, batch))
        return torch.cat([x1, x2], dim=1), batch

    def extra_repr_args(self) -> str:
        return graph_repr_args(self.k, self.conv2)
