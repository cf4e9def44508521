r"""Part and semantic segmentation networks: PointNet, PointNet++ and DGCNN
with per-point outputs, full precision or binary (BiPointNet) from the same
code as the classifiers.

The binary versions follow the paper's rules: the first layer (it reads
coordinates) and the last per-point classifier layer stay full precision;
every max is an EMA max with the size of its own group when the method has
EMA (neighbourhoods in the convolutions, and the cloud for the global
feature concatenated back to every point); for part segmentation the
one-hot object category joins the global feature, as in PointNet's
part-segmentation network.
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from torch_geometric_binary.nn.conv import BiDynamicEdgeConv
from torch_geometric_binary.nn.methods import BinaryMethod
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.models.common import (PointCloudSegmenter,
                                                     global_pool,
                                                     graph_repr_args,
                                                     max_aggregation,
                                                     place_activation,
                                                     place_activations)
from torch_geometric_binary.nn.models.pointnet import PointNetLayers
from torch_geometric_binary.nn.models.pointnet2 import SetAbstraction
from torch_geometric_binary.nn.neighbors import knn_edges


def knn_interpolate(x: Tensor, pos_x: Tensor, pos_y: Tensor,
                    batch_x: Optional[Tensor] = None,
                    batch_y: Optional[Tensor] = None, k: int = 3) -> Tensor:
    r"""The features :obj:`x` of the points :obj:`pos_x` interpolated at the
    points :obj:`pos_y`: the mean of the :obj:`k` nearest points' features
    (in the same cloud) weighted by their inverse squared distances, as
    :func:`torch_geometric.nn.knn_interpolate` (PyG's needs pyg-lib for its
    :obj:`knn`; this one searches with
    :func:`~torch_geometric_binary.nn.neighbors.knn_edges`)."""
    with torch.no_grad():
        src, dst = knn_edges(pos_x.float(), pos_y.float(), k, batch_x,
                             batch_y)
        diff = pos_x[src].float() - pos_y[dst].float()
        weight = 1.0 / (diff * diff).sum(-1, keepdim=True).clamp(min=1e-16)
    num = scatter(x[src] * weight.to(x.dtype), dst, 0, pos_y.size(0),
                  reduce='sum')
    den = scatter(weight, dst, 0, pos_y.size(0), reduce='sum')
    return num / den.clamp(min=1e-16).to(num.dtype)


class FeaturePropagation(torch.nn.Module):
    r"""A PointNet++ feature propagation level: the features of the coarser
    points interpolated at the finer ones (:func:`knn_interpolate`,
    :obj:`k` nearest), concatenated with the finer points' own (skip)
    features, and an MLP (binary for binary methods)."""
    def __init__(self, k: int, nn: torch.nn.Module):
        super().__init__()
        self.k = k
        self.nn = nn

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor,
                x_skip: Optional[Tensor], pos_skip: Tensor,
                batch_skip: Tensor):
        x = knn_interpolate(x, pos, pos_skip, batch, batch_skip, self.k)
        if x_skip is not None:
            x = torch.cat([x, x_skip.to(x.dtype)], dim=1)
        return self.nn(x), pos_skip, batch_skip

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k}, nn={self.nn})'


class PointNetSeg(PointNetLayers, PointCloudSegmenter):
    r"""The PointNet segmentation network from the `"PointNet: Deep Learning
    on Point Sets for 3D Classification and Segmentation"
    <https://arxiv.org/abs/1612.00593>`_ paper, full precision or binary
    (BiPointNet) from the same code. The per-point layers are the
    classifier's (:class:`~torch_geometric_binary.nn.models.PointNet`:
    3-64-64, optional T-Nets, 64-64-128-1024); every point's 64-d feature
    is concatenated with its cloud's global feature (the 1024-d max, EMA
    with the cloud's size when the method has EMA, and the one-hot
    category for part segmentation) and classified by the per-point MLP
    :obj:`(1088 + num_categories)`-512-256-128-:obj:`num_classes`, whose
    last layer stays full precision.

    Args:
        num_classes (int): Number of point classes.
        method (str or BinaryMethod, optional): :obj:`"fp"` or a binary
            method. (default: :obj:`"bipointnet"`)
        num_categories (int, optional): Number of object categories (part
            segmentation: :meth:`forward` then takes :obj:`category`).
            (default: :obj:`0`)
        in_channels (int, optional): Point features besides the
            coordinates. (default: :obj:`0`)
        input_transform (bool, optional): Use the input T-Net.
            (default: :obj:`False`)
        feature_transform (bool, optional): Use the feature T-Net.
            (default: :obj:`False`)
        dropout (float, optional): Dropout before the last layer.
            (default: :obj:`0.3`)
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
        local_features (str, optional): The per-point features the head
            reads besides the global one: :obj:`"first"`, the 64-d input
            of :obj:`mlp2` (PointNet's segmentation network);
            :obj:`"all"`, the output of every per-point layer of
            :obj:`mlp2` too (64 + 64 + 128 + 1024 channels, as PointNet's
            part-segmentation network concatenates them), so that in a
            binary head the per-point bits are not outnumbered by the
            cloud's pooled ones. (default: :obj:`"first"`)
    """
    LOCAL_FEATURES = {'first': 64, 'all': 64 + 64 + 128 + 1024}

    def __init__(
        self,
        num_classes: int,
        method: Union[str, BinaryMethod] = 'bipointnet',
        num_categories: int = 0,
        in_channels: int = 0,
        input_transform: bool = False,
        feature_transform: bool = False,
        dropout: float = 0.3,
        ema: Optional[bool] = None,
        lsr: Optional[bool] = None,
        local_features: str = 'first',
    ):
        if local_features not in self.LOCAL_FEATURES:
            raise ValueError(f"PointNetSeg: unknown local_features "
                             f"{local_features!r} (available: "
                             f"{', '.join(self.LOCAL_FEATURES)})")
        super().__init__(num_classes, method, num_categories, in_channels,
                         (dropout, ), ema, lsr)
        self.local_features = local_features
        self.build_point_layers(in_channels, input_transform,
                                feature_transform)
        # The head reads mlp2's hidden layers: deploy.pack keeps them float.
        self.mlp2.hidden_read = local_features == 'all'
        local = self.LOCAL_FEATURES[local_features]
        self.head = BiMLP([local + 1024 + num_categories, 512, 256, 128,
                           num_classes], self.method, last_fp=True,
                          dropout=[0.0, 0.0, dropout, 0.0])

    def segment(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                size: int, code: Optional[Tensor]) -> Tensor:
        h, batch = self.point_inputs(pos, batch, x, size)
        if self.local_features == 'first':
            g = self.global_feature(self.mlp2, h, batch, size, code)
            return self.head(torch.cat([h, g[batch].to(h.dtype)], dim=-1))
        local, out = self.all_local_features(h, batch, size)
        g = self.pooled_feature(global_pool(self.method)(out, batch, size),
                                code)
        return self.head(torch.cat([t.to(h.dtype) for t in local]
                                   + [g[batch].to(h.dtype)], dim=-1))

    def all_local_features(self, h: Tensor, batch: Tensor, size: int
                           ) -> Tuple[List[Tensor], Tensor]:
        r"""The per-point features of :obj:`local_features="all"` (the
        input :obj:`h` of :obj:`mlp2` and every layer's output, the last
        after the activation), and :obj:`mlp2`'s output to pool."""
        hidden = self.mlp2.hidden_outputs(h, batch, size)
        out = self.mlp2.output(hidden[-1])
        return [h, *hidden, self.act(out)], out

    def extra_repr_args(self) -> str:
        return (super().extra_repr_args()
                + f', local_features={self.local_features!r}')


class PointNet2Seg(PointCloudSegmenter):
    r"""The PointNet++ (single-scale grouping) segmentation network from the
    `"PointNet++: Deep Hierarchical Feature Learning on Point Sets in a
    Metric Space" <https://arxiv.org/abs/1706.02413>`_ paper, as in PyG's
    :obj:`examples/pointnet2_segmentation.py`, full precision or binary
    from the same code: set abstractions (ratio 0.2, radius 0.2, MLP
    3-64-64-128) and (0.25, 0.4, 131-128-128-256), the global feature (MLP
    259-256-512-1024, max over each cloud's points of the second level, EMA
    with their number when the method has EMA, with the one-hot category
    for part segmentation) given to every point of the second level, then
    feature propagation (:class:`FeaturePropagation`: MLPs
    :obj:`(1280 + num_categories)`-256-256, 384-256-128 with the 3
    nearest, :obj:`(128 + in_channels)`-128-128-128) and the per-point head
    128-128-128-:obj:`num_classes`. The first layers that read coordinates
    or input features and the last layer stay full precision; every
    neighbourhood max is an EMA max of its own size when the method has
    EMA.

    Args:
        num_classes (int): Number of point classes.
        method (str or BinaryMethod, optional): :obj:`"fp"` or a binary
            method. (default: :obj:`"bipointnet"`)
        num_categories (int, optional): Number of object categories.
            (default: :obj:`0`)
        in_channels (int, optional): Point features besides the
            coordinates. (default: :obj:`0`)
        dropout (float, optional): Dropout before the last layer.
            (default: :obj:`0.5`)
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
    """
    def __init__(
        self,
        num_classes: int,
        method: Union[str, BinaryMethod] = 'bipointnet',
        num_categories: int = 0,
        in_channels: int = 0,
        dropout: float = 0.5,
        ema: Optional[bool] = None,
        lsr: Optional[bool] = None,
    ):
        super().__init__(num_classes, method, num_categories, in_channels,
                         (dropout, ), ema, lsr)
        method = self.method
        self.sa1 = SetAbstraction(
            0.2, 0.2,
            BiMLP([in_channels + 3, 64, 64, 128], method, first_fp=True,
                  norm_last=True), method)
        self.sa2 = SetAbstraction(
            0.25, 0.4, BiMLP([128 + 3, 128, 128, 256], method,
                             norm_last=True), method)
        self.global_mlp = BiMLP([256 + 3, 256, 512, 1024], method,
                                norm_last=True)
        self.fp3 = BiMLP([1024 + num_categories + 256, 256, 256], method,
                         plain_last=False)
        self.fp2 = FeaturePropagation(
            3, BiMLP([256 + 128, 256, 128], method, plain_last=False))
        # Its first layer reads the input features, if any.
        self.fp1 = FeaturePropagation(
            3, BiMLP([128 + in_channels, 128, 128, 128], method,
                     first_fp=in_channels > 0, plain_last=False))
        self.head = BiMLP([128, 128, 128, num_classes], method,
                          last_fp=True, dropout=[0.0, dropout, 0.0])

    def segment(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                size: int, code: Optional[Tensor]) -> Tensor:
        x1, pos1, batch1 = self.sa1(x, pos, batch)
        x2, pos2, batch2 = self.sa2(x1, pos1, batch1)
        g = self.global_feature(self.global_mlp,
                                torch.cat([x2, pos2.to(x2.dtype)], dim=1),
                                batch2, size, code)
        # The global level is one point per cloud: its 1-nearest
        # interpolation gives every point its cloud's feature.
        h = self.fp3(torch.cat([g[batch2].to(x2.dtype), x2], dim=1))
        h, _, _ = self.fp2(h, pos2, batch2, x1, pos1, batch1)
        h, _, _ = self.fp1(h, pos1, batch1, x, pos, batch)
        return self.head(h)


class DGCNNSeg(PointCloudSegmenter):
    r"""The DGCNN segmentation network from the `"Dynamic Graph CNN for
    Learning on Point Clouds" <https://arxiv.org/abs/1801.07829>`_ paper,
    full precision or binary from the same code: three dynamic edge
    convolutions on the :math:`k`-NN graph (MLPs 6-64-64, 128-64-64,
    128-64), a linear layer 192-1024 whose max over each cloud (EMA with
    the cloud's size when the method has EMA, with the one-hot category for
    part segmentation) is the global feature, concatenated with every
    point's three convolution outputs, and the per-point MLP
    :obj:`(1216 + num_categories)`-256-256-128-:obj:`num_classes`. The first
    layer and the last stay full precision; every neighbourhood max is an
    EMA max of its own size when the method has EMA.

    Args:
        num_classes (int): Number of point classes.
        method (str or BinaryMethod, optional): :obj:`"fp"` or a binary
            method. (default: :obj:`"bipointnet"`)
        num_categories (int, optional): Number of object categories.
            (default: :obj:`0`)
        in_channels (int, optional): Point features besides the
            coordinates. (default: :obj:`0`)
        k (int, optional): Number of neighbours. (default: :obj:`20`)
        dropout (float, optional): Dropout after the first two head layers.
            (default: :obj:`0.5`)
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
        graph_metric (str, optional): How the second and third convolutions
            build their graphs on the features: :obj:`"euclidean"`
            (DGCNN's) or, for a binary method, :obj:`"hamming"` on the
            signs their binary first layers take (see
            :class:`~torch_geometric_binary.nn.BiDynamicEdgeConv`).
            (default: :obj:`"euclidean"`)
    """
    def __init__(
        self,
        num_classes: int,
        method: Union[str, BinaryMethod] = 'bipointnet',
        num_categories: int = 0,
        in_channels: int = 0,
        k: int = 20,
        dropout: float = 0.5,
        ema: Optional[bool] = None,
        lsr: Optional[bool] = None,
        graph_metric: str = 'euclidean',
    ):
        super().__init__(num_classes, method, num_categories, in_channels,
                         (dropout, ), ema, lsr)
        method = self.method
        self.k = k
        c = 3 + in_channels
        self.conv1 = BiDynamicEdgeConv(
            BiMLP([2 * c, 64, 64], method, first_fp=True, norm_last=True),
            k, aggr=max_aggregation(method))
        self.conv2 = BiDynamicEdgeConv(
            BiMLP([2 * 64, 64, 64], method, norm_last=True), k,
            aggr=max_aggregation(method), metric=graph_metric)
        self.conv3 = BiDynamicEdgeConv(
            BiMLP([2 * 64, 64], method, norm_last=True), k,
            aggr=max_aggregation(method), metric=graph_metric)
        self.lin1 = BiMLP([3 * 64, 1024], method, norm_last=True)
        self.head = BiMLP([3 * 64 + 1024 + num_categories, 256, 256, 128,
                           num_classes], method, last_fp=True,
                          dropout=[dropout, dropout, 0.0, 0.0])
        # The convolutions' activations, where they have parameters.
        self.place_acts = place_activations(method, (64, 64, 64))

    def segment(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                size: int, code: Optional[Tensor]) -> Tensor:
        h = pos if x is None else torch.cat([pos, x], dim=-1)
        x1 = place_activation(self, 0)(self.conv1(h, batch))
        x2 = place_activation(self, 1)(self.conv2(x1, batch))
        x3 = place_activation(self, 2)(self.conv3(x2, batch))
        h = torch.cat([x1, x2, x3], dim=1)
        g = self.global_feature(self.lin1, h, batch, size, code)
        return self.head(torch.cat([h, g[batch].to(h.dtype)], dim=-1))

    def extra_repr_args(self) -> str:
        return graph_repr_args(self.k, self.conv2)
