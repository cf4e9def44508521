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
    base = ['--runs-dir', str(tmp_path), '--results-dir',
            str(tmp_path / 'results')]
    states = {s['run']: s for s in campaign.main(base + ['status'])}
    assert states[name]['state'] == 'damaged (no last.pt)'
    assert states['pn1024_fp_e200']['state'] == 'not started'
    launched = []
    monkeypatch.setattr(campaign.subprocess, 'Popen',
                        lambda *a, **k: launched.append(a[0]))
    started = campaign.main(base + ['start', '--max', '1', name,
                                    'pn1024_fp_e200'])
    assert started == ['pn1024_fp_e200'] and len(launched) == 1
    assert '--resume' in launched[0] and 'damaged' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        campaign.main(['--runs-dir', str(tmp_path), 'start', 'nope'])


def _committed(results, name, epochs_done, epoch):
    r"""A results folder whose ledger shows :obj:`name` trained elsewhere to
    :obj:`epochs_done`, with its best weights (of :obj:`epoch`)."""
    import torch

    from torch_geometric_binary.train import build_model, save_checkpoint
    config = {'model': 'pointnet', 'num_classes': 4, 'method': 'bipointnet',
              'model_kwargs': {}, 'epochs': 10}
    torch.manual_seed(0)
    model = build_model(config)
    (results / 'campaign').mkdir(parents=True)
    save_checkpoint(str(results / 'campaign' / f'{name}.pt'), {
        'version': 1, 'epoch': epoch, 'config': config,
        'args': {'lr': 1e-3, 'weight_decay': 0.0, 'epochs': 10,
                 'min_lr': 0.0},
        'model': model.state_dict(), 'history': [], 'resumed_at': [],
        'best': {'epoch': epoch, 'overall_acc': 0.5}, 'train_time': 1.0})
    (results / 'campaign.json').write_text(json.dumps([{
        'run': name, 'model': 'pointnet', 'method': 'bipointnet',
        'model_kwargs': {}, 'protocol': {'epochs': 10, 'num_points': 512},
        'epochs_done': epochs_done, 'finished': False, 'best_epoch': epoch,
        'best_overall_acc': 0.5, 'best_mean_class_acc': 0.4,
        'last_overall_acc': 0.45, 'seconds_per_epoch': 9.0,
        'train_hours': 0.1, 'resumed_at': [],
        'test_acc_per_epoch': [0.1] * epochs_done, 'command': 'python'}]))
    return model


def test_runs_trained_elsewhere_restore_or_refuse(campaign, tmp_path, capsys,
                                                  monkeypatch):
    import torch

    from torch_geometric_binary.train import load_checkpoint
    from torch_geometric_binary.train.loop import cosine_lr_lambda
    name, runs, results = 'pn2_p512_bip_e60', tmp_path / 'runs', \
        tmp_path / 'results'
    model = _committed(results, name, epochs_done=6, epoch=4)
    base = ['--runs-dir', str(runs), '--results-dir', str(results)]
    launched = []
    monkeypatch.setattr(campaign.subprocess, 'Popen',
                        lambda *a, **k: launched.append(a[0]))

    states = {s['run']: s for s in campaign.main(base + ['status'])}
    assert states[name]['state'] == 'elsewhere'
    assert 'start --from-best' in capsys.readouterr().out
    # Never from scratch: without --from-best nothing starts.
    assert campaign.main(base + ['start', name]) == [] and not launched
    assert 'only its best' in capsys.readouterr().err

    assert campaign.main(base + ['start', '--from-best', name]) == [name]
    last = load_checkpoint(str(runs / name / 'last.pt'))
    assert last['epoch'] == 4 and last['scheduler']['last_epoch'] == 4
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(last['best_model'][key], value)
    # The trainer's resume takes the rebuilt states as they are.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(last['optimizer'])
    assert cosine_lr_lambda(10)(last['scheduler']['last_epoch']) == \
        pytest.approx(0.5 * (1 + torch.cos(torch.tensor(0.4 * 3.14159265))))
    event, = json.loads((results / 'campaign' / 'restores.json').read_text())
    assert (event['exact'], event['continues_after_epoch'],
            event['ledger_epochs_done']) == (False, 4, 6)
    assert launched and '--resume' in launched[0]


