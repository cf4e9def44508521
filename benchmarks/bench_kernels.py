r"""Times the XNOR-popcount kernels against the float32 matrix product.

For PointNet-like shapes (M points, K input and N output channels) it times,
in one process with the same number of threads:

* ``fp32``:      ``x @ W.T`` (float32, PyTorch's BLAS),
* ``xnor``:      :func:`xnor_gemm` on packed operands (int32 output),
* ``xnor+thr``:  :func:`xnor_gemm_threshold` (packed output bits: the layer
  as it runs between two binary layers),
* ``pack``:      :func:`pack_bits` of the float input (paid once, by the
  first binary layer),

and prints medians and the speedups over ``fp32``.

Usage::

    python3 benchmarks/bench_kernels.py            # M = 1024 and 32768
    python3 benchmarks/bench_kernels.py --quick    # M = 1024, < 30 s
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

# Runs from a checkout without installing the package too.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.deploy import kernels  # noqa: E402


def median_time(fn: Callable[[], object], reps: int, min_time: float) -> float:
    r"""Median seconds over at least :obj:`reps` calls (more for fast calls,
    up to :obj:`min_time` seconds in all), after a warm-up call."""
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < min_time
                                and len(times) < 50 * reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_shape(M: int, K: int, N: int, reps: int, min_time: float,
                backend: str) -> Dict[str, float]:
    x, w = torch.randn(M, K), torch.randn(N, K)
    a = kernels.pack_bits(x, backend=backend)
    b = kernels.pack_bits(w, backend=backend)
    threshold = torch.randint(-K, K + 1, (N, ), dtype=torch.int32)
    flip = torch.rand(N) < 0.5
    wt = w.t()
    return {
        'fp32': median_time(lambda: x @ wt, reps, min_time),
        'xnor': median_time(
            lambda: kernels.xnor_gemm(a, b, K, backend=backend), reps,
            min_time),
        'xnor+thr': median_time(
            lambda: kernels.xnor_gemm_threshold(a, b, K, threshold, flip,
                                                backend=backend), reps,
            min_time),
        'pack': median_time(lambda: kernels.pack_bits(x, backend=backend),
                            reps, min_time),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='M = 1024 only, fewer repetitions (< 30 s)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: as torch sets them)')
    parser.add_argument('--reps', type=int, default=None,
                        help='minimum repetitions per timing')
    parser.add_argument('--backend', default=None, choices=['cpp', 'torch'],
                        help='kernel backend (default: kernels.backend())')
    parser.add_argument('--isa', default=None,
                        help='force the C++ kernels onto one instruction set')
    parser.add_argument('--json', default=None, help='also write results here')
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backend = args.backend or kernels.backend()
    if args.isa is not None:
        kernels.set_isa(args.isa)
    reps = args.reps or (3 if args.quick else 7)
    min_time = 0.05 if args.quick else 0.3
    rows = [1024] if args.quick else [1024, 32 * 1024]
    channels = [(64, 64), (128, 128), (1024, 1024), (128, 1024)]

    print(f"torch {torch.__version__}, {platform.processor() or 'cpu'}, "
          f"threads={torch.get_num_threads()}, backend={backend}, "
          f"isa={kernels.isa() if backend == 'cpp' else '-'}")
    header = (f"{'M':>6} {'K':>5} {'N':>5} | {'fp32 ms':>9} {'xnor ms':>9} "
              f"{'thr ms':>9} {'pack ms':>8} | {'fp32/xnor':>9} "
              f"{'fp32/thr':>9}")
    print(header)
    print('-' * len(header))
    results = []
    for M in rows:
        for K, N in channels:
            t = bench_shape(M, K, N, reps, min_time, backend)
            results.append(dict(M=M, K=K, N=N, **t))
            print(f"{M:>6} {K:>5} {N:>5} | {t['fp32'] * 1e3:>9.3f} "
                  f"{t['xnor'] * 1e3:>9.3f} {t['xnor+thr'] * 1e3:>9.3f} "
                  f"{t['pack'] * 1e3:>8.3f} | "
                  f"{t['fp32'] / t['xnor']:>8.1f}x "
                  f"{t['fp32'] / t['xnor+thr']:>8.1f}x", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(threads=torch.get_num_threads(), backend=backend,
                           isa=kernels.isa(), results=results), f, indent=1)


if __name__ == '__main__':
    main()
