import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def table():
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    try:
        import segmentation_table
        yield segmentation_table
    finally:
        sys.path.remove(str(ROOT / 'benchmarks'))


def _run(folder: Path, method: str, scores, categories=None):
    folder.mkdir(parents=True)
    history = [{'epoch': e + 1, 'loss': 2.0 - e, 'instance_miou': s,
                'category_miou': s / 2} for e, s in enumerate(scores)]
    best = max(history, key=lambda h: h['instance_miou'])
    (folder / 'results.json').write_text(json.dumps({
        'config': {'model': 'dgcnn', 'method': method,
                   'dataset': 'synthetic', 'seg_task': 'part',
                   'epochs': 3, 'num_points': 512, 'lr': 0.002,
                   'categories': categories,
                   'model_kwargs': {'num_categories': 6, 'in_channels': 0,
                                    'k': 10}},
        'history': history, 'epochs_done': len(history),
        'finished': len(history) == 3, 'train_time': 120.0,
        'best': {k: best[k] for k in ('epoch', 'instance_miou',
                                      'category_miou')},
        'last': history[-1]}))


def test_table_reports_last_best_and_command(table, tmp_path):
    _run(tmp_path / 'dgcnn_fp', 'fp', [0.2, 0.6, 0.5])
    _run(tmp_path / 'dgcnn_bnn', 'bnn', [0.1, 0.15])
    table.main([str(tmp_path / 'dgcnn_fp'), str(tmp_path / 'dgcnn_bnn'),
                '--out', str(tmp_path / 'table')])
    rows = json.loads((tmp_path / 'table.json').read_text())
    assert rows[0]['best'] == {'epoch': 2, 'instance_miou': 0.6,
                               'category_miou': 0.3}
    assert rows[0]['last']['instance_miou'] == 0.5
    assert rows[1]['finished'] is False and rows[1]['per_epoch'] == [0.1,
                                                                     0.15]
    md = (tmp_path / 'table.md').read_text()
    assert '| dgcnn | fp | 3/3 | 50.00 | 60.00 (2) | 25.00 | 30.00 (2) ' \
        '| 0.000 | 2.0 |' in md
    assert '2/3 (unfinished)' in md
    # Model arguments set from the data are not options of the command.
    assert """--model-kwargs '{"k": 10}'""" in md and 'num_categories' \
        not in md


def test_per_category_runs(table, tmp_path):
    _run(tmp_path / 'chair_fp', 'fp', [0.2, 0.6, 0.5], ['chair'])
    _run(tmp_path / 'all_fp', 'fp', [0.3, 0.4, 0.5])
    table.main([str(tmp_path / 'chair_fp'), str(tmp_path / 'all_fp'),
                '--out', str(tmp_path / 'table')])
    md = (tmp_path / 'table.md').read_text()
    assert '| backbone | method | categories | epochs |' in md
    assert '| dgcnn | fp | chair | 3/3 | 50.00 |' in md
    assert '| dgcnn | fp | all | 3/3 | 50.00 |' in md
    assert '--categories chair --num-points 512' in md


def test_mixed_tasks_and_missing_results_are_refused(table, tmp_path):
    _run(tmp_path / 'a', 'fp', [0.2])
    (tmp_path / 'b').mkdir()
    with pytest.raises(SystemExit):
        table.main([str(tmp_path / 'a'), str(tmp_path / 'b'), '--out',
                    str(tmp_path / 't')])
