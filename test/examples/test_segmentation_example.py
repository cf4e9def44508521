r"""Smoke tests of ``examples/segmentation.py``: tiny runs on the synthetic
parts (24 training and 6 test objects of 64 points, one thread). Most call
``main(argv)`` in-process; the command-line run is a (slow) subprocess."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'examples' / 'segmentation.py'

TINY = ['--synthetic-per-category', '4', '--synthetic-points', '64',
        '--batch-size', '8', '--threads', '1', '--quiet', '--precision',
        'fp32']
# FP PointNet at a high learning rate: the training loss falls by more
# than 0.5 over four epochs.
FP_RUN = TINY + ['--model', 'pointnet', '--method', 'fp', '--lr', '0.003',
                 '--epochs', '4', '--seed', '1']


@pytest.fixture(scope='module')
def example():
    spec = importlib.util.spec_from_file_location('segmentation_example',
                                                  SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def main(example):
    threads = torch.get_num_threads()
    yield example.main
    torch.set_num_threads(threads)


def read_results(out: Path) -> dict:
    with open(out / 'results.json') as f:
        return json.load(f)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_training_loss_falls_and_eval_reproduces(main, tmp_path, capsys):
    out = tmp_path / 'run'
    summary = main(FP_RUN + ['--out', str(out)])
    losses = [h['loss'] for h in summary['history']]
    assert len(losses) == 4 and summary['finished']
    assert losses[-1] < losses[0] - 0.5, losses
    best = summary['best']
    assert 0.0 <= best['instance_miou'] <= 1.0
    assert set(best) == {'epoch', 'instance_miou', 'category_miou'}
    line = last_json(capsys.readouterr().out)
    assert line['best_instance_miou'] == best['instance_miou']
    assert read_results(out)['best'] == best

    result = main(['--eval', str(out / 'best.pt'), '--threads', '1',
                   '--quiet'])
    line = last_json(capsys.readouterr().out)
    assert line['epoch'] == best['epoch'] and line['num_test'] == 6
    assert line['instance_miou'] == pytest.approx(best['instance_miou'],
                                                  abs=1e-9)
    assert line['category_miou'] == pytest.approx(best['category_miou'],
                                                  abs=1e-9)
    assert len(result['metrics']['category_iou']) == 6


def test_resume_continues(main, tmp_path, capsys):
    out = tmp_path / 'run'
    args = TINY + ['--model', 'pointnet2', '--method', 'bipointnet',
                   '--epochs', '3', '--out', str(out)]
    first = main(args + ['--stop-after', '2'])
    assert first['epochs_done'] == 2 and not first['finished']
    done = main(args + ['--resume'])
    assert done['finished'] and done['epochs_done'] == 3
    assert done['resumed_at'] == [3]
    assert [h['epoch'] for h in done['history']] == [1, 2, 3]
    assert done['history'][:2] == first['history']
    assert 'Resuming from' in capsys.readouterr().out


@pytest.mark.parametrize('argv,message', [
    (['--epochs', '0'], '--epochs: must be positive'),
    (['--dataset', 'shapenet'], 'needs --root'),
    (['--dataset', 's3dis', '--root', '/does/not/exist'], 'does not exist'),
    (['--test-area', '7'], '--test-area: must be 1-6'),
    (['--test-area', '2'], 'S3DIS option'),
    (['--normals'], 'ShapeNet part option'),
    (['--method', 'nope'], 'Unknown binarization method'),
    (['--model', 'resnet'], "invalid choice: 'resnet'"),
    (['--model-kwargs', '{"num_categories": 2}'], 'set from the dataset'),
    (['--model-kwargs', '{"bogus": 1}'], "no option(s) 'bogus'"),
    (['--batch-size', '1'], 'at least 2 clouds'),
    (['--categories', 'rockets'], "Unknown categories ['rockets']"),
    (['--dataset', 's3dis', '--root', '.', '--categories', 'chair'],
     'part-segmentation option'),
    (['--eval', 'missing.pt'], "'missing.pt' does not exist"),
])
def test_bad_arguments(main, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(TINY + ['--epochs', '1', '--out', str(tmp_path / 'x')] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_one_category(main, tmp_path, capsys):
    # One model per category: only that category's shapes and parts,
    # renumbered, and --eval keeps the selection from the checkpoint.
    out = tmp_path / 'run'
    summary = main(TINY + ['--model', 'pointnet', '--method', 'bipointnet',
                           '--epochs', '1', '--categories', 'rocket',
                           '--out', str(out)])
    assert summary['config']['categories'] == ['rocket']
    assert summary['config']['parts'] == {'rocket': [0, 1, 2]}
    assert summary['config']['num_classes'] == 3
    assert summary['config']['model_kwargs']['num_categories'] == 1
    capsys.readouterr()
    result = main(['--eval', str(out / 'best.pt'), '--threads', '1',
                   '--quiet'])
    line = last_json(capsys.readouterr().out)
    assert line['num_test'] == 1
    assert list(result['metrics']['category_iou']) == ['rocket']
    assert line['instance_miou'] == pytest.approx(
        summary['best']['instance_miou'], abs=1e-9)


def test_eval_refuses_a_classifier_checkpoint(main, tmp_path, capsys):
    from torch_geometric_binary.train import save_checkpoint
    path = tmp_path / 'cls.pt'
    save_checkpoint(str(path), {'model': {}, 'config': {
        'model': 'pointnet', 'method': 'fp', 'num_classes': 4}})
    with pytest.raises(SystemExit):
        main(['--eval', str(path), '--quiet'])
    assert 'not a segmentation checkpoint' in capsys.readouterr().err


@pytest.mark.slow
def test_command_line(tmp_path):
    out = tmp_path / 'run'
    cmd = [sys.executable, str(SCRIPT), *TINY, '--model', 'dgcnn',
           '--method', 'bnn', '--epochs', '1', '--model-kwargs',
           '{"k": 8}', '--out', str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = last_json(proc.stdout)
    assert line['finished'] and line['model'] == 'dgcnn'
    proc = subprocess.run([sys.executable, str(SCRIPT), '--eval',
                           str(out / 'best.pt'), '--quiet'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)['instance_miou'] == pytest.approx(
        line['best_instance_miou'], abs=1e-9)


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    r"""``torchrun --nproc_per_node=2`` on CPU (gloo): one tiny epoch of
    part segmentation; rank 0 alone writes and prints, and ``--eval`` of the
    saved model reproduces its score."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for key in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        env.pop(key, None)
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1',
           '--nproc_per_node=2', '--master_addr=127.0.0.1',
           f'--master_port={port}', str(SCRIPT), *TINY, '--model',
           'pointnet', '--method', 'bipointnet', '--epochs', '1',
           '--device', 'cpu', '--out', str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = read_results(out)
    assert res['config']['world_size'] == 2 and res['finished']
    assert len(res['history']) == 1
    assert proc.stdout.count('Epoch 001/001') == 1
    line = last_json(proc.stdout)
    proc = subprocess.run([sys.executable, str(SCRIPT), '--eval',
                           str(out / 'best.pt'), '--quiet'], cwd=ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)['instance_miou'] == pytest.approx(
        line['best_instance_miou'], abs=1e-9)
