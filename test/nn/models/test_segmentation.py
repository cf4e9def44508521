import pytest
import torch
from torch_geometric.nn.dense.linear import Linear

from torch_geometric_binary.nn import BiLinear, BiMLP
from torch_geometric_binary.nn.functional import ema_delta
from torch_geometric_binary.nn.models import (MODELS, SEG_MODELS, DGCNNSeg,
                                              PointNet2Seg, PointNetSeg)
from torch_geometric_binary.nn.models.common import category_code
from torch_geometric_binary.nn.models.segmentation import knn_interpolate
from torch_geometric_binary.train import build_model

SMALL = {'pointnet': {}, 'pointnet2': {}, 'dgcnn': {'k': 6}}
METHODS = ['fp', 'bnn', 'bipointnet', 'react']


def clouds(num=2, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(num * n, 3, generator=g) * 2 - 1
    batch = torch.arange(num).repeat_interleave(n)
    return pos, batch


def make(name, method, **kwargs):
    return SEG_MODELS[name](5, method=method, **{**SMALL[name], **kwargs})


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('name', sorted(SEG_MODELS))
def test_forward_backward(name, method):
    model = make(name, method, num_categories=3)
    pos, batch = clouds()
    out = model(pos, batch, category=torch.tensor([0, 2]))
    assert out.shape == (pos.size(0), 5)
    assert torch.isfinite(out).all()
    out.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.eval()
    with torch.no_grad():  # One cloud, no batch vector.
        assert model(pos[:48], category=torch.tensor([1])).shape == (48, 5)


@pytest.mark.parametrize('name', sorted(SEG_MODELS))
def test_features_and_semantic(name):
    model = make(name, 'bipointnet', in_channels=2)
    pos, batch = clouds()
    x = torch.randn(pos.size(0), 2)
    assert model(pos, batch, x=x).shape == (pos.size(0), 5)
    with pytest.raises(ValueError, match='in_channels=2'):
        model(pos, batch)
    with pytest.raises(ValueError, match='without categories'):
        model(pos, batch, x=x, category=torch.tensor([0, 1]))


@pytest.mark.parametrize('name', sorted(SEG_MODELS))
def test_category_is_used(name):
    model = make(name, 'bipointnet', num_categories=4).eval()
    pos, batch = clouds()
    with torch.no_grad():
        a = model(pos, batch, category=torch.tensor([0, 1]))
        b = model(pos, batch, category=torch.tensor([3, 1]))
    # The category of cloud 0 changes its points' logits only.
    assert not torch.allclose(a[batch == 0], b[batch == 0])
    assert torch.allclose(a[batch == 1], b[batch == 1])
    with pytest.raises(ValueError, match="needs the 'category'"):
        model(pos, batch)
    with pytest.raises(ValueError, match=r'lie in \[0, 4\)'):
        model(pos, batch, category=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match='one integer per cloud'):
        model(pos, batch, category=torch.tensor([0]))


def test_category_code():
    cat = torch.tensor([2, 0])
    assert category_code(cat, 3, False).tolist() == [[0, 0, 1], [1, 0, 0]]
    # Binary layers take the sign: the code must survive it.
    assert category_code(cat, 3, True).tolist() == [[-1, -1, 1],
                                                    [1, -1, -1]]


def first_layer(model):
    return {
        PointNetSeg: lambda m: m.mlp1.lins[0],
        PointNet2Seg: lambda m: m.sa1.conv.local_nn.lins[0],
        DGCNNSeg: lambda m: m.conv1.nn.lins[0],
    }[type(model)](model)


@pytest.mark.parametrize('method', ['bnn', 'bipointnet'])
@pytest.mark.parametrize('name', sorted(SEG_MODELS))
def test_binary_layout(name, method):
    model = make(name, method, num_categories=2)
    assert type(first_layer(model)) is Linear
    assert type(model.head.lins[-1]) is Linear
    assert model.head.lins[-1].out_channels == 5
    lins = [m for m in model.modules() if isinstance(m, (Linear, BiLinear))]
    binary = [m for m in lins if isinstance(m, BiLinear)]
    # Every other layer is binary (PointNet++'s first propagation layer
    # reads only hidden features here: in_channels=0).
    assert len(binary) == len(lins) - 2
    assert all(m.log_scale is not None for m in binary) == \
        (method == 'bipointnet')
    fp = make(name, 'fp')
    assert not any(isinstance(m, BiLinear) for m in fp.modules())


def test_pointnet2_features_read_in_full_precision():
    model = PointNet2Seg(5, 'bipointnet', in_channels=3)
    assert type(model.fp1.nn.lins[0]) is Linear


@pytest.mark.parametrize('method,ema', [('fp', False), ('bnn', False),
                                        ('bipointnet', True),
                                        ('bnn+ema', True)])
@pytest.mark.parametrize('name', sorted(SEG_MODELS))
def test_global_feature_ema(name, method, ema, monkeypatch):
    model = make(name, method, num_categories=2).eval()
    calls = []
    original = BiMLP.max_pool

    def spy(self, x, batch, size, ema=None):
        out = original(self, x, batch, size, ema)
        calls.append((ema, out, original(self, x, batch, size, False)))
        return out

    monkeypatch.setattr(BiMLP, 'max_pool', spy)
    pos, batch = clouds(n=40)
    with torch.no_grad():
        model(pos, batch, category=torch.tensor([0, 1]))
    assert [c[0] for c in calls] == [ema]
    _, pooled, plain = calls[0]
    if ema:  # Shifted by delta(n) of the pooled group's own size.
        shift = plain - pooled
        assert (shift > 0).all()
        assert torch.allclose(shift, shift[:1].expand_as(shift))
    else:
        assert torch.equal(pooled, plain)


def test_knn_interpolate_matches_definition():
    pos_x, batch_x = clouds(n=10, seed=1)
    pos_y, batch_y = clouds(n=7, seed=2)
    x = torch.randn(pos_x.size(0), 4)
    out = knn_interpolate(x, pos_x, pos_y, batch_x, batch_y, k=3)
    for i in range(pos_y.size(0)):
        same = (batch_x == batch_y[i]).nonzero().view(-1)
        d = (pos_x[same] - pos_y[i]).pow(2).sum(-1)
        near = same[d.argsort()[:3]]
        w = 1 / (pos_x[near] - pos_y[i]).pow(2).sum(-1)
        ref = (x[near] * w[:, None]).sum(0) / w.sum()
        assert torch.allclose(out[i], ref, atol=1e-5)
    # A point on top of a source takes its features.
    out = knn_interpolate(x, pos_x, pos_x[:1], batch_x, batch_x[:1])
    assert torch.allclose(out[0], x[0], atol=1e-4)


def test_registry_and_checkpoint_build():
    assert set(SEG_MODELS) == set(MODELS)
    config = {'task': 'segmentation', 'model': 'dgcnn', 'num_classes': 7,
              'method': 'bipointnet',
              'model_kwargs': {'num_categories': 2, 'k': 5}}
    model = build_model(config)
    assert isinstance(model, DGCNNSeg) and model.k == 5
    config.pop('task')  # Classification checkpoints are unchanged.
    config['model_kwargs'] = {'k': 5}
    assert type(build_model(config)).__name__ == 'DGCNN'


@pytest.mark.parametrize('method', ['fp', 'bnn', 'bipointnet'])
def test_pointnet_all_local_features(method, monkeypatch):
    model = PointNetSeg(5, method, num_categories=2,
                        local_features='all').eval()
    assert model.head.in_channels == 64 + 64 + 128 + 1024 + 1024 + 2
    assert "local_features='all'" in repr(model)
    seen = []
    original = model.head.forward
    monkeypatch.setattr(model.head, 'forward',
                        lambda x, *a: seen.append(x) or original(x, *a))
    pos, batch = clouds(n=40)
    with torch.no_grad():
        out = model(pos, batch, category=torch.tensor([0, 1]))
    assert out.shape == (80, 5)
    x = seen[0]
    h = model.mlp1(pos)
    hidden = model.mlp2.hidden_outputs(h)
    point = model.mlp2.output(hidden[-1])
    # Every per-point layer's output, then the cloud's (EMA) max.
    torch.testing.assert_close(x[:, :64], h)
    torch.testing.assert_close(x[:, 64:128], hidden[0])
    torch.testing.assert_close(x[:, 128:256], hidden[1])
    torch.testing.assert_close(x[:, 256:1280], model.act(point))
    pooled = x[:, 1280:2304]
    assert torch.equal(pooled[:40], pooled[:1].expand(40, -1))
    delta = ema_delta(40) if model.method.ema else 0.0
    torch.testing.assert_close(
        model.act(point[:40].max(0).values - delta), pooled[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="local_features 'some'"):
        PointNetSeg(5, local_features='some')
    with pytest.raises(ValueError, match='num_categories'):
        PointNetSeg(5, num_categories=-1)
    with pytest.raises(ValueError, match='dropout'):
        DGCNNSeg(5, dropout=1.5)
    with pytest.raises(ValueError, match='Unknown binarization'):
        PointNet2Seg(5, method='nope')
    assert 'num_categories=3' in repr(PointNetSeg(5, num_categories=3))
