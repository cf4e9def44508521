r"""ReActNet packs exactly: its learned input thresholds (RSign,
:math:`\mathrm{sign}(x - \theta)`) and its RPReLU activations fold into the
packed thresholds, also where a threshold lands exactly on (or next to) a
value the layer before produces."""
import io

import pytest
import torch

from torch_geometric_binary.deploy import (PackedBiLinear, PackedModel,
                                           fold_threshold,
                                           load, pack, pack_bits, save)
from torch_geometric_binary.nn import BiLinear, RPReLU
from torch_geometric_binary.nn.fused import use_fused
from torch_geometric_binary.nn.methods import METHODS, BinaryMethod
from torch_geometric_binary.nn.models import DGCNN, PointNet, PointNet2

from .test_pack_models import assert_same_predictions, batch_of
from .test_packed_linear import all_dot_inputs, make_bn, make_layer

# ReActNet's binarizers with the models' default activation (Hardtanh).
RSIGN = BinaryMethod('rsign', weight_center='none', weight_scale='mean_abs',
                     input_threshold=True, estimator='approx')


def near(values: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    r"""Each value itself, or the float just below or above it."""
    step = torch.randint(-1, 2, values.shape, generator=g)
    up = torch.nextafter(values, torch.full_like(values, float('inf')))
    down = torch.nextafter(values, torch.full_like(values, -float('inf')))
    return torch.where(step > 0, up, torch.where(step < 0, down, values))


@pytest.mark.parametrize('K,N', [(1, 1), (7, 5), (65, 130), (200, 65)])
def test_threshold_folds_theta_on_every_dot_value(K, N):
    lin = make_layer(K, N, method=RSIGN)
    bn = make_bn(lin, K)
    act = torch.nn.Hardtanh()
    x = all_dot_inputs(lin)
    with torch.no_grad():
        y = act(bn(lin(x)))
    # theta on a value the layer gives (a tie), next to one, or anywhere.
    g = torch.Generator().manual_seed(K)
    rows = torch.randint(0, x.size(0), (N, ), generator=g)
    theta = near(y[rows, torch.arange(N)], g)
    theta[2::3] = torch.randn(theta[2::3].shape, generator=g)
    theta[0] = y[rows[0], 0]  # At least one exact tie.
    packed = PackedBiLinear.from_bilinear(lin, bn, act, theta=theta)
    expected = pack_bits(y - theta, backend='torch')
    assert torch.equal(packed(x), expected)
    t, flip = fold_threshold(lin, bn, act, theta)
    assert torch.equal(t, packed.threshold) and torch.equal(flip,
                                                            packed.flip)


def test_layer_binarizes_float_inputs_against_its_threshold():
    lin = make_layer(70, 9, method=RSIGN)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 70, generator=g)
    with torch.no_grad():
        lin.input_threshold.copy_(near(x[7], g))  # Ties on row 7.
        ref = lin(x)
    packed = pack(lin)
    assert torch.equal(packed.input_threshold, lin.input_threshold)
    assert torch.equal(packed(x), ref)


def set_thresholds_on_data(model: torch.nn.Module, pos, batch, seed=0):
    r"""Sets every binary layer's learned threshold, layer by layer as the
    model runs on :obj:`(pos, batch)`, to values its input takes there (or
    the floats next to them), for half the channels, and random values
    for the rest: sign ties on real data."""
    g = torch.Generator().manual_seed(seed)

    def hook(layer, inputs):
        x = inputs[0].detach().reshape(-1, layer.in_channels)
        rows = torch.randint(0, x.size(0), (layer.in_channels, ),
                             generator=g)
        on = near(x[rows, torch.arange(layer.in_channels)], g)
        rand = torch.randn(layer.in_channels, generator=g) * 0.3
        keep = torch.rand(layer.in_channels, generator=g) < 0.5
        with torch.no_grad():
            layer.input_threshold.copy_(torch.where(keep, on, rand))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, BiLinear)]
    with torch.no_grad():
        model(pos, batch)
    for h in handles:
        h.remove()


MODELS = [
    (PointNet, {}),
    (PointNet, {'input_transform': True, 'feature_transform': True}),
    (PointNet2, {}),
    (DGCNN, {'k': 12}),
    (DGCNN, {'k': 12, 'graph_metric': 'hamming'}),
]
IDS = ['pointnet', 'pointnet_tnets', 'pointnet2', 'dgcnn', 'dgcnn_hamming']


