r"""Smoke tests of the training program ``examples/modelnet.py``: tiny runs on
the synthetic dataset (4 classes, 64 points per cloud, a few dozen clouds,
one thread). The command-line flows (interrupt + ``--resume``, ``--eval``,
``torchrun`` with two processes) run the script as subprocesses; the rest
calls ``main(argv)`` in-process to save the interpreter start-up (~5 s
each)."""
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'examples' / 'modelnet.py'

TINY = [
    '--dataset', 'synthetic', '--synthetic-classes', '4',
    '--synthetic-points', '64', '--limit-train', '32', '--limit-test', '16',
    '--batch-size', '8', '--threads', '1', '--quiet'
]
# FP PointNet, 64 clouds, a high learning rate: the mean training loss drops
# by about 0.4 from the first to the fourth epoch (seeds 1 and 2 tried).
FP_RUN = TINY + ['--model', 'pointnet', '--method', 'fp', '--lr', '0.003',
                 '--epochs', '4', '--seed', '1', '--limit-train', '64']


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get('PYTHONPATH')] if p])
    env['OMP_NUM_THREADS'] = '1'
    env.pop('WORLD_SIZE', None)
    env.pop('RANK', None)
    env.pop('LOCAL_RANK', None)
    return env


def run_script(*args, prefix=(), timeout=120):
    cmd = [sys.executable, *prefix, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, (
        f'exit status {proc.returncode}\nstdout:\n{proc.stdout}\n'
        f'stderr:\n{proc.stderr}')
    return proc


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def read_results(out: Path) -> dict:
    with open(out / 'results.json') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def example():
    r"""The script as a module, for in-process runs."""
    spec = importlib.util.spec_from_file_location('modelnet_example', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def main(example):
    r"""Runs :obj:`example.main(argv)` in-process, restoring the torch
    thread count it changes."""
    threads = torch.get_num_threads()
    yield example.main
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def fp_run(example, tmp_path_factory):
    r"""A straight 4-epoch FP PointNet run (in-process, stdout captured);
    the subprocess runs below check the same program from the command
    line."""
    out = tmp_path_factory.mktemp('fp') / 'run'
    threads = torch.get_num_threads()
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            example.main(FP_RUN + ['--out', str(out)])
    finally:
        torch.set_num_threads(threads)
    return out, stdout.getvalue()


def test_training_reduces_loss(fp_run):
    out, stdout = fp_run
    res = read_results(out)
    hist = res['history']
    assert [h['epoch'] for h in hist] == [1, 2, 3, 4]
    assert res['finished'] and res['epochs_done'] == 4
    assert hist[-1]['loss'] < hist[0]['loss'] - 0.1
    assert all(h['train_samples'] == 64 for h in hist)
    # The cosine schedule: full rate first, then decreasing.
    assert hist[0]['lr'] == pytest.approx(0.003)
    assert hist[0]['lr'] > hist[1]['lr'] > hist[2]['lr'] > hist[3]['lr'] > 0
    for h in hist:
        assert 0 <= h['train_acc'] <= 1 and 0 <= h['test_acc'] <= 1
        assert 0 <= h['test_mean_class_acc'] <= 1
    assert res['best']['overall_acc'] == max(h['test_acc'] for h in hist)
    assert res['config']['num_classes'] == 4
    assert (out / 'best.pt').is_file() and (out / 'last.pt').is_file()
    summary = last_json(stdout)
    assert summary['best_overall_acc'] == res['best']['overall_acc']
    assert summary['epochs_done'] == 4 and summary['finished']
    assert 'Epoch 004/004' in stdout


@pytest.mark.slow
def test_resume_matches_straight_run(fp_run, tmp_path):
    r"""An interrupted run (``--stop-after 2``) continued with ``--resume``
    repeats the straight run: every epoch re-seeds all generators from
    ``(seed, epoch)``, and the model, optimizer and scheduler states are
    restored. On CPU with one thread the kernels are deterministic, so the
    histories and weights are expected to be bitwise equal; the test allows
    a tiny tolerance on float values and exact equality on accuracies
    (integer counts)."""
    straight_out, _ = fp_run
    out = tmp_path / 'run'
    first = ok(run_script(*FP_RUN, '--out', out, '--stop-after', '2'))
    partial = read_results(out)
    assert [h['epoch'] for h in partial['history']] == [1, 2]
    assert not partial['finished']
    assert not last_json(first.stdout)['finished']

    second = ok(run_script(*FP_RUN, '--out', out, '--resume'))
    assert 'Resuming' in second.stdout
    resumed = read_results(out)
    straight = read_results(straight_out)
    assert [h['epoch'] for h in resumed['history']] == [1, 2, 3, 4]
    assert 'Epoch 001' not in second.stdout  # Epochs 3 and 4 only.
    assert resumed['finished']
    for a, b in zip(resumed['history'], straight['history']):
        assert a['lr'] == pytest.approx(b['lr'], rel=1e-12)
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5, abs=1e-6)
        assert a['train_acc'] == b['train_acc']
        assert a['test_acc'] == b['test_acc']
        assert a['test_mean_class_acc'] == b['test_mean_class_acc']
    w1 = torch.load(out / 'last.pt', weights_only=True)['model']
    w2 = torch.load(straight_out / 'last.pt', weights_only=True)['model']
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)


