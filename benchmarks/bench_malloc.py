r"""Times training steps with and without :func:`~torch_geometric_binary.
utils.memory.reuse_freed_memory` (which the trainer applies), in fresh
processes alternating between the two settings (a process-wide setting
cannot alternate inside one process), the same inputs and threads.

For each model: the median step (forward, backward, Adam; batch of random
clouds in the unit sphere, 40 classes) over all processes of a setting,
the ratio, and the peak resident memory. The last line is a JSON object
with every row. Usage::

    python3 benchmarks/bench_malloc.py --models dgcnn pointnet2 pointnet
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from torch_geometric_binary.train.cli import write_json  # noqa: E402

STEPS = r'''
import json, resource, sys, time, torch
import torch.nn.functional as F
torch.set_num_threads({threads})
from torch_geometric_binary.utils.memory import reuse_freed_memory
applied = reuse_freed_memory()
from torch_geometric_binary.nn.models import MODELS
torch.manual_seed(0)
model = MODELS['{model}'](40, method='{method}')
opt = torch.optim.Adam(model.parameters(), 1e-3)
pos = torch.randn({batch} * {points}, 3)
pos = pos / pos.norm(dim=1, keepdim=True)
batch = torch.arange({batch}).repeat_interleave({points})
y = torch.randint(0, 40, ({batch}, ))
times = []
for s in range({warmup} + {steps}):
    t0 = time.perf_counter()
    opt.zero_grad()
    F.cross_entropy(model(pos, batch), y).backward()
    opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps({{'applied': applied, 'times': times[{warmup}:],
                  'maxrss_gb': resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss / 1e6}}))
'''


def run(args, model: str, reuse: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop('TORCH_GEOMETRIC_BINARY_MALLOC', None)
    if not reuse:
        env['TORCH_GEOMETRIC_BINARY_MALLOC'] = 'system'
    code = STEPS.format(threads=args.threads, model=model,
                        method=args.method, batch=args.batch,
                        points=args.points, warmup=args.warmup,
                        steps=args.steps)
    out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+',
                        default=['dgcnn', 'pointnet2', 'pointnet'])
    parser.add_argument('--method', default='bipointnet')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--points', type=int, default=512)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--steps', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=2,
                        help='processes per setting, alternating')
    parser.add_argument('--out', default=None, help='also write the JSON')
    args = parser.parse_args()
    rows = {}
    print(f"{'model':<10} {'system (s)':>11} {'reused (s)':>11} "
          f"{'speed-up':>9} {'peak GB system/reused':>22}")
    for model in args.models:
        res = {True: [], False: []}
        for _ in range(args.rounds):
            for reuse in (False, True):
                res[reuse].append(run(args, model, reuse))
        if not all(r['applied'] for r in res[True]):
            sys.exit('reuse_freed_memory() did not apply here (no glibc '
                     'mallopt)')
        med = {k: statistics.median(t for r in v for t in r['times'])
               for k, v in res.items()}
        peak = {k: max(r['maxrss_gb'] for r in v) for k, v in res.items()}
        rows[model] = {'system_s': round(med[False], 4),
                       'reused_s': round(med[True], 4),
                       'speedup': round(med[False] / med[True], 2),
                       'peak_gb_system': round(peak[False], 2),
                       'peak_gb_reused': round(peak[True], 2)}
        print(f'{model:<10} {med[False]:>11.3f} {med[True]:>11.3f} '
              f'{med[False] / med[True]:>8.2f}x '
              f'{peak[False]:>10.2f} / {peak[True]:.2f}')
    result = {'command': 'python3 ' + ' '.join(sys.argv),
              'method': args.method, 'batch': args.batch,
              'points': args.points, 'threads': args.threads,
              'load_average_1min': round(os.getloadavg()[0], 2),
              'results': rows}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