def reference(model, *args):
    r"""The binary model's output through its unfused layers: its fused
    max (equal-size clouds) evaluates the normalization in another order,
    an ulp away, and thresholds placed exactly on the layers' values would
    see that ulp."""
    with torch.no_grad(), use_fused(False):
        return model(*args)


def rsign_model(cls, kwargs, ema):
    torch.manual_seed(0)
    model = cls(5, method=RSIGN.replace(ema=ema, lsr=ema), **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def assert_packs_exactly(model, kernel_backend):
    r"""Thresholds set on the data, then packed and binary predictions
    compared on two batches (and the per-layer path with the C++ kernels).
    Returns the packed model and the batches."""
    batches = [batch_of([40, 33], seed=3), batch_of([29], seed=4)]
    set_thresholds_on_data(model, *batches[0])
    packed = pack(model)
    for p, b in batches:
        ref = reference(model, p, b)
        assert_same_predictions(ref, packed(p, b))
        if kernel_backend == 'cpp':
            assert_same_predictions(ref, packed.forward_layers(p, b))
    return packed, batches


@pytest.mark.parametrize('cls,kwargs,ema', [
    m + (ema, ) for m, ema in zip(MODELS + MODELS[:1],
                                  [True] * len(MODELS) + [False])
], ids=IDS + ['pointnet_no_ema'])
def test_packed_rsign_model_is_exact(kernel_backend, monkeypatch, cls,
                                     kwargs, ema):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    model = rsign_model(cls, kwargs, ema)
    packed, batches = assert_packs_exactly(model, kernel_backend)
    pos = batches[0][0]
    # One cloud without a batch vector, and the file round trip.
    ref = reference(model, pos[:40])
    assert_same_predictions(ref, packed(pos[:40]))
    f = io.BytesIO()
    if isinstance(packed, PackedModel):
        # Rebuilt on load from the method's name: it must be registered.
        with pytest.raises(TypeError, match="method 'rsign' is not "
                                            "registered"):
            save(packed, f)
        monkeypatch.setitem(METHODS, RSIGN.name, RSIGN)
    save(packed, f)
    f.seek(0)
    assert_same_predictions(ref, load(f)(pos[:40]))


def test_pointnet_logits_are_bit_identical_with_rsign():
    model = rsign_model(PointNet, {}, True)
    pos, batch = batch_of([40, 33], seed=3)
    set_thresholds_on_data(model, pos, batch)
    packed = pack(model)
    ref = reference(model, pos, batch)
    # The module path is the trained model's operations; the fused path
    # computes the classifier in float64 (every binary feature identical).
    assert torch.equal(packed.forward_layers(pos, batch), ref)
    assert (packed(pos, batch) - ref).abs().max() <= 1e-6 * ref.abs().max()


def test_rsign_pointnet_packed_for_fixed_cloud_size():
    model = rsign_model(PointNet, {'input_transform': True,
                                   'feature_transform': True}, True)
    pos, batch = batch_of([32, 32], seed=5)
    set_thresholds_on_data(model, pos, batch)
    packed = pack(model, num_points=32)
    ref = reference(model, pos, batch)
    assert_same_predictions(ref, packed(pos, batch))
    assert_same_predictions(ref, packed.forward_layers(pos, batch))


# ReActNet: RSign and RPReLU (one per normalized layer and per place).

def randomize_rprelu(model: torch.nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RPReLU):
                m.gamma.normal_(0, 0.3, generator=g)
                m.beta.uniform_(0.05, 1.5, generator=g)
                m.zeta.normal_(0, 0.3, generator=g)


@pytest.mark.parametrize('cls,kwargs', MODELS, ids=IDS)
def test_packed_react_model_is_exact(kernel_backend, monkeypatch, cls,
                                     kwargs):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    torch.manual_seed(0)
    model = cls(5, method='react+ema', **kwargs).eval()
    assert any(isinstance(m, RPReLU) for m in model.modules())
    randomize_rprelu(model)
    packed, batches = assert_packs_exactly(model, kernel_backend)
    p, b = batches[-1]
    ref = reference(model, p, b)
    f = io.BytesIO()
    save(packed, f)
    f.seek(0)
    assert_same_predictions(ref, load(f)(p, b))


def test_refuses_rprelu_with_non_positive_slope():
    model = PointNet(5, method='react').eval()
    with torch.no_grad():
        model.mlp2.acts[1].beta[3] = 0.0
    with pytest.raises(ValueError, match=r"mlp2\.acts\.1.*slope beta is "
                       r"not positive \(channels \[3\]\)"):
        pack(model)
