r"""Times the FP32 segmentation networks against their packed binary
counterparts (:func:`~torch_geometric_binary.deploy.pack`, module by
module: :class:`~torch_geometric_binary.deploy.PackedModel`).

For each backbone (:obj:`PointNetSeg`, :obj:`PointNet2Seg`,
:obj:`DGCNNSeg`, part segmentation of the embedded synthetic parts: 6
categories, 18 parts): the FP32 model (:obj:`method="fp"`) and the packed
BiPointNet of the same architecture, in one process, on the same clouds of
:obj:`--num-points` points (:class:`SyntheticParts` test clouds with their
categories) at each batch size, with the same number of threads. Weights
are random; forwards in training mode on training clouds set the
normalization statistics and LSR scales, then the models are evaluated.
Times are medians over :obj:`--reps` calls in rounds that alternate the
two models. Also: the share of the packed model's time in its graph
construction (sampling, radius and k-NN search, interpolation weights),
the storage (FP32 :obj:`state_dict` against the packed file), and whether
the packed per-point predictions equal the binary model's.

Usage::

    python3 benchmarks/bench_deploy_segmentation.py          # writes results
    python3 benchmarks/bench_deploy_segmentation.py --quick  # no files
"""
import argparse
import io
import json
import os
import sys
from typing import Dict, List, Optional

import torch

# Runs from a checkout without installing the package too.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(__file__))
from bench_deploy import (median_times, ms, report_head,  # noqa: E402
                          run_meta, state_dict_size)
from torch_geometric_binary.datasets import SyntheticParts  # noqa: E402
from torch_geometric_binary.deploy import pack, save  # noqa: E402
from torch_geometric_binary.nn.models import SEG_MODELS  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), 'results')


def make_batches(num_points: int, batch_sizes: List[int]):
    r"""Training clouds for calibration and test clouds per batch size:
    :obj:`(pos, batch, category)` (no batch vector for one cloud)."""
    train = SyntheticParts(train=True, num_per_category=2,
                           num_points=num_points)
    test = SyntheticParts(train=False, num_per_category=2,
                          num_points=num_points)

    def batch_of(ds, indices, one=False):
        pos = torch.cat([ds[i].pos for i in indices])
        category = torch.cat([ds[i].category for i in indices])
        batch = None if one else torch.arange(len(indices)).repeat_interleave(
            num_points)
        return pos, batch, category

    calib = [batch_of(train, [i, i + 6]) for i in range(0, 6, 2)]
    inputs = {b: batch_of(test, [(3 * i) % len(test) for i in range(b)],
                          one=b == 1) for b in batch_sizes}
    return calib, inputs, train.num_parts, len(train.CATEGORIES)


