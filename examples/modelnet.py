r"""Train and evaluate (binary) point-cloud classifiers on ModelNet.

BiPointNet (Qin et al., ICLR 2021) and its baselines: PointNet, PointNet++
and DGCNN, full precision (``--method fp``) or binary (``--method
bipointnet``, ``bnn``, ...), on pre-sampled ModelNet40/10, PyG's ModelNet
meshes or an embedded synthetic dataset (no download).

Examples::

    # Quick run on the synthetic dataset (no data needed):
    python examples/modelnet.py --dataset synthetic --epochs 10

    # BiPointNet on pre-sampled ModelNet40 (paper setting: 1024 points,
    # Adam 1e-3, cosine schedule, 200 epochs):
    python examples/modelnet.py --model pointnet --method bipointnet \
        --dataset modelnet40 --root ../shared/data/ModelNet40 --out runs/bip

    # Continue an interrupted run, evaluate the best checkpoint:
    python examples/modelnet.py ... --out runs/bip --resume
    python examples/modelnet.py --eval runs/bip/best.pt

    # Two processes (DistributedDataParallel; gloo on CPU, nccl on GPUs):
    torchrun --nproc_per_node=2 examples/modelnet.py ...

Files written to ``--out``: ``last.pt`` (after every epoch: model, optimizer,
scheduler, epoch, best accuracy, random states), ``best.pt`` (the epoch of
best test overall accuracy) and ``results.json`` (config, per-epoch history,
best/last accuracies, times). ``--eval`` prints a JSON line with
``overall_acc`` and ``mean_class_acc`` as the last line of its output; a
training run ends with a JSON summary line.
"""
import argparse
import importlib.util
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

if importlib.util.find_spec('torch_geometric_binary') is None:
    # Run from a source checkout without installing the package:
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch_geometric_binary  # noqa: F401,E402 (silences PyG's warnings)
from torch_geometric_binary.nn.models import MODELS  # noqa: E402
from torch_geometric_binary.train import DATASETS, Classification  # noqa
from torch_geometric_binary.train import run  # noqa: E402
from torch_geometric_binary.train.cli import (  # noqa: E402
    HelpFormatter, add_model_args, add_training_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train or evaluate (binary) point-cloud classifiers '
        '(PointNet, PointNet++, DGCNN; BiPointNet) on ModelNet.',
        formatter_class=HelpFormatter)
    add_model_args(parser, MODELS)

    g = parser.add_argument_group('data')
    g.add_argument('--dataset', default=None, choices=DATASETS,
                   help='modelnet40/10: pre-sampled point clouds in --root; '
                   'pyg-modelnet40/10: PyG\'s meshes in --root (downloaded '
                   'into an existing empty folder); synthetic: embedded '
                   'shapes, no data needed (default: synthetic, or the '
                   "checkpoint's with --eval)")
    g.add_argument('--root', default=None,
                   help='dataset folder (required for the modelnet datasets)'
                   ', e.g. ../shared/data/ModelNet40')
    g.add_argument('--num-points', type=int, default=None,
                   help='points per cloud: a random subset each epoch for '
                   'training, the first N points for testing (default: all '
                   "points; 1024 sampled on PyG's meshes)")
    g.add_argument('--rebuild-cache', action='store_true',
                   help='re-process the dataset cache even if it matches the '
                   'raw files (it is rebuilt by itself when they change)')
    g.add_argument('--no-augment', action='store_true',
                   help='disable the random anisotropic scaling (x2/3-3/2 '
                   'per axis) and translation (+-0.2) of training clouds')
    g.add_argument('--limit-train', type=int, default=None, metavar='N',
                   help='use a class-balanced subset of N training clouds '
                   '(smoke runs)')
    g.add_argument('--limit-test', type=int, default=None, metavar='N',
                   help='use a class-balanced subset of N test clouds')
    g.add_argument('--synthetic-classes', type=int, default=None,
                   help='number of classes of the synthetic dataset '
                   '(default: 10)')
    g.add_argument('--synthetic-points', type=int, default=None,
                   help='points per synthetic cloud (default: 512)')

    add_training_args(parser, epochs=200, batch_size=32,
                      out='runs/<model>-<method>-<dataset>')
    return parser


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return run(build_parser(), Classification(), argv)


if __name__ == '__main__':
    main()
