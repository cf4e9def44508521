r"""The accuracy campaign's long runs: their protocols in one place, and the
commands that start, continue and record them across interrupted sessions.

Each run is an ``examples/modelnet.py`` training in its own folder under
``--runs-dir`` (default ``../runs``, outside the work tree), one thread per
run, one run per core. A run is always continued with ``--resume``; the
training program refuses a damaged folder (run files without ``last.pt``)
and a folder another job holds, so nothing restarts from scratch silently.

    python3 benchmarks/campaign.py status           # where every run stands
    python3 benchmarks/campaign.py start --max 2    # continue/start runs
    python3 benchmarks/campaign.py save             # ledger + best weights

``save`` writes the ledger (``benchmarks/results/campaign.{md,json}``,
through ``benchmarks/accuracy_table.py``) and the best weights of every run
(``benchmarks/results/campaign/<run>.pt``, without optimizer state) to
commit, so that no result depends on one machine.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

COMMON = ['--dataset', 'modelnet40', '--root', '../shared/data/ModelNet40',
          '--batch-size', '32', '--lr', '0.001', '--threads', '1',
          '--quiet']
BINARY = ['--no-augment', '--model-kwargs', '{"dropout": 0.0}']

# The protocols (benchmarks/results/README.md, "Accuracy campaign"): PointNet
# at the paper's (1024 points, 200 epochs, one cosine schedule); PointNet++
# and DGCNN at 512 points, the same for full precision and binary.
RUNS: Dict[str, List[str]] = {
    'pn1024_fp_e200': ['--model', 'pointnet', '--method', 'fp',
                       '--num-points', '1024', '--epochs', '200'],
    'pn1024_bip_e200': ['--model', 'pointnet', '--method', 'bipointnet',
                        '--num-points', '1024', '--epochs', '200'] + BINARY,
    # The binary model overfits at 1024 points (epoch 130: train 95%,
    # test 83-84%): augmentation back on, and distillation from the FP run.
    'pn1024_bipkd_e200': ['--model', 'pointnet', '--method', 'bipointnet',
                          '--num-points', '1024', '--epochs', '200',
                          '--model-kwargs', '{"dropout": 0.0}', '--teacher',
                          # A fixed copy (the FP run's best at epoch 107,
                          # 89.38%): a resumed run keeps its teacher.
                          'benchmarks/results/campaign/'
                          'teacher_pn1024_fp_e107.pt'],
    'pn2_p512_fp_e60': ['--model', 'pointnet2', '--method', 'fp',
                        '--num-points', '512', '--epochs', '60'],
    'pn2_p512_bip_e60': ['--model', 'pointnet2', '--method', 'bipointnet',
                         '--num-points', '512', '--epochs', '60'],
    'dgcnn_p512_fp_e40': ['--model', 'dgcnn', '--method', 'fp',
                          '--num-points', '512', '--epochs', '40'],
    'dgcnn_p512_bip_e40': ['--model', 'dgcnn', '--method', 'bipointnet',
                           '--num-points', '512', '--epochs', '40'],
}


def command(name: str, runs_dir: str) -> List[str]:
    return [sys.executable, osp.join('examples', 'modelnet.py'), *RUNS[name],
            *COMMON, '--out', osp.join(runs_dir, name), '--resume']


def running(folder: str) -> bool:
    r"""Whether a training job holds the folder's lock, or a process trains
    into it (jobs started before the lock existed hold none)."""
    lock = osp.join(folder, '.lock')
    if fcntl is not None and osp.exists(lock):
        with open(lock, 'a+') as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    target = osp.realpath(folder)
    for pid in (d for d in os.listdir('/proc') if d.isdigit()) \
            if osp.isdir('/proc') else []:
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                args = [a.decode(errors='replace')
                        for a in f.read().split(b'\0')]
            cwd = os.readlink(f'/proc/{pid}/cwd')
        except OSError:
            continue
        if any(a.endswith('modelnet.py') for a in args) and '--out' in args:
            i = args.index('--out')
            if i + 1 < len(args) and osp.realpath(
                    osp.join(cwd, args[i + 1])) == target:
                return True
    return False


def state(name: str, runs_dir: str) -> Dict:
    folder = osp.join(runs_dir, name)
    out = {'run': name, 'folder': folder, 'running': running(folder)}
    path = osp.join(folder, 'results.json')
    if not osp.exists(path):
        out['state'] = 'not started' if not osp.exists(
            osp.join(folder, 'last.pt')) else 'no results.json'
        return out
    with open(path) as f:
        res = json.load(f)
    out.update(epochs_done=res['epochs_done'],
               epochs=res['config']['epochs'],
               best=res['best'], resumed_at=res.get('resumed_at', []),
               train_hours=res['train_time'] / 3600)
    out['state'] = 'finished' if res['finished'] else 'resumable'
    if not osp.exists(osp.join(folder, 'last.pt')):
        out['state'] = 'damaged (no last.pt)'
    return out


def cmd_status(args) -> List[Dict]:
    states = [state(name, args.runs_dir) for name in RUNS]
    for s in states:
        extra = ''
        if 'epochs_done' in s:
            best = s['best']
            extra = (f" {s['epochs_done']}/{s['epochs']} epochs, best "
                     f"{100 * best['overall_acc']:.2f}% (epoch "
                     f"{best['epoch']}), {s['train_hours']:.1f} h")
        print(f"{s['run']:22s} {s['state']}"
              f"{' (running)' if s['running'] else ''}{extra}")
    return states


def cmd_start(args) -> List[str]:
    started = []
    busy = sum(state(n, args.runs_dir)['running'] for n in RUNS)
    slots = (args.max if args.max is not None
             else max(0, (os.cpu_count() or 1) - busy))
    for name in args.runs or list(RUNS):
        if len(started) >= slots:
            break
        s = state(name, args.runs_dir)
        if s['running'] or s['state'] == 'finished':
            continue
        if s['state'].startswith('damaged'):
            print(f"{name}: {s['state']}; not started (restore last.pt or "
                  f"remove the folder)", file=sys.stderr)
            continue
        os.makedirs(args.runs_dir, exist_ok=True)
        log = open(osp.join(args.runs_dir, f'{name}.log'), 'a')
        subprocess.Popen(command(name, args.runs_dir), cwd=ROOT, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
        print(f"{name}: {'continued' if 'epochs_done' in s else 'started'}"
              f" ({' '.join(command(name, args.runs_dir)[1:])})")
        started.append(name)
    return started


def cmd_save(args):
    from torch_geometric_binary.train import strip_checkpoint
    folders = [osp.join(args.runs_dir, n) for n in RUNS
               if osp.exists(osp.join(args.runs_dir, n, 'results.json'))]
    if not folders:
        print('no runs to save')
        return
    results = osp.join(ROOT, 'benchmarks', 'results')
    subprocess.run([sys.executable,
                    osp.join(ROOT, 'benchmarks', 'accuracy_table.py'),
                    *folders, '--out', osp.join(results, 'campaign')],
                   check=True, stdout=subprocess.DEVNULL)
    os.makedirs(osp.join(results, 'campaign'), exist_ok=True)
    for folder in folders:
        best = osp.join(folder, 'best.pt')
        if osp.exists(best):
            dst = osp.join(results, 'campaign',
                           f'{osp.basename(folder)}.pt')
            strip_checkpoint(best, dst)
            print(f"saved {dst}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs-dir', default=osp.join(osp.dirname(ROOT), 'runs'))
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('status')
    start = sub.add_parser('start')
    start.add_argument('--max', type=int, default=None,
                       help='runs to start (default: free cores)')
    start.add_argument('runs', nargs='*',
                       help=f'which runs, in order (default: all: '
                       f'{", ".join(RUNS)})')
    sub.add_parser('save')
    args = p.parse_args(argv)
    unknown = [r for r in getattr(args, 'runs', None) or [] if r not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {', '.join(unknown)} (known: "
                f"{', '.join(RUNS)})")
    return {'status': cmd_status, 'start': cmd_start,
            'save': cmd_save}[args.cmd](args)


if __name__ == '__main__':
    main()
