r"""Times binary training steps with and without the training kernels of
2026-12-03 (late), alternating in one process, with the same inputs and
threads:

* binary products from packed signs (XNOR-popcount) where a binary
  layer's operands are :math:`\pm 1`: in the fused max
  (:func:`torch_geometric_binary.nn.fused.GroupMaxProduct` with
  :obj:`signs`) and in the other layers
  (:func:`~torch_geometric_binary.nn.functional.sign_product`);
* RPReLU and the learned input thresholds (RSign) in one C++ pass each way
  (:class:`~torch_geometric_binary.nn.RPReLU`,
  :func:`~torch_geometric_binary.nn.functional.binarize_shifted`);
* the weight gradient of full-precision layers with few input channels in
  the transposed order (:func:`~torch_geometric_binary.nn.fused.
  narrow_linear`).

"Without" turns these off and keeps everything else, including the AVX2
scan of the fused max (which has no switch besides the CPU). For each
model: the median step (forward, backward, Adam; random clouds in the unit
sphere, 40 classes) and the ratio. The last line is a JSON object with
every row. Usage::

    python3 benchmarks/bench_binary_kernels.py --reps 7
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from torch_geometric_binary.nn import fused  # noqa: E402
from torch_geometric_binary.nn import functional, rprelu  # noqa: E402
from torch_geometric_binary.nn.models import MODELS  # noqa: E402
from torch_geometric_binary.train.cli import write_json  # noqa: E402
from torch_geometric_binary.utils.memory import \
    reuse_freed_memory  # noqa: E402

# (model, method, points, model kwargs): the campaign's configurations.
CASES = [('pointnet', 'react+ema', 1024, {'dropout': 0.0}),
         ('pointnet', 'bipointnet', 1024, {'dropout': 0.0}),
         ('pointnet2', 'bipointnet', 512, {}),
         ('pointnet2', 'react+ema', 512, {}),
         ('dgcnn', 'bipointnet', 512, {}),
         ('dgcnn', 'react+ema', 512, {})]


@contextlib.contextmanager
def without_new_kernels():
    r"""The PyTorch paths these kernels replaced (their private hooks)."""
    saved = (functional.packed_signs, rprelu._use_kernels,
             functional._SHIFTED_ESTIMATORS, fused.NARROW_CHANNELS)
    functional.packed_signs = lambda *args: ()
    rprelu._use_kernels = lambda *args: False
    functional._SHIFTED_ESTIMATORS = {}
    fused.NARROW_CHANNELS = 0
    try:
        yield
    finally:
        (functional.packed_signs, rprelu._use_kernels,
         functional._SHIFTED_ESTIMATORS, fused.NARROW_CHANNELS) = saved


def time_case(model_name, method, points, kwargs, args):
    torch.manual_seed(0)
    model = MODELS[model_name](40, method=method, **kwargs)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    pos = torch.randn(args.batch * points, 3)
    pos = pos / pos.norm(dim=1, keepdim=True)
    batch = torch.arange(args.batch).repeat_interleave(points)
    y = torch.randint(0, 40, (args.batch, ))

    def step():
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(pos, batch), y).backward()
        opt.step()
        return time.perf_counter() - start

    times = {'with': [], 'without': []}
    for rep in range(args.warmup + args.reps):
        with without_new_kernels():
            t_old = step()
        t_new = step()
        if rep >= args.warmup:
            times['without'].append(t_old)
            times['with'].append(t_new)
    row = {k: statistics.median(v) for k, v in times.items()}
    return {'model': model_name, 'method': method, 'points': points,
            'batch': args.batch, 'without_s': round(row['without'], 4),
            'with_s': round(row['with'], 4),
            'speedup': round(row['without'] / row['with'], 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--points', type=int, default=None,
                        help='override every case\'s cloud size')
    parser.add_argument('--models', nargs='+', default=None,
                        choices=sorted({c[0] for c in CASES}))
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--out', default=None, help='write the JSON here too')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # As the trainer.
    rows = []
    for model_name, method, points, kwargs in CASES:
        if args.models is not None and model_name not in args.models:
            continue
        row = time_case(model_name, method, args.points or points, kwargs,
                        args)
        print(f"{model_name:9s} {method:10s} {row['points']:5d} points: "
              f"without {row['without_s']:.3f} s, with {row['with_s']:.3f} "
              f"s, {row['speedup']:.2f}x", flush=True)
        rows.append(row)
    result = {'command': 'python3 benchmarks/bench_binary_kernels.py ' +
              ' '.join(sys.argv[1:] if argv is None else argv),
              'threads': args.threads, 'torch': torch.__version__,
              'rows': rows}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