def test_save_commits_last_pt_and_keeps_rows_of_runs_elsewhere(
        campaign, tmp_path, monkeypatch):
    import torch

    from torch_geometric_binary.train import load_checkpoint
    runs, results = tmp_path / 'runs', tmp_path / 'results'
    _committed(results, 'pn2_p512_bip_e60', epochs_done=6, epoch=4)
    monkeypatch.setattr(campaign.subprocess, 'Popen', lambda *a, **k: None)
    base = ['--runs-dir', str(runs), '--results-dir', str(results)]
    # A run of this machine: restored, then "trained" to epoch 4.
    campaign.main(base + ['start', '--from-best', 'pn2_p512_bip_e60'])
    other = json.loads((results / 'campaign.json').read_text())[0]
    other['run'] = 'dgcnn_p512_fp_e40'
    (results / 'campaign.json').write_text(json.dumps([other]))
    folder = runs / 'pn2_p512_bip_e60'
    history = [{'epoch': e, 'test_acc': 0.1 * e, 'mean_class_acc': 0.1}
               for e in (1, 2, 3, 4)]
    config = dict(load_checkpoint(str(folder / 'last.pt'))['config'],
                  dataset='modelnet40', num_points=512)
    (folder / 'results.json').write_text(json.dumps({
        'config': config, 'history': history, 'epochs_done': 4,
        'finished': False, 'train_time': 8.0, 'resumed_at': [5],
        'best': {'epoch': 4, 'overall_acc': 0.4, 'mean_class_acc': 0.1},
        'last': {'overall_acc': 0.4, 'mean_class_acc': 0.1}}))
    (folder / 'best.pt').write_bytes((folder / 'last.pt').read_bytes())
    campaign.main(base + ['save'])
    rows = {r['run']: r for r in json.loads(
        (results / 'campaign.json').read_text())}
    assert set(rows) == {'pn2_p512_bip_e60', 'dgcnn_p512_fp_e40'}
    assert rows['pn2_p512_bip_e60']['test_acc_per_epoch'] == \
        [h['test_acc'] for h in history]
    snap = results / 'campaign' / 'resume' / 'pn2_p512_bip_e60.pt'
    last = load_checkpoint(str(folder / 'last.pt'))
    # The snapshot leaves out the best weights, committed beside it.
    assert 'best_model' not in load_checkpoint(str(snap))
    assert 'fresh optimizer' in (results / 'campaign.md').read_text()
    # The snapshot and the best weights beside it must agree.
    best = results / 'campaign' / 'pn2_p512_bip_e60.pt'
    good = best.read_bytes()
    state = load_checkpoint(str(best))
    torch.save(dict(state, epoch=3), str(best))
    assert campaign.main(['--runs-dir', str(tmp_path / 'runs3'),
                          '--results-dir', str(results), 'start',
                          'pn2_p512_bip_e60']) == []
    best.write_bytes(good)
    # On the next machine the committed last.pt comes back whole.
    runs2 = tmp_path / 'runs2'
    campaign.main(['--runs-dir', str(runs2), '--results-dir', str(results),
                   'start', 'pn2_p512_bip_e60'])
    back = load_checkpoint(str(runs2 / 'pn2_p512_bip_e60' / 'last.pt'))
    assert back.keys() == last.keys()
    for key in ('model', 'best_model'):
        for name, value in last[key].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(back[key][name], value)
    assert back['optimizer'] == last['optimizer']  # No tensors in it yet.
    assert back['scheduler'] == last['scheduler']
    assert back['epoch'] == last['epoch'] and back['best'] == last['best']


class _Machine:
    r"""Runs that take a number of checks to stop, as ``watch`` sees them
    through :func:`state`, and the launches it makes."""
    def __init__(self, campaign, monkeypatch, runs):
        self.runs = runs  # name: [running, state, checks left, end state]
        self.launched = []
        monkeypatch.setattr(campaign.os, 'cpu_count', lambda: 1)
        monkeypatch.setattr(campaign, 'state', self.state)
        monkeypatch.setattr(campaign.subprocess, 'Popen', self.popen)
        monkeypatch.setattr(campaign.time, 'sleep', self.tick)
        self.lifetimes = {}

    def state(self, name, runs_dir, results_dir=None):
        running, st = self.runs.get(name, (False, 'finished'))[:2]
        return {'run': name, 'running': running, 'state': st}

    def popen(self, cmd, **kwargs):
        name = cmd[cmd.index('--out') + 1].rsplit('/', 1)[-1]
        assert not self.runs[name][0], f'{name} started twice'
        self.launched.append(name)
        self.runs[name][0] = True
        self.runs[name][2] = self.lifetimes[name]

    def tick(self, seconds):
        for run in self.runs.values():
            if run[0]:
                run[2] -= 1
                if run[2] == 0:
                    run[0], run[1] = False, run[3]


def test_watch_fills_a_freed_core_in_order(campaign, tmp_path,
                                           monkeypatch, capsys):
    a, b, c = 'pn1024_fp_e200', 'pn1024_bip_e200', 'pn2_p512_fp_e60'
    m = _Machine(campaign, monkeypatch, {
        a: [True, 'resumable', 2, 'finished'],
        b: [False, 'not started', 0, 'finished'],
        c: [False, 'resumable', 0, 'finished']})
    m.lifetimes = {b: 3, c: 1}
    base = ['--runs-dir', str(tmp_path), '--results-dir', str(tmp_path)]
    # One core, held by a: b starts once a has finished, then c after b.
    assert campaign.main(base + ['watch', '--interval', '0', a, b, c]) == \
        [b, c]
    assert m.launched == [b, c]
    assert all(run[1] == 'finished' for run in m.runs.values())


def test_watch_stops_restarting_a_run_that_keeps_stopping(
        campaign, tmp_path, monkeypatch, capsys):
    b = 'pn1024_bip_e200'
    m = _Machine(campaign, monkeypatch,
                 {b: [False, 'resumable', 0, 'resumable']})
    m.lifetimes = {b: 1}
    base = ['--runs-dir', str(tmp_path), '--results-dir', str(tmp_path)]
    assert campaign.main(base + ['watch', '--interval', '0', '--retries',
                                 '1', b]) == [b]
    assert m.launched == [b, b]  # The first start and one retry.
    assert 'started 2 times by this watch' in capsys.readouterr().err
