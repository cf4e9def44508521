r"""The pieces a model takes from its method, and the classifier skeleton
the models share, in one place."""
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation, MaxAggregation

from torch_geometric_binary.nn.aggr import (EMAMaxAggregation,
                                            global_ema_max_pool,
                                            global_max_pool)
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.utils import check_points


def max_aggregation(method: BinaryMethod) -> Aggregation:
    r"""EMA max for methods with the EMA switch on, plain max otherwise."""
    return EMAMaxAggregation() if method.ema else MaxAggregation()


def global_pool(method: BinaryMethod) -> Callable[..., Tensor]:
    return global_ema_max_pool if method.ema else global_max_pool


def activation(method: BinaryMethod) -> torch.nn.Module:
    r"""The activation after a pooled (normalized) feature: ReLU in full
    precision (it commutes with max, so BN -> max -> ReLU is PointNet's
    BN -> ReLU -> max), Hardtanh for binary methods (it keeps the sign the
    next layer takes and matches the clipped STE)."""
    return torch.nn.Hardtanh() if method.binary else torch.nn.ReLU()


def batch_or_zeros(pos: Tensor, batch: Optional[Tensor]) -> Tensor:
    if batch is None:
        return torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
    return batch


class PointCloudClassifier(torch.nn.Module):
    r"""The skeleton of the package's classifiers: per-point features
    (:meth:`point_features`, normalized and unclipped), a max over each cloud
    (EMA max with the cloud's own number of points when the method has EMA),
    the activation, and the head 1024-512-256-:obj:`num_classes` whose last
    layer stays full precision.

    Args:
        num_classes (int): Number of classes.
        method (str or BinaryMethod): :obj:`"fp"` or a binary method.
        in_channels (int): Point features besides the coordinates.
        dropout (List[float]): Dropout after each hidden head layer.
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
    """
    def __init__(self, num_classes: int, method: Union[str, BinaryMethod],
                 in_channels: int, dropout: Tuple[float, float],
                 ema: Optional[bool], lsr: Optional[bool]):
        super().__init__()
        for p in dropout:
            if isinstance(p, bool) or not isinstance(p, (int, float)) \
                    or not 0.0 <= p < 1.0:
                raise ValueError(f"{self.__class__.__name__}: 'dropout' "
                                 f"must be a number in [0, 1) (got {p!r})")
        self.method = resolve_method(method, ema=ema, lsr=lsr)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.pool = global_pool(self.method)
        self.act = activation(self.method)
        self.head = BiMLP([1024, 512, 256, num_classes], self.method,
                          last_fp=True, dropout=[*dropout, 0.0])

    def reset_parameters(self):
        for module in self.children():
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    #: The attribute name of the last per-point MLP (it ends in a
    #: normalization, with :obj:`norm_last`), whose output is pooled.
    POINT_MLP: str = ''

    def point_inputs(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                     size: int) -> Tuple[Tensor, Tensor]:
        r"""Returns the input of the last per-point MLP and its batch
        vector."""
        raise NotImplementedError

    def point_features(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                       size: int) -> Tuple[Tensor, Tensor]:
        r"""Returns normalized per-point features and their batch vector."""
        h, batch = self.point_inputs(pos, batch, x, size)
        return getattr(self, self.POINT_MLP)(h), batch

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                x: Optional[Tensor] = None) -> Tensor:
        r"""Returns the logits :obj:`[num_clouds, num_classes]` of the clouds
        given by coordinates :obj:`pos`, optional point features :obj:`x`
        and the batch vector :obj:`batch` (:obj:`None` for one cloud)."""
        check_points(pos, 'pos', batch, where=self.__class__.__name__)
        dtype = self.head.lins[-1].weight.dtype
        if pos.dtype != dtype and not torch.is_autocast_enabled(
                pos.device.type):
            raise ValueError(f"{self.__class__.__name__}: 'pos' is "
                             f"{pos.dtype} but the model's parameters are "
                             f"{dtype}; convert one to the other (e.g. "
                             f"'pos.to({dtype})'), or use torch.autocast "
                             f"for mixed precision")
        if x is not None:
            check_points(x, 'x', where=self.__class__.__name__)
            if x.size(0) != pos.size(0):
                raise ValueError(f"{self.__class__.__name__}: 'x' has "
                                 f"{x.size(0)} rows but 'pos' has "
                                 f"{pos.size(0)}")
        batch = batch_or_zeros(pos, batch)
        size = int(batch.max()) + 1
        h, batch = self.point_inputs(pos, batch, x, size)
        # The MLP pools its own output: its last layer, BatchNorm and the
        # max run fused for clouds of equal size (BiMLP.max_pool).
        pooled = getattr(self, self.POINT_MLP).max_pool(h, batch, size,
                                                        self.method.ema)
        return self.head(self.act(pooled))

    def extra_repr_args(self) -> str:
        return ''

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'method={self.method.name}, ema={self.method.ema}, '
                f'lsr={self.method.lsr}{self.extra_repr_args()})')
