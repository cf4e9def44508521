r"""An experiment on the binary PointNet part-segmentation head (issue 21):
the head's first layer with its pooled part in full precision.

That layer reads :obj:`[local_i, g]`: per-point channels and the cloud's
pooled feature :obj:`g` (with the one-hot category). Binary, every input
sign weighs the same, so with EMA the per-cloud sum decides most output
signs and the few rows of a small part cannot turn them (see
``benchmarks/results/README.md``). Here the layer is

.. math::
    \alpha\,\mathbf{W}_l\,\mathrm{sign}(\mathbf{local}_i)
    + \mathbf{W}_g\,\mathbf{g}_{c(i)},

binary on the per-point channels and full precision on the pooled ones.
The second term is one product per cloud, not per point, so it costs
little at inference, and its weights can learn how much the cloud counts.

Trains it through :obj:`examples/segmentation.py` (every argument is
passed on), e.g.::

    python3 benchmarks/seg_global_fp.py --method bipointnet \
        --model-kwargs '{"local_features": "all"}' \
        --synthetic-per-category 40 --num-points 512 --epochs 30 \
        --batch-size 16 --lr 0.002 --threads 1 --quiet --out ../runs/gfp

With :obj:`GFP_DETACH=1` in the environment, no gradient flows from the
pooled feature into the per-point layers.

An experiment, not a package feature: :func:`deploy.pack` does not know
the layer, and :obj:`--eval` of the checkpoint needs this script.
"""
import os
from typing import Optional

import torch
from torch import Tensor

# First: it puts the checkout on sys.path.
from seg_experiment import train_pointnet_variant
from torch_geometric_binary.nn import BiMLP
from torch_geometric_binary.nn.models import PointNetSeg
from torch_geometric_binary.nn.models.common import global_pool


class PlusCloudTerm(torch.nn.Module):
    r"""A linear layer plus a per-point term set before each call."""
    def __init__(self, lin: torch.nn.Module):
        super().__init__()
        self.lin = lin
        self.extra: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x) + self.extra.to(x.dtype)


class PointNetSegGlobalFP(PointNetSeg):
    def __init__(self, num_classes: int, method='bipointnet',
                 num_categories: int = 0, in_channels: int = 0,
                 input_transform: bool = False,
                 feature_transform: bool = False, dropout: float = 0.3,
                 ema=None, lsr=None, local_features: str = 'first'):
        super().__init__(num_classes, method, num_categories, in_channels,
                         input_transform, feature_transform, dropout, ema,
                         lsr, local_features)
        local = self.LOCAL_FEATURES[self.local_features]
        dropout = self.head.dropout
        self.head = BiMLP([local, 512, 256, 128, num_classes], self.method,
                          last_fp=True,
                          dropout=[float(p) for p in dropout])
        self.head.lins[0] = PlusCloudTerm(self.head.lins[0])
        self.cloud_lin = torch.nn.Linear(1024 + num_categories, 512,
                                         bias=False)

    def segment(self, pos, batch, x, size, code):
        h, batch = self.point_inputs(pos, batch, x, size)
        if self.local_features == 'first':
            local, out = [h], self.mlp2(h)
        else:
            local, out = self.all_local_features(h, batch, size)
        if os.environ.get('GFP_DETACH') == '1':  # No gradient via the max.
            out = out.detach()
        g = self.pooled_feature(global_pool(self.method)(out, batch, size),
                                code)
        self.head.lins[0].extra = self.cloud_lin(g)[batch]
        return self.head(torch.cat([t.to(h.dtype) for t in local], dim=-1))


if __name__ == '__main__':
    train_pointnet_variant(PointNetSegGlobalFP)
