r"""Collects training runs of ``examples/modelnet.py`` into one accuracy
table (markdown + JSON), with each run's protocol and the command that
reproduces it.

    python benchmarks/accuracy_table.py runs/p512_* \
        --out benchmarks/results/modelnet40_accuracy
"""
import argparse
import json
import os
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

PROTOCOL_KEYS = ['dataset', 'num_points', 'epochs', 'batch_size', 'lr',
                 'weight_decay', 'augment', 'seed', 'teacher', 'kd_alpha',
                 'kd_temp', 'init_from', 'weight_avg_decay', 'precision']


def cli_command(script: str, config: Dict[str, Any], keys: List[str],
                out: str, derived: Tuple[str, ...] = ()) -> str:
    r"""The command line of :obj:`script` that trains a run of
    :obj:`config`: model, method, dataset and root, the options
    :obj:`keys` that are set, the model arguments (but those
    :obj:`derived` from the data) and augmentation."""
    args = ['python', script, '--model', config['model'],
            '--method', config['method'], '--dataset', config['dataset']]
    if config.get('root'):
        args += ['--root', os.path.relpath(config['root'])]
    for key in keys:
        value = config.get(key)
        if value is not None and not (key == 'weight_decay' and value == 0):
            values = value if isinstance(value, list) else [value]
            args += [f"--{key.replace('_', '-')}", *map(str, values)]
    kwargs = {k: v for k, v in (config.get('model_kwargs') or {}).items()
              if k not in derived}
    if kwargs:
        args += ['--model-kwargs', json.dumps(kwargs)]
    if not config.get('augment', True):
        args.append('--no-augment')
    args += ['--out', out]
    return ' '.join(shlex.quote(a) for a in args)


def command(config: Dict[str, Any], out: str) -> str:
    r"""The ``examples/modelnet.py`` command line that produced a run."""
    return cli_command('examples/modelnet.py', config, [
        'num_points', 'epochs', 'batch_size', 'lr', 'weight_decay', 'seed',
        'teacher', 'kd_alpha', 'kd_temp', 'init_from', 'weight_avg_decay',
        'precision'], out)


def row(run_dir: str) -> Dict[str, Any]:
    with open(os.path.join(run_dir, 'results.json')) as f:
        results = json.load(f)
    config = results['config']
    history = results['history']
    return {
        'run': os.path.basename(os.path.normpath(run_dir)),
        'model': config['model'],
        'method': config['method'],
        'model_kwargs': config.get('model_kwargs') or {},
        'protocol': {k: config.get(k) for k in PROTOCOL_KEYS},
        'epochs_done': results['epochs_done'],
        'finished': results['finished'],
        'best_overall_acc': results['best']['overall_acc'],
        'best_mean_class_acc': results['best']['mean_class_acc'],
        'best_epoch': results['best']['epoch'],
        'last_overall_acc': results['last']['overall_acc'],
        'last_mean_class_acc': results['last']['mean_class_acc'],
        'seconds_per_epoch': results['train_time'] / max(len(history), 1),
        'train_hours': results['train_time'] / 3600,
        # Epochs at which an interrupted run was continued (--resume).
        'resumed_at': results.get('resumed_at', []),
        'test_acc_per_epoch': [h['test_acc'] for h in history],
        # With weight averaging: the trained (not averaged) weights'.
        'test_acc_raw_per_epoch': [h['test_acc_raw'] for h in history
                                   if 'test_acc_raw' in h] or None,
        'command': command(config, run_dir),
    }


def markdown(rows: List[Dict[str, Any]]) -> str:
    lines = [
        '| run | model | method | epochs | points | best OA | best mAcc '
        '| last OA | s/epoch | train h | resumed at |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for r in rows:
        p = r['protocol']
        epochs = f"{r['epochs_done']}/{p['epochs']}"
        if not r['finished']:
            epochs += ' (unfinished)'
        extra = ''.join(f' {k}={v}' for k, v in r['model_kwargs'].items())
        if p.get('augment') is False:
            extra += ' no-augment'
        if p.get('weight_avg_decay') is not None:
            extra += f" weight-avg={p['weight_avg_decay']}"
        lines.append(
            f"| {r['run']} | {r['model']} | {r['method']}{extra} | {epochs} "
            f"| {p['num_points']} | {100 * r['best_overall_acc']:.2f} "
            f"| {100 * r['best_mean_class_acc']:.2f} "
            f"| {100 * r['last_overall_acc']:.2f} "
            f"| {r['seconds_per_epoch']:.0f} | {r['train_hours']:.2f} "
            f"| {', '.join(map(str, r['resumed_at'])) or '-'} |")
    lines += ['', 'Commands:', '']
    lines += [f"- `{r['run']}`: `{r['command']}`" for r in rows]
    lines += ['', 'Test overall accuracy per epoch:', '']
    lines += [f"- `{r['run']}`: " + ', '.join(
        f'{100 * a:.1f}' for a in r['test_acc_per_epoch']) for r in rows]
    raw = [r for r in rows if r.get('test_acc_raw_per_epoch')]
    if raw:
        lines += ['', 'Runs with weight averaging: the accuracies above are '
                  "the averaged model's; the trained weights' per epoch:", '']
        lines += [f"- `{r['run']}`: " + ', '.join(
            f'{100 * a:.1f}' for a in r['test_acc_raw_per_epoch'])
            for r in raw]
    return '\n'.join(lines) + '\n'


def table_main(argv, description: str, row: Callable[[str], Dict],
               markdown: Callable[[List[Dict]], str],
               check: Optional[Callable[[List[Dict]], Optional[str]]] = None
               ) -> int:
    r"""The command line of a table script: reads the runs' folders with
    :obj:`row`, refuses what :obj:`check` names, writes
    :obj:`--out`.json and .md (:obj:`markdown`) and prints the latter."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('runs', nargs='+', help='output folders of runs')
    parser.add_argument('--out', required=True,
                        help='path prefix of the .md and .json written')
    args = parser.parse_args(argv)
    missing = [r for r in args.runs
               if not os.path.isfile(os.path.join(r, 'results.json'))]
    if missing:
        parser.error(f"no results.json in: {', '.join(missing)}")
    rows = [row(r) for r in args.runs]
    problem = check(rows) if check is not None else None
    if problem:
        parser.error(problem)
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    with open(args.out + '.json', 'w') as f:
        json.dump(rows, f, indent=1)
    with open(args.out + '.md', 'w') as f:
        f.write(markdown(rows))
    sys.stdout.write(markdown(rows))
    return 0


def main(argv=None) -> int:
    return table_main(argv, __doc__.split('\n\n')[0], row, markdown)


if __name__ == '__main__':
    sys.exit(main())
