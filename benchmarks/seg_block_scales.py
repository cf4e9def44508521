"""Experiment (issue 21; not part of the package): PointNetSeg whose head's
first binary layer has one LSR scale per input block (the 64 per-point
channels, the 1024 pooled ones), to test whether EMA's cloud-varying pooled
bits drown the per-point bits. It trains that variant as PointNet through
examples/segmentation.py with the given arguments:

    BLOCK_INIT=balanced|data python3 benchmarks/seg_block_scales.py \\
        --model pointnet --method bipointnet ...

``balanced`` sets the pooled block's scale so that both blocks contribute
the same variance (a quarter of the per-point scale); ``data`` sets each
block's scale as LSR does, from the first training batch.
"""
import functools
import os

import torch
import torch.nn.functional as F
from torch.nn import Parameter

# First: it puts the checkout on sys.path.
from seg_experiment import train_pointnet_variant
from torch_geometric_binary.nn.functional import scaled_linear
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.models import PointNetSeg

SPLIT = 64  # The per-point channels come first.
MODE = os.environ.get('BLOCK_INIT', 'data')


class BlockBiLinear(BiLinear):
    def __init__(self, lin: BiLinear):
        super().__init__(lin.in_channels, lin.out_channels,
                         lin.bias is not None, True, lin.method)
        self.log_scale2 = Parameter(torch.zeros(()))

    @torch.no_grad()
    def _init_block_scales(self, x):
        xb, wb = self.binary_input(x), self.binary_weight()
        s = []
        for a, b in ((0, SPLIT), (SPLIT, None)):
            fp = F.linear(x[:, a:b], self.weight[:, a:b]).std()
            bi = F.linear(xb[:, a:b], wb[:, a:b]).std()
            s.append(fp / bi)
        if MODE == 'balanced':
            s[1] = s[0] * (SPLIT / (self.in_channels - SPLIT)) ** 0.5
        self.log_scale.copy_(s[0].log())
        self.log_scale2.copy_(s[1].log())
        self.scale_initialized = True

    def forward(self, x):
        if self.training and not self.scale_initialized:
            self._init_block_scales(x)
        xb, wb = self.binary_input(x), self.binary_weight()
        out = scaled_linear(xb[..., :SPLIT], wb[:, :SPLIT],
                            self.log_scale.exp()) + \
            scaled_linear(xb[..., SPLIT:], wb[:, SPLIT:],
                          self.log_scale2.exp())
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out


class PointNetSegBlocks(PointNetSeg):
    @functools.wraps(PointNetSeg.__init__)  # Its options, for --model-kwargs.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.method.binary:
            self.head.lins[0] = BlockBiLinear(self.head.lins[0])


if __name__ == '__main__':
    train_pointnet_variant(PointNetSegBlocks)
