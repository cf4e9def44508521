r"""Times one training step (forward, backward, Adam) of the classifiers,
full precision and binary, side by side in one process with the same
threads and inputs.

Rows:

* ``fp``: the full-precision model,
* ``<method>``: the binary model as the package trains it,
* ``<method> (plain autograd)``: the same binary model with the two
  training-time shortcuts swapped for their plain autograd forms, the LSR
  product as ``F.linear(x, w) * scale`` and the dense max pooling as
  ``amax``: what :func:`~torch_geometric_binary.nn.functional.scaled_linear`
  and :class:`~torch_geometric_binary.nn.aggr.DenseMax` buy.

Prints medians (seconds per step) and the ratios; ``--json`` also writes
them. Usage::

    python3 benchmarks/bench_train_step.py                  # PointNet, 32 x 512
    python3 benchmarks/bench_train_step.py --points 1024 --threads 1
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
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_geometric_binary.nn import aggr, linear  # noqa: E402
from torch_geometric_binary.nn.models import MODELS  # noqa: E402


class _AmaxPool:
    apply = staticmethod(lambda x, dim: x.amax(dim))


@contextlib.contextmanager
def plain_autograd():
    r"""The binary layers with plain autograd forms of the LSR product and
    the dense max pooling (same forward values)."""
    with mock.patch.object(linear, 'scaled_linear',
                           lambda x, w, s: F.linear(x, w) * s), \
            mock.patch.object(aggr, 'DenseMax', _AmaxPool):
        yield


def time_steps(model_name: str, method: str, num_classes: int, batch: int,
               points: int, reps: int, warmup: int, kwargs: Dict) -> List[float]:
    torch.manual_seed(0)
    model = MODELS[model_name](num_classes=num_classes, method=method,
                               **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pos = torch.randn(batch * points, 3)
    index = torch.arange(batch).repeat_interleave(points)
    y = torch.randint(0, num_classes, (batch, ))
    times = []
    for i in range(warmup + reps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(pos, index), y).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='pointnet', choices=sorted(MODELS))
    parser.add_argument('--method', default='bipointnet')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--points', type=int, default=512)
    parser.add_argument('--classes', type=int, default=40)
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--model-kwargs', type=json.loads, default={})
    parser.add_argument('--json', default=None, help='also write results here')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def run(method):
        return statistics.median(time_steps(
            args.model, method, args.classes, args.batch, args.points,
            args.reps, args.warmup, args.model_kwargs))

    rows = {'fp': run('fp'), args.method: run(args.method)}
    with plain_autograd():
        rows[f'{args.method} (plain autograd)'] = run(args.method)
    result = {
        'command': 'python3 benchmarks/bench_train_step.py ' +
        ' '.join(argv if argv is not None else sys.argv[1:]),
        'machine': f'{platform.machine()}, {os.cpu_count()} cores, '
        f'{torch.get_num_threads()} thread(s), torch {torch.__version__}',
        'model': args.model, 'batch': args.batch, 'points': args.points,
        'seconds_per_step': rows,
        'binary_over_fp': rows[args.method] / rows['fp'],
        'speedup_over_plain_autograd':
        rows[f'{args.method} (plain autograd)'] / rows[args.method],
    }
    print(f"{args.model}, batch {args.batch} x {args.points} points, "
          f"{torch.get_num_threads()} thread(s), median of {args.reps}")
    for name, t in rows.items():
        print(f"  {name:32s} {t:8.4f} s/step  ({t / rows['fp']:.2f}x fp)")
    print(f"  shortcuts buy {result['speedup_over_plain_autograd']:.2f}x")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