def test_resume_finished_run(main, fp_run, tmp_path, capsys):
    r"""Resuming a finished run trains nothing more, resuming with more
    epochs stretches the cosine schedule, resuming with another method is
    refused."""
    out = tmp_path / 'run'
    shutil.copytree(fp_run[0], out)
    res = main(FP_RUN + ['--out', str(out), '--resume'])
    stdout = capsys.readouterr().out
    assert 'Epoch 0' not in stdout and res['finished']
    assert len(res['history']) == 4
    assert json.loads(stdout.strip().splitlines()[-1])['epochs_done'] == 4

    # Two more epochs: the rate follows the cosine over 6 epochs from epoch 5.
    res = main(FP_RUN + ['--out', str(out), '--resume', '--epochs', '5'])
    capsys.readouterr()
    assert [h['epoch'] for h in res['history']] == [1, 2, 3, 4, 5]
    assert res['history'][4]['lr'] == pytest.approx(
        0.003 * 0.5 * (1 + math.cos(math.pi * 4 / 5)))
    assert res['finished'] and res['config']['epochs'] == 5

    # Another method than the checkpoint's: refused.
    argv = [a if a != 'fp' else 'bnn' for a in FP_RUN]
    with pytest.raises(SystemExit) as e:
        main(argv + ['--out', str(out), '--resume'])
    assert e.value.code == 2
    assert "trained with method='fp'" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_reproduces_training_accuracy(fp_run):
    out, _ = fp_run
    res = read_results(out)
    proc = ok(run_script('--eval', out / 'best.pt', '--threads', '1',
                         '--quiet'))
    result = last_json(proc.stdout)
    assert result['overall_acc'] == res['best']['overall_acc']
    assert result['mean_class_acc'] == res['best']['mean_class_acc']
    assert result['num_test'] == 16
    assert (result['dataset'], result['model'], result['method']) == \
        ('synthetic', 'pointnet', 'fp')


def test_stripped_checkpoint_evaluates_the_same(main, fp_run, tmp_path,
                                                capsys):
    from torch_geometric_binary.train import strip_checkpoint
    out, _ = fp_run
    res = read_results(out)
    small = tmp_path / 'small.pt'
    state = strip_checkpoint(str(out / 'best.pt'), str(small))
    assert 'optimizer' not in state and 'model' in state
    assert small.stat().st_size < (out / 'best.pt').stat().st_size
    result = main(['--eval', str(small), '--quiet'])
    capsys.readouterr()
    assert result['overall_acc'] == res['best']['overall_acc']


