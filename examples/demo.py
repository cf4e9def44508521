r"""The main demo: full precision, BiPointNet and plain BNN side by side.

Trains the same PointNet three times with ``examples/modelnet.py`` (full
precision, ``--method fp``; BiPointNet, ``bipointnet``: binary with EMA and
LSR; plain sign/STE binarization, ``bnn``), as parallel processes with one
thread each, prints one table of their test accuracy, then packs the
BiPointNet model into bits (:func:`torch_geometric_binary.deploy.pack`) and
times it against the FP32 model on the same test clouds.

Examples::

    # The embedded synthetic shapes (no download; a few minutes on 2 cores):
    python examples/demo.py

    # Real ModelNet40 (pre-sampled clouds; hours on 2 cores, minutes on more):
    python examples/demo.py --dataset modelnet40 \
        --root ../shared/data/ModelNet40 --epochs 14 --num-points 512

Every run writes to ``--out/<method>/`` (``last.pt``, ``best.pt``,
``results.json``, see ``examples/modelnet.py``) and the packed model to
``--out/bipointnet.tgb``. The last line printed is a JSON object with the
table's numbers.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_SCRIPT = osp.join(ROOT, 'examples', 'modelnet.py')
if ROOT not in sys.path:  # Runs from a checkout without installing too.
    sys.path.insert(0, ROOT)

METHODS = ['fp', 'bipointnet', 'bnn']
DATASETS = ['synthetic', 'modelnet40', 'modelnet10']

# The settings of each dataset when not given on the command line. Synthetic
# shapes: about 1-2 s an epoch per method on one core with the bf16 fused
# path, 2-3 minutes for the three on 2 cores (see benchmarks/results).
# ModelNet40: the epochs and points of the README's ModelNet section (FP
# 84.8% after 10 epochs, BiPointNet 72.7% after 14 with augmentation, BNN
# 4.9%); hours on 2 cores.
DEFAULTS = {
    'synthetic': dict(epochs=80, num_points=128, classes=10, limit_train=None,
                      batch_size=16, lr=0.005),
    'modelnet': dict(epochs=14, num_points=512, classes=None,
                     limit_train=None, batch_size=32, lr=0.001),
}

EPOCH_LINE = re.compile(r'^Epoch (\d+)/(\d+) \|.*\| test ([\d.]+)%')


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Train PointNet full precision, BiPointNet and plain '
        'BNN side by side, print their accuracy, then pack the BiPointNet '
        'model and time it against FP32.', formatter_class=HelpFormatter)
    p.add_argument('--dataset', default=None, choices=DATASETS,
                   help='synthetic: embedded shapes, no data needed; '
                   'modelnet40/10: pre-sampled clouds in --root (default: '
                   'synthetic, modelnet40 with --root)')
    p.add_argument('--root', default=None,
                   help='ModelNet folder, e.g. ../shared/data/ModelNet40')
    p.add_argument('--methods', default=','.join(METHODS),
                   help='comma-separated methods to train (bipointnet is '
                   'needed for the packing part)')
    p.add_argument('--epochs', type=int, default=None,
                   help='epochs per method (default: 30 synthetic, 14 '
                   'ModelNet)')
    p.add_argument('--num-points', type=int, default=None,
                   help='points per cloud (default: 128 synthetic, 512 '
                   'ModelNet)')
    p.add_argument('--classes', type=int, default=None,
                   help='synthetic classes (default: 10; at most 13)')
    p.add_argument('--limit-train', type=int, default=None, metavar='N',
                   help='a class-balanced subset of N training clouds '
                   '(default: all; 80 per class for synthetic)')
    p.add_argument('--limit-test', type=int, default=None, metavar='N',
                   help='a class-balanced subset of N test clouds (default: '
                   'all; 20 per class for synthetic)')
    p.add_argument('--batch-size', type=int, default=None,
                   help='clouds per step (default: 16 synthetic, 32 '
                   'ModelNet)')
    p.add_argument('--lr', type=float, default=None,
                   help='Adam learning rate, cosine schedule (default: 0.002 '
                   'synthetic, 0.001 ModelNet)')
    p.add_argument('--augment', action='store_true',
                   help='random scaling and translation of training clouds '
                   'and dropout 0.3 (off: binary networks underfit, and '
                   'all three methods get the same setting)')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--jobs', type=int, default=None,
                   help='trainings run at the same time, one thread each '
                   '(default: all of them on 2+ CPU cores, else 1)')
    p.add_argument('--threads', type=int, default=None,
                   help="torch threads of the speed comparison (default: "
                   "torch's, usually the number of cores)")
    p.add_argument('--reps', type=int, default=30,
                   help='timed repetitions at batch 1 (a quarter at batch '
                   '32)')
    p.add_argument('--out', default=osp.join('runs', 'demo'),
                   help='output folder')
    p.add_argument('--quiet', action='store_true',
                   help='no per-epoch progress')
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    for name in ['epochs', 'num_points', 'classes', 'limit_train',
                 'limit_test', 'batch_size', 'jobs', 'threads', 'reps']:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"argument --{name.replace('_', '-')}: must be "
                         f"positive (got {value})")
    if args.lr is not None and args.lr <= 0:
        parser.error(f"argument --lr: must be positive (got {args.lr})")
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        parser.error(f"argument --methods: expected distinct methods out of "
                     f"{', '.join(METHODS)} (got '{args.methods}')")
    args.methods = methods
    if args.dataset is None:
        args.dataset = 'modelnet40' if args.root else 'synthetic'
    if args.dataset == 'synthetic':
        if args.root is not None:
            parser.error("argument --root: not used by --dataset synthetic "
                         "(did you mean --dataset modelnet40?)")
        if args.classes is not None and args.classes > 13:
            parser.error(f"argument --classes: the synthetic shapes have 13 "
                         f"classes (got {args.classes})")
    else:
        if args.root is None:
            parser.error(f"--dataset {args.dataset} needs --root, the "
                         f"dataset folder (e.g. --root "
                         f"../shared/data/ModelNet40)")
        if not osp.isdir(args.root):
            parser.error(f"argument --root: '{args.root}' does not exist "
                         f"(or is not a folder)")
        if args.classes is not None:
            parser.error("argument --classes: only for --dataset synthetic")
        args.root = osp.abspath(args.root)
    defaults = DEFAULTS['synthetic' if args.dataset == 'synthetic'
                        else 'modelnet']
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.jobs is None:  # Three processes share two cores well.
        args.jobs = len(args.methods) if cpu_count() > 1 else 1


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        return os.cpu_count() or 1


# Training ####################################################################


def train_command(args, method: str) -> List[str]:
    r"""The ``examples/modelnet.py`` command line of one method."""
    cmd = [sys.executable, TRAIN_SCRIPT, '--model', 'pointnet', '--method',
           method, '--dataset', args.dataset, '--epochs', str(args.epochs),
           '--batch-size', str(args.batch_size), '--lr', str(args.lr),
           '--seed', str(args.seed), '--threads', '1', '--quiet',
           # The demo's own folders: each demo replaces the last one's runs.
           '--out', osp.join(args.out, method), '--overwrite']
    if not args.augment:
        cmd += ['--no-augment', '--model-kwargs', '{"dropout": 0.0}']
    if args.dataset == 'synthetic':
        cmd += ['--synthetic-classes', str(args.classes),
                '--synthetic-points', str(args.num_points)]
    else:
        cmd += ['--root', args.root, '--num-points', str(args.num_points)]
    for opt in ['limit_train', 'limit_test']:
        if getattr(args, opt) is not None:
            cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return cmd


def train_one(args, method: str, on_epoch: Callable[[str, str], None]
              ) -> Dict[str, Any]:
    r"""Runs one training process; reports each epoch line to
    :obj:`on_epoch`; returns its ``results.json``."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    for k in ['WORLD_SIZE', 'RANK', 'LOCAL_RANK']:  # Not a torchrun worker.
        env.pop(k, None)
    lines: List[str] = []
    with open(osp.join(args.out, f'{method}.log'), 'w') as log:
        proc = subprocess.Popen(train_command(args, method), cwd=ROOT,
                                env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip('\n'))
            if EPOCH_LINE.match(line):
                on_epoch(method, line.rstrip('\n'))
        proc.wait()
    if proc.returncode != 0:
        tail = '\n'.join(lines[-15:])
        raise RuntimeError(f"training '{method}' failed (exit status "
                           f"{proc.returncode}):\n{tail}")
    with open(osp.join(args.out, method, 'results.json')) as f:
        return json.load(f)


