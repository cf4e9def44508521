r"""An experiment on the binary PointNet part-segmentation head (issue 21):
its first layer reads :obj:`[h_i, g]`, 64 per-point channels and the
cloud's 1,024 pooled (EMA) channels. Its output is
:math:`\alpha\,(\mathbf{W}_h \mathrm{sign}(h_i) + \mathbf{W}_g
\mathrm{sign}(g))` with one LSR scale, so the per-cloud sum of 1,024 signs
outweighs the per-point sum of 64 (its spread is about 4x larger), and the
sign after the normalization mostly tells the clouds apart, not the
points of a cloud. Here the two sums get a scale each,
:math:`\alpha_h \mathbf{W}_h \mathrm{sign}(h_i) + \alpha_g \mathbf{W}_g
\mathrm{sign}(g)`, both initialized from data as LSR is.

Trains :class:`PointNetSeg` with that head through
:obj:`examples/segmentation.py` (every argument is passed on), e.g.::

    python3 benchmarks/seg_split_scale.py --method bipointnet \
        --synthetic-per-category 40 --num-points 512 --epochs 30 \
        --batch-size 16 --lr 0.002 --threads 1 --quiet --out ../runs/split

With :obj:`SPLIT_INIT=balanced` in the environment, the pooled channels'
scale starts where both sums spread alike (instead of at LSR's ratio).

An experiment, not a package feature: :func:`deploy.pack` does not know
the layer, and :obj:`--eval` of the checkpoint needs this script.
"""
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

# First: it puts the checkout on sys.path.
from seg_experiment import train_pointnet_variant
from torch_geometric_binary.nn import BiLinear
from torch_geometric_binary.nn.models import PointNetSeg


class SplitScaleBiLinear(BiLinear):
    r"""A :class:`BiLinear` whose first :obj:`split` input channels and the
    rest each have their own LSR scale."""
    def __init__(self, lin: BiLinear, split: int):
        super().__init__(lin.in_channels, lin.out_channels,
                         bias=lin.bias is not None, method=lin.method)
        self.split = split
        self.log_scale = torch.nn.Parameter(torch.zeros(2))

    def parts(self, x: Tensor):
        xb, wb, s = self.binary_input(x), self.binary_weight(), self.split
        return F.linear(xb[..., :s], wb[:, :s].to(xb.dtype)), \
            F.linear(xb[..., s:], wb[:, s:].to(xb.dtype))

    @torch.no_grad()
    def init_scale(self, x: Tensor):
        x, s = x.detach(), self.split
        spread = [part.float().std() for part in self.parts(x)]
        for i, sl in enumerate((slice(0, s), slice(s, None))):
            fp = F.linear(x[..., sl], self.weight[:, sl].to(x.dtype)).std()
            b = spread[i]
            self.log_scale[i] = math.log(float(fp / b)) if b > 0 else 0.0
        if os.environ.get('SPLIT_INIT') == 'balanced' and spread[1] > 0:
            self.log_scale[1] = self.log_scale[0] + math.log(
                float(spread[0] / spread[1]))
        self.scale_initialized = True

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training and not self.scale_initialized:
            self.init_scale(x)
        a, b = self.parts(x)
        scale = self.log_scale.exp()
        out = a * scale[0].to(a.dtype) + b * scale[1].to(b.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out


class PointNetSegSplit(PointNetSeg):
    def __init__(self, num_classes: int, method='bipointnet',
                 num_categories: int = 0, in_channels: int = 0,
                 input_transform: bool = False,
                 feature_transform: bool = False, dropout: float = 0.3,
                 ema=None, lsr=None):
        super().__init__(num_classes, method, num_categories, in_channels,
                         input_transform, feature_transform, dropout, ema,
                         lsr)
        if isinstance(self.head.lins[0], BiLinear):
            self.head.lins[0] = SplitScaleBiLinear(self.head.lins[0], 64)


if __name__ == '__main__':
    train_pointnet_variant(PointNetSegSplit)
