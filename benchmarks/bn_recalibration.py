r"""Re-estimates every BatchNorm's statistics of trained checkpoints over
the training set and prints the test accuracy before and after (a check of
whether the running statistics lag behind the binary weights).

The statistics are reset, averaged over one forward pass in training mode
(momentum None) over the ModelNet40 training set (512 random points per
cloud, no augmentation, batch 64), and the model is evaluated on the test
set as ``examples/modelnet.py --eval`` does (the first 512 points).

    python3 benchmarks/bn_recalibration.py CKPT [CKPT ...] \
        --root ../shared/data/ModelNet40
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.train import (load_checkpoint,  # noqa: E402
                                          model_from_checkpoint)
from torch_geometric_binary.train.data import (  # noqa: E402
    build_datasets, test_loader, train_loader)
from torch_geometric_binary.train.loop import evaluate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoints', nargs='+')
    parser.add_argument('--root', required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cpu = torch.device('cpu')
    splits = build_datasets('modelnet40', args.root, num_points=512,
                            augment=False)
    tests = test_loader(splits.test, 64)
    for path in args.checkpoints:
        model = model_from_checkpoint(load_checkpoint(path))
        print(path, 'before', evaluate(model, tests, cpu, 40).summary(),
              flush=True)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # A plain average over the pass.
        model.train()
        loader, _ = train_loader(splits.train, 64)
        with torch.no_grad():
            for data in loader:
                model(data.pos, data.batch)
        print(path, 'after', evaluate(model, tests, cpu, 40).summary(),
              flush=True)


if __name__ == '__main__':
    main()