def train_all(args) -> Dict[str, Dict[str, Any]]:
    r"""Trains every method, :obj:`args.jobs` processes at a time, with a
    progress bar per method on a terminal (a line per epoch otherwise)."""
    bars: Dict[str, Any] = {}
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bars = {m: tqdm(total=args.epochs, desc=f'{m:>10}', position=i,
                        leave=True, dynamic_ncols=True, unit='epoch')
                for i, m in enumerate(args.methods)}
    lock = threading.Lock()

    def on_epoch(method: str, line: str):
        with lock:
            if method in bars:
                test = EPOCH_LINE.match(line).group(3)
                bars[method].set_postfix_str(f'test {test}%')
                bars[method].update(1)
            elif not args.quiet:
                print(f'{method:>10} | {line}', flush=True)

    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {m: pool.submit(train_one, args, m, on_epoch)
                       for m in args.methods}
            return {m: f.result() for m, f in futures.items()}
    finally:
        for bar in bars.values():
            bar.close()


# Packing and timing ##########################################################


def median_ms(fns: Dict[str, Callable[[], Any]], reps: int,
              rounds: int = 3) -> Dict[str, float]:
    r"""Median milliseconds per call of each function, the functions
    alternating in :obj:`rounds` rounds (after a warm-up call each)."""
    import statistics

    import torch
    times: Dict[str, List[float]] = {k: [] for k in fns}
    per_round = max(1, -(-reps // rounds))
    with torch.inference_mode():
        for _ in range(rounds):
            for k, fn in fns.items():
                fn()
                for _ in range(per_round):
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def pack_and_time(args, results: Dict[str, Dict[str, Any]]
                  ) -> Dict[str, Any]:
    import torch

    from torch_geometric.loader import DataLoader
    from torch_geometric_binary.deploy import load, pack, save
    from torch_geometric_binary.train import (build_datasets, build_model,
                                              load_checkpoint,
                                              model_from_checkpoint)

    ckpt = load_checkpoint(osp.join(args.out, 'bipointnet', 'last.pt'))
    config = ckpt['config']
    binary = model_from_checkpoint(ckpt)
    if 'fp' in results:  # The trained FP twin.
        fp = model_from_checkpoint(
            load_checkpoint(osp.join(args.out, 'fp', 'last.pt')))
    else:  # Same architecture, untrained: the FP32 time and size are alike.
        fp = build_model({**config, 'method': 'fp'}).eval()

    # Float32 classifier: the same logits as the trained model (float16
    # halves the last layer, and may flip a near tie).
    packed = pack(binary)
    tgb = osp.join(args.out, 'bipointnet.tgb')
    save(packed, tgb)
    packed = load(tgb)  # What a deployment runs.
    fp_file = osp.join(args.out, 'fp32_state_dict.pt')
    torch.save(fp.state_dict(), fp_file)

    data = build_datasets(
        config['dataset'], config.get('root'), config.get('num_points'),
        augment=False, limit_train=1, limit_test=config.get('limit_test'),
        synthetic_classes=config.get('synthetic_classes') or 10,
        synthetic_points=config.get('synthetic_points') or 512)
    same = correct = total = 0
    with torch.inference_mode():
        for batch in DataLoader(data.test, batch_size=32):
            ref = binary(batch.pos, batch.batch).argmax(-1)
            got = packed(batch.pos, batch.batch).argmax(-1)
            same += int((ref == got).sum())
            correct += int((got == batch.y.view(-1)).sum())
            total += got.numel()

    timing = {}
    test = list(data.test)
    for B in (1, 32):
        clouds = [test[i % len(test)] for i in range(B)]
        pos = torch.cat([d.pos for d in clouds])
        vec = None if B == 1 else torch.arange(B).repeat_interleave(
            torch.tensor([d.pos.size(0) for d in clouds]))
        reps = args.reps if B == 1 else max(3, args.reps // 4)
        t = median_ms({'fp32': lambda: fp(pos, vec),
                       'packed': lambda: packed(pos, vec)}, reps,
                      rounds=min(3, reps))
        timing[f'batch_{B}'] = {
            'fp32_ms_per_cloud': t['fp32'] / B,
            'packed_ms_per_cloud': t['packed'] / B,
            'speedup': t['fp32'] / t['packed']}
    fp_bytes, packed_bytes = osp.getsize(fp_file), osp.getsize(tgb)
    return {
        'packed_test_acc': correct / max(total, 1),
        'same_predictions': same,
        'num_test': total,
        **timing,
        'fp32_bytes': fp_bytes,
        'packed_bytes': packed_bytes,
        'size_ratio': fp_bytes / packed_bytes,
        'threads': torch.get_num_threads(),
        'num_points': int(pos.size(0) // 32),
    }


# Report ######################################################################


def pct(x: Optional[float]) -> str:
    return '-' if x is None else f'{100 * x:.1f}%'


def print_table(results: Dict[str, Dict[str, Any]], args):
    print(f"\nPointNet on {args.dataset} ({results_info(results)}):")
    rows = [('method', 'test acc', 'best (epoch)', 'epochs', 'train time')]
    for m, r in results.items():
        rows.append((m, pct(r['last']['overall_acc']),
                     f"{pct(r['best']['overall_acc'])} "
                     f"({r['best']['epoch']})", str(r['epochs_done']),
                     f"{r['train_time']:.0f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print('  ' + ' | '.join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print('  ' + '-+-'.join('-' * w for w in widths))
    chance = 1 / next(iter(results.values()))['config']['num_classes']
    print(f"  (chance: {pct(chance)}; test acc: the last epoch)")


def results_info(results: Dict[str, Dict[str, Any]]) -> str:
    r = next(iter(results.values()))
    c = r['config']
    pts = c['synthetic_points'] if c['dataset'] == 'synthetic' \
        else c['num_points']
    train = r['history'][-1]['train_samples'] if r['history'] else 0
    return (f"{c['num_classes']} classes, {pts} points per cloud, {train} "
            f"training clouds, batch {c['batch_size']}, lr {c['lr']:g}")


def print_packing(p: Dict[str, Any]):
    print(f"\nBiPointNet packed into bits (deploy.pack):"
          f" test accuracy {pct(p['packed_test_acc'])}, same prediction as "
          f"the trained model for {p['same_predictions']}/{p['num_test']} "
          f"clouds")
    for B in (1, 32):
        t = p[f'batch_{B}']
        print(f"  batch {B:>2}: FP32 {t['fp32_ms_per_cloud']:.2f} ms/cloud, "
              f"packed {t['packed_ms_per_cloud']:.2f} ms/cloud: "
              f"{t['speedup']:.1f}x faster")
    print(f"  size: FP32 state dict {p['fp32_bytes'] / 1e3:.0f} kB "
          f"(torch.save), packed {p['packed_bytes'] / 1e3:.0f} kB "
          f"(deploy.save): {p['size_ratio']:.1f}x smaller "
          f"({p['threads']} thread(s), {p['num_points']} points per cloud)")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    print(f"Training PointNet ({', '.join(args.methods)}) on {args.dataset}: "
          f"{args.epochs} epochs, {args.num_points} points per cloud, "
          f"{args.jobs} process(es) at a time, one thread each; logs in "
          f"'{args.out}'", flush=True)
    try:
        results = train_all(args)
    except RuntimeError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    train_wall = time.perf_counter() - start
    print_table(results, args)
    print(f"  (wall time of the trainings: {train_wall:.0f} s)")

    packing = None
    if 'bipointnet' in results:
        if args.threads is not None:
            import torch
            torch.set_num_threads(args.threads)
        packing = pack_and_time(args, results)
        print_packing(packing)

    summary = {
        'dataset': args.dataset,
        'num_classes': next(iter(results.values()))['config']['num_classes'],
        'num_points': args.num_points,
        'methods': {
            m: {'test_acc': r['last']['overall_acc'],
                'best_acc': r['best']['overall_acc'],
                'best_epoch': r['best']['epoch'],
                'epochs': r['epochs_done'],
                'train_time': round(r['train_time'], 1)}
            for m, r in results.items()},
        'packed': packing,
        'train_wall_time': round(train_wall, 1),
        'wall_time': round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == '__main__':
    main()
