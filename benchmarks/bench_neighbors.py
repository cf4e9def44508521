r"""Times graph construction: torch_cluster against our kernels.

For the shapes the models use, in one process at one thread (by default):

* ``fps 1x1024``:    farthest point sampling of one 1,024-point cloud,
  ratio 0.5 (the packed PointNet++ at batch 1),
* ``fps 32x1024``:   the same for a batch of 32 clouds,
* ``radius``:        r 0.2, at most 64 neighbours, 32 clouds x 512 points
  around their 256 fps centres (PointNet++'s first set abstraction),
* ``knn 3-d``:       k 20 on the coordinates, 32 x 512 points,
* ``knn 64-d``:      k 20 on 64-dimensional features, 32 x 512 points
  (DGCNN's second and later EdgeConvs).

and the Hamming k-NN of the packed signs of such features (DGCNN's
``graph_metric='hamming'``; k 20, 1 x 1,024 and 32 x 1,024 points, 64
channels) against our histogram kernel, the one CPUs without AVX2 run
(:obj:`TORCH_GEOMETRIC_BINARY_GRAPH_ISA=scalar`).

Clouds are the synthetic shapes (surfaces scaled into the unit sphere);
features are a fixed random two-layer MLP of the coordinates. Every result is
checked to equal torch_cluster's before it is timed. Prints a table of
median times and, as the last line, a JSON object with the times and the
speed-ups (torch_cluster time / ours).

Usage::

    python benchmarks/bench_neighbors.py
    python benchmarks/bench_neighbors.py --out \
        benchmarks/results/bench_neighbors.json
"""
import argparse
import json
import os
import platform
import sys
from typing import Dict

import numpy as np
import torch
import torch_cluster

# Runs from a checkout without installing the package too.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.datasets.synthetic_shapes import (  # noqa: E402
    SHAPES, sample_shape)
from torch_geometric_binary.nn import neighbors  # noqa: E402

from bench_kernels import median_time  # noqa: E402

GRAPH_ISA = 'TORCH_GEOMETRIC_BINARY_GRAPH_ISA'


def make_batch(num_clouds: int, num_points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pos = torch.cat([
        torch.from_numpy(sample_shape(i % len(SHAPES), num_points, rng))
        for i in range(num_clouds)
    ])
    batch = torch.arange(num_clouds).repeat_interleave(num_points)
    return pos, batch


def features(pos: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(3, dim, generator=g)
    w2 = torch.randn(dim, dim, generator=g) / dim**0.5
    return torch.nn.functional.leaky_relu(pos @ w1, 0.2) @ w2


def ops() -> Dict[str, tuple]:
    r"""name -> (torch_cluster call, our call)."""
    tc, nb = torch_cluster, neighbors
    p1, b1 = make_batch(1, 1024)
    p32, b32 = make_batch(32, 1024, seed=1)
    p, b = make_batch(32, 512, seed=2)
    idx = tc.fps(p, b, ratio=0.5, random_start=False)
    q, bq = p[idx], b[idx]
    f = features(p, 64)

    def swap(rc):
        return torch.stack([rc[1], rc[0]], dim=0)

    return {
        'fps 1x1024': (
            lambda: tc.fps(p1, b1, 0.5, random_start=False),
            lambda: nb.fps(p1, b1, 0.5, random_start=False)),
        'fps 32x1024': (
            lambda: tc.fps(p32, b32, 0.5, random_start=False),
            lambda: nb.fps(p32, b32, 0.5, random_start=False)),
        'radius 32x512': (
            lambda: swap(tc.radius(p, q, 0.2, b, bq, max_num_neighbors=64)),
            lambda: nb.radius_edges(p, q, 0.2, b, bq, 64)),
        'knn 3-d 32x512': (
            lambda: swap(tc.knn(p, p, 20, b, b)),
            lambda: nb.knn_edges(p, p, 20, b, b)),
        'knn 64-d 32x512': (
            lambda: swap(tc.knn(f, f, 20, b, b)),
            lambda: nb.knn_edges(f, f, 20, b, b)),
    }


def hamming_ops() -> Dict[str, tuple]:
    r"""name -> (the histogram kernel's call, the best kernel's call)."""
    from torch_geometric_binary.utils.bits import pack_bool
    out = {}
    for B in (1, 32):
        p, b = make_batch(B, 1024, seed=3)
        codes = pack_bool(features(p, 64) > 0)

        def best(codes=codes, b=b):
            return neighbors.knn_hamming_edges(codes, codes, 20, b, b)

        def histogram(best=best):
            old = os.environ.get(GRAPH_ISA)
            os.environ[GRAPH_ISA] = 'scalar'
            try:
                return best()
            finally:
                if old is None:
                    del os.environ[GRAPH_ISA]
                else:
                    os.environ[GRAPH_ISA] = old
        out[f'hamming {B}x1024'] = (histogram, best)
    return out


def compare(pairs: Dict[str, tuple], ref_name: str, title: str,
            args) -> Dict[str, Dict]:
    r"""Checks that each pair gives the same result, then times both and
    prints a table."""
    rows = {}
    print(f"{title:<18} {ref_name:>16} {'ours':>10} {'speed-up':>9}")
    for name, (ref, ours) in pairs.items():
        if not torch.equal(ref(), ours()):
            sys.exit(f'{name}: results differ from {ref_name}')
        t_ref = median_time(ref, args.reps, args.min_time)
        t_ours = median_time(ours, args.reps, args.min_time)
        rows[name] = {f'{ref_name}_ms': round(t_ref * 1e3, 4),
                      'ours_ms': round(t_ours * 1e3, 4),
                      'speedup': round(t_ref / t_ours, 2)}
        print(f'{name:<18} {t_ref * 1e3:>13.3f} ms {t_ours * 1e3:>7.3f} ms '
              f'{t_ref / t_ours:>8.1f}x')
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--min-time', type=float, default=1.0,
                        help='seconds per measurement at least')
    parser.add_argument('--out', default=None, help='write the JSON here too')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if neighbors.backend() != 'cpp':
        sys.exit(f'The graph extension is not in use '
                 f'({neighbors._EXT_ERROR}); nothing to compare.')

    rows = compare(ops(), 'torch_cluster', 'operation', args)
    rows.update(compare(hamming_ops(), 'histogram_kernel', 'Hamming k-NN',
                        args))

    result = {
        'command': 'python ' + ' '.join(sys.argv),
        'threads': args.threads,
        'torch': torch.__version__,
        'torch_cluster': getattr(torch_cluster, '__version__', '?'),
        'machine': platform.processor() or platform.machine(),
        # Other jobs share the machine: times scale with its load.
        'load_average_1min': round(os.getloadavg()[0], 2),
        'results': rows,
        'speedup': {name: r['speedup'] for name, r in rows.items()},
    }
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
            f.write('\n')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
