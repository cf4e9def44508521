r"""The training driver (:mod:`torch_geometric_binary.train.trainer`) on the
synthetic datasets: tiny in-process runs (one thread, a few seconds)."""
import argparse
import json

import pytest
import torch

from torch_geometric_binary.nn.models import MODELS, SEG_MODELS
from torch_geometric_binary.train import (CHECKPOINT_VERSION, Classification,
                                          Segmentation, load_checkpoint, run)
from torch_geometric_binary.train.cli import (add_model_args,
                                              add_training_args)

CLS = ['--synthetic-classes', '4', '--synthetic-points', '64',
       '--limit-train', '32', '--limit-test', '16', '--batch-size', '8',
       '--threads', '1', '--quiet', '--precision', 'fp32', '--model',
       'pointnet', '--method', 'bipointnet']
SEG = ['--synthetic-per-category', '4', '--synthetic-points', '64',
       '--batch-size', '8', '--threads', '1', '--quiet', '--precision',
       'fp32', '--model', 'pointnet']


def parser(segmentation: bool = False) -> argparse.ArgumentParser:
    r"""The options of the example programs (their data options, as far
    as the synthetic datasets use them)."""
    p = argparse.ArgumentParser()
    add_model_args(p, SEG_MODELS if segmentation else MODELS)
    for name in ['--dataset', '--root']:
        p.add_argument(name)
    for name in ['--num-points', '--limit-train', '--limit-test',
                 '--synthetic-points']:
        p.add_argument(name, type=int)
    p.add_argument('--no-augment', action='store_true')
    if segmentation:
        p.add_argument('--test-area', type=int)
        p.add_argument('--normals', action='store_true')
        p.add_argument('--categories', nargs='+')
        p.add_argument('--synthetic-per-category', type=int)
    else:
        p.add_argument('--synthetic-classes', type=int)
    add_training_args(p, epochs=3, batch_size=8, out='runs/x')
    return p


@pytest.fixture
def train():
    r"""Runs a task in-process, restoring the torch thread count."""
    threads = torch.get_num_threads()

    def fn(task, argv):
        return run(parser(isinstance(task, Segmentation)), task,
                   [str(a) for a in argv])

    yield fn
    torch.set_num_threads(threads)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_resume_continues_from_the_right_epoch_with_identical_state(
        train, tmp_path, capsys):
    r"""A run stopped after 2 of 4 epochs and resumed ends in the same
    state as a straight run: weights, weight average, optimizer, scheduler,
    random states and history (one thread: bit for bit)."""
    argv = CLS + ['--epochs', '4', '--lr', '0.003', '--weight-avg-decay',
                  '0.8']
    straight = train(Classification(), argv + ['--out', tmp_path / 'a'])
    first = train(Classification(), argv + ['--out', tmp_path / 'b',
                                            '--stop-after', '2'])
    assert first['epochs_done'] == 2 and not first['finished']
    capsys.readouterr()
    resumed = train(Classification(), argv + ['--out', tmp_path / 'b',
                                              '--resume'])
    out = capsys.readouterr().out
    assert "after epoch 2" in out and 'Epoch 002' not in out
    assert 'Epoch 003/004' in out and 'Epoch 004/004' in out
    assert resumed['resumed_at'] == [3] and resumed['finished']

    def timeless(history):
        return [{k: v for k, v in h.items() if k != 'time'}
                for h in history]

    assert timeless(resumed['history']) == timeless(straight['history'])
    a = load_checkpoint(str(tmp_path / 'a' / 'last.pt'))
    b = load_checkpoint(str(tmp_path / 'b' / 'last.pt'))
    for key in ['epoch', 'model', 'raw_model', 'n_averaged', 'optimizer',
                'scheduler', 'rng', 'best', 'best_model', 'metrics']:
        assert same(a[key], b[key]), key


def test_checkpoint_layout(train, tmp_path):
    r"""The files that ``--resume``, ``--eval`` and the benchmarks read."""
    res = train(Classification(), CLS + ['--epochs', '2', '--out',
                                         tmp_path / 'run'])
    last = load_checkpoint(str(tmp_path / 'run' / 'last.pt'))
    assert set(last) == {
        'version', 'epoch', 'config', 'args', 'model', 'optimizer',
        'scheduler', 'best', 'history', 'resumed_at', 'train_time', 'rng',
        'metrics', 'best_model'}
    assert last['version'] == CHECKPOINT_VERSION and last['epoch'] == 2
    assert set(last['metrics']) == {'overall_acc', 'mean_class_acc'}
    assert set(last['history'][0]) == {
        'epoch', 'lr', 'loss', 'train_acc', 'train_samples', 'test_acc',
        'test_mean_class_acc', 'time'}
    best = load_checkpoint(str(tmp_path / 'run' / 'best.pt'))
    assert 'best_model' not in best and best['epoch'] == res['best']['epoch']
    with open(tmp_path / 'run' / 'results.json') as f:
        results = json.load(f)
    assert set(results) == {
        'config', 'history', 'best', 'last', 'epochs_done', 'finished',
        'resumed_at', 'num_parameters', 'train_time', 'wall_time'}
    assert set(results['last']) == {'epoch', 'overall_acc',
                                    'mean_class_acc'}
    assert results['config']['num_classes'] == 4


