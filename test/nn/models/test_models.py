import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import Linear
from torch_geometric.nn.aggr import MaxAggregation

from torch_geometric_binary.nn import BiLinear, EMAMaxAggregation, RPReLU
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
@pytest.mark.parametrize('method', ['fp', 'bipointnet', 'bnn', 'react'])
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


def _rprelus(model):
    return {name: m.channels for name, m in model.named_modules()
            if isinstance(m, RPReLU)}


def test_react_puts_an_rprelu_wherever_the_activation_applies():
    acts = _rprelus(small('pointnet', 'react', input_transform=True))
    # After the pooled feature, in the head, in the per-point MLPs and the
    # T-Net; none before a max (its features are normalized, unclipped).
    assert acts == {'act': 1024, 'head.acts.0': 512, 'head.acts.1': 256,
                    'mlp1.acts.0': 64, 'mlp1.acts.1': 64,
                    'mlp2.acts.0': 64, 'mlp2.acts.1': 128,
                    'input_tnet.act': 1024, 'input_tnet.point_mlp.acts.0': 64,
                    'input_tnet.point_mlp.acts.1': 128,
                    'input_tnet.head.acts.0': 512,
                    'input_tnet.head.acts.1': 256}
    acts = _rprelus(small('dgcnn', 'react'))
    # One per edge convolution, of its width.
    assert {k: v for k, v in acts.items() if k.startswith('place_acts')} == \
        {'place_acts.0': 64, 'place_acts.1': 128}
    assert acts['conv1.nn.acts.1'] == 64 and 'conv2.nn.acts.0' not in acts
    acts = _rprelus(small('pointnet2', 'react'))
    assert acts['sa1.conv.global_nn'] == 128
    assert acts['sa2.conv.global_nn'] == 256


@pytest.mark.parametrize('name', ['pointnet', 'pointnet2', 'dgcnn'])
def test_other_methods_keep_their_shared_activation(name):
    for method, act in (('bipointnet', torch.nn.Hardtanh),
                        ('xnor+ema', torch.nn.Hardtanh),
                        ('fp', torch.nn.ReLU)):
        model = small(name, method)
        assert not _rprelus(model)
        assert type(model.act) is act
        assert getattr(model, 'place_acts', None) is None


@pytest.mark.parametrize('name', ['pointnet', 'dgcnn'])
def test_react_state_dict_round_trip(name, batch):
    model = small(name, 'react')
    model(batch.pos, batch.batch)  # LSR scales and running statistics.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RPReLU):
                m.gamma.uniform_(-0.5, 0.5)
                m.zeta.uniform_(-0.5, 0.5)
                m.beta.uniform_(0.0, 1.0)
    state = model.state_dict()
    assert sum(k.endswith('.zeta') or k == 'zeta' for k in state) == \
        len(_rprelus(model))
    other = small(name, 'react')
    other.load_state_dict(state)
    model.eval()
    other.eval()
    with torch.no_grad():
        assert torch.equal(model(batch.pos, batch.batch),
                           other(batch.pos, batch.batch))


def test_react_pointnet_trains_on_synthetic_shapes():
    from torch_geometric_binary.datasets import SyntheticShapes
    data = SyntheticShapes(num_classes=4, num_per_class=6, num_points=64,
                           log=False)
    clouds = next(iter(DataLoader(data, batch_size=len(data))))
    # With EMA: a plain max of binary features collapses ReActNet as it
    # does BNN (the paper's point), and its loss stays at log(4).
    model = PointNet(4, method='react+ema', dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(clouds.pos, clouds.batch), clouds.y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3, losses
    # The RPReLU parameters learned.
    assert float(model.mlp2.acts[1].zeta.abs().sum()) > 0


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


def test_nan_features_are_refused():
    model = MODELS['pointnet'](4, method='bipointnet', in_channels=2)
    pos, x = torch.rand(64, 3), torch.randn(64, 2)
    x[5, 1] = float('nan')
    with pytest.raises(ValueError, match="'x' has 1 point"):
        model(pos, torch.zeros(64, dtype=torch.long), x)


@pytest.mark.parametrize('batch', [
    [0] * 5, [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 2], [1, 1, 0, 0, 2, 2]],
    ids=['one', 'equal', 'unequal', 'unsorted'])
def test_apply_transform_multiplies_each_point_by_its_clouds_matrix(batch):
    from torch_geometric_binary.nn.models.pointnet import apply_transform
    torch.manual_seed(0)
    batch = torch.tensor(batch)
    B = int(batch.max()) + 1
    h, transform = torch.randn(batch.numel(), 4), torch.randn(B, 4, 4)
    out = apply_transform(h, transform, batch)
    ref = torch.stack([h[i] @ transform[b] for i, b in enumerate(batch)])
    assert torch.allclose(out, ref, atol=1e-6)


def test_dgcnn_hamming_graph_option():
    from torch_geometric_binary.nn.models import DGCNNSeg
    model = DGCNN(4, method='bipointnet', k=4, graph_metric='hamming')
    assert "graph_metric='hamming'" in repr(model)
    assert model.conv1.metric == 'euclidean'  # The graph on the points.
    assert model.conv2.metric == 'hamming'
    seg = DGCNNSeg(5, k=4, graph_metric='hamming')
    assert (seg.conv2.metric, seg.conv3.metric) == ('hamming', 'hamming')
    assert "graph_metric='hamming'" in repr(seg)
    with pytest.raises(ValueError, match='first layer is binary'):
        DGCNN(4, method='fp', graph_metric='hamming')
