r"""Times full-precision models against their packed binary counterparts.

In one process, with the same number of threads and the same inputs:

* **PointNet** (no T-Nets, 40 classes): the FP32 model (:obj:`method="fp"`)
  against :func:`~torch_geometric_binary.deploy.pack` of the BiPointNet of
  the same architecture, at batch 1 (one cloud of :obj:`--num-points`
  points) and batch 32; end to end and per layer (where the time goes);
  and the storage: the FP32 :obj:`state_dict` file against the packed file
  with the full-precision first and last layers in float32 and in float16,
  for clouds of any size and for clouds of :obj:`--num-points` points.
* **PointNet++** and **DGCNN**: FP32 against packed, end to end, with the
  share of the graph construction (farthest point sampling, radius and
  k-NN search, on the float coordinates/features) in the packed model.

Weights are random by default; one forward in training mode initializes
the LSR scales and moves the normalization statistics, then the models are
evaluated. The FP32 time does not depend on the weights or the points; the
packed time does a little (a pooled channel stops at the first point that
sets it, and repeated binary rows are pooled once), so
:obj:`--checkpoint` (a trained BiPointNet of ``examples/modelnet.py``) and
:obj:`--data` (a pre-sampled ModelNet folder: the inputs are its first test
clouds of each class) time the deployed case. Times are medians over
:obj:`--reps` repetitions, the two models alternating.

Usage::

    python3 benchmarks/bench_deploy.py                # full, writes results
    python3 benchmarks/bench_deploy.py --quick        # < 1 minute, no files
    python3 benchmarks/bench_deploy.py --models pointnet \
        --checkpoint benchmarks/results/pointnet_bipointnet.pt \
        --data ../shared/data/ModelNet40 --out benchmarks/results/deploy_pointnet_trained

The last line printed is a JSON object with :obj:`end_to_end_speedup_b1`,
:obj:`end_to_end_speedup_b32` and :obj:`storage_ratio` (FP32 file over the
packed file with float16 first/last layers, for clouds of any size), and
:obj:`storage_ratio_fixed_points` (the same, packed for clouds of
:obj:`--num-points` points only: :obj:`pack(..., num_points=n)`).
"""
import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

# Runs from a checkout without installing the package too.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.deploy import (BinaryChain, kernels,  # noqa
                                           num_bytes, pack, save)
from torch_geometric_binary.nn.models import DGCNN, PointNet  # noqa: E402
from torch_geometric_binary.nn.models import PointNet2  # noqa: E402
from torch_geometric_binary.utils import check_points  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), 'results')


ROUNDS = 3  # Rounds of median_times (1 with --quick).
CALIBRATION = 4  # Calibration batches of prepare() (1 with --quick).


