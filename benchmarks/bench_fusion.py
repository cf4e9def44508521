r"""Models packed module by module (:class:`~torch_geometric_binary.deploy.
PackedModel`): their own forward with fusion (:mod:`~torch_geometric_binary.
deploy.fusion`: consecutive packed MLPs, the pooling and the activation run
as one chain) against the same modules one by one
(:meth:`PackedModel.forward_layers`), against the forward as written
without the replay of its recording (:mod:`~torch_geometric_binary.deploy.
replay`), and for the classifiers against FP32. (The hand-fused packed
classes it once compared with, the *twins*, are retired:
:func:`~torch_geometric_binary.deploy.pack` gives these models.)

Medians of alternating runs in one process, random weights with calibrated
normalization statistics, points uniform in the unit ball; each call takes
the next of :obj:`NEW_CLOUDS` batches of clouds.

Usage::

    python3 benchmarks/bench_fusion.py --note "..."  # results/fusion.{json,md}
    python3 benchmarks/bench_fusion.py --quick       # a check, no files
"""
import argparse
import itertools
import json
import os
import sys
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from benchmarks.bench_deploy import (clouds, median_times, ms,  # noqa
                                     pin_one_cpu, prepare, report_head,
                                     run_meta)
from torch_geometric_binary.deploy import pack_modules  # noqa
from torch_geometric_binary.nn.models import (DGCNN, DGCNNSeg,  # noqa
                                              PointNet, PointNet2,
                                              PointNet2Seg, PointNetSeg)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'results')

MODELS = {
    'PointNet': lambda: PointNet(40, method='bipointnet'),
    'PointNet, T-Nets': lambda: PointNet(
        40, method='bipointnet', input_transform=True,
        feature_transform=True),
    'PointNet2': lambda: PointNet2(40, method='bipointnet'),
    'DGCNN': lambda: DGCNN(40, method='bipointnet'),
    'PointNetSeg': lambda: PointNetSeg(50, method='bipointnet'),
    'PointNet2Seg': lambda: PointNet2Seg(50, method='bipointnet'),
    'DGCNNSeg': lambda: DGCNNSeg(50, method='bipointnet'),
}
SEGMENTATION = ('PointNetSeg', 'PointNet2Seg', 'DGCNNSeg')
FP = {'PointNet': PointNet, 'PointNet2': PointNet2, 'DGCNN': DGCNN}
#: Timed at --batch-sizes; the others at --seg-batch-sizes.
POINTNETS = ('PointNet', 'PointNet, T-Nets')


#: Each timed call takes the next of this many batches of clouds, as a
#: deployment sees new clouds (a recorded forward must serve them all).
NEW_CLOUDS = 8


def cycling(fn: Callable, inputs: List[tuple]) -> Callable[[], object]:
    r""":obj:`fn` on the next of :obj:`inputs` at each call."""
    calls = itertools.cycle(inputs)
    return lambda: fn(*next(calls))


def bench(name: str, batch_size: int, num_points: int, reps: int) -> Dict:
    torch.manual_seed(0)
    model = prepare(MODELS[name](), num_points)
    packed = pack_modules(model)
    inputs = [clouds(batch_size, num_points, seed=s)
              for s in range(NEW_CLOUDS)]
    pos, batch = inputs[0]
    fns = {'fused': cycling(packed, inputs),
           'written': cycling(packed._run, inputs),
           'layers': cycling(packed.forward_layers, inputs)}
    if name in FP:
        fns['FP32'] = cycling(prepare(FP[name](40, method='fp'),
                                      num_points), inputs)
    with torch.no_grad():
        out, ref = packed(pos, batch), packed.forward_layers(pos, batch)
    t = median_times(fns, reps)
    row = {k: ms(v) for k, v in t.items()}
    row['layers_over_fused'] = round(t['layers'] / t['fused'], 2)
    row['written_over_fused'] = round(t['written'] / t['fused'], 2)
    row['same_argmax'] = bool(torch.equal(out.argmax(-1), ref.argmax(-1)))
    row['max_abs_diff'] = float((out - ref).abs().max())
    return row


def markdown(res: Dict) -> str:
    lines = report_head('Fusion in models packed module by module',
                        res['meta'], f"{res['num_points']} points per "
                        f"cloud; pinned to CPU {res['meta']['pinned_cpu']}; "
                        ) + [
        f'Times in ms (medians of alternating runs; each call takes the '
        f'next of {NEW_CLOUDS} batches of clouds). *fused*: '
        '`PackedModel.forward` (fusion on, the recorded forward replayed); '
        '*written*: the forward as written (fusion on, not replayed); '
        '*layers*: `PackedModel.forward_layers` (each packed module on its '
        'own).', '',
        '| model | batch | fused | written | written / fused | layers | '
        'layers / fused | FP32 | same argmax | max abs diff |',
        '|---|---|---|---|---|---|---|---|---|---|']
    for r in res['rows']:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['fused']} | {r['written']} "
            f"| {r['written_over_fused']}x | {r['layers']} "
            f"| {r['layers_over_fused']}x "
            f"| {r.get('FP32', '-')} | {r['same_argmax']} | "
            f"{r['max_abs_diff']:.2g} |")
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--seg-batch-sizes', type=int, nargs='+',
                        default=[1, 8],
                        help='batch sizes of the segmentation networks, '
                        'PointNet++ and DGCNN')
    parser.add_argument('--num-points', type=int, default=1024)
    parser.add_argument('--reps', type=int, default=40)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--quick', action='store_true',
                        help='small sizes, few repetitions, no files')
    parser.add_argument('--note', default=None)
    parser.add_argument('--models', nargs='+', choices=list(MODELS),
                        default=list(MODELS), metavar='MODEL',
                        help=f"some of: {', '.join(MODELS)}")
    parser.add_argument('--out', default=os.path.join(RESULTS, 'fusion'))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.num_points, args.reps = [1, 4], 128, 3
        args.seg_batch_sizes = [2]
    torch.set_num_threads(args.threads)
    pinned = pin_one_cpu() if args.threads == 1 else None
    res = {'meta': run_meta(argv, args.threads, args.note,
                            pinned_cpu=pinned),
           'num_points': args.num_points, 'rows': []}
    for name in args.models:
        sizes = args.batch_sizes if name in POINTNETS \
            else args.seg_batch_sizes
        for b in sizes:
            row = {'model': name, 'batch': b,
                   **bench(name, b, args.num_points, args.reps)}
            print(json.dumps(row), flush=True)
            res['rows'].append(row)
    if not args.quick:
        with open(args.out + '.json', 'w') as f:
            json.dump(res, f, indent=1)
        with open(args.out + '.md', 'w') as f:
            f.write(markdown(res))
    summary = {}
    for r in res['rows']:
        if r['model'] == 'PointNet':
            summary[f"pointnet_layers_over_fused_b{r['batch']}"] = \
                r['layers_over_fused']
        if r['model'] in FP:
            summary[f"{r['model'].lower()}_fp32_over_fused_b{r['batch']}"] \
                = round(r['FP32'] / r['fused'], 2)
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
