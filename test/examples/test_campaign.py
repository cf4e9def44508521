import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def campaign():
    spec = importlib.util.spec_from_file_location(
        'campaign', ROOT / 'benchmarks' / 'campaign.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_status_and_damaged_runs_are_not_started(campaign, tmp_path,
                                                 capsys, monkeypatch):
    name = 'pn1024_bip_e200'
    folder = tmp_path / name
    folder.mkdir()
    (folder / 'results.json').write_text(json.dumps({
        'epochs_done': 3, 'finished': False, 'config': {'epochs': 200},
        'best': {'epoch': 2, 'overall_acc': 0.5, 'mean_class_acc': 0.4},
        'train_time': 3600.0}))
    states = {s['run']: s for s in campaign.main(
        ['--runs-dir', str(tmp_path), 'status'])}
    assert states[name]['state'] == 'damaged (no last.pt)'
    assert states['pn1024_fp_e200']['state'] == 'not started'
    launched = []
    monkeypatch.setattr(campaign.subprocess, 'Popen',
                        lambda *a, **k: launched.append(a[0]))
    started = campaign.main(['--runs-dir', str(tmp_path), 'start', '--max',
                             '1', name, 'pn1024_fp_e200'])
    assert started == ['pn1024_fp_e200'] and len(launched) == 1
    assert '--resume' in launched[0] and 'damaged' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        campaign.main(['--runs-dir', str(tmp_path), 'start', 'nope'])