def median_times(fns: Dict[str, Callable[[], object]], reps: int,
                 warmup: int = 2, rounds: Optional[int] = None
                 ) -> Dict[str, float]:
    r"""Median seconds of each function over :obj:`reps` calls. The calls
    of one function run back to back (as in deployment: warm caches), in
    :obj:`rounds` rounds that alternate the functions (so that slow drifts
    of the machine affect all alike)."""
    rounds = ROUNDS if rounds is None else rounds
    times: Dict[str, List[float]] = {k: [] for k in fns}
    per_round = max(1, -(-reps // rounds))
    with torch.inference_mode():
        for _ in range(rounds):
            for k, fn in fns.items():
                for _ in range(warmup):
                    fn()
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


REAL_CLOUDS: Optional[torch.Tensor] = None  # [clouds, points, 3], --data


def load_real_clouds(root: str, num_points: int) -> torch.Tensor:
    r"""The first :obj:`num_points` points of test clouds of a pre-sampled
    ModelNet folder, one class after the other (cloud i of class i % C)."""
    from torch_geometric_binary.datasets import PreSampledModelNet
    data = PreSampledModelNet(root, train=False, log=False)
    by_class: Dict[int, List[torch.Tensor]] = {}
    for d in data:
        if d.pos.size(0) < num_points:
            raise ValueError(f"--data: a test cloud has {d.pos.size(0)} "
                             f"points, fewer than --num-points "
                             f"{num_points}")
        by_class.setdefault(int(d.y), []).append(d.pos[:num_points])
    out, i = [], 0
    while len(out) < 64:
        lists = [v for v in by_class.values() if len(v) > i]
        if not lists:
            break
        out += [v[i] for v in lists]
        i += 1
    return torch.stack(out)


def clouds(batch_size: int, num_points: int, seed: int = 0):
    r"""Points uniform in the unit ball, or real clouds with :obj:`--data`
    (:obj:`seed` then picks the first cloud)."""
    if REAL_CLOUDS is not None:
        idx = (torch.arange(batch_size) + seed) % REAL_CLOUDS.size(0)
        pos = REAL_CLOUDS[idx, :num_points].reshape(-1, 3)
        batch = None if batch_size == 1 else torch.arange(
            batch_size).repeat_interleave(num_points)
        return pos, batch
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(batch_size * num_points, 3, generator=g)
    pos = pos / pos.norm(dim=-1, keepdim=True)  # Points on a sphere.
    pos = pos * torch.rand(pos.size(0), 1, generator=g).pow(1 / 3)
    batch = None if batch_size == 1 else torch.arange(
        batch_size).repeat_interleave(num_points)
    return pos, batch


def prepare(model: torch.nn.Module, num_points: int,
            batches: Optional[int] = None) -> torch.nn.Module:
    r"""Forwards in training mode (the first initializes the LSR scales;
    the normalization statistics become the average over the batches, as
    in a trained model, so that binary features are balanced), then
    evaluation mode."""
    batches = CALIBRATION if batches is None else batches
    bns = [m for m in model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # Cumulative average.
    model.train()
    with torch.no_grad():
        for i in range(batches):
            pos, batch = clouds(2, num_points, seed=100 + i)
            model(pos, batch)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    return model.eval()


def state_dict_size(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def packed_size(packed: torch.nn.Module) -> int:
    return save(packed, io.BytesIO())


def ms(t: float) -> float:
    return round(t * 1e3, 4)


# --------------------------------------------------------------------------
# PointNet per layer.

def pointnet_layers(fp: PointNet, packed, pos, batch) -> Dict[str, Dict]:
    r"""Per-layer times of both models on the same input: the FP32 layers
    (linear + normalization + activation) and the packed model's pieces
    (the full-precision first and last layers, each packed binary layer as
    a one-layer chain, the pooled layer with its OR pooling)."""
    out: Dict[str, Dict] = {}
    counts = torch.tensor([pos.size(0)]) if batch is None else \
        torch.bincount(batch)
    with torch.inference_mode():
        # FP32: collect each layer's input.
        fns = {}
        h = pos
        for name, mlp in (('mlp1', fp.mlp1), ('mlp2', fp.mlp2)):
            for i, lin in enumerate(mlp.lins):
                x = h
                last = i == len(mlp.lins) - 1
                norm = mlp.last_norm if last and mlp.plain_last \
                    else mlp.norms[i]
                act = None if last and mlp.plain_last else mlp.act

                def f(x=x, lin=lin, norm=norm, act=act):
                    y = norm(lin(x))
                    return act(y) if act is not None else y
                fns[f'{name}.lins.{i} ({lin.in_channels}->'
                    f'{lin.out_channels})'] = f
                h = f()
        size = 1 if batch is None else int(batch.max()) + 1
        b = torch.zeros(h.size(0), dtype=torch.long) if batch is None \
            else batch
        fns['pool (max over points)'] = \
            lambda h=h: fp.act(fp.pool(h, b, size))
        h = fp.act(fp.pool(h, b, size))
        for i, lin in enumerate(fp.head.lins):
            x = h
            last = i == len(fp.head.lins) - 1

            def g(x=x, lin=lin, i=i, last=last):
                y = lin(x)
                return y if last else fp.head.act(fp.head.norms[i](y))
            fns[f'head.lins.{i} ({lin.in_channels}->{lin.out_channels})'] = g
            h = g()
        out['fp32'] = {'fns': fns}

        # Packed.
        packed(pos, batch)  # Builds its fused chains.
        seg, = [s for s in packed.fused_segments()
                if s.chain.pool is not None and s.final is not None]
        m, i0 = seg.first
        pfns = {}
        pfns['input checks'] = lambda: check_points(pos, 'pos', batch)
        lin0 = m.lins[i0]
        pfns[f'mlp1.lins.0 FP ({lin0.in_channels}->{lin0.out_channels}, '
             f'linear; its BN + sign are thresholds in the chain)'] = \
            lambda: lin0(pos)
        z = lin0(pos)
        layers = seg.chain.layers
        names = ['mlp1.lins.1', 'mlp2.lins.0', 'mlp2.lins.1', 'mlp2.lins.2',
                 'head.lins.0', 'head.lins.1']
        x = z
        thr = seg.first_threshold
        P = seg.chain.pool
        for j, layer in enumerate(layers):
            if j < P:
                ch = BinaryChain([layer], 'bits')
                key = (f'{names[j]} binary ({layer.in_channels}->'
                       f'{layer.out_channels}, threshold -> bits)')
                pfns[key] = (lambda ch=ch, x=x, thr=thr:
                             ch(x, in_threshold=thr))
                x = ch(x, in_threshold=thr)
            elif j == P:
                ch = BinaryChain([layer], 'bits', pool=0,
                                 pool_ema=packed.method.ema,
                                 pool_act=packed.act)
                key = (f'{names[j]} binary ({layer.in_channels}->'
                       f'{layer.out_channels}) + EMA-max pool as OR of bits')
                pfns[key] = lambda ch=ch, x=x: ch(x, counts)
                x = ch(x, counts)
            else:
                last = j == len(layers) - 1
                ch = BinaryChain([layer], 'float' if last else 'bits')
                key = (f'{names[j]} binary ({layer.in_channels}->'
                       f'{layer.out_channels}'
                       f'{", float out" if last else ""})')
                pfns[key] = lambda ch=ch, x=x: ch(x)
                x = ch(x)
            thr = None
        mlast, ilast = seg.last
        lin_last = mlast.lins[ilast]
        pfns[f'head.lins.2 FP ({lin_last.in_channels}->'
             f'{lin_last.out_channels})'] = \
            lambda x=x: mlast.fp_layer(ilast, x)
        pfns['fused chain (all binary layers, one call)'] = \
            lambda: seg.chain(z, counts, in_threshold=seg.first_threshold)
        out['packed'] = {'fns': pfns}
    return out


def time_layers(parts: Dict[str, Dict], reps: int) -> Dict[str, Dict]:
    res = {}
    for model, d in parts.items():
        t = median_times(d['fns'], reps, warmup=3)
        res[model] = {k: ms(v) for k, v in t.items()}
    return res


# --------------------------------------------------------------------------

def bench_pointnet(args) -> Dict:
    torch.manual_seed(0)
    fp = prepare(PointNet(args.classes, method='fp'), args.num_points)
    if args.checkpoint:
        bi = trained_binary_model(args.checkpoint, args.classes)
    else:
        bi = prepare(PointNet(args.classes, method='bipointnet'),
                     args.num_points)
    packed = pack(bi)
    packed16 = pack(bi, fp_dtype=torch.float16)
    packed16e = pack(bi, fp_dtype=torch.float16,
                     epilogue_dtype=torch.float16)
    # Clouds of one size only: thresholds instead of the pooled float tail.
    fixed = pack(bi, num_points=args.num_points)
    fixed16 = pack(bi, fp_dtype=torch.float16, num_points=args.num_points)
    res: Dict = {'architecture': 'PointNet, no T-Nets, 3-64-64 | 64-64-128-'
                 f'1024 | max | 1024-512-256-{args.classes}',
                 'num_points': args.num_points,
                 'binary_weights': args.checkpoint or 'random',
                 'inputs': (f'test clouds of {args.data}' if args.data
                            else 'points uniform in the unit ball')}

    # Exactness check on the benchmark input (eval mode).
    pos, batch = clouds(4, args.num_points, seed=2)
    with torch.inference_mode():
        ref, got = bi(pos, batch), packed(pos, batch)
        got16 = packed16(pos, batch)
        fixed_same = torch.equal(fixed16(pos, batch), got16) and \
            torch.equal(fixed(pos, batch), got)
    res['packed_vs_binary_model'] = {
        'same_argmax': bool(torch.equal(ref.argmax(1), got.argmax(1))),
        'max_abs_logit_diff': float((ref - got).abs().max()),
        'max_abs_logit': float(ref.abs().max()),
        'fp16_same_argmax': bool(torch.equal(ref.argmax(1),
                                             got16.argmax(1))),
        'fp16_max_abs_logit_diff': float((ref - got16).abs().max()),
        'fixed_points_same_logits': fixed_same,
    }

    for B in args.batch_sizes:
        pos, batch = clouds(B, args.num_points)
        reps = args.reps if B == 1 else max(3, args.reps // 4)
        t = median_times({'fp32': lambda: fp(pos, batch),
                          'packed': lambda: packed16(pos, batch)}, reps,
                         warmup=2 if B == 1 else 1)
        res[f'batch_{B}'] = {
            'fp32_ms': ms(t['fp32']), 'packed_ms': ms(t['packed']),
            'speedup': round(t['fp32'] / t['packed'], 2)}
        if not args.no_layers:
            parts = pointnet_layers(fp, packed16, pos, batch)
            res[f'batch_{B}']['layers_ms'] = time_layers(parts, reps)

    fp_size = state_dict_size(fp)
    res['storage'] = {
        'fp32_state_dict_bytes': fp_size,
        'binary_model_state_dict_bytes': state_dict_size(bi),
        'packed_fp32_bytes': packed_size(packed),
        'packed_fp16_bytes': packed_size(packed16),
        'packed_fp16_all_float_bytes': packed_size(packed16e),
        'packed_fp16_breakdown': num_bytes(packed16, by_kind=True),
        'packed_fp32_fixed_points_bytes': packed_size(fixed),
        'packed_fp16_fixed_points_bytes': packed_size(fixed16),
        'packed_fp16_fixed_points_breakdown': num_bytes(fixed16,
                                                        by_kind=True),
    }
    s = res['storage']
    for k in ('fp32_fixed_points', 'fp16_fixed_points'):
        s[f'ratio_{k}'] = round(fp_size / s[f'packed_{k}_bytes'], 2)
    s['ratio_fp32'] = round(fp_size / s['packed_fp32_bytes'], 2)
    s['ratio_fp16'] = round(fp_size / s['packed_fp16_bytes'], 2)
    s['ratio_fp16_all_float'] = round(
        fp_size / s['packed_fp16_all_float_bytes'], 2)
    return res


def trained_binary_model(path: str, classes: int) -> torch.nn.Module:
    r"""The PointNet of an ``examples/modelnet.py`` checkpoint."""
    from torch_geometric_binary.train import (load_checkpoint,
                                              model_from_checkpoint)
    state = load_checkpoint(path)
    config = state['config']
    if config['model'] != 'pointnet' or config['method'] == 'fp':
        raise ValueError(f"--checkpoint: '{path}' is a {config['model']} "
                         f"({config['method']}) model, not a binary "
                         f"PointNet")
    model = model_from_checkpoint(state)
    # Dropout and other training-only options may differ; the layers not.
    if model.num_classes != classes or model.in_channels or \
            model.input_tnet is not None or model.feature_tnet is not None:
        raise ValueError(f"--checkpoint: '{path}' is not the benchmark's "
                         f"architecture (no T-Nets, --classes {classes})")
    return model


def graph_fn(packed, pos, batch) -> Callable[[], None]:
    r"""The packed model's graph construction alone (sampling, radius or
    k-NN search, the gathers and edge features), to time."""
    from torch_geometric_binary.deploy.models import grouped_edges
    from torch_geometric_binary.nn.models import PointNet2
    b = torch.zeros(pos.size(0), dtype=torch.long) if batch is None \
        else batch
    model = packed.model
    if isinstance(model, PointNet2):
        # The float steps of forward(): graph, gathers, edge offsets.
        def run():
            p, bb = pos, b
            for sa in (model.sa1, model.sa2):
                j, i, _, pd, bd = grouped_edges(p, bb, sa.ratio, sa.r,
                                                sa.max_num_neighbors)
                p.index_select(0, j) - pd.index_select(0, i)
                p, bb = pd, bd
    else:  # A DGCNN.
        # k-NN on the points, and on the 64-d features of conv1 (same size
        # as the model's; random values), and the edge inputs.
        x1 = torch.randn(pos.size(0), model.conv1.nn.out_channels)

        def run():
            for conv, h in ((model.conv1, pos), (model.conv2, x1)):
                conv.edge_inputs(h, b)
    return run


def bench_other(args, name: str, cls, kwargs) -> Dict:
    torch.manual_seed(0)
    fp = prepare(cls(args.classes, method='fp', **kwargs), args.num_points)
    bi = prepare(cls(args.classes, method='bipointnet', **kwargs),
                 args.num_points)
    packed = pack(bi, fp_dtype=torch.float16)
    res: Dict = {}
    for B in args.other_batch_sizes:
        pos, batch = clouds(B, args.num_points)
        reps = max(5 if B == 1 else 3, args.reps // (4 if B == 1 else 10))
        warm = 2 if B == 1 else 1
        t = median_times({'fp32': lambda: fp(pos, batch),
                          'packed': lambda: packed(pos, batch)}, reps,
                         warmup=warm)
        g = median_times({'graph': graph_fn(packed, pos, batch)}, reps,
                         warmup=warm)['graph']
        res[f'batch_{B}'] = {
            'fp32_ms': ms(t['fp32']), 'packed_ms': ms(t['packed']),
            'speedup': round(t['fp32'] / t['packed'], 2),
            'graph_ms': ms(g),
            'graph_share_of_packed': round(g / t['packed'], 3),
            'graph_share_of_fp32': round(g / t['fp32'], 3)}
    fp_size = state_dict_size(fp)
    res['storage'] = {'fp32_state_dict_bytes': fp_size,
                      'packed_fp16_bytes': packed_size(packed),
                      'ratio_fp16': round(fp_size / packed_size(packed), 2)}
    return res


def pin_one_cpu() -> Optional[int]:
    r"""Pins this process to one of its CPUs (the last) for one-thread
    timings, and returns it: every function of a comparison then runs on
    the same core, and the scheduler cannot move it in between."""
    if not hasattr(os, 'sched_setaffinity'):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def run_meta(argv: Optional[List[str]], threads: int, note: Optional[str],
             **extra) -> Dict:
    r"""What a benchmark report records of its run: the exact command, the
    machine, threads, torch, the kernel backend, :obj:`extra` and the
    :obj:`note`."""
    return {'command': 'python3 ' + ' '.join([sys.argv[0]] + (
                argv if argv is not None else sys.argv[1:])),
            'machine': f'{platform.processor() or platform.machine()}, '
                       f'{os.cpu_count()} cores',
            'threads': threads, 'torch': torch.__version__,
            'kernels': f'{kernels.backend()} ({kernels.isa()})',
            **extra, 'note': note or 'n/a'}


def report_head(title: str, m: Dict, details: str = '') -> List[str]:
    r"""The first lines of a benchmark report: :obj:`title`, the command
    and the machine line of :func:`run_meta`'s :obj:`m` (with
    :obj:`details` before the note)."""
    return [f'# {title}', '', f"Command: `{m['command']}`", '',
            f"Machine: {m['machine']}; {m['threads']} thread(s); torch "
            f"{m['torch']}; kernels: {m['kernels']}; {details}{m['note']}",
            '']


def markdown(res: Dict) -> str:
    m = res['meta']
    lines = report_head('Packed binary inference vs. FP32', m) + [
        'Times are medians (ms). Weights are random (one calibration '
        'pass of the normalization statistics in training mode) unless '
        'a trained checkpoint is named below.', '']
    pn = res.get('pointnet')
    if pn is not None:
        lines += pointnet_markdown(pn)
    for name in ('pointnet2', 'dgcnn'):
        if name not in res:
            continue
        lines += [f"## {name}", '',
                  '| batch | FP32 (ms) | packed (ms) | speedup | graph '
                  '(ms) | graph share of packed |',
                  '|---|---|---|---|---|---|']
        for k, v in res[name].items():
            if k.startswith('batch_'):
                lines.append(
                    f"| {k[6:]} | {v['fp32_ms']} | {v['packed_ms']} | "
                    f"{v['speedup']}x | {v['graph_ms']} | "
                    f"{v['graph_share_of_packed']:.0%} |")
        st = res[name]['storage']
        lines += ['', f"Storage: FP32 {st['fp32_state_dict_bytes']} B, "
                  f"packed (FP layers float16) {st['packed_fp16_bytes']} B "
                  f"({st['ratio_fp16']}x)", '']
    return '\n'.join(lines) + '\n'


def pointnet_markdown(pn: Dict) -> List[str]:
    lines = []
    lines += [f"## PointNet ({pn['architecture']}), "
              f"{pn['num_points']} points per cloud", '',
              f"Binary weights: {pn.get('binary_weights', 'random')}; "
              f"inputs: {pn.get('inputs', 'points uniform in the unit ball')}"
              f".", '',
              f"Packed (float32 FP layers) vs. the binary model (eval), 4 "
              f"clouds: {pn['packed_vs_binary_model']}", '',
              '| batch | FP32 (ms) | packed (ms) | speedup |',
              '|---|---|---|---|']
    for k, v in pn.items():
        if k.startswith('batch_'):
            lines.append(f"| {k[6:]} | {v['fp32_ms']} | {v['packed_ms']} | "
                         f"{v['speedup']}x |")
    s = pn['storage']
    lines += ['', '| storage | bytes | ratio to FP32 |', '|---|---|---|',
              f"| FP32 state_dict | {s['fp32_state_dict_bytes']} | 1 |",
              f"| packed, FP layers float32 | {s['packed_fp32_bytes']} | "
              f"{s['ratio_fp32']}x |",
              f"| packed, FP layers float16 | {s['packed_fp16_bytes']} | "
              f"{s['ratio_fp16']}x |",
              f"| packed, all float tensors float16 | "
              f"{s['packed_fp16_all_float_bytes']} | "
              f"{s['ratio_fp16_all_float']}x |",
              f"| packed for {pn['num_points']}-point clouds, FP layers "
              f"float32 | {s['packed_fp32_fixed_points_bytes']} | "
              f"{s['ratio_fp32_fixed_points']}x |",
              f"| packed for {pn['num_points']}-point clouds, FP layers "
              f"float16 | {s['packed_fp16_fixed_points_bytes']} | "
              f"{s['ratio_fp16_fixed_points']}x |", '',
              f"Packed (FP layers float16) payload by kind: "
              f"{s['packed_fp16_breakdown']}; for {pn['num_points']}-point "
              f"clouds (`pack(..., num_points={pn['num_points']})`, the same "
              f"logits, other sizes refused): "
              f"{s['packed_fp16_fixed_points_breakdown']}", '']
    for k, v in pn.items():
        if k.startswith('batch_') and 'layers_ms' in v:
            lines += [f"### Per layer, batch {k[6:]} (ms, median)", '']
            for model, layers in v['layers_ms'].items():
                lines += [f"**{model}**", '', '| layer | ms |', '|---|---|']
                lines += [f"| {name} | {t} |" for name, t in layers.items()]
                lines.append('')
    return lines


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=None,
                        help='threads (default: all cores)')
    parser.add_argument('--quick', action='store_true',
                        help='few repetitions, no per-layer times, no files')
    parser.add_argument('--reps', type=int, default=None)
    parser.add_argument('--num-points', type=int, default=1024)
    parser.add_argument('--classes', type=int, default=40)
    parser.add_argument('--batch-sizes', type=int, nargs='+',
                        default=[1, 32])
    parser.add_argument('--other-batch-sizes', type=int, nargs='+',
                        default=None)
    parser.add_argument('--models', nargs='+',
                        default=['pointnet', 'pointnet2', 'dgcnn'])
    parser.add_argument('--no-layers', action='store_true')
    parser.add_argument('--checkpoint', default=None,
                        help='trained binary PointNet checkpoint (default: '
                        'random weights)')
    parser.add_argument('--data', default=None,
                        help='pre-sampled ModelNet folder whose test clouds '
                        'are the inputs (default: points in the unit ball)')
    parser.add_argument('--note', default='',
                        help='machine state, for the report')
    parser.add_argument('--out', default=None,
                        help='results prefix (default: benchmarks/results/'
                        'deploy_pointnet; none with --quick)')
    args = parser.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.reps is None:
        args.reps = 12 if args.quick else 60
    if args.quick:
        args.no_layers = True
        global ROUNDS, CALIBRATION
        ROUNDS, CALIBRATION = 1, 1
    if args.data:
        global REAL_CLOUDS
        REAL_CLOUDS = load_real_clouds(args.data, args.num_points)
    if args.other_batch_sizes is None:
        args.other_batch_sizes = [1] if args.quick else [1, 32]

    res: Dict = {'meta': run_meta(argv, threads, args.note)}
    if 'pointnet' in args.models:
        res['pointnet'] = bench_pointnet(args)
    if 'pointnet2' in args.models:
        res['pointnet2'] = bench_other(args, 'pointnet2', PointNet2, {})
    if 'dgcnn' in args.models:
        res['dgcnn'] = bench_other(args, 'dgcnn', DGCNN, {})

    default = 'deploy_' + (args.models[0] if len(args.models) == 1
                           else 'pointnet')
    out = args.out if args.out is not None else (
        None if args.quick else os.path.join(RESULTS, default))
    if out:
        os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
        with open(out + '.json', 'w') as f:
            json.dump(res, f, indent=1)
        with open(out + '.md', 'w') as f:
            f.write(markdown(res))
    print(markdown(res))
    pn = res.get('pointnet', {})
    summary = {
        'end_to_end_speedup_b1': pn.get('batch_1', {}).get('speedup'),
        'end_to_end_speedup_b32': pn.get('batch_32', {}).get('speedup'),
        'storage_ratio': pn.get('storage', {}).get('ratio_fp16'),
        'storage_ratio_fp32': pn.get('storage', {}).get('ratio_fp32'),
        'storage_ratio_fixed_points': pn.get('storage', {}).get(
            'ratio_fp16_fixed_points'),
    }
    for name in ('pointnet2', 'dgcnn'):
        if name in res:
            summary[f'{name}_speedup_b1'] = res[name]['batch_1']['speedup']
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
