r"""pack(): packed PointNet / PointNet++ / DGCNN give the binary model's
predictions (eval mode) on odd point counts and mixed cloud sizes."""
import copy
import re

import pytest
import torch

from torch_geometric_binary.deploy import PackedMLP, PackedModel, pack
from torch_geometric_binary.nn import BiLinear, BiMLP
from torch_geometric_binary.nn.methods import BinaryMethod
from torch_geometric_binary.nn.models import DGCNN, PointNet, PointNet2

from .conftest import need_cpp


def batch_of(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), 3, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(sizes)),
                                    torch.tensor(sizes))
    return pos, batch


def randomize_norms(model: torch.nn.Module, seed: int = 0):
    r"""Adversarial inference statistics: random (also negative and zero)
    gammas, shifted means, spread variances; random LSR scales."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.add_(torch.randn(n, generator=g) * 0.3)
                m.running_var.mul_(torch.rand(n, generator=g) + 0.5)
                m.weight.mul_(torch.randn(n, generator=g).sign())
                m.weight[torch.rand(n, generator=g) < 0.02] = 0
                m.bias.add_(torch.randn(n, generator=g) * 0.2)
            if isinstance(m, BiLinear) and m.log_scale is not None:
                m.log_scale.add_((torch.rand((), generator=g) + 0.5).log())


_CACHE = {}


def cached(cls, adversarial: bool = False, **kwargs):
    r"""(model, packed) for :func:`make_model`, built once per session
    (tests must not modify them)."""
    key = (cls, adversarial, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        if adversarial:  # The trained model with randomized statistics.
            model = copy.deepcopy(cached(cls, False, **kwargs)[0])
            randomize_norms(model)
        else:
            model = make_model(cls, **kwargs)
        _CACHE[key] = (model, pack(model))
    return _CACHE[key]


def make_model(cls, steps: int = 2, adversarial: bool = False,
               method='bipointnet', **kwargs):
    r"""A small binary model trained for a few steps (BN statistics and LSR
    scales from data), in evaluation mode."""
    torch.manual_seed(0)
    model = cls(5, method=method, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        pos, batch = batch_of([24, 35, 17], seed=10 + step)
        y = torch.randint(0, 5, (3, ))
        loss = torch.nn.functional.cross_entropy(model(pos, batch), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    if adversarial:
        randomize_norms(model)
    return model


def assert_same_predictions(ref, out):
    r"""Same argmax everywhere, logits equal up to float rounding."""
    assert out.shape == ref.shape
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    scale = ref.abs().max().clamp(min=1.0)
    assert (out - ref).abs().max() <= 1e-4 * scale


MODELS = [
    (PointNet, {}),
    (PointNet, {'input_transform': True, 'feature_transform': True}),
    (PointNet2, {}),
    (DGCNN, {'k': 12}),
    (DGCNN, {'k': 12, 'graph_metric': 'hamming'}),
]
IDS = ['pointnet', 'pointnet_tnets', 'pointnet2', 'dgcnn', 'dgcnn_hamming']
# Odd sizes (37, 101) and mixed sizes in one batch; a batch with large
# clouds takes the row-sliced PointNet kernel (>= 128 points per cloud).
SIZES = [[37], [101, 37, 5], [300, 517]]


# Methods packed besides BiPointNet: plain max pooling (no EMA), no LSR,
# per-channel weight scales (fixed, learned, powers of two).
OTHER_METHODS = ['bnn', 'bnn+lsr', 'bnn+ema', 'xnor++', 'xnor+++ema+lsr',
                 'bireal+ema', 'irnet', 'irnet+ema+lsr']


@pytest.mark.parametrize('cls,kwargs', MODELS[:1] + MODELS[2:],
                         ids=IDS[:1] + IDS[2:])
@pytest.mark.parametrize('method', OTHER_METHODS)
def test_packs_other_methods_exactly(kernel_backend, monkeypatch, cls,
                                     kwargs, method):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    model = make_model(cls, method=method, **kwargs)
    packed = pack(model)
    for seed, sizes in enumerate([[37], [64, 21, 5]]):
        pos, batch = batch_of(sizes, seed=seed)
        with torch.no_grad():
            ref = model(pos, batch)
        assert_same_predictions(ref, packed(pos, batch))


@pytest.mark.parametrize('method,reason', [('xnor', 'activation scale')])
def test_refuses_methods_it_cannot_reproduce(method, reason):
    model = make_model(PointNet, steps=1, method=method)
    with pytest.raises(ValueError,
                       match=re.escape(f"method '{method}'") + f".*{reason}"):
        pack(model)


@pytest.mark.parametrize('method', ['react', 'react+ema'])
def test_packs_react_exactly(method):
    # ReActNet's learned input thresholds (RSign) fold into the packed
    # thresholds (test_pack_rsign.py places them on ties).
    model = make_model(PointNet, method=method)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BiLinear):
                m.input_threshold.normal_(0, 0.3)
    packed = pack(model)
    for seed, sizes in enumerate([[37], [64, 21, 5]]):
        pos, batch = batch_of(sizes, seed=seed)
        with torch.no_grad():
            ref = model(pos, batch)
        assert_same_predictions(ref, packed(pos, batch))


def test_packs_bipointnet_without_ema():
    model = make_model(PointNet, ema=False)
    assert not model.method.ema
    pos, batch = batch_of([40, 33], seed=3)
    with torch.no_grad():
        ref = model(pos, batch)
    assert_same_predictions(ref, pack(model)(pos, batch))


@pytest.mark.parametrize('cls,kwargs', MODELS, ids=IDS)
@pytest.mark.parametrize('adversarial', [False, True])
def test_packed_model_matches_binary_model(kernel_backend, monkeypatch, cls,
                                           kwargs, adversarial):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    model, packed = cached(cls, adversarial, **kwargs)
    assert not any(p.requires_grad for p in packed.parameters())
    slow = kernel_backend == 'torch' and (cls is not PointNet or kwargs)
    for i, sizes in enumerate(SIZES):
        if cls is not PointNet and sizes == [300, 517]:
            sizes = [130, 77]  # Keep the neighbour searches quick.
        if slow and i == 0:
            continue
        pos, batch = batch_of(sizes, seed=i)
        with torch.no_grad():
            ref = model(pos, batch)
        out = packed(pos, batch)
        assert_same_predictions(ref, out)
        # The module-by-module path agrees too.
        if kernel_backend == 'cpp':
            assert_same_predictions(ref, packed.forward_layers(pos, batch))
    # One cloud without a batch vector.
    pos, _ = batch_of([101], seed=7)
    with torch.no_grad():
        ref = model(pos)
    assert_same_predictions(ref, packed(pos))


def test_pointnet_logits_are_bit_identical():
    # With float32 storage, every float operation of the packed PointNet's
    # module path is the trained model's own (thresholds verified exactly);
    # the fused path computes the classifier inside the chain (float64
    # accumulation), with every binary feature identical.
    model, packed = cached(PointNet, True)
    for sizes in SIZES:
        pos, batch = batch_of(sizes, seed=3)
        with torch.no_grad():
            ref = model(pos, batch)
        assert torch.equal(packed.forward_layers(pos, batch), ref)
        out = packed(pos, batch)
        assert (out - ref).abs().max() <= 1e-6 * ref.abs().max()


@pytest.mark.parametrize('kwargs', [{}, MODELS[1][1]], ids=IDS[:2])
def test_pointnet_one_cloud_fast_path(kwargs):
    r"""One cloud without a batch vector runs each chain as a single C++
    call; it gives the general path's logits, and its errors are the
    general path's."""
    need_cpp()
    model, packed = cached(PointNet, True, **kwargs)
    packed(batch_of([64])[0])
    fast = [seg for seg in packed.fused_segments()
            if seg._one_group_ok and seg.chain.pool is not None]
    # The main chain (mlp1 to the head) and one per T-Net.
    assert len(fast) == (3 if kwargs else 1)
    for n in (1024, 37):
        pos, _ = batch_of([n], seed=n)
        for seg in fast:
            seg._one_group_ok = False
        slow = packed(pos)
        for seg in fast:
            seg._one_group_ok = True
        assert torch.equal(packed(pos), slow)
        assert all(n in seg._group_args for seg in fast)
        with torch.no_grad():
            assert_same_predictions(model(pos), slow)
    pos, _ = batch_of([1024], seed=5)
    pos[500, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        packed(pos)
    with pytest.raises(ValueError, match=r"'pos' must be.*3"):
        packed(batch_of([50])[0][:, :2])


def test_unsorted_batch_and_extra_features():
    model = make_model(PointNet, in_channels=2, steps=0, adversarial=True)
    packed = pack(model)
    pos, batch = batch_of([40, 61, 150], seed=5)
    x = torch.randn(pos.size(0), 2)
    perm = torch.randperm(pos.size(0))
    with torch.no_grad():
        ref = model(pos[perm], batch[perm], x[perm])
    assert_same_predictions(ref, packed(pos[perm], batch[perm], x[perm]))
    with pytest.raises(ValueError, match="in_channels=2 but got no 'x'"):
        packed(pos, batch)


def test_layer_by_layer():
    r"""The packed modules mirror the trained ones: each PackedMLP gives
    what its BiMLP gives (floats, or the same signs as packed bits where
    the next layer is binary)."""
    from torch_geometric_binary.deploy import pack_bits
    model, packed = cached(PointNet, True)
    pos, batch = batch_of([101, 37], seed=1)
    with torch.no_grad():
        h1 = model.mlp1(pos)
        assert torch.equal(packed.mlp1.forward_layers(pos), h1)
        h2 = model.mlp2(h1)
        assert torch.equal(packed.mlp2.forward_layers(h1), h2)
        assert torch.equal(packed.mlp2.forward_layers(pack_bits(h1)), h2)
        g = model.act(model.mlp2.max_pool(h1, batch, 2, True))
        packed.model.mlp2.fuse = False
        try:
            pooled = packed.mlp2.max_pool(h1, batch, 2, True)
        finally:
            packed.model.mlp2.fuse = True
        assert torch.equal(packed.act(pooled), g)
        assert torch.equal(packed.head.forward_layers(g), model.head(g))
    # One module per trained module.
    children = {n for n, _ in model.named_children()}
    assert {n for n, _ in packed.model.named_children()} == children
    for name in ('mlp1', 'mlp2', 'head'):
        assert len(getattr(packed, name).lins) == \
            len(getattr(model, name).lins)


def test_pointnet_full_size_clouds_agree_across_backends(monkeypatch):
    need_cpp()
    model, packed = cached(PointNet, True)
    pos, batch = batch_of([1024, 1024, 999], seed=2)
    with torch.no_grad():
        ref = model(pos, batch)
    out = packed(pos, batch)
    assert_same_predictions(ref, out)
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', 'torch')
    assert torch.equal(packed(pos, batch), ref)  # F.linear classifier.


@pytest.mark.parametrize('cls,kwargs', MODELS, ids=IDS)
def test_float16_first_and_last_layers(cls, kwargs):
    from torch_geometric_binary.deploy import num_bytes
    model, p32 = cached(cls, **kwargs)
    p16 = pack(model, fp_dtype=torch.float16)
    assert num_bytes(p16) < num_bytes(p32)
    # Only the classifier is float16 (layers binarized later stay float32).
    assert p16.head.lins[-1].weight.dtype == torch.float16
    assert p16.head.lins[0].weight.dtype == torch.int64
    pos, batch = batch_of([101, 37], seed=4)
    with torch.no_grad():
        ref = model(pos, batch)
    out = p16(pos, batch)
    # Approximate (float16 weights), but close.
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    assert (out - ref).abs().max() <= 0.01 * ref.abs().max().clamp(min=1)


def test_odd_width_mlp_with_pooling(kernel_backend, monkeypatch):
    r"""Channel counts that are not multiples of 64 (the models' widths are
    fixed): a BiMLP, an EMA max pooling and a binary head, as chains."""
    from torch_geometric_binary.deploy.models import Segment
    from torch_geometric_binary.nn import global_ema_max_pool
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    torch.manual_seed(3)
    mlp = BiMLP([3, 37, 70, 131], first_fp=True, norm_last=True)
    head = BiMLP([131, 65, 9], last_fp=True)
    act = torch.nn.Hardtanh()
    for m in (mlp, head):
        m.train()
        m(torch.randn(300, m.in_channels))
        m.eval()
        randomize_norms(m, seed=1)
    pm, ph = pack(mlp), pack(head)
    assert isinstance(pm, PackedMLP)
    seg = Segment([pm], [ph], True, True, act)
    for sizes in ([37], [101, 37, 5], [200, 260]):
        pos, batch = batch_of(sizes, seed=len(sizes))
        with torch.no_grad():
            ref = head(act(global_ema_max_pool(mlp(pos), batch,
                                               len(sizes))))
        out = seg(pos, torch.tensor(sizes))
        assert_same_predictions(ref, out)
        # Floats module by module: exact.
        with torch.no_grad():
            assert torch.equal(pm(pos), mlp(pos))


def test_sign_thresholds_are_exact():
    from torch_geometric_binary.deploy.chain import sign_thresholds
    from torch_geometric_binary.deploy.modules import FrozenBatchNorm
    torch.manual_seed(0)
    C = 40
    bn = torch.nn.BatchNorm1d(C).eval()
    with torch.no_grad():
        bn.running_mean.normal_(0, 3)
        bn.running_var.uniform_(1e-3, 10)
        bn.weight.normal_()
        bn.weight[:3] = 0.0
        bn.weight[3:6] = -1e-30
        bn.bias.normal_()
        bn.bias[0] = 0.0
    frozen = FrozenBatchNorm.from_module(bn)
    for act in (None, torch.nn.Hardtanh(), torch.nn.ReLU(),
                torch.nn.LeakyReLU(0.1)):
        def f(z):
            y = frozen(z)
            return act(y) if act is not None else y
        s, u = sign_thresholds(f, C)
        # Random values, and every value next to each channel's threshold.
        t = torch.where(torch.isfinite(u), u * s, torch.zeros(C))
        near = torch.stack([torch.nextafter(t, t + d) for d in
                            (torch.full_like(t, -1e30),
                             torch.full_like(t, 1e30))] + [t])
        z = torch.cat([torch.randn(500, C) * 5, near,
                       torch.tensor([[0.0] * C, [-0.0] * C])])
        with torch.no_grad():
            expected = f(z) >= 0
        assert torch.equal(z * s >= u, expected)


def test_errors():
    model = make_model(PointNet, steps=0)
    with pytest.raises(ValueError, match="method 'fp', which cannot be packed: it is full precision"):
        pack(PointNet(5, method='fp'))
    with pytest.raises(TypeError, match='Conv1d'):
        bad = copy.deepcopy(model)
        bad.mlp2.lins[1] = torch.nn.Conv1d(64, 128, 1)
        pack(bad)
    with pytest.raises(TypeError, match='LayerNorm'):
        bad = copy.deepcopy(model)
        bad.mlp2.norms[0] = torch.nn.LayerNorm(64)
        pack(bad)
    # Modules without parameters stay as they are, run by the model's
    # forward (an activation that is not non-decreasing, such as GELU,
    # takes the pooled floats).
    for name, module in (('act', torch.nn.GELU()),
                         ('extra', torch.nn.Dropout())):
        odd = copy.deepcopy(model)
        setattr(odd, name, module)
        pos, batch = batch_of([20, 9])
        with torch.no_grad():
            ref = odd.eval()(pos, batch)
        assert_same_predictions(ref, pack(odd)(pos, batch))
    with pytest.raises(TypeError, match='cannot pack a .*Sequential'):
        pack(torch.nn.Sequential(torch.nn.Linear(3, 4)))

    class Learned(BinaryMethod):
        def binarize_input(self, x, layer=None):
            return torch.sign(x - 0.1)
    with pytest.raises(ValueError, match="overrides 'binarize_input'"):
        pack(PointNet(5, method=Learned('learned', ema=True, lsr=True)))

    packed = pack(model)
    pos, batch = batch_of([10, 10])
    with pytest.raises(ValueError, match='no points'):
        packed(pos, torch.cat([batch[:10], batch[10:] + 1]))
    with pytest.raises(ValueError, match='NaN'):
        packed(torch.full((4, 3), float('nan')))


@pytest.mark.parametrize('cls', [PointNet, PointNet2, DGCNN])
def test_an_empty_cloud_is_an_error_as_in_the_trained_model(cls):
    model = cached(cls)[0]
    packed = pack(copy.deepcopy(model))
    pos, batch = batch_of([12, 12])
    batch = torch.cat([batch[:12], batch[12:] + 1])  # Cloud 1 is empty.
    for f in (model, packed):
        with pytest.raises(ValueError, match=r'cloud\(s\) \[1\] of 3 have '
                                             r'no points'):
            with torch.no_grad():
                f(pos, batch)
    for _ in range(3):  # Also after the recorded forward of a good batch.
        packed(*batch_of([12, 12]))
    with pytest.raises(ValueError, match='no points'):
        packed(pos, batch)


def test_types_and_repr():
    for cls, kwargs in ((PointNet, {}), (PointNet2, {}),
                        (DGCNN, {'k': 12})):
        packed = pack(copy.deepcopy(cached(cls, **kwargs)[0]))
        assert type(packed) is PackedModel
        assert 'PackedMLP' in repr(packed)
        packed.train()  # Inference-only: training mode changes nothing.
        pos, batch = batch_of([20, 9])
        a = packed(pos, batch)
        packed.eval()
        assert torch.equal(a, packed(pos, batch))


@pytest.mark.parametrize('kwargs', [{}, {'input_transform': True,
                                         'feature_transform': True}],
                         ids=['pointnet', 'pointnet_tnets'])
def test_pointnet_packed_for_fixed_cloud_size(kernel_backend, monkeypatch,
                                              kwargs):
    r"""pack(..., num_points=n): integer thresholds replace the pooled
    layers' float tails; the same logits as the general packed model on
    clouds of n points (also the row-sliced size 300, also module by
    module), a smaller file, and a clear error for other sizes."""
    from torch_geometric_binary.deploy import num_bytes
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    model, general = cached(PointNet, True, **kwargs)
    for n in (37, 300):
        fixed = pack(model, num_points=n)
        assert fixed.num_points == n and general.num_points is None
        assert fixed.mlp2.lins[-1].epilogue is None
        assert num_bytes(fixed) < num_bytes(general)
        pos, batch = batch_of([n, n, n], seed=n)
        with torch.no_grad():
            ref = model(pos, batch)
        out = fixed(pos, batch)
        assert torch.equal(out, general(pos, batch))
        assert_same_predictions(ref, out)
        assert torch.equal(fixed(pos[:n]), general(pos[:n]))
        if kernel_backend == 'cpp':
            assert_same_predictions(ref, fixed.forward_layers(pos, batch))
        pos, batch = batch_of([n, n + 1], seed=1)
        with pytest.raises(ValueError, match=f'exactly {n} points'):
            fixed(pos, batch)
        with pytest.raises(ValueError, match=f'exactly {n} points'):
            fixed.forward_layers(pos, batch)


def test_fixed_cloud_size_errors():
    model, _ = cached(PointNet)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='num_points'):
            pack(model, num_points=bad)
    with pytest.raises(ValueError, match='PointNet only'):
        pack(cached(DGCNN, k=12)[0], num_points=64)
    fixed = pack(model, num_points=40)
    with pytest.raises(ValueError, match='already specialized'):
        fixed.fix_num_points(41)
    assert fixed.fix_num_points(40) is fixed
    assert 'pool_size=40' in repr(fixed.mlp2)


