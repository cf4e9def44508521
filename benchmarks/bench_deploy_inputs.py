r"""Batch-1 time of packed PointNet for random vs. trained weights and three
kinds of input cloud, against FP32, in one process.

The packed time depends on the weights and the points (a pooled channel
stops at the first point that sets it, and repeated binary rows are pooled
once); the FP32 time does not. This prints, for each (weights, input) pair,
the packed median time and the ratio to the FP32 model on the same run:
random weights (calibrated as in :obj:`bench_deploy.py`) or the trained
:obj:`--checkpoint`; points uniform in the unit ball, one synthetic shape
(:class:`SyntheticShapes`, normalized to the unit sphere) or, with
:obj:`--data`, the first test cloud of a pre-sampled ModelNet folder; and
the fraction of pooled channels set (1) by each.

    python3 benchmarks/bench_deploy_inputs.py \
        --checkpoint benchmarks/results/pointnet_bipointnet.pt \
        --data ../shared/data/ModelNet40
"""
import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
import bench_deploy as bd  # noqa: E402
from torch_geometric_binary.datasets import SyntheticShapes  # noqa: E402


def pooled_fraction(model: torch.nn.Module, pos: torch.Tensor) -> float:
    r"""The fraction of the pooled features that are positive (input of
    the head's first, binary, layer)."""
    got = []
    hook = model.head.lins[0].register_forward_pre_hook(
        lambda mod, inp: got.append(inp[0]))
    with torch.no_grad():
        model(pos, None)
    hook.remove()
    return round(float((got[0] > 0).float().mean()), 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint',
                        default='benchmarks/results/pointnet_bipointnet.pt')
    parser.add_argument('--data', default=None)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--reps', type=int, default=150)
    parser.add_argument('--num-points', type=int, default=1024)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    n = args.num_points
    torch.manual_seed(0)
    fp = bd.prepare(bd.PointNet(40, method='fp'), n)
    models = {
        'random': bd.prepare(bd.PointNet(40, method='bipointnet'), n),
        'trained': bd.trained_binary_model(args.checkpoint, 40),
    }
    inputs = {'uniform': bd.clouds(1, n)[0]}
    with tempfile.TemporaryDirectory() as d:
        syn = SyntheticShapes(d, train=False, num_points=n, log=False,
                              num_per_class=2)[0].pos
    syn = syn - syn.mean(0)
    inputs['synthetic'] = syn / syn.norm(dim=-1).max()
    if args.data:
        inputs['modelnet'] = bd.load_real_clouds(args.data, n)[0]

    fns = {'fp32': lambda: fp(inputs['uniform'], None)}
    for w, model in models.items():
        packed = bd.pack(model, fp_dtype=torch.float16)
        for i, pos in inputs.items():
            fns[f'{w}/{i}'] = lambda p=packed, x=pos: p(x, None)
    t = bd.median_times(fns, args.reps)
    out = {'fp32_ms': bd.ms(t['fp32']), 'threads': torch.get_num_threads()}
    for w, model in models.items():
        for i, pos in inputs.items():
            k = f'{w}/{i}'
            out[k] = {'packed_ms': bd.ms(t[k]),
                      'speedup': round(t['fp32'] / t[k], 2),
                      'pooled_set': pooled_fraction(model, pos)}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