@pytest.mark.parametrize('argv,message', [
    (['--model', 'resnet'], "argument --model: invalid choice: 'resnet'"),
    (['--method', 'xnor-net'],
     "argument --method: Unknown binarization method 'xnor-net'"),
    (['--dataset', 'modelnet40'], '--dataset modelnet40 needs --root'),
    (['--dataset', 'modelnet10', '--root', '/nonexistent/ModelNet10'],
     "'/nonexistent/ModelNet10' does not exist"),
    (['--eval', '/nonexistent/best.pt'],
     "checkpoint '/nonexistent/best.pt' does not exist"),
    (['--kd-alpha', '2'], '--kd-alpha: must lie in [0, 1]'),
    (['--model-kwargs', '{k: 3}'], '--model-kwargs: invalid JSON'),
    (['--epochs', '0'], '--epochs: must be positive'),
])
def test_bad_arguments(main, capsys, argv, message):
    r"""Exit status 2 and a one-line argparse error naming the problem."""
    with pytest.raises(SystemExit) as e:
        main(argv + ['--epochs', '1'] if '--epochs' not in argv else argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ': error: ' in err[-1], err
    assert message in err[-1], err


@pytest.mark.parametrize('model,method,kwargs', [
    ('pointnet', 'bipointnet', '{}'),
    ('pointnet', 'bnn', '{}'),
    ('dgcnn', 'bipointnet', '{"k": 4}'),
    ('dgcnn', 'bnn', '{"k": 4}'),
    ('pointnet2', 'bipointnet', '{}'),
    ('pointnet2', 'bnn', '{}'),
])
def test_binary_methods(main, tmp_path, model, method, kwargs):
    out = tmp_path / 'run'
    res = main(TINY + [
        '--model', model, '--method', method, '--model-kwargs', kwargs,
        '--epochs', '1', '--limit-train', '16', '--limit-test', '8',
        '--out', str(out)
    ])
    hist = res['history']
    assert len(hist) == 1 and res['finished']
    assert hist[0]['loss'] > 0 and torch.isfinite(torch.tensor(
        hist[0]['loss']))
    ckpt = torch.load(out / 'last.pt', weights_only=True)
    assert ckpt['config']['method'] == method
    if method == 'bipointnet':  # The LSR scales were set from data.
        scales = [v for k, v in ckpt['model'].items() if k.endswith('scale')]
        assert scales and any(float(s) != 1.0 for s in scales)


def test_distillation_and_init_from(main, fp_run, tmp_path, capsys):
    fp_out, _ = fp_run
    res = main(TINY + [
        '--model', 'pointnet', '--method', 'bipointnet', '--epochs', '1',
        '--teacher', str(fp_out / 'best.pt'), '--kd-alpha', '0.7',
        '--kd-temp', '2', '--init-from', str(fp_out / 'best.pt'),
        '--out', str(tmp_path / 'kd')
    ])
    stdout = capsys.readouterr().out
    # Every tensor but the LSR scales (absent from FP models) is loaded.
    assert re.search(r'--init-from: loaded [1-9]\d* tensors, (\d+) left at '
                     r'their initialization, 0 skipped', stdout), stdout
    assert res['finished'] and res['config']['kd_alpha'] == 0.7
    # Evaluating the student in-process reproduces its recorded accuracy.
    result = main(['--eval', str(tmp_path / 'kd' / 'best.pt'), '--quiet'])
    assert result['overall_acc'] == res['best']['overall_acc']
    assert result['method'] == 'bipointnet'


def test_distillation_cached_teacher_logits(main, fp_run, tmp_path, capsys,
                                            monkeypatch):
    # Without augmentation, the teacher's logits are computed once: the same
    # training as with the teacher run at every step, up to rounding (the
    # points come reordered each epoch).
    from torch_geometric_binary.train.tasks import Classification
    fp_out, _ = fp_run
    argv = TINY + ['--model', 'pointnet', '--method', 'bipointnet',
                   '--epochs', '2', '--no-augment', '--teacher',
                   str(fp_out / 'best.pt')]
    cached = main(argv + ['--out', str(tmp_path / 'cached')])
    assert re.search(r'--teacher: logits of the 32 training clouds computed '
                     r'once', capsys.readouterr().out)
    # With augmentation the teacher runs at every step.
    main(TINY + ['--model', 'pointnet', '--method', 'bipointnet', '--epochs',
                 '1', '--teacher', str(fp_out / 'best.pt'), '--out',
                 str(tmp_path / 'aug')])
    assert '--teacher: runs at every step (random augmentation)' in \
        capsys.readouterr().out
    monkeypatch.setattr(Classification, 'cache_teacher', False)
    live = main(argv + ['--out', str(tmp_path / 'live')])
    assert 'computed once' not in capsys.readouterr().out
    for a, b in zip(cached['history'], live['history']):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-4)
        assert a['train_acc'] == b['train_acc']


