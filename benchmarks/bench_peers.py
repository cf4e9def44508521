r"""Times packed binary inference against every peer a user would deploy.

In one process, with the same number of threads (default 1) and the same
inputs, the peers of each model run alternating and medians are reported
(batch 1 and batch 32):

* **PointNet** (no T-Nets, 40 classes), :func:`~torch_geometric_binary.
  deploy.pack` of the BiPointNet against

  - ``torch_fp32``: the package's PointNet (:obj:`method="fp"`), the FP
    twin of the same architecture;
  - ``dense_fp32``: the same FP32 weights as a dense :obj:`[B, N, C]`
    network (BatchNorm folded into the linear layers, max over the points),
    the fastest form of it in eager PyTorch;
  - ``dense_bf16``: that dense twin under :func:`torch.autocast` bfloat16
    (AMX on CPUs that have it, AVX-512 BF16 otherwise);
  - ``onnx_fp32``: the dense twin exported with :func:`torch.onnx.export`
    and run by ONNX Runtime (BatchNorm folded), one session thread per
    torch thread;
  - ``onnx_int8``: the same model with ONNX Runtime's dynamic quantization
    (int8 weights, activations quantized per call).

  The ONNX peers need :obj:`onnxruntime` and :obj:`onnx` (optional
  benchmark dependencies); without them they are skipped with a message.
* **PointNet++** and **DGCNN**: the package's FP32 model with this
  package's graph construction (the same kernels as the packed model:
  :mod:`torch_geometric_binary.nn.neighbors`), the same with
  :mod:`torch_cluster`'s (what a PyG user gets), and bfloat16 autocast of
  the package's model; the share of the packed time spent in graph
  construction. A dense twin and ONNX would need the sampling and neighbour
  search as tensor programs; they are not built.

Weights are random by default (:obj:`--checkpoint` loads a trained binary
PointNet); one calibration pass in training mode makes the normalization
statistics those of the inputs' features (:func:`bench_deploy.prepare`), so
that the binary features are balanced as in a trained model.

It also reports how close the XNOR-popcount kernels come to the machine:
binary multiply-accumulates per cycle in the two largest packed layers of
PointNet (the 128-1024 point layer and the 1024-512 head layer, timed
alone on their shapes), against the instruction-level peak of the kernels'
instruction set (one full-width XOR-popcount per cycle: see
:obj:`PEAK_MACS_PER_CYCLE`). The clock is the one :obj:`/proc/cpuinfo`
reports unless :obj:`--ghz` gives it.

:obj:`--thread-check` measures instead how the packed models behave with
the threads and the OpenMP wait policy of the environment
(:obj:`OMP_WAIT_POLICY`), as on a machine whose cores are busy with other
work: median and 90th-percentile times of packed PointNet at batch 1 and 32,
packed DGCNN at batch 1 and FP32 PointNet at batch 1, as one JSON line.

Usage::

    python3 benchmarks/bench_peers.py                  # full, writes results
    python3 benchmarks/bench_peers.py --quick          # < 1 minute, no files
    python3 benchmarks/bench_peers.py --threads 2 --models pointnet
    OMP_WAIT_POLICY=passive python3 benchmarks/bench_peers.py --threads 2 \
        --thread-check

The last line printed is a JSON object with :obj:`pointnet_vs_best_peer_b1`,
:obj:`pointnet_vs_best_peer_b32` (the fastest peer's time over the packed
time), :obj:`pointnet2_vs_fp32_b1` and :obj:`dgcnn_vs_fp32_b1` (FP32 with
the same graph construction over packed), :obj:`null` where not measured.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

# Runs from a checkout without installing the package too.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(__file__))
import bench_deploy  # noqa: E402
from bench_deploy import (clouds, graph_fn, median_times, ms,  # noqa: E402
                          pin_one_cpu, report_head, run_meta)
from torch_geometric_binary.deploy import kernels, pack  # noqa: E402
from torch_geometric_binary.nn import neighbors  # noqa: E402
from torch_geometric_binary.nn.models import (DGCNN, PointNet,  # noqa: E402
                                              PointNet2)

RESULTS = os.path.join(os.path.dirname(__file__), 'results')

# Binary multiply-accumulates per cycle and core if the kernel's
# XOR-popcount instruction issued every cycle at full width (the loop's
# other instructions on other ports): 512 bits for AVX-512 VPOPCNTDQ; the
# AVX2 nibble lookup needs two byte shuffles per 256 bits (two shuffle
# ports: 256); NEON's CNT counts 128 bits (two pipes: 256); the scalar
# POPCNT 64 bits (one port).
PEAK_MACS_PER_CYCLE = {'avx512_vpopcntdq': 512, 'avx2': 256, 'neon': 256,
                       'popcnt': 64, 'generic': 64}


# --------------------------------------------------------------------------
# PointNet's dense twin.

def _folded(lin: torch.nn.Module, norm: Optional[torch.nn.Module]
            ) -> torch.nn.Linear:
    r"""A :class:`torch.nn.Linear` computing :obj:`norm(lin(x))` in
    evaluation mode (BatchNorm folded into the weights)."""
    w = lin.weight.detach().double()
    b = lin.bias.detach().double() if lin.bias is not None else \
        torch.zeros(w.size(0), dtype=torch.float64)
    if norm is not None:
        bn = getattr(norm, 'module', norm)  # PyG's BatchNorm wraps torch's.
        if not isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            raise TypeError(f"dense twin: cannot fold a "
                            f"{type(bn).__name__}")
        s = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        w = w * s[:, None]
        b = (b - bn.running_mean.double()) * s + bn.bias.double()
    out = torch.nn.Linear(w.size(1), w.size(0))
    with torch.no_grad():
        out.weight.copy_(w.float())
        out.bias.copy_(b.float())
    return out


class DensePointNet(torch.nn.Module):
    r"""An FP32 :class:`~torch_geometric_binary.nn.models.PointNet` (no
    T-Nets) on dense clouds :obj:`[B, N, 3]` with BatchNorm folded:

    .. math::
        \mathbf{y} = h\big(\max_i g(\mathbf{p}_i)\big)

    with :math:`g` the per-point layers (linear + ReLU, the last one linear
    only) and :math:`h` the head, as plain :class:`torch.nn.Linear` layers
    that export to ONNX as :obj:`MatMul` + :obj:`Add`."""
    def __init__(self, model: PointNet):
        super().__init__()
        if model.method.binary or model.input_tnet is not None or \
                model.feature_tnet is not None:
            raise ValueError("DensePointNet: needs an FP PointNet without "
                             "T-Nets")
        point: List[torch.nn.Module] = []
        for lin, norm in zip(model.mlp1.lins, model.mlp1.norms):
            point += [_folded(lin, norm), torch.nn.ReLU()]
        m2 = model.mlp2
        for lin, norm in zip(m2.lins[:-1], m2.norms):
            point += [_folded(lin, norm), torch.nn.ReLU()]
        point.append(_folded(m2.lins[-1], m2.last_norm))
        self.point = torch.nn.Sequential(*point)
        head: List[torch.nn.Module] = [torch.nn.ReLU()]
        for lin, norm in zip(model.head.lins[:-1], model.head.norms):
            head += [_folded(lin, norm), torch.nn.ReLU()]
        head.append(_folded(model.head.lins[-1], None))
        self.head = torch.nn.Sequential(*head)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return self.head(self.point(pos).amax(dim=1))


# --------------------------------------------------------------------------
# ONNX Runtime.

def onnx_sessions(dense: torch.nn.Module, num_points: int, threads: int,
                  workdir: str) -> Tuple[Dict[str, Callable], str]:
    r"""ONNX Runtime sessions (FP32 and dynamically quantized int8) of the
    dense twin, as functions of a :obj:`[B, N, 3]` numpy array; an empty
    dict and the reason when ONNX Runtime is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        return {}, (f"ONNX Runtime peers skipped: {e} (pip install "
                    f"onnxruntime onnx)")
    fp32 = os.path.join(workdir, 'pointnet_fp32.onnx')
    int8 = os.path.join(workdir, 'pointnet_int8.onnx')
    example = torch.zeros(1, num_points, 3)
    with contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(dense, (example, ), fp32, input_names=['pos'],
                          output_names=['logits'], dynamo=False,
                          dynamic_axes={'pos': {0: 'batch'},
                                        'logits': {0: 'batch'}})
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    fns = {}
    for name, path in (('onnx_fp32', fp32), ('onnx_int8', int8)):
        opt = ort.SessionOptions()
        opt.intra_op_num_threads = threads
        opt.inter_op_num_threads = 1
        opt.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, opt,
                                    providers=['CPUExecutionProvider'])
        fns[name] = (lambda x, s=sess: s.run(None, {'pos': x})[0])
    return fns, f"onnxruntime {ort.__version__}"


