r"""The pieces a model takes from its method, in one place."""
from typing import Callable, Optional

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation, MaxAggregation

from torch_geometric_binary.nn.aggr import (EMAMaxAggregation,
                                            global_ema_max_pool,
                                            global_max_pool)
from torch_geometric_binary.nn.methods import BinaryMethod


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
