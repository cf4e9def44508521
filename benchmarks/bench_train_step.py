r"""Times one training step (forward, backward, Adam) of PointNet, PointNet++
and DGCNN, full precision and binary, on two paths side by side in one
process, with the same threads and the same inputs:

* ``reference``: float32, every layer, BatchNorm and max run separately
  (:func:`~torch_geometric_binary.nn.fused.use_fused` off), neighbours from
  torch-cluster: the package's eager path before the speed work;
* ``default``: what ``examples/modelnet.py`` trains with: the precision of
  ``--precision auto`` (bf16 autocast where the CPU runs bf16 natively), the
  fused layer-BatchNorm-max paths and the package's neighbour kernels.

Steps alternate between the paths, so that a change in machine load hits
both. Prints a table of medians (seconds per step) and ratios, then, with
``--threads2``, the default path's steps per second at 2 threads; the last
line is a JSON object with ``pointnet_binary_speedup``,
``pointnet_fp_speedup``, ``pointnet2_binary_speedup`` and
``dgcnn_binary_speedup`` (and every row). Usage::

    python3 benchmarks/bench_train_step.py --threads 1 --points 512 --batch 32
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_geometric_binary.datasets.synthetic_shapes import (  # noqa: E402
    SHAPES, sample_shape)
from torch_geometric_binary.nn import neighbors  # noqa: E402
from torch_geometric_binary.nn.fused import use_fused  # noqa: E402
from torch_geometric_binary.nn.models import MODELS  # noqa: E402
from torch_geometric_binary.train import (autocast,  # noqa: E402
                                          resolve_precision)


@contextlib.contextmanager
def reference_path():
    r"""The unfused float32 path with torch-cluster's neighbour search."""
    old = os.environ.get(neighbors.ENV_BACKEND)
    os.environ[neighbors.ENV_BACKEND] = 'torch_cluster'
    try:
        with use_fused(False):
            yield
    finally:
        if old is None:
            del os.environ[neighbors.ENV_BACKEND]
        else:
            os.environ[neighbors.ENV_BACKEND] = old


def clouds(args) -> torch.Tensor:
    r""":obj:`args.batch` clouds of :obj:`args.points` points: ModelNet40
    test clouds from :obj:`args.root`, else the synthetic shapes."""
    if args.root is None:
        rng = np.random.default_rng(0)
        return torch.from_numpy(np.concatenate([
            sample_shape(i % len(SHAPES), args.points, rng)
            for i in range(args.batch)]))
    from torch_geometric_binary.datasets import PreSampledModelNet
    data = PreSampledModelNet(args.root, '40', train=False, log=False)
    g = torch.Generator().manual_seed(0)
    out = []
    for i in torch.randperm(len(data), generator=g)[:args.batch].tolist():
        pos = data[i].pos
        pos = pos[torch.randperm(pos.size(0), generator=g)[:args.points]]
        pos = pos - pos.mean(0)
        out.append(pos / pos.norm(dim=1).max())
    return torch.cat(out)


class Step:
    r"""One model, optimizer and input batch; :meth:`__call__` times a
    step."""
    def __init__(self, model_name: str, method: str, args):
        torch.manual_seed(0)
        self.model = MODELS[model_name](num_classes=args.classes,
                                        method=method)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        # Surface clouds in the unit sphere, as the real data: uniform
        # points in a cube would give PointNet++'s radius balls a few
        # neighbours instead of dozens, and understate its cost.
        self.pos = clouds(args)
        self.batch = torch.arange(args.batch).repeat_interleave(args.points)
        self.y = torch.randint(0, args.classes, (args.batch, ))

    def __call__(self, precision: str) -> float:
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with autocast(torch.device('cpu'), precision):
            out = self.model(self.pos, self.batch)
        F.cross_entropy(out.float(), self.y).backward()
        self.opt.step()
        return time.perf_counter() - t


def time_pair(step: Step, precision: str, reps: int,
              warmup: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {'reference': [], 'default': []}
    for i in range(warmup + reps):
        with reference_path():
            t_ref = step('fp32')
        t_new = step(precision)
        if i >= warmup:
            times['reference'].append(t_ref)
            times['default'].append(t_new)
    return times


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+',
                        default=['pointnet', 'pointnet2', 'dgcnn'],
                        choices=sorted(MODELS))
    parser.add_argument('--methods', nargs='+', default=['fp', 'bipointnet'])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--points', type=int, default=512)
    parser.add_argument('--classes', type=int, default=40)
    parser.add_argument('--root', default=None,
                        help='ModelNet40 folder: time on its test clouds '
                        '(default: the synthetic shapes)')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--threads2', type=int, default=2,
                        help='also time the default path at this many '
                        'threads (0: skip)')
    parser.add_argument('--precision', default='auto',
                        help='the default path\'s --precision')
    parser.add_argument('--json', default=None, help='also write results here')
    args = parser.parse_args(argv)
    precision = resolve_precision(args.precision, torch.device('cpu'))

    torch.set_num_threads(args.threads)
    rows = {}
    print(f"batch {args.batch} x {args.points} points, {args.threads} "
          f"thread(s), median of {args.reps}; default path: {precision}, "
          f"fused, package neighbours")
    print(f"  {'model':10s} {'method':11s} {'reference':>10s} "
          f"{'default':>10s} {'speedup':>8s}")
    steps = {}
    for model in args.models:
        for method in args.methods:
            step = steps[model, method] = Step(model, method, args)
            times = time_pair(step, precision, args.reps, args.warmup)
            ref = statistics.median(times['reference'])
            new = statistics.median(times['default'])
            rows[f'{model}/{method}'] = {
                'reference_s': ref, 'default_s': new, 'speedup': ref / new,
                'reference_all': times['reference'],
                'default_all': times['default']}
            print(f"  {model:10s} {method:11s} {ref:10.4f} {new:10.4f} "
                  f"{ref / new:7.2f}x", flush=True)

    if args.threads2:
        torch.set_num_threads(args.threads2)
        print(f"default path at {args.threads2} threads (steps per second):")
        for (model, method), step in steps.items():
            ts = [step(precision) for _ in range(args.warmup + args.reps)]
            sps = 1.0 / statistics.median(ts[args.warmup:])
            rows[f'{model}/{method}'][f'steps_per_s_{args.threads2}t'] = sps
            print(f"  {model:10s} {method:11s} {sps:6.2f}", flush=True)

    def speedup(model, method):
        row = rows.get(f'{model}/{method}')
        return None if row is None else round(row['speedup'], 3)

    result = {
        'command': 'python3 benchmarks/bench_train_step.py ' +
        ' '.join(argv if argv is not None else sys.argv[1:]),
        'machine': f'{platform.machine()}, {os.cpu_count()} cores, '
        f'torch {torch.__version__}',
        'batch': args.batch, 'points': args.points,
        'threads': args.threads, 'precision': precision,
        'rows': rows,
        'pointnet_binary_speedup': speedup('pointnet', 'bipointnet'),
        'pointnet_fp_speedup': speedup('pointnet', 'fp'),
        'pointnet2_binary_speedup': speedup('pointnet2', 'bipointnet'),
        'dgcnn_binary_speedup': speedup('dgcnn', 'bipointnet'),
    }
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != 'rows'} |
                     {'rows': {k: {n: v[n] for n in ('reference_s',
                                                       'default_s',
                                                       'speedup')}
                               for k, v in rows.items()}}))
    return result


if __name__ == '__main__':
    main()