# --------------------------------------------------------------------------

def same_predictions(ref: torch.Tensor, got: torch.Tensor) -> Dict:
    return {'same_argmax': bool(torch.equal(ref.argmax(1), got.argmax(1))),
            'max_abs_logit_diff': float((ref - got).abs().max())}


def speedups(times: Dict[str, float], packed: str = 'packed') -> Dict:
    return {k: round(v / times[packed], 2) for k, v in times.items()
            if k != packed}


def bench_pointnet(args) -> Dict:
    torch.manual_seed(0)
    fp = bench_deploy.prepare(PointNet(args.classes, method='fp'),
                              args.num_points)
    if args.checkpoint:
        bi = bench_deploy.trained_binary_model(args.checkpoint, args.classes)
    else:
        bi = bench_deploy.prepare(PointNet(args.classes, method='bipointnet'),
                                  args.num_points)
    packed = pack(bi)
    dense = DensePointNet(fp).eval()
    res: Dict = {'architecture': 'PointNet, no T-Nets, 3-64-64 | 64-64-128-'
                 f'1024 | max | 1024-512-256-{args.classes}',
                 'binary_weights': args.checkpoint or 'random'}

    pos, batch = clouds(4, args.num_points, seed=2)
    with torch.inference_mode():
        res['packed_vs_binary_model'] = same_predictions(
            bi(pos, batch), packed(pos, batch))
        ref = fp(pos, batch)
        dense_in = pos.view(4, args.num_points, 3)
        res['dense_vs_torch_fp32'] = same_predictions(ref, dense(dense_in))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            res['dense_bf16_vs_torch_fp32'] = same_predictions(
                ref, dense(dense_in).float())

    with tempfile.TemporaryDirectory() as tmp:
        ort_fns, ort_note = onnx_sessions(dense, args.num_points,
                                          args.threads, tmp)
        res['onnxruntime'] = ort_note
        if not ort_fns:
            print(ort_note, file=sys.stderr)
        else:
            x = dense_in.numpy()
            ref_np = torch.from_numpy(ort_fns['onnx_fp32'](x))
            res['onnx_fp32_vs_torch_fp32'] = same_predictions(ref, ref_np)
            res['onnx_int8_vs_torch_fp32'] = same_predictions(
                ref, torch.from_numpy(ort_fns['onnx_int8'](x)))

        for B in args.batch_sizes:
            pos, batch = clouds(B, args.num_points)
            x = pos.view(B, args.num_points, 3)
            xn = x.numpy()

            def bf16(x=x):
                with torch.autocast('cpu', dtype=torch.bfloat16):
                    return dense(x)
            fns = {'packed': lambda: packed(pos, batch),
                   'torch_fp32': lambda: fp(pos, batch),
                   'dense_fp32': lambda: dense(x),
                   'dense_bf16': bf16}
            for name, f in ort_fns.items():
                fns[name] = (lambda f=f: f(xn))
            reps = args.reps if B == 1 else max(3, args.reps // 4)
            t = median_times(fns, reps, warmup=2 if B == 1 else 1,
                             rounds=args.rounds)
            best = min((k for k in t if k != 'packed'), key=t.get)
            res[f'batch_{B}'] = {
                'ms': {k: ms(v) for k, v in t.items()},
                'speedup_over': speedups(t), 'fastest_peer': best,
                'vs_best_peer': round(t[best] / t['packed'], 2)}
    res['kernel_efficiency'] = kernel_efficiency(args)
    return res


def cpu_ghz() -> Optional[float]:
    r"""The clock /proc/cpuinfo reports (a VM's is nominal)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('cpu mhz'):
                    return float(line.split(':')[1]) / 1e3
    except (OSError, ValueError):
        pass
    return None


def kernel_efficiency(args) -> Dict:
    r"""Binary MACs per cycle of :func:`xnor_gemm_threshold` (the kernel of
    a layer between two binary layers) on PointNet's two largest packed
    layers at batch 1 and 32, against :obj:`PEAK_MACS_PER_CYCLE`."""
    ghz = args.ghz or cpu_ghz()
    isa = kernels.isa() if kernels.backend() == 'cpp' else None
    peak = PEAK_MACS_PER_CYCLE.get(isa) if isa else None
    out: Dict = {'isa': isa, 'ghz': ghz, 'ghz_source':
                 '--ghz' if args.ghz else '/proc/cpuinfo (nominal on a VM)',
                 'peak_macs_per_cycle': peak, 'layers': []}
    g = torch.Generator().manual_seed(0)
    for B in args.batch_sizes:
        for name, M, K, N in (('mlp2.lins.2 (128->1024)',
                               B * args.num_points, 128, 1024),
                              ('head.lins.0 (1024->512)', B, 1024, 512)):
            a = kernels.pack_bits(torch.randn(M, K, generator=g))
            w = kernels.pack_bits(torch.randn(N, K, generator=g))
            thr = torch.zeros(N, dtype=torch.int32)
            flip = torch.zeros(N, dtype=torch.bool)
            t = median_times({'k': lambda: kernels.xnor_gemm_threshold(
                a, w, K, thr, flip)}, args.reps, warmup=2,
                rounds=args.rounds)['k']
            row = {'layer': name, 'batch': B, 'M': M, 'K': K, 'N': N,
                   'ms': ms(t), 'gmacs_per_s': round(M * K * N / t / 1e9, 1)}
            if ghz:
                row['macs_per_cycle'] = round(M * K * N / t / (ghz * 1e9), 1)
                if peak:
                    row['of_peak'] = round(row['macs_per_cycle'] / peak, 3)
            out['layers'].append(row)
    return out


class _Backend:
    r"""Sets :obj:`TORCH_GEOMETRIC_BINARY_NEIGHBORS` for a call."""
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.old = os.environ.get(neighbors.ENV_BACKEND)
        os.environ[neighbors.ENV_BACKEND] = self.name

    def __exit__(self, *exc):
        if self.old is None:
            del os.environ[neighbors.ENV_BACKEND]
        else:
            os.environ[neighbors.ENV_BACKEND] = self.old


def dgcnn_graph_fns(fp, bi, packed, pos, batch) -> Dict[str, Callable]:
    r"""DGCNN's graph construction alone: the two :math:`k`-NN searches,
    on the points and on the features of :obj:`conv1` (the model's own:
    the binary model's, whose values repeat, for the packed model; the
    FP32 model's for FP32)."""
    from torch_geometric_binary.nn.models.common import place_activation
    b = torch.zeros(pos.size(0), dtype=torch.long) if batch is None \
        else batch
    with torch.inference_mode():
        x1 = {name: place_activation(m, 0)(m.conv1(pos, b))
              for name, m in (('packed', bi), ('fp32', fp))}
    k1 = fp.conv1.k
    # Each model's own second search (a Hamming one on the signs for a
    # binary model built with graph_metric='hamming').
    return {f'{name}_graph_only': (lambda h=h, m=m: (
        neighbors.knn_edges(pos, pos, k1, b, b),
        m.conv2.knn_graph((h, h), (b, b))))
        for (name, h), m in zip(x1.items(), (bi, fp))}


def profile_ops(fn: Callable, calls: int, top: int = 10) -> List[Dict]:
    r"""Self CPU milliseconds per call of the :obj:`top` operators of
    :obj:`fn` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    with torch.inference_mode():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) / 1e3 / calls
    rows = [{'op': e.key, 'ms': round(e.self_cpu_time_total / 1e3 / calls,
                                      3), 'calls': e.count // calls}
            for e in ops[:top]]
    return [{'op': '(total)', 'ms': round(total, 3)}] + rows


def bench_graph_model(args, cls) -> Dict:
    torch.manual_seed(0)
    fp = bench_deploy.prepare(cls(args.classes, method='fp'),
                              args.num_points)
    extra = {'graph_metric': args.dgcnn_graph} if cls is DGCNN else {}
    bi = bench_deploy.prepare(cls(args.classes, method='bipointnet',
                                  **extra), args.num_points)
    packed = pack(bi)
    res: Dict = {'graph_backend': neighbors.backend(), **extra}
    pos, batch = clouds(4, args.num_points, seed=2)
    with torch.inference_mode():
        res['packed_vs_binary_model'] = same_predictions(
            bi(pos, batch), packed(pos, batch))
    for B in args.batch_sizes:
        pos, batch = clouds(B, args.num_points)

        def cluster():
            with _Backend('torch_cluster'):
                return fp(pos, batch)

        def bf16():
            with torch.autocast('cpu', dtype=torch.bfloat16):
                return fp(pos, batch)
        fns = {'packed': lambda: packed(pos, batch),
               'torch_fp32': lambda: fp(pos, batch),
               'torch_fp32_torch_cluster_graph': cluster,
               'torch_bf16': bf16}
        if cls is DGCNN:
            fns.update(dgcnn_graph_fns(fp, bi, packed, pos, batch))
        else:
            fns['packed_graph_only'] = graph_fn(packed, pos, batch)
        reps = max(5, args.reps // 2) if B == 1 else max(3, args.reps // 8)
        t = median_times(fns, reps, warmup=2 if B == 1 else 1,
                         rounds=args.rounds)
        g = t.pop('packed_graph_only')
        row = {'ms': {k: ms(v) for k, v in t.items()
                      if not k.endswith('_graph_only')},
               'packed_graph_ms': ms(g),
               'graph_share_of_packed': round(g / t['packed'], 3)}
        row['speedup_over'] = speedups(
            {k: t[k] for k in row['ms']})
        if cls is DGCNN:
            # What 8x would need: the graph construction is the same
            # search in both (on each model's own features).
            gf = t.pop('fp32_graph_only')
            fp32, packed_ms = t['torch_fp32'], t['packed']
            row.update({
                'fp32_graph_ms': ms(gf),
                'packed_non_graph_ms': ms(packed_ms - g),
                'fp32_non_graph_ms': ms(fp32 - gf),
                'non_graph_ratio': round((fp32 - gf) / (packed_ms - g), 2),
                'packed_ms_for_8x': ms(fp32 / 8)})
            if args.profile:
                row['packed_profile'] = profile_ops(
                    lambda: packed(pos, batch), 3 if B == 1 else 1)
        res[f'batch_{B}'] = row
    return res


def thread_check(args) -> Dict:
    r"""Median and 90th-percentile milliseconds of single calls (so that a
    stall of one thread on a busy core shows in the tail)."""
    def times(fn, n):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        return [ms(statistics.median(ts)), ms(ts[int(0.9 * (len(ts) - 1))])]
    torch.manual_seed(0)
    n = args.num_points
    fp = bench_deploy.prepare(PointNet(args.classes, method='fp'), n)
    pn = pack(bench_deploy.prepare(PointNet(args.classes,
                                            method='bipointnet'), n))
    dg = pack(bench_deploy.prepare(DGCNN(args.classes, method='bipointnet'),
                                   n))
    (p1, b1), (p32, b32) = clouds(1, n), clouds(32, n)
    r = max(1, args.reps // 10)
    out = {'threads': torch.get_num_threads(),
           'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', '(unset)'),
           'num_points': n, 'ms_median_p90': {}}
    with torch.inference_mode():
        t = out['ms_median_p90']
        t['packed_pointnet_b1'] = times(lambda: pn(p1, b1), 30 * r)
        t['packed_pointnet_b32'] = times(lambda: pn(p32, b32), 2 * r)
        t['packed_dgcnn_b1'] = times(lambda: dg(p1, b1), 3 * r)
        t['fp32_pointnet_b1'] = times(lambda: fp(p1, b1), 4 * r)
    return out


# --------------------------------------------------------------------------

PEER_NAMES = {
    'torch_fp32': 'torch FP32, the package model (method="fp")',
    'dense_fp32': 'torch FP32, dense [B, N, C] twin (BN folded)',
    'dense_bf16': 'torch bf16 autocast, dense twin',
    'onnx_fp32': 'ONNX Runtime FP32, dense twin (BN folded)',
    'onnx_int8': 'ONNX Runtime int8 (dynamic quantization), dense twin',
    'torch_fp32_torch_cluster_graph': 'torch FP32, the package model, '
                                      'torch_cluster graph construction',
    'torch_bf16': 'torch bf16 autocast, the package model',
    'packed': 'packed binary (deploy.pack)',
}


def table(res: Dict, name: str) -> List[str]:
    d = res[name]
    batches = [k for k in d if k.startswith('batch_')]
    peers = list(d[batches[0]]['ms'])
    lines = ['| peer | ' + ' | '.join(f'batch {b[6:]} (ms)' for b in batches)
             + ' |', '|---|' + '---|' * len(batches)]
    for p in peers:
        cells = []
        for b in batches:
            v = d[b]
            cell = f"{v['ms'][p]}"
            if p != 'packed':
                cell += f" (packed {v['speedup_over'][p]}x faster)"
            cells.append(cell)
        lines.append(f"| {PEER_NAMES.get(p, p)} | " + ' | '.join(cells) +
                     ' |')
    return lines


def markdown(res: Dict) -> str:
    m = res['meta']
    lines = report_head(
        'Packed binary inference vs. its peers', m,
        f"graph construction: {m['graph']}; {m['num_points']} points per "
        f"cloud; pinned to CPU {m.get('pinned_cpu')}; ") + [
        'Medians of alternating runs in one process, same inputs '
        f"({m.get('inputs', 'points uniform in the unit ball')}), "
        'random weights with calibrated BatchNorm statistics unless a '
        'checkpoint is named.',
        '']
    if 'pointnet' in res:
        pn = res['pointnet']
        lines += [f"## PointNet ({pn['architecture']})", '']
        lines += table(res, 'pointnet')
        lines += ['']
        for k, v in pn.items():
            if k.startswith('batch_'):
                lines.append(f"- {k.replace('_', ' ')}: fastest peer "
                             f"{v['fastest_peer']}, packed "
                             f"{v['vs_best_peer']}x faster")
        lines += ['', f"Checks: packed vs binary model "
                  f"{pn['packed_vs_binary_model']}; dense twin vs package "
                  f"FP32 {pn['dense_vs_torch_fp32']}; bf16 "
                  f"{pn['dense_bf16_vs_torch_fp32']}; {pn['onnxruntime']}"]
        for k in ('onnx_fp32_vs_torch_fp32', 'onnx_int8_vs_torch_fp32'):
            if k in pn:
                lines[-1] += f"; {k} {pn[k]}"
        ke = pn['kernel_efficiency']
        lines += ['', '### XNOR-popcount kernel vs. the instruction-level '
                  'peak', '',
                  f"ISA {ke['isa']}, clock {ke['ghz']} GHz "
                  f"({ke['ghz_source']}), peak "
                  f"{ke['peak_macs_per_cycle']} binary MACs/cycle "
                  f"(one full-width XOR-popcount per cycle; "
                  f"`PEAK_MACS_PER_CYCLE`). Kernel `xnor_gemm_threshold` "
                  f"alone on the layer's shape, random bits.", '',
                  '| layer | batch | M x K x N | ms | GMAC/s | MACs/cycle | '
                  'of peak |', '|---|---|---|---|---|---|---|']
        for r in ke['layers']:
            lines.append(f"| {r['layer']} | {r['batch']} | {r['M']} x "
                         f"{r['K']} x {r['N']} | {r['ms']} | "
                         f"{r['gmacs_per_s']} | {r.get('macs_per_cycle')} | "
                         f"{r.get('of_peak')} |")
        lines.append('')
    for name, title in (('pointnet2', 'PointNet++'), ('dgcnn', 'DGCNN')):
        if name not in res:
            continue
        d = res[name]
        graph = (f" (binary model's second graph: "
                 f"{d['graph_metric']} k-NN)") if 'graph_metric' in d else ''
        lines += [f"## {title}{graph}", ''] + table(res, name) + ['']
        for k, v in d.items():
            if k.startswith('batch_'):
                lines.append(f"- {k.replace('_', ' ')}: graph construction "
                             f"{v['packed_graph_ms']} ms = "
                             f"{v['graph_share_of_packed']:.0%} of packed")
                if 'fp32_graph_ms' in v:
                    lines.append(
                        f"  - FP32's graph construction "
                        f"{v['fp32_graph_ms']} ms; without it FP32 takes "
                        f"{v['fp32_non_graph_ms']} ms and packed "
                        f"{v['packed_non_graph_ms']} ms "
                        f"({v['non_graph_ratio']}x); 8x over FP32 needs "
                        f"packed <= {v['packed_ms_for_8x']} ms")
                for r in v.get('packed_profile', []):
                    lines.append(f"    - {r['op']}: {r['ms']} ms" + (
                        f" ({r['calls']} calls)" if 'calls' in r else ''))
        lines += ['', f"Packed vs binary model: "
                  f"{d['packed_vs_binary_model']}", '']
    return '\n'.join(lines) + '\n'


def summary(res: Dict) -> Dict:
    def get(model, batch, key, sub=None):
        v = res.get(model, {}).get(f'batch_{batch}', {}).get(key)
        return v.get(sub) if isinstance(v, dict) and sub else v
    return {
        'pointnet_vs_best_peer_b1': get('pointnet', 1, 'vs_best_peer'),
        'pointnet_vs_best_peer_b32': get('pointnet', 32, 'vs_best_peer'),
        'pointnet2_vs_fp32_b1': get('pointnet2', 1, 'speedup_over',
                                    'torch_fp32'),
        'dgcnn_vs_fp32_b1': get('dgcnn', 1, 'speedup_over', 'torch_fp32'),
    }


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1,
                        help='torch (and ONNX Runtime) threads (default 1)')
    parser.add_argument('--quick', action='store_true',
                        help='64 points, few repetitions, no files (CI; '
                        'under a minute)')
    parser.add_argument('--reps', type=int, default=None)
    parser.add_argument('--num-points', type=int, default=None,
                        help='points per cloud (default 1024; 64 with '
                        '--quick)')
    parser.add_argument('--classes', type=int, default=40)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=None,
                        help='default 1 32')
    parser.add_argument('--models', nargs='+',
                        default=['pointnet', 'pointnet2', 'dgcnn'],
                        choices=['pointnet', 'pointnet2', 'dgcnn'])
    parser.add_argument('--checkpoint', default=None,
                        help='trained binary PointNet checkpoint (default: '
                        'random weights)')
    parser.add_argument('--data', default=None,
                        help='a pre-sampled ModelNet folder: every model '
                        'and peer gets its test clouds instead of points '
                        'uniform in the unit ball')
    parser.add_argument('--ghz', type=float, default=None,
                        help='core clock for MACs/cycle (default: '
                        '/proc/cpuinfo)')
    parser.add_argument('--thread-check', action='store_true',
                        help='times of single calls (median, 90th '
                        'percentile) at --threads and $OMP_WAIT_POLICY; '
                        'one JSON line')
    parser.add_argument('--dgcnn-graph', choices=['euclidean', 'hamming'],
                        default='euclidean',
                        help="the binary DGCNN's second graph: DGCNN's "
                        "Euclidean k-NN on the features, or the Hamming "
                        "k-NN on their signs (graph_metric='hamming'; the "
                        "FP32 peers keep the Euclidean one)")
    parser.add_argument('--profile', action='store_true',
                        help='DGCNN: the packed model\'s operators '
                        '(torch.profiler, self CPU time per call)')
    parser.add_argument('--note', default='',
                        help='machine state, for the report')
    parser.add_argument('--out', default=None,
                        help='results prefix (default: benchmarks/results/'
                        'peers; none with --quick)')
    parser.add_argument('--no-pin', action='store_true',
                        help='with --threads 1, do not pin the process to '
                        'one CPU')
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error('--threads must be >= 1')
    torch.set_num_threads(args.threads)
    args.num_points = args.num_points or (64 if args.quick else 1024)
    args.batch_sizes = args.batch_sizes or [1, 32]
    args.reps = args.reps or (3 if args.quick else 40)
    args.rounds = 1 if args.quick else 3
    if args.quick:
        bench_deploy.CALIBRATION = 1
    if args.data:
        bench_deploy.REAL_CLOUDS = bench_deploy.load_real_clouds(
            args.data, args.num_points)
    if args.thread_check:
        print(json.dumps(thread_check(args)))
        return
    pinned = pin_one_cpu() if args.threads == 1 and not args.no_pin \
        else None

    res: Dict = {'meta': run_meta(
        argv, args.threads, args.note, graph=neighbors.backend(),
        pinned_cpu=pinned,
        num_points=args.num_points, batch_sizes=args.batch_sizes,
        inputs=(f'test clouds of {args.data}' if args.data
                else 'points uniform in the unit ball'))}
    if 'pointnet' in args.models:
        res['pointnet'] = bench_pointnet(args)
    if 'pointnet2' in args.models:
        res['pointnet2'] = bench_graph_model(args, PointNet2)
    if 'dgcnn' in args.models:
        res['dgcnn'] = bench_graph_model(args, DGCNN)

    out = args.out if args.out is not None else (
        None if args.quick else os.path.join(RESULTS, 'peers'))
    if out:
        os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
        with open(out + '.json', 'w') as f:
            json.dump(res, f, indent=1)
        with open(out + '.md', 'w') as f:
            f.write(markdown(res))
    print(markdown(res))
    print(json.dumps(summary(res)))


if __name__ == '__main__':
    main()