def test_pack_dispatches_through_registered_converters():
    from torch_geometric_binary.deploy.registry import CONVERTERS, converter

    class Subclass(PointNet):  # Found through the class hierarchy.
        pass

    torch.manual_seed(0)
    assert isinstance(pack(Subclass(5, method='bnn').eval()), PackedModel)
    with pytest.raises(ValueError, match='BiMLP already has a converter'):
        converter(BiMLP)(lambda *args: None)

    class Wrapper(torch.nn.Module):  # A new trained class: one converter.
        def __init__(self):
            super().__init__()
            self.mlp = BiMLP([4, 8, 3], method='bnn')

    # Without a converter of its own: packed module by module.
    assert isinstance(pack(Wrapper().eval()), PackedModel)

    @converter(Wrapper)
    def convert(model, fp_dtype, epilogue_dtype, num_points):
        return pack(model.mlp, fp_dtype, epilogue_dtype)

    try:
        assert isinstance(pack(Wrapper().eval()), PackedMLP)
    finally:
        del CONVERTERS[Wrapper]


@pytest.mark.parametrize('sizes', [[40], [30, 7]])  # A cloud smaller than k.
def test_dgcnn_edge_signs_and_pooling(sizes):
    # The packed edge convolution's shortcuts against their definitions:
    # conv2's input signs without the float messages, and the pooled floats
    # (a max over k consecutive rows without a scatter where every point
    # has k neighbours) against the max of the rows' floats.
    from torch_geometric_binary.deploy import pack_bits, pooled_floats
    from torch_geometric_binary.deploy.chain import group_delta
    _, packed = cached(DGCNN, k=12)
    pos, batch = batch_of(sizes, seed=3)
    g = torch.Generator().manual_seed(4)
    h = torch.round(torch.randn(pos.size(0), 64, generator=g) * 4) / 4
    j, i, counts, uniform = packed.conv2.graph(h, batch)
    assert uniform == (min(sizes) >= 12)
    assert bool((i[1:] >= i[:-1]).all())
    bits = packed.conv2.edge_bits(h, j, i, uniform)
    assert torch.equal(bits, pack_bits(torch.cat([h[i], h[j] - h[i]], 1)))
    layer = packed.conv1.nn.lins[-1]
    dots = torch.randint(-64, 65, (j.numel(), layer.out_channels),
                         generator=g, dtype=torch.int32)
    floats = layer.epilogue(dots)
    for ema in (False, True):
        ref = torch.full((h.size(0), layer.out_channels), -float('inf'))
        ref = ref.scatter_reduce(0, i[:, None].expand_as(floats), floats,
                                 'amax')
        if ema:
            ref = ref - group_delta(counts)[:, None]
        got = pooled_floats(layer, dots, i, h.size(0), ema)
        assert torch.equal(got, ref)