class Scripted(Classification):
    r"""Classification whose test accuracy follows a script, epoch by
    epoch."""
    def __init__(self, accuracies):
        self.accuracies = list(accuracies)
        self.epoch = 0

    def evaluate(self, model, loader, device, data, progress):
        acc = self.accuracies[self.epoch]
        self.epoch += 1
        return {'overall_acc': acc, 'mean_class_acc': acc / 2}


def test_best_checkpoint_is_the_epoch_of_best_accuracy(train, tmp_path,
                                                       capsys):
    out = tmp_path / 'run'
    res = train(Scripted([0.25, 0.75, 0.5, 0.75]),
                CLS + ['--epochs', '4', '--out', out])
    # A tie does not replace the earlier best epoch.
    assert res['best'] == {'epoch': 2, 'overall_acc': 0.75,
                           'mean_class_acc': 0.375}
    assert res['last'] == {'epoch': 4, 'overall_acc': 0.75,
                           'mean_class_acc': 0.375}
    best = load_checkpoint(str(out / 'best.pt'))
    last = load_checkpoint(str(out / 'last.pt'))
    assert best['epoch'] == 2 and last['epoch'] == 4
    assert same(best['model'], last['best_model'])
    assert not same(best['model'], last['model'])
    assert [h['epoch'] for h in best['history']] == [1, 2]
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.endswith(' *') for line in lines if 'Epoch' in line] == \
        [True, True, False, False]
    summary = json.loads(lines[-1])
    assert (summary['best_epoch'], summary['best_overall_acc'],
            summary['last_mean_class_acc']) == (2, 0.75, 0.375)


class NaNForward(Classification):
    def forward(self, model, data):
        return super().forward(model, data) * float('nan')


def test_non_finite_loss_stops_before_any_checkpoint(train, tmp_path):
    with pytest.raises(FloatingPointError, match='Training loss is nan'):
        train(NaNForward(), CLS + ['--epochs', '1', '--out',
                                   tmp_path / 'run'])
    assert not (tmp_path / 'run' / 'last.pt').exists()


def test_resume_refuses_another_model_or_task(train, tmp_path, capsys):
    out = tmp_path / 'run'
    train(Classification(), CLS + ['--epochs', '2', '--stop-after', '1',
                                   '--out', out])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train(Classification(), CLS + ['--epochs', '2', '--resume',
                                       '--model-kwargs', '{"dropout": 0.1}',
                                       '--out', out])
    assert e.value.code == 2
    assert "was trained with model_kwargs={}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(Segmentation(), ['--eval', out / 'best.pt', '--quiet'])
    assert 'not a segmentation checkpoint' in capsys.readouterr().err


def test_segmentation_distills_from_a_segmentation_teacher(train, tmp_path,
                                                          capsys):
    r"""The same driver trains segmentation networks, with distillation
    and a weight average; a classifier cannot teach them."""
    teacher = tmp_path / 'teacher'
    train(Segmentation(), SEG + ['--method', 'fp', '--epochs', '1',
                                 '--out', teacher])
    res = train(Segmentation(), SEG + [
        '--method', 'bipointnet', '--epochs', '2', '--teacher',
        teacher / 'best.pt', '--weight-avg-decay', '0.5', '--out',
        tmp_path / 'student'])
    assert res['finished'] and res['config']['kd_alpha'] == 0.5
    assert set(res['best']) == {'epoch', 'instance_miou', 'category_miou'}
    row = res['history'][-1]
    assert {'train_point_acc', 'instance_miou', 'instance_miou_raw',
            'category_miou_raw'} <= set(row)
    capsys.readouterr()

    train(Classification(), CLS + ['--epochs', '1', '--out',
                                   tmp_path / 'cls'])
    with pytest.raises(SystemExit):
        train(Segmentation(), SEG + ['--epochs', '1', '--teacher',
                                     tmp_path / 'cls' / 'best.pt', '--out',
                                     tmp_path / 'x'])
    assert 'is a classification model, the student a segmentation' in \
        capsys.readouterr().err