def calibrate(model: torch.nn.Module, calib) -> torch.nn.Module:
    bns = [m for m in model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # Cumulative average.
    model.train()
    with torch.no_grad():
        for pos, batch, category in calib:
            model(pos, batch, category=category)
    return model.eval()


def graph_time(packed, pos, batch, category, reps) -> float:
    r"""Seconds of one forward spent in the neighbour searches (timed by
    wrapping the module-level search functions the models call)."""
    import time

    from torch_geometric_binary.nn.models import segmentation
    from torch_geometric_binary.deploy import models as dmodels
    spent = [0.0]
    saved = {}

    def timed(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[0] += time.perf_counter() - t0
            return out
        return run
    for mod in (segmentation, dmodels):
        for name in ('knn_edges', 'radius_edges', 'fps'):
            if hasattr(mod, name):
                saved[(mod, name)] = getattr(mod, name)
                setattr(mod, name, timed(getattr(mod, name)))
    try:
        with torch.inference_mode():
            packed(pos, batch, category=category)  # Warm-up.
            spent[0] = 0.0
            for _ in range(reps):
                packed(pos, batch, category=category)
    finally:
        for (mod, name), fn in saved.items():
            setattr(mod, name, fn)
    return spent[0] / reps


def bench(name: str, args, calib, inputs, num_parts, num_categories
          ) -> Dict:
    cls = SEG_MODELS[name]
    torch.manual_seed(0)
    fp = calibrate(cls(num_parts, method='fp',
                       num_categories=num_categories), calib)
    binary = calibrate(cls(num_parts, method='bipointnet',
                           num_categories=num_categories), calib)
    packed = pack(binary)
    out: Dict = {}
    for b, (pos, batch, category) in inputs.items():
        with torch.inference_mode():
            same = bool(torch.equal(
                binary(pos, batch, category=category).argmax(-1),
                packed(pos, batch, category=category).argmax(-1)))
        t = median_times({
            'fp32': lambda: fp(pos, batch, category=category),
            'packed': lambda: packed(pos, batch, category=category),
        }, args.reps)
        g = graph_time(packed, pos, batch, category, max(3, args.reps // 4))
        out[f'batch_{b}'] = {
            'fp32_ms': ms(t['fp32']), 'packed_ms': ms(t['packed']),
            'speedup': round(t['fp32'] / t['packed'], 2),
            'packed_graph_ms': ms(g),
            'same_predictions_as_binary': same}
        print(f"{name} batch {b}: FP32 {ms(t['fp32'])} ms, packed "
              f"{ms(t['packed'])} ms ({t['fp32'] / t['packed']:.2f}x)",
              flush=True)
    fp_size = state_dict_size(fp)
    packed_size = save(packed, io.BytesIO())
    out['storage'] = {'fp32_bytes': fp_size, 'packed_bytes': packed_size,
                      'ratio': round(fp_size / packed_size, 2)}
    return out


def markdown(res: Dict) -> str:
    meta = res['meta']
    lines = report_head('Packed segmentation networks vs. FP32', meta) + [
        f"Part segmentation of the synthetic parts (6 categories, 18 "
        f"parts), {meta['num_points']} points per cloud; random "
        f"weights with calibrated normalization statistics. FP32 is "
        f"`method='fp'`, packed is `pack()` of the BiPointNet "
        f"(module by module: `PackedModel`). Times are medians (ms); "
        f"'graph' is the packed model's time in sampling and "
        f"neighbour searches.", '',
        '| model | batch | FP32 (ms) | packed (ms) | speedup | '
        'graph (ms) | same argmax as binary |',
        '|---|---|---|---|---|---|---|']
    for name, r in res['models'].items():
        for key, v in r.items():
            if not key.startswith('batch_'):
                continue
            lines.append(f"| {name} | {key[6:]} | {v['fp32_ms']} | "
                         f"{v['packed_ms']} | {v['speedup']}x | "
                         f"{v['packed_graph_ms']} | "
                         f"{v['same_predictions_as_binary']} |")
    lines += ['', '| model | FP32 state_dict (B) | packed file (B) | ratio |',
              '|---|---|---|---|']
    for name, r in res['models'].items():
        s = r['storage']
        lines.append(f"| {name} | {s['fp32_bytes']} | {s['packed_bytes']} | "
                     f"{s['ratio']}x |")
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1,
                        help='threads (default: 1)')
    parser.add_argument('--quick', action='store_true',
                        help='few repetitions, no files')
    parser.add_argument('--reps', type=int, default=None)
    parser.add_argument('--num-points', type=int, default=1024)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--models', nargs='+',
                        default=['pointnet', 'pointnet2', 'dgcnn'])
    parser.add_argument('--note', default='',
                        help='machine state, for the report')
    parser.add_argument('--out', default=None,
                        help='results prefix (default: benchmarks/results/'
                        'deploy_segmentation; none with --quick)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.reps is None:
        args.reps = 3 if args.quick else 15
    calib, inputs, num_parts, num_categories = make_batches(
        args.num_points, args.batch_sizes)
    res: Dict = {'meta': run_meta(argv, args.threads, args.note,
                                  num_points=args.num_points),
                 'models': {}}
    for name in args.models:
        res['models'][name] = bench(name, args, calib, inputs, num_parts,
                                    num_categories)
    out = args.out if args.out is not None else (
        None if args.quick else os.path.join(RESULTS, 'deploy_segmentation'))
    if out:
        with open(out + '.json', 'w') as f:
            json.dump(res, f, indent=1)
        with open(out + '.md', 'w') as f:
            f.write(markdown(res))
    print(markdown(res))


if __name__ == '__main__':
    main()
