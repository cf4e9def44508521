r"""Point-cloud transforms used by the training program
(:obj:`examples/modelnet.py`)."""
from typing import Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform


def _select_nodes(data: Data, index: Tensor) -> Data:
    num_nodes = data.num_nodes
    for key, value in list(data.items()):
        if key == 'num_nodes':
            data.num_nodes = index.numel()
        elif 'edge' in key or key == 'face':
            continue
        elif (isinstance(value, Tensor) and value.dim() > 0
              and value.size(0) == num_nodes and value.size(0) != 1):
            data[key] = value[index]
    return data


class FirstPoints(BaseTransform):
    r"""Keeps the first :obj:`num` points of every cloud (all point-level
    attributes), as the PointNet++/DGCNN reference code does at test time:
    deterministic, and for pre-sampled clouds (stored in random or
    farthest-point order) a uniform subset. Clouds with at most :obj:`num`
    points are returned unchanged."""
    def __init__(self, num: int):
        if num < 1:
            raise ValueError(f"FirstPoints needs num >= 1 (got {num})")
        self.num = num

    def forward(self, data: Data) -> Data:
        if data.num_nodes is None or data.num_nodes <= self.num:
            return data
        return _select_nodes(data, torch.arange(self.num))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.num})'


class NormalizeUnitSphere(BaseTransform):
    r"""Centers every cloud at its centroid and scales it so that its
    farthest point has radius one (the normalization of pre-sampled
    ModelNet and of the PointNet reference code)."""
    def forward(self, data: Data) -> Data:
        pos = data.pos - data.pos.mean(dim=0, keepdim=True)
        radius = pos.norm(dim=-1).max()
        if not bool(torch.isfinite(radius)):
            # E.g. coordinates near 1e20: their squares overflow float32,
            # and the cloud would silently normalize to all zeros.
            raise ValueError(
                f"NormalizeUnitSphere: a cloud's coordinates cannot be "
                f"normalized in {pos.dtype} (largest |x| = "
                f"{float(data.pos.abs().max()):.3g}; NaN, Inf or too large): "
                f"check the data")
        if radius > 0:
            pos = pos / radius
        data.pos = pos
        return data


class RandomScaleTranslate(BaseTransform):
    r"""Random anisotropic scaling (one factor per axis, uniform in
    :obj:`scale`) followed by a random translation (uniform in
    :obj:`[-translate, translate]` per axis) of the whole cloud, the
    augmentation of the DGCNN reference code. Uses the :obj:`torch` random
    number generator (seeded by the training program)."""
    def __init__(self, scale: Tuple[float, float] = (2. / 3., 3. / 2.),
                 translate: float = 0.2):
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"Invalid scale range {scale}")
        self.scale = tuple(scale)
        self.translate = abs(translate)

    def forward(self, data: Data) -> Data:
        dim = data.pos.size(-1)
        lo, hi = self.scale
        s = torch.empty(dim).uniform_(lo, hi).to(data.pos)
        t = torch.empty(dim).uniform_(-self.translate, self.translate)
        data.pos = data.pos * s + t.to(data.pos)
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'translate={self.translate})')