@pytest.mark.parametrize('option,argv,message', [
    # The teacher was trained on 4 classes, this run has 5.
    ('--teacher', ['--synthetic-classes', '5'],
     'has 4 classes, the dataset 5'),
    ('--init-from', ['--model', 'dgcnn'], 'is a pointnet model, not dgcnn'),
])
def test_teacher_and_init_from_errors(main, fp_run, tmp_path, capsys, option,
                                      argv, message):
    fp_out, _ = fp_run
    with pytest.raises(SystemExit) as e:
        main(TINY + ['--epochs', '1', '--out', str(tmp_path / 'x'), option,
                     str(fp_out / 'best.pt')] + argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f'{option}: ' in err[-1] and message in err[-1], err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes(tmp_path, main, fp_run):
    r"""``torchrun --nproc_per_node=2`` on CPU (gloo): one tiny epoch, with
    a weight average (updated from the wrapped model on each rank) and a
    teacher whose logits each rank computes once (each rank looks up those
    of its own shard's clouds)."""
    out = tmp_path / 'ddp'
    proc = run_script(
        *TINY, '--model', 'pointnet', '--method', 'bipointnet', '--epochs',
        '1', '--out', out, '--device', 'cpu', '--weight-avg-decay', '0.5',
        '--no-augment', '--teacher', fp_run[0] / 'best.pt',
        prefix=[
            '-m', 'torch.distributed.run', '--nnodes=1',
            '--nproc_per_node=2', '--master_addr=127.0.0.1',
            f'--master_port={_free_port()}'
        ], timeout=180)
    ok(proc)
    res = read_results(out)
    assert res['config']['world_size'] == 2 and res['finished']
    assert len(res['history']) == 1
    # Each of the 32 training clouds counted once (no padding needed).
    assert res['history'][0]['train_samples'] == 32
    assert 'test_acc_raw' in res['history'][0]
    summary = last_json(proc.stdout)
    assert summary['epochs_done'] == 1
    assert proc.stdout.count('Epoch 001/001') == 1  # Only rank 0 prints.
    assert proc.stdout.count('logits of the 32 training clouds computed '
                             'once') == 1
    # The saved model is the one that was evaluated (rank 0's buffers).
    result = main(['--eval', str(out / 'best.pt'), '--quiet'])
    assert result['num_test'] == 16
    assert result['overall_acc'] == res['best']['overall_acc']


def _write_off(path: Path, scale):
    verts = torch.tensor([[0., 0., 0.], [1., 0., 0.], [0., 1., 0.],
                          [0., 0., 1.]]) * torch.tensor(scale)
    faces = [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]
    lines = ['OFF', f'{len(verts)} {len(faces)} 0']
    lines += [' '.join(f'{v:.4f}' for v in row) for row in verts.tolist()]
    lines += ['3 ' + ' '.join(map(str, f)) for f in faces]
    path.write_text('\n'.join(lines) + '\n')


def test_pyg_modelnet_meshes(main, tmp_path, capsys):
    r"""``--dataset pyg-modelnet10`` on a fake raw ModelNet10 folder (one
    stretched tetrahedron per class and split): points are sampled on the
    meshes, once under a fixed seed for the test set, so that ``--eval``
    reproduces the accuracy."""
    root = tmp_path / 'ModelNet10'
    classes = ['bathtub', 'bed', 'chair', 'desk', 'dresser', 'monitor',
               'night_stand', 'sofa', 'table', 'toilet']
    for c, name in enumerate(classes):
        for split in ['train', 'test']:
            folder = root / 'raw' / name / split
            folder.mkdir(parents=True)
            for i in range(2):
                _write_off(folder / f'{name}_{i + 1:04d}.off',
                           [1.0 + c, 1.0 + i, 3.0 - c / 5])
    res = main([
        '--dataset', 'pyg-modelnet10', '--root', str(root), '--num-points',
        '32', '--batch-size', '8', '--epochs', '1', '--method', 'fp',
        '--threads', '1', '--quiet', '--out', str(tmp_path / 'out')
    ])
    assert res['config']['num_classes'] == 10
    assert res['history'][0]['train_samples'] == 20
    capsys.readouterr()
    result = main(['--eval', str(tmp_path / 'out' / 'best.pt'), '--quiet'])
    assert result['num_test'] == 20
    assert result['overall_acc'] == res['best']['overall_acc']
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) \
        == result


