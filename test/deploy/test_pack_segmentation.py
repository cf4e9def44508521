r"""pack() of the segmentation networks (module by module, deploy.generic):
the packed PointNetSeg, PointNet2Seg and DGCNNSeg give the binary model's
per-point predictions on synthetic part segmentation, save and load, and
name what they cannot pack."""
import copy
import io
import re

import pytest
import torch

from torch_geometric_binary.datasets import SyntheticParts
from torch_geometric_binary.deploy import PackedModel, load, pack, save
from torch_geometric_binary.deploy.generic import constructor_kwargs
from torch_geometric_binary.nn import BiLinear
from torch_geometric_binary.nn.models import SEG_MODELS

from .test_pack_models import assert_same_predictions

NUM_POINTS = 96
SMALL = {'pointnet': {}, 'pointnet2': {}, 'dgcnn': {'k': 8}}
_DATA = {}
_CACHE = {}


def parts(train: bool = True):
    r"""Small synthetic part-segmentation clouds (6 categories, 18 parts)."""
    if train not in _DATA:
        _DATA[train] = SyntheticParts(train=train, num_per_category=2,
                                      num_points=NUM_POINTS)
    return _DATA[train]


def batch_of(indices, train=True, sizes=None):
    r"""(pos, batch, category, y) of the clouds :obj:`indices`, each cut to
    :obj:`sizes` points (odd and mixed sizes)."""
    ds = parts(train)
    pos, batch, y = [], [], []
    for b, i in enumerate(indices):
        d = ds[i]
        n = d.pos.size(0) if sizes is None else sizes[b]
        pos.append(d.pos[:n])
        y.append(d.y[:n])
        batch.append(torch.full((n, ), b, dtype=torch.long))
    category = torch.cat([ds[i].category for i in indices])
    return torch.cat(pos), torch.cat(batch), category, torch.cat(y)


