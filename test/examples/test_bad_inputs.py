r"""Bad input to the training program and the models gets a clear error that
names the problem, before any training."""
import json

import pytest
import torch

from torch_geometric_binary.nn.models import MODELS

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


@pytest.mark.parametrize('name', sorted(MODELS))
@pytest.mark.parametrize('dtype,message', [
    (torch.long, 'floating-point coordinates'),
    (torch.float64, "'pos' is torch.float64 but the model's parameters are "
     'torch.float32'),
    (torch.float16, "'pos' is torch.float16"),
])
def test_models_name_a_wrong_dtype(name, dtype, message):
    model = MODELS[name](4, method='bipointnet').eval()
    pos = (torch.rand(2 * 32, 3) * 4).to(dtype)
    batch = torch.arange(2).repeat_interleave(32)
    with pytest.raises(ValueError, match=message):
        model(pos, batch)


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


def test_nan_features_and_nan_initialization_batch_are_refused():
    from torch_geometric_binary.nn import BiLinear
    model = MODELS['pointnet'](4, method='bipointnet', in_channels=2)
    pos, x = torch.rand(64, 3), torch.randn(64, 2)
    x[5, 1] = float('nan')
    with pytest.raises(ValueError, match="'x' has 1 point"):
        model(pos, torch.zeros(64, dtype=torch.long), x)
    lin = BiLinear(4, 3)
    bad = torch.randn(16, 4)
    bad[0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        lin(bad)
    assert not lin.scale_initialized
    lin(torch.randn(1, 4))  # one row: no spread to measure yet
    assert not lin.scale_initialized
