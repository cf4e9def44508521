from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from torch_geometric_binary.nn.methods import BinaryMethod
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.models.common import (PointCloudClassifier,
                                                     activation, global_pool)


def apply_transform(h: Tensor, transform: Tensor, batch: Tensor) -> Tensor:
    r"""Multiplies every point's row :obj:`h[i]` by its cloud's
    :obj:`[k, k]` matrix :obj:`transform[batch[i]]`."""
    B, N = transform.size(0), h.size(0)
    if not torch.compiler.is_compiling():
        # One product per cloud where the clouds are consecutive and of
        # equal size (a batch of sampled clouds): the general form copies
        # a [k, k] matrix for every point (537 MB for 32 clouds of 1,024
        # points at k = 64).
        if B == 1:
            return h @ transform[0]
        if N % B == 0 and bool((batch.view(B, N // B) == torch.arange(
                B, device=batch.device).view(B, 1)).all()):
            return torch.bmm(h.view(B, N // B, -1), transform).view(N, -1)
    return torch.bmm(h.unsqueeze(1), transform[batch]).squeeze(1)


class TNet(torch.nn.Module):
    r"""PointNet's transform network: predicts a :math:`k \times k` matrix per
    cloud (initialized at the identity) that aligns its points or
    features."""
    def __init__(self, k: int, method: BinaryMethod, first_fp: bool):
        super().__init__()
        self.k = k
        self.method = method
        self.point_mlp = BiMLP([k, 64, 128, 1024], method, first_fp=first_fp,
                               norm_last=True)
        self.pool = global_pool(method)
        self.act = activation(method, 1024)
        self.head = BiMLP([1024, 512, 256, k * k], method, last_fp=True)
        self.reset_parameters()

    def reset_parameters(self):
        self.point_mlp.reset_parameters()
        self.head.reset_parameters()
        with torch.no_grad():  # Start at the identity transform.
            self.head.lins[-1].weight.zero_()
            self.head.lins[-1].bias.copy_(torch.eye(self.k).view(-1))

    def forward(self, x: Tensor, batch: Tensor, size: int) -> Tensor:
        out = self.act(self.point_mlp.max_pool(x, batch, size,
                                               self.method.ema))
        return self.head(out).view(-1, self.k, self.k)


class PointNetLayers:
    r"""PointNet's per-point layers, shared by the classifier
    (:class:`PointNet`) and the segmentation network
    (:class:`~torch_geometric_binary.nn.models.PointNetSeg`): the optional
    input T-Net, the MLP 3-64-64 (first layer full precision), the optional
    feature T-Net, and the MLP 64-64-128-1024 that ends in a normalization
    (:obj:`mlp2`, pooled by the model). A mixin of modules with a
    :obj:`method`."""
    def build_point_layers(self, in_channels: int, input_transform: bool,
                           feature_transform: bool):
        method = self.method
        self.input_tnet = TNet(3, method, True) if input_transform else None
        self.mlp1 = BiMLP([3 + in_channels, 64, 64], method, first_fp=True,
                          plain_last=False)
        self.feature_tnet = TNet(64, method, False) \
            if feature_transform else None
        self.mlp2 = BiMLP([64, 64, 128, 1024], method, norm_last=True)

    def point_inputs(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                     size: int) -> Tuple[Tensor, Tensor]:
        r"""The (transformed) 64-d point features after :obj:`mlp1`, the
        input of :obj:`mlp2`, and their batch vector."""
        if self.input_tnet is not None:
            transform = self.input_tnet(pos, batch, size)
            pos = apply_transform(pos, transform, batch)
        h = pos if x is None else torch.cat([pos, x], dim=-1)
        h = self.mlp1(h)
        if self.feature_tnet is not None:
            transform = self.feature_tnet(h, batch, size)
            h = apply_transform(h, transform, batch)
        return h, batch

    @property
    def input_transform(self) -> bool:
        r"""Whether the model has the input T-Net (its constructor
        argument)."""
        return self.input_tnet is not None

    @property
    def feature_transform(self) -> bool:
        r"""Whether the model has the feature T-Net (its constructor
        argument)."""
        return self.feature_tnet is not None

    def extra_repr_args(self) -> str:
        return (f', input_transform={self.input_transform}, '
                f'feature_transform={self.feature_transform}')


class PointNet(PointNetLayers, PointCloudClassifier):
    r"""The PointNet classifier from the `"PointNet: Deep Learning on Point
    Sets for 3D Classification and Segmentation"
    <https://arxiv.org/abs/1612.00593>`_ paper, full precision or binary
    (BiPointNet) from the same code:

    .. math::
        \mathbf{y} = h\Big(\mathrm{pool}_{i}\, \mathrm{BN}\big(
        g(\mathbf{p}_i)\big)\Big),

    with the shared per-point MLP :math:`g` of channels 3-64-64-64-128-1024,
    a max pooling over each cloud and the head :math:`h` of channels
    1024-512-256-:obj:`num_classes`. For a binary :obj:`method`, every
    linear layer is a :class:`~torch_geometric_binary.nn.BiLinear` except
    the first (it reads coordinates) and the last (it gives logits), and the
    pooling is :func:`~torch_geometric_binary.nn.global_ema_max_pool` when
    the method has EMA.

    Args:
        num_classes (int): Number of classes.
        method (str or BinaryMethod, optional): :obj:`"fp"` or a binary
            method. (default: :obj:`"fp"`)
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
    """
    def __init__(
        self,
        num_classes: int,
        method: Union[str, BinaryMethod] = 'fp',
        in_channels: int = 0,
        input_transform: bool = False,
        feature_transform: bool = False,
        dropout: float = 0.3,
        ema: Optional[bool] = None,
        lsr: Optional[bool] = None,
    ):
        super().__init__(num_classes, method, in_channels, (0.0, dropout),
                         ema, lsr)
        self.build_point_layers(in_channels, input_transform,
                                feature_transform)

    POINT_MLP = 'mlp2'
