r"""Train and evaluate (binary) point-cloud segmentation networks.

Part segmentation (the embedded ``SyntheticParts``, no download; ShapeNet
part from a local copy) and semantic segmentation (S3DIS blocks, Area-5
protocol) with PointNet, PointNet++ and DGCNN, full precision
(``--method fp``) or binary (``--method bipointnet``, ``bnn``, ...).
Part segmentation reports the instance mIoU and the category mIoU (the
logits restricted to each shape's category); semantic segmentation the
overall accuracy, mean class accuracy and mIoU.

Examples::

    # Quick run on the synthetic parts (no data needed):
    python examples/segmentation.py --model pointnet --method bipointnet \
        --epochs 10

    # ShapeNet part (16 categories, 50 parts), S3DIS (test on Area 5):
    python examples/segmentation.py --dataset shapenet \
        --root ../shared/data/shapenetcore_partanno_segmentation_benchmark_v0_normal \
        --num-points 2048 --out runs/seg-shapenet
    python examples/segmentation.py --dataset s3dis \
        --root ../shared/data/stanford_indoor3d --test-area 5 \
        --num-points 4096 --out runs/seg-s3dis

    # One model per category (BiPointNet's ShapeNet part protocol):
    python examples/segmentation.py --dataset shapenet --root ... \
        --categories Airplane --model-kwargs '{"local_features": "all"}'

    # Continue an interrupted run, evaluate the best checkpoint:
    python examples/segmentation.py ... --out runs/seg --resume
    python examples/segmentation.py --eval runs/seg/best.pt

    # Two processes (DistributedDataParallel; gloo on CPU, nccl on GPUs):
    torchrun --nproc_per_node=2 examples/segmentation.py ...

Files written to ``--out``: ``last.pt`` (after every epoch), ``best.pt``
(the epoch of best instance mIoU, or mIoU for S3DIS) and ``results.json``.
``--eval`` prints a JSON line with the metrics as the last line of its
output; a training run ends with a JSON summary line.
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
from torch_geometric_binary.nn.models import SEG_MODELS  # noqa: E402
from torch_geometric_binary.train import SEG_DATASETS, Segmentation  # noqa
from torch_geometric_binary.train import run  # noqa: E402
from torch_geometric_binary.train.cli import (  # noqa: E402
    HelpFormatter, add_model_args, add_training_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train or evaluate (binary) point-cloud segmentation '
        'networks (PointNet, PointNet++, DGCNN; BiPointNet) on synthetic '
        'parts, ShapeNet part or S3DIS.', formatter_class=HelpFormatter)
    add_model_args(parser, SEG_MODELS)

    g = parser.add_argument_group('data')
    g.add_argument('--dataset', default=None, choices=SEG_DATASETS,
                   help='synthetic: embedded parts, no data needed; '
                   'shapenet: ShapeNet part in --root; s3dis: S3DIS in '
                   "--root (default: synthetic, or the checkpoint's with "
                   "--eval)")
    g.add_argument('--root', default=None,
                   help='dataset folder (required for shapenet and s3dis)')
    g.add_argument('--test-area', type=int, default=None,
                   help='S3DIS area of the test split, 1-6 (default: 5)')
    g.add_argument('--normals', action='store_true',
                   help='ShapeNet part: the normals as point features')
    g.add_argument('--categories', nargs='+', default=None, metavar='NAME',
                   help='part segmentation: train and test on these '
                   "categories' shapes only, e.g. one model per category as "
                   "BiPointNet's ShapeNet part results (default: all)")
    g.add_argument('--num-points', type=int, default=None,
                   help='points per cloud: a random subset each epoch for '
                   'training, a fixed subset for testing (default: all)')
    g.add_argument('--no-augment', action='store_true',
                   help='part segmentation: disable the random scaling and '
                   'translation of training shapes')
    g.add_argument('--limit-train', type=int, default=None, metavar='N',
                   help='use N training clouds (category-balanced for part '
                   'segmentation; smoke runs)')
    g.add_argument('--limit-test', type=int, default=None, metavar='N',
                   help='use N test clouds')
    g.add_argument('--synthetic-per-category', type=int, default=None,
                   metavar='N', help='synthetic: training objects per '
                   'category, N/4 test ones (default: 80 and 20)')
    g.add_argument('--synthetic-points', type=int, default=None,
                   help='synthetic: points per object (default: 1024)')

    add_training_args(parser, epochs=100, batch_size=16,
                      out='runs/seg-<model>-<method>-<dataset>')
    return parser


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return run(build_parser(), Segmentation(), argv)


if __name__ == '__main__':
    main()
