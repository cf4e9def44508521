r"""The packed models' thread behaviour on a machine with a busy core.

Runs :obj:`bench_peers.py --thread-check` (median and 90th-percentile
milliseconds of single calls: packed PointNet at batch 1 and 32, packed
DGCNN at batch 1, FP32 PointNet at batch 1) in fresh processes for every
combination of

* torch threads: 1 or 2;
* :obj:`OMP_WAIT_POLICY`: :obj:`active` or :obj:`passive` (read by OpenMP
  at start-up, hence one process each);
* the thread policy of :mod:`torch_geometric_binary.deploy.threads`: off
  (:obj:`TORCH_GEOMETRIC_BINARY_SINGLE_THREAD_POINTS=0`) or the default
  (with 1 thread it changes nothing, so it runs once);
* a busy core: none, or a :obj:`python3 -c 'while True: pass'` process
  pinned (:obj:`taskset`) on the last core, started before the process and
  killed after it.

Usage::

    python3 benchmarks/bench_threads.py --note "..."   # writes results/threads.{json,md}
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')
ENV_POLICY = 'TORCH_GEOMETRIC_BINARY_SINGLE_THREAD_POINTS'


def busy_core(core: int) -> subprocess.Popen:
    r"""A process spinning on :obj:`core` (pinned with taskset)."""
    return subprocess.Popen(['taskset', '-c', str(core), sys.executable,
                             '-c', 'while True: pass'])


def run_one(threads: int, wait: str, policy: bool, busy: bool,
            reps: int) -> Dict:
    env = dict(os.environ, OMP_WAIT_POLICY=wait)
    if policy:
        env.pop(ENV_POLICY, None)
    else:
        env[ENV_POLICY] = '0'
    cmd = [sys.executable, os.path.join(HERE, 'bench_peers.py'),
           '--thread-check', '--threads', str(threads), '--reps', str(reps)]
    spinner = busy_core(os.cpu_count() - 1) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                             check=True, cwd=os.path.dirname(HERE))
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update({'policy': 'default' if policy else 'off (=0)',
                'busy_core': busy,
                'command': f"OMP_WAIT_POLICY={wait} "
                           f"{ENV_POLICY + '=0 ' if not policy else ''}"
                           f"python3 benchmarks/bench_peers.py "
                           f"--thread-check --threads {threads} "
                           f"--reps {reps}" +
                           (' (with a busy core)' if busy else '')})
    return res


def load() -> Optional[str]:
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return None


def markdown(res: Dict) -> str:
    lines = ['# Packed models and threads on a machine with a busy core', '',
             f"Command: `{res['command']}`", '',
             f"Machine: {res['cpus']} cores; {res['note']}; load average "
             f"before {res['load_before']}, after {res['load_after']}.", '',
             'Milliseconds of single calls, median / 90th percentile, each '
             'row one fresh process (`bench_peers.py --thread-check`). '
             'Busy core: `python3 -c "while True: pass"` pinned with '
             '`taskset` on the last core. Policy: '
             '`deploy.threads` (inputs of at most '
             f"{res['default_limit']} points on one thread; off = "
             f"`{ENV_POLICY}=0`).", '',
             '| threads | OMP_WAIT_POLICY | policy | busy core | packed '
             'PointNet b1 | packed PointNet b32 | packed DGCNN b1 | FP32 '
             'PointNet b1 |', '|---|---|---|---|---|---|---|---|']
    for r in res['runs']:
        t = r['ms_median_p90']
        cells = [f"{t[k][0]} / {t[k][1]}" for k in
                 ('packed_pointnet_b1', 'packed_pointnet_b32',
                  'packed_dgcnn_b1', 'fp32_pointnet_b1')]
        lines.append(f"| {r['threads']} | {r['OMP_WAIT_POLICY']} | "
                     f"{r['policy']} | {'yes' if r['busy_core'] else 'no'} "
                     f"| " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=40,
                        help='bench_peers --reps (calls: 3x at batch 1)')
    parser.add_argument('--note', default='', help='machine state')
    parser.add_argument('--out', default=os.path.join(RESULTS, 'threads'))
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(HERE))
    from torch_geometric_binary.deploy.threads import \
        DEFAULT_SINGLE_THREAD_POINTS
    res = {'command': 'python3 ' + ' '.join(
        [sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        'cpus': os.cpu_count(), 'note': args.note or 'n/a',
        'default_limit': DEFAULT_SINGLE_THREAD_POINTS,
        'load_before': load(), 'runs': []}
    for busy in (False, True):
        for wait in ('active', 'passive'):
            for threads, policy in ((1, True), (2, False), (2, True)):
                r = run_one(threads, wait, policy, busy, args.reps)
                print(json.dumps(r), flush=True)
                res['runs'].append(r)
    res['load_after'] = load()
    if args.out:
        with open(args.out + '.json', 'w') as f:
            json.dump(res, f, indent=1)
        with open(args.out + '.md', 'w') as f:
            f.write(markdown(res))
    print(markdown(res))


if __name__ == '__main__':
    main()
