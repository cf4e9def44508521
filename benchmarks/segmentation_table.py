r"""Collects segmentation runs of ``examples/segmentation.py`` into one table
(markdown + JSON): for each run its backbone, method, the last and best
epoch's scores, the final training loss and the training time, with the
per-epoch score and the command that reproduces the run.

    python benchmarks/segmentation_table.py ../runs/segsyn_e30_c40/* \
        --out benchmarks/results/segmentation_synthetic_e30_c40
"""
import json
import os
import sys
from typing import Any, Dict, List

from accuracy_table import cli_command, table_main

# The score each task ranks runs by, then the other metrics it reports.
METRICS = {'part': ['instance_miou', 'category_miou'],
           'semantic': ['miou', 'overall_acc']}


def command(config: Dict[str, Any], out: str) -> str:
    r"""The ``examples/segmentation.py`` command line of a run."""
    return cli_command('examples/segmentation.py', config, [
        'categories', 'synthetic_per_category', 'synthetic_points',
        'num_points', 'epochs',
        'batch_size', 'lr', 'weight_decay', 'seed', 'precision'], out,
        derived=('num_categories', 'in_channels'))


def row(run_dir: str) -> Dict[str, Any]:
    with open(os.path.join(run_dir, 'results.json')) as f:
        results = json.load(f)
    config, history = results['config'], results['history']
    names = METRICS[config['seg_task']]
    return {
        'run': os.path.basename(os.path.normpath(run_dir)),
        'model': config['model'], 'method': config['method'],
        'task': config['seg_task'],
        'categories': config.get('categories'),
        'epochs_done': results['epochs_done'], 'epochs': config['epochs'],
        'finished': results['finished'],
        'last': {k: results['last'][k] for k in names},
        'best': {k: results['best'][k] for k in ['epoch'] + names},
        'final_train_loss': history[-1]['loss'] if history else None,
        'train_minutes': results['train_time'] / 60,
        'per_epoch': [h[names[0]] for h in history],
        'command': command(config, run_dir),
    }


def markdown(rows: List[Dict[str, Any]]) -> str:
    names = METRICS[rows[0]['task']]
    head = ' | '.join(f'{n} last | {n} best (epoch)' for n in names)
    # A column for runs on some categories only (one model per category).
    by_cat = any(r.get('categories') for r in rows)
    lines = [f'| backbone | method | {"categories | " * by_cat}epochs | '
             f'{head} | final train loss | train min |',
             '| --- ' * (5 + by_cat + 2 * len(names)) + '|']
    for r in rows:
        cats = (', '.join(r.get('categories') or ['all']) + ' | ') * by_cat
        cells = ' | '.join(
            f"{100 * r['last'][n]:.2f} | {100 * r['best'][n]:.2f} "
            f"({r['best']['epoch']})" for n in names)
        epochs = f"{r['epochs_done']}/{r['epochs']}" + (
            '' if r['finished'] else ' (unfinished)')
        lines.append(f"| {r['model']} | {r['method']} | {cats}{epochs} "
                     f"| {cells} "
                     f"| {r['final_train_loss']:.3f} "
                     f"| {r['train_minutes']:.1f} |")
    lines += ['', 'Commands:', '']
    lines += [f"- `{r['run']}`: `{r['command']}`" for r in rows]
    lines += ['', f'{names[0]} per epoch (%):', '']
    lines += [f"- `{r['run']}`: " + ', '.join(
        f'{100 * a:.1f}' for a in r['per_epoch']) for r in rows]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    return table_main(
        argv, __doc__.split('\n\n')[0], row, markdown,
        lambda rows: 'the runs mix part and semantic segmentation'
        if len({r['task'] for r in rows}) > 1 else None)


if __name__ == '__main__':
    sys.exit(main())
