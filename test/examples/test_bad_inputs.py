r"""Bad input to the training program gets a clear error that names the
problem, before any training."""
import json

import pytest
import torch

from .test_modelnet_example import TINY, example, main  # noqa: F401

BASE = TINY + ['--model', 'pointnet', '--epochs', '1']


@pytest.mark.parametrize('args,message', [
    (['--lr', 'nan'], '--lr: must be a finite number'),
    (['--lr', 'inf'], '--lr: must be a finite number'),
    (['--weight-decay', 'nan'], '--weight-decay: must be a finite number'),
    (['--kd-temp', 'inf'], '--kd-temp: must be a finite number'),
    (['--batch-size', '1'], 'at least 2 clouds per batch'),
    (['--model-kwargs', '{"dropuot": 0.1}'], "no option(s) 'dropuot'"),
    (['--model-kwargs', '{"dropout": "high"}'], "'dropout' must be a number"),
])
def test_cli_refuses(main, tmp_path, capsys, args, message):  # noqa: F811
    argv = [a for a in BASE if a != '--batch-size' and a != '8'] + \
        (['--batch-size', '8'] if '--batch-size' not in args else []) + args
    with pytest.raises(SystemExit) as e:
        main(argv + ['--out', str(tmp_path / 'run')])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'run' / 'last.pt').exists()


def test_num_points_larger_than_the_clouds(main, tmp_path, capsys):  # noqa
    with pytest.raises(SystemExit):
        main(BASE + ['--num-points', '128', '--out', str(tmp_path / 'r')])
    assert 'have 64 points' in capsys.readouterr().err


def test_resume_refuses_changed_arguments(main, tmp_path, capsys):  # noqa
    out = str(tmp_path / 'run')
    main(BASE + ['--epochs', '2', '--stop-after', '1', '--out', out])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(BASE + ['--epochs', '2', '--lr', '0.01', '--out', out,
                     '--resume'])
    err = capsys.readouterr().err
    assert 'lr=0.001' in err and '--allow-changes' in err
    main(BASE + ['--epochs', '2', '--lr', '0.01', '--out', out, '--resume',
                 '--allow-changes'])
    with open(tmp_path / 'run' / 'results.json') as f:
        changes = json.load(f)['config']['changes']
    assert changes == [{'epoch': 2, 'changed': {'lr': [0.001, 0.01]}}]


def test_checkpoint_of_other_classes_is_refused(main, tmp_path,  # noqa
                                               capsys):
    out = str(tmp_path / 'run')
    main(BASE + ['--out', out])
    ckpt = torch.load(tmp_path / 'run' / 'best.pt', weights_only=True)
    ckpt['config']['classes'] = list(reversed(ckpt['config']['classes']))
    torch.save(ckpt, tmp_path / 'other.pt')
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(['--eval', str(tmp_path / 'other.pt'), '--quiet'])
    assert 'other classes' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(BASE + ['--teacher', str(tmp_path / 'other.pt'), '--out',
                     str(tmp_path / 'student')])
    assert 'other classes' in capsys.readouterr().err
