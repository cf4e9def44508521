r"""Bad input to the training program and the models gets a clear error that
names the problem, before any training."""
import pytest
import torch
from torch_geometric.data import Data

from torch_geometric_binary.nn.models import MODELS
from torch_geometric_binary.train import NormalizeUnitSphere, build_model

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


def test_unknown_model_option_names_the_known_ones():
    with pytest.raises(ValueError, match='its options: .*dropout'):
        build_model({'model': 'dgcnn', 'num_classes': 3, 'method': 'fp',
                     'model_kwargs': {'kk': 4}})


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


def test_huge_coordinates_are_refused():
    pos = torch.randn(64, 3) * 1e20
    with pytest.raises(ValueError, match='cannot be normalized'):
        NormalizeUnitSphere()(Data(pos=pos))
    # Large but representable clouds still normalize.
    out = NormalizeUnitSphere()(Data(pos=torch.randn(64, 3) * 1e15))
    assert torch.isclose(out.pos.norm(dim=-1).max(), torch.tensor(1.0))
