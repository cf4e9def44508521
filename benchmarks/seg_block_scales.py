"""Experiment (issue 21; not part of the package): PointNetSeg whose head's
first binary layer has one LSR scale per input block (the 64 per-point
channels, the 1024 pooled ones), to test whether EMA's cloud-varying pooled
bits drown the per-point bits. It patches PointNetSeg at run time and runs
examples/segmentation.py with the given arguments:

    BLOCK_INIT=balanced|data python3 benchmarks/seg_block_scales.py \\
        --model pointnet --method bipointnet ...

``balanced`` sets the pooled block's scale so that both blocks contribute
the same variance (a quarter of the per-point scale); ``data`` sets each
block's scale as LSR does, from the first training batch.
"""
import functools
import os
import os.path as osp
import runpy
import sys

import torch
import torch.nn.functional as F
from torch.nn import Parameter

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch_geometric_binary.nn.models as M  # noqa: E402
from torch_geometric_binary.nn.functional import scaled_linear  # noqa: E402
from torch_geometric_binary.nn.linear import BiLinear  # noqa: E402

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


_init = M.PointNetSeg.__init__


@functools.wraps(_init)
def _patched(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.method.binary:
        self.head.lins[0] = BlockBiLinear(self.head.lins[0])


M.PointNetSeg.__init__ = _patched
sys.argv = ['segmentation.py'] + sys.argv[1:]
runpy.run_path(osp.join(ROOT, 'examples', 'segmentation.py'),
               run_name='__main__')
