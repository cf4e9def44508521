import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import Linear
from torch_geometric.nn.aggr import MaxAggregation

from torch_geometric_binary.nn import BiLinear, EMAMaxAggregation
from torch_geometric_binary.nn.models import DGCNN, MODELS, PointNet, PointNet2


@pytest.fixture
def batch():
    sizes = [64, 48, 64]
    data_list = [Data(pos=torch.randn(n, 3) * 0.5, y=torch.tensor([i % 5]))
                 for i, n in enumerate(sizes)]
    return next(iter(DataLoader(data_list, batch_size=3)))


def small(name, method, **kwargs):
    if name == 'dgcnn':
        kwargs.setdefault('k', 8)
    return MODELS[name](5, method=method, **kwargs)


@pytest.mark.parametrize('name', ['pointnet', 'pointnet2', 'dgcnn'])
@pytest.mark.parametrize('method', ['fp', 'bipointnet', 'bnn'])
def test_forward_backward(name, method, batch):
    model = small(name, method)
    out = model(batch.pos, batch.batch)
    assert out.shape == (3, 5)
    torch.nn.functional.cross_entropy(out, batch.y).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch.pos, batch.batch),
                           model(batch.pos, batch.batch))


@pytest.mark.parametrize('name', ['pointnet', 'pointnet2', 'dgcnn'])
def test_binary_layout(name):
    bi = small(name, 'bipointnet')
    lins = [m for m in bi.modules() if isinstance(m, (Linear, BiLinear))]
    fp = [m for m in lins if not isinstance(m, BiLinear)]
    # Full precision: the first layer (coordinates) and the classifier.
    assert sorted(m.out_channels for m in fp) == [5, 64]
    aggrs = [m for m in bi.modules() if isinstance(m, MaxAggregation)]
    assert not aggrs
    assert all(m.scale is not None for m in lins if isinstance(m, BiLinear))

    bnn = small(name, 'bnn')
    assert all(m.scale is None for m in bnn.modules()
               if isinstance(m, BiLinear))
    assert not any(isinstance(m, EMAMaxAggregation) for m in bnn.modules())
    assert small(name, 'bipointnet', ema=False).method.ema is False


def test_models_use_ema_with_group_sizes(batch):
    model = PointNet(5, method='bipointnet', ema=True).eval()
    plain = PointNet(5, method='bipointnet', ema=False).eval()
    plain.load_state_dict(model.state_dict())
    # Same weights: the pooled features differ by delta(points per cloud).
    feats = {}
    for m, key in [(model, 'ema'), (plain, 'max')]:
        m.act.register_forward_hook(
            lambda mod, inp, out, key=key: feats.__setitem__(key, inp[0]))
        m(batch.pos, batch.batch)
    from torch_geometric_binary.nn.functional import ema_delta
    delta = torch.tensor([ema_delta(64), ema_delta(48), ema_delta(64)])
    assert torch.allclose(feats['max'] - feats['ema'],
                          delta.view(-1, 1).expand(-1, 1024), atol=1e-5)


def test_pointnet_transforms(batch):
    model = PointNet(5, 'bipointnet', input_transform=True,
                     feature_transform=True)
    out = model(batch.pos, batch.batch)
    out.sum().backward()
    assert model.input_tnet.head.lins[-1].weight.grad is not None
    assert 'input_transform=True' in str(model)


def test_single_cloud_without_batch():
    for model in [PointNet(4), PointNet2(4), DGCNN(4, k=4)]:
        model.eval()
        assert model(torch.randn(32, 3)).shape == (1, 4)


def test_bad_inputs_raise(batch):
    model = PointNet(5, 'bipointnet')
    with pytest.raises(ValueError, match="'batch' has 10 entries"):
        model(batch.pos, batch.batch[:10])
    pos = batch.pos.clone()
    pos[5] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf coordinates'):
        model(pos, batch.batch)
    with pytest.raises(ValueError, match=r'\[num_points, dims\]'):
        model(batch.pos.view(-1), batch.batch)
    with pytest.raises(ValueError, match='Unknown binarization method'):
        PointNet(5, 'xnor-net-typo')


@pytest.mark.parametrize('name', ['pointnet2', 'dgcnn'])
def test_unsorted_batch_vector_is_refused(name, batch):
    r"""Neighbourhoods must not cross clouds: a batch vector whose clouds are
    not contiguous is refused, not searched across clouds."""
    model = small(name, 'bipointnet').eval()
    perm = torch.randperm(batch.pos.size(0))
    with pytest.raises(ValueError, match='sorted'):
        model(batch.pos[perm], batch.batch[perm])


@pytest.mark.parametrize('name', ['pointnet', 'pointnet2', 'dgcnn'])
@pytest.mark.parametrize('method', ['fp', 'bipointnet'])
def test_bf16_autocast_matches_fp32(name, method, batch):
    r"""Mixed precision runs every model (forward and backward) and keeps
    the logits close to float32's."""
    model = small(name, method).eval()
    with torch.no_grad():
        ref = model(batch.pos, batch.batch)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(batch.pos, batch.batch)
    assert low.shape == ref.shape
    assert (low.float().argmax(-1) == ref.argmax(-1)).float().mean() >= 0.5
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model(batch.pos, batch.batch).float().square().mean()
    loss.backward()
    for p_name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, p_name
        assert torch.isfinite(p.grad).all(), p_name