def test_weight_average_checkpoints_and_resume(main, tmp_path, capsys):
    r"""With ``--weight-avg-decay`` the averaged model is evaluated, saved
    as ``model`` (what ``--eval`` and ``--init-from`` read) and reported;
    the trained weights stay in the checkpoint for ``--resume``, which
    continues the average exactly; ``strip_checkpoint`` drops them."""
    from torch_geometric_binary.train import strip_checkpoint
    argv = TINY + ['--model', 'pointnet', '--method', 'bipointnet',
                   '--epochs', '3', '--lr', '0.003', '--weight-avg-decay',
                   '0.8']
    straight = main(argv + ['--out', str(tmp_path / 'a')])
    hist = straight['history']
    assert all('test_acc_raw' in h for h in hist)
    ckpt = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    assert ckpt['n_averaged'] == 3 * 4  # 32 clouds / batch 8, 3 epochs.
    assert ckpt['model'].keys() == ckpt['raw_model'].keys()
    assert any(not torch.equal(ckpt['model'][k], ckpt['raw_model'][k])
               for k in ckpt['model'])
    result = main(['--eval', str(tmp_path / 'a' / 'last.pt'), '--quiet'])
    assert result['overall_acc'] == hist[-1]['test_acc']
    assert result['mean_class_acc'] == hist[-1]['test_mean_class_acc']

    main(argv + ['--out', str(tmp_path / 'b'), '--stop-after', '2'])
    resumed = main(argv + ['--out', str(tmp_path / 'b'), '--resume'])
    assert [h['test_acc'] for h in resumed['history']] == \
        [h['test_acc'] for h in hist]
    ckpt_b = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    assert ckpt_b['n_averaged'] == ckpt['n_averaged']
    for k in ckpt['model']:
        torch.testing.assert_close(ckpt_b['model'][k], ckpt['model'][k],
                                   rtol=1e-4, atol=1e-5)

    # Resuming without the average (or with another decay) is refused.
    with pytest.raises(SystemExit):
        main(argv[:-2] + ['--out', str(tmp_path / 'b'), '--resume'])
    assert "trained with weight_avg_decay=0.8" in capsys.readouterr().err
    stripped = strip_checkpoint(str(tmp_path / 'a' / 'last.pt'),
                                str(tmp_path / 'small.pt'))
    assert 'raw_model' not in stripped and 'n_averaged' not in stripped


def test_weight_average_bad_decay(main, capsys):
    with pytest.raises(SystemExit) as e:
        main(TINY + ['--epochs', '1', '--weight-avg-decay', '1'])
    assert e.value.code == 2
    assert '--weight-avg-decay: must lie in (0, 1)' in \
        capsys.readouterr().err