def make_model(name, method='bipointnet', steps=3, **kwargs):
    r"""A part-segmentation model trained for a few steps on the synthetic
    parts (BatchNorm statistics and LSR scales from data), in evaluation
    mode."""
    torch.manual_seed(0)
    ds = parts()
    model = SEG_MODELS[name](ds.num_parts, method=method,
                             num_categories=len(ds.CATEGORIES),
                             **{**SMALL[name], **kwargs})
    if model.method.input_threshold:  # RSign: thresholds off zero.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, BiLinear):
                    m.input_threshold.normal_(0, 0.3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        pos, batch, category, y = batch_of([step, 4 + step, 9 - step])
        loss = torch.nn.functional.cross_entropy(
            model(pos, batch, category=category), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def cached(name, method='bipointnet', **kwargs):
    key = (name, method, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        model = make_model(name, method, **kwargs)
        _CACHE[key] = (model, pack(model))
    return _CACHE[key]


def check_forward(model, packed):
    # Test clouds: three categories with odd and mixed sizes, then one
    # cloud without a batch vector.
    for indices, sizes in (([0, 5, 11], [NUM_POINTS, 77, 41]),
                           ([3, 7], None)):
        pos, batch, category, _ = batch_of(indices, False, sizes)
        with torch.no_grad():
            ref = model(pos, batch, category=category)
        assert_same_predictions(ref, packed(pos, batch, category=category))
    pos, _, category, _ = batch_of([8], False)
    with torch.no_grad():
        ref = model(pos, category=category)
    assert_same_predictions(ref, packed(pos, category=category))


CASES = [('pointnet', 'bipointnet', {}), ('pointnet2', 'bipointnet', {}),
         ('dgcnn', 'bipointnet', {}), ('pointnet', 'bnn', {}),
         ('pointnet', 'react+ema', {}), ('dgcnn', 'react+ema', {}),
         ('pointnet2', 'bnn', {}),
         ('pointnet', 'bipointnet', {'input_transform': True,
                                     'feature_transform': True}),
         ('pointnet', 'bipointnet', {'local_features': 'all'}),
         ('pointnet', 'react+ema', {'local_features': 'all'}),
         ('dgcnn', 'react+ema', {'graph_metric': 'hamming'})]
CASE_IDS = ['pointnet', 'pointnet2', 'dgcnn', 'pointnet-bnn',
            'pointnet-react+ema', 'dgcnn-react+ema', 'pointnet2-bnn',
            'pointnet-tnets', 'pointnet-all', 'pointnet-all-react+ema',
            'dgcnn-hamming-react+ema']


@pytest.mark.parametrize('name,method,kwargs', CASES, ids=CASE_IDS)
def test_packed_segmenter_matches_binary_model(name, method, kwargs):
    model, packed = cached(name, method, **kwargs)
    assert isinstance(packed, PackedModel)
    assert type(packed.model) is type(model)
    assert not any(True for _ in packed.parameters())
    # Every binary layer is packed (no trained BiLinear left).
    assert not any(isinstance(m, BiLinear) for m in packed.modules())
    check_forward(model, packed)


ROUND_TRIP = [0, 1, 2, 5, 8, 10]


@pytest.mark.parametrize('name,method,kwargs', [CASES[i] for i in ROUND_TRIP],
                         ids=[CASE_IDS[i] for i in ROUND_TRIP])
def test_save_load_round_trip(tmp_path, name, method, kwargs):
    model, packed = cached(name, method, **kwargs)
    path = tmp_path / f'{name}.tgb'
    save(packed, path)
    loaded = load(path)
    assert isinstance(loaded, PackedModel)
    assert loaded.trained == type(model).__name__
    assert not any(True for _ in loaded.parameters())
    pos, batch, category, _ = batch_of([1, 6, 10], False, [NUM_POINTS, 50,
                                                           NUM_POINTS])
    assert torch.equal(loaded(pos, batch, category=category),
                       packed(pos, batch, category=category))
    # Saving the loaded model gives the same file content.
    a, b = io.BytesIO(), io.BytesIO()
    save(packed, a)
    save(loaded, b)
    assert a.getvalue() == b.getvalue()


def test_constructor_arguments_round_trip():
    model, packed = cached('pointnet', 'bipointnet', input_transform=True,
                           feature_transform=True)
    kwargs = constructor_kwargs(model)
    assert kwargs['input_transform'] and kwargs['feature_transform']
    assert kwargs['num_categories'] == 6 and kwargs['method'] == 'bipointnet'
    buf = io.BytesIO()
    save(packed, buf)
    buf.seek(0)
    loaded = load(buf)
    assert loaded.model.input_transform and loaded.model.feature_transform
    check_forward(model, loaded)


def test_semantic_segmentation_with_point_features():
    # No categories; two point features besides the coordinates (the
    # first layers that read them stay full precision).
    torch.manual_seed(1)
    model = SEG_MODELS['pointnet2'](4, in_channels=2)
    pos, batch, _, _ = batch_of([0, 1], sizes=[80, 64])
    x = torch.randn(pos.size(0), 2)
    model.train()
    model(pos, batch, x)  # BatchNorm statistics and LSR scales from data.
    model.eval()
    packed = pack(model)
    with torch.no_grad():
        ref = model(pos, batch, x)
    assert_same_predictions(ref, packed(pos, batch, x))
    with pytest.raises(ValueError, match='in_channels=2'):
        packed(pos, batch)


def test_category_changes_the_packed_predictions():
    model, packed = cached('pointnet')
    pos, batch, category, _ = batch_of([2], False)
    a = packed(pos, batch, category=category)
    b = packed(pos, batch, category=(category + 1) % 6)
    assert not torch.equal(a, b)
    with torch.no_grad():
        assert_same_predictions(
            model(pos, batch, category=(category + 1) % 6), b)
    with pytest.raises(ValueError, match="needs the 'category'"):
        packed(pos, batch)


def test_refuses_unknown_parametrized_modules():
    model, _ = cached('pointnet')
    bad = copy.deepcopy(model)
    bad.head.lins[2] = torch.nn.Conv1d(256, 128, 1)
    with pytest.raises(TypeError, match=re.escape(
            'PointNetSeg.head.lins.2 is a Conv1d')):
        pack(bad)
    bad = copy.deepcopy(model)
    bad.extra = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.PReLU())
    with pytest.raises(TypeError, match=re.escape(
            'PointNetSeg.extra.1 is a PReLU with parameters')):
        pack(bad)
    # Parameter-free modules are kept as they are.
    ok = copy.deepcopy(model)
    ok.extra = torch.nn.Dropout(0.5)
    assert isinstance(pack(ok).model.extra, torch.nn.Dropout)


@pytest.mark.parametrize('name', sorted(SEG_MODELS))
def test_refuses_methods_it_cannot_reproduce(name):
    model = SEG_MODELS[name](5, method='xnor', **SMALL[name]).eval()
    cls = type(model).__name__
    with pytest.raises(ValueError, match=re.escape(
            f"pack: {cls} uses method 'xnor', which cannot be packed") +
            '.*activation scale'):
        pack(model)
    with pytest.raises(ValueError, match='full precision'):
        pack(SEG_MODELS[name](5, method='fp', **SMALL[name]))


def test_hidden_outputs_read_by_the_head_stay_float():
    model, packed = cached('pointnet', local_features='all')
    mlp2 = packed.model.mlp2
    # Its binary layers give floats (the head reads them), not bits.
    assert [lin.output for lin in mlp2.lins] == ['float'] * 3
    pos, batch, _, _ = batch_of([0, 5])
    h = model.mlp1(pos)
    with torch.no_grad():
        want = model.mlp2.hidden_outputs(h)
        got = mlp2.hidden_outputs(packed.model.mlp1(pos))
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(mlp2.output(got[-1]),
                                   model.mlp2.output(want[-1]))
    # Without the flag, a packed MLP chains bits and says so.
    plain = cached('pointnet')[1].model.mlp2
    with pytest.raises(TypeError, match='layer 0 outputs bits'):
        plain.hidden_outputs(packed.model.mlp1(pos))


def test_fp_dtype_stores_the_classifier_and_num_points_is_refused():
    from torch_geometric_binary.deploy import num_bytes
    model, p32 = cached('pointnet')
    p16 = pack(model, fp_dtype=torch.float16)
    assert num_bytes(p16) < num_bytes(p32)
    # Only the per-point classifier is float16.
    assert p16.head.lins[-1].weight.dtype == torch.float16
    assert p16.model.mlp1.lins[0].weight.dtype == torch.float32
    pos, batch, category, _ = batch_of([0, 5], False, [NUM_POINTS, 41])
    ref = p32(pos, batch, category=category)
    out = p16(pos, batch, category=category)
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    assert (out - ref).abs().max() <= 0.01 * ref.abs().max().clamp(min=1)
    with pytest.raises(ValueError, match='PointNet only'):
        pack(model, num_points=NUM_POINTS)


def test_packed_model_is_inference_only():
    model, packed = cached('pointnet2')
    pos, batch, category, _ = batch_of([0, 3], False)
    packed.train()
    assert not packed.model.training  # Sampling as in evaluation.
    out = packed(pos, batch, category=category)
    assert not out.requires_grad
    packed.eval()
    assert torch.equal(out, packed(pos, batch, category=category))


def test_saving_needs_a_known_class():
    from torch_geometric_binary.nn import BiMLP

    class Mine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = BiMLP([3, 16, 4], method='bnn', last_fp=True)

        def forward(self, pos):
            return self.mlp(pos)

    torch.manual_seed(0)
    model = Mine().eval()
    packed = pack(model)
    pos = torch.randn(20, 3)
    with torch.no_grad():
        assert_same_predictions(model(pos), packed(pos))
    with pytest.raises(TypeError, match='cannot save a packed Mine'):
        save(packed, io.BytesIO())


@pytest.mark.parametrize('name', ['pointnet', 'dgcnn'])
def test_pure_pytorch_kernels_agree(monkeypatch, name):
    model, packed = cached(name)
    pos, batch, category, _ = batch_of([0, 9], False, [NUM_POINTS, 53])
    ref = packed(pos, batch, category=category)
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', 'torch')
    assert torch.equal(packed(pos, batch, category=category), ref)
