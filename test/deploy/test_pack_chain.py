r"""BinaryChain (fused binary layers with OR pooling), AffineEpilogue and
the helpers behind pack(), on odd channel counts and group sizes."""
import math
from fractions import Fraction

import pytest
import torch

from torch_geometric_binary.deploy import (AffineEpilogue, BinaryChain,
                                           BinaryEpilogue, PackedBiLinear,
                                           cat_bits, fma32, pack_bits,
                                           pooled_floats)
from torch_geometric_binary.deploy.chain import NonFiniteInput
from torch_geometric_binary.nn import BiLinear, global_ema_max_pool
from torch_geometric_binary.nn.aggr import ema_max

from .conftest import need_cpp


def make_stack(widths, seed=0, act=torch.nn.Hardtanh()):
    r"""Trained-looking binary layers (random scales, biases on the last,
    adversarial batch norms with negative and zero gammas) with their
    reference float function."""
    g = torch.Generator().manual_seed(seed)
    lins, norms = [], []
    for i, (K, N) in enumerate(zip(widths[:-1], widths[1:])):
        lin = BiLinear(K, N).eval()
        with torch.no_grad():
            alpha = float(torch.rand((), generator=g)) + 0.2
            lin.log_scale.fill_(math.log(alpha))
        lin.scale_initialized = True
        bn = torch.nn.BatchNorm1d(N).eval()
        with torch.no_grad():
            bn.running_mean.normal_(0, K ** 0.5 * 0.3, generator=g)
            bn.running_var.uniform_(0.3, K, generator=g)
            bn.weight.normal_(0, 1, generator=g)
            bn.weight[::7] = -bn.weight[::7].abs()
            bn.weight[3::11] = 0.0
            bn.bias.normal_(0, 1, generator=g)
        lins.append(lin)
        norms.append(bn)
    return lins, norms, act


def pack_stack(lins, norms, act, last_output='float', last_act=True):
    layers = []
    for i, (lin, bn) in enumerate(zip(lins, norms)):
        last = i == len(lins) - 1
        a = act if (not last or last_act) else None
        layer = PackedBiLinear.from_bilinear(lin, bn, a,
                                             'float' if last else 'bits')
        if last:
            aff = AffineEpilogue.from_epilogue(layer.epilogue,
                                               lin.in_channels)
            assert aff is not None
            layer.epilogue = aff
            layer.output = last_output
        layers.append(layer)
    return layers


def reference(lins, norms, act, x, last_act=True):
    with torch.no_grad():
        for i, (lin, bn) in enumerate(zip(lins, norms)):
            x = bn(lin(x))
            if i < len(lins) - 1 or last_act:
                x = act(x)
    return x


WIDTHS = [[37, 70, 33], [64, 65, 129, 300], [130, 64, 7]]


@pytest.mark.parametrize('widths', WIDTHS)
def test_chain_outputs(kernel_backend, widths):
    lins, norms, act = make_stack(widths)
    layers = pack_stack(lins, norms, act)
    x = torch.randn(101, widths[0])
    expected = reference(lins, norms, act, x)
    chain = BinaryChain(layers, 'float')
    assert torch.equal(chain(x, backend=kernel_backend), expected)
    assert torch.equal(chain(pack_bits(x), backend=kernel_backend),
                       expected)
    bits = BinaryChain(layers[:-1], 'bits')(x, backend=kernel_backend)
    mid = reference(lins[:-1], norms[:-1], act, x)
    assert torch.equal(bits, pack_bits(mid))
    dots = BinaryChain(layers, 'dots')(x, backend=kernel_backend)
    assert dots.dtype == torch.int32
    assert torch.equal(layers[-1].epilogue(dots), expected)
    # A full-precision classifier after it.
    w, b = torch.randn(5, widths[-1]), torch.randn(5)
    out = chain(x, backend=kernel_backend, final=(w, b))
    assert torch.allclose(out, expected @ w.t() + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('widths', WIDTHS)
@pytest.mark.parametrize('ema', [True, False])
def test_chain_pooling(kernel_backend, widths, ema):
    r"""OR pooling of bits with group-size thresholds equals the sign of
    act(max - delta(n)) of the float model, for groups of mixed sizes
    (large groups take the row-sliced kernel)."""
    lins, norms, act = make_stack(widths, seed=1)
    layers = pack_stack(lins, norms, act, last_output='float',
                        last_act=False)
    post_lins, post_norms, _ = make_stack([widths[-1], 67, 9], seed=2)
    post = pack_stack(post_lins, post_norms, act)
    for sizes in ([37], [101, 37, 5, 1], [300, 129, 256, 600], [2, 0, 3],
                  [300, 0, 600]):
        counts = torch.tensor(sizes)
        batch = torch.repeat_interleave(torch.arange(len(sizes)), counts)
        x = torch.randn(int(counts.sum()), widths[0])
        y = reference(lins, norms, act, x, last_act=False)
        if ema:
            pooled = ema_max(y, batch, None, len(sizes))
        else:
            pooled = torch.zeros(len(sizes), y.size(1)).scatter_reduce(
                0, batch[:, None].expand_as(y), y, 'amax',
                include_self=False)
        pooled = act(pooled)
        chain = BinaryChain(layers, 'bits', pool=len(layers) - 1,
                            pool_ema=ema, pool_act=act)
        got = chain(x, counts, backend=kernel_backend)
        assert torch.equal(got, pack_bits(pooled)), sizes
        full = BinaryChain(layers + post, 'float', pool=len(layers) - 1,
                           pool_ema=ema, pool_act=act)
        expected = reference(post_lins, post_norms, act, pooled)
        assert torch.equal(full(x, counts, backend=kernel_backend),
                           expected)
        # The float pooling from dot products (DGCNN's first layer).
        dots = BinaryChain(layers, 'dots')(x, backend=kernel_backend)
        if ema:
            pf = pooled_floats(layers[-1], dots, batch, len(sizes), True)
            assert torch.equal(pf, ema_max(y, batch, None, len(sizes)))


def pointnet_like_chain() -> BinaryChain:
    r"""The binary layers 64-64-128-300 of a PointNet-like stack with an EMA
    max pooling after the last: the row-sliced kernel's case."""
    lins, norms, act = make_stack([3, 64, 64, 128, 300], seed=3)
    layers = pack_stack(lins, norms, act, last_output='float',
                        last_act=False)
    return BinaryChain(layers[1:], 'bits', pool=len(layers) - 2,
                       pool_ema=True, pool_act=act)


def test_row_sliced_and_other_kernels_agree():
    need_cpp()
    chain = pointnet_like_chain()
    x = torch.randn(1500, 64)
    counts = torch.tensor([1024, 476])
    a = chain(x, counts)  # Large groups: row-sliced.
    b = chain(x, counts, backend='torch')
    assert torch.equal(a, b)
    small = torch.tensor([100] * 15)  # Small groups: row-major kernels.
    assert torch.equal(chain(x, small), chain(x, small, backend='torch'))


def test_row_sliced_pooling_skips_repeated_rows():
    r"""The row-sliced kernel pools each group's distinct rows only: clouds
    made of few distinct points (and one of a single repeated point) give
    the bits of the reference that pools every row."""
    need_cpp()
    chain = pointnet_like_chain()
    g = torch.Generator().manual_seed(4)
    points = torch.randn(40, 64, generator=g)
    x = points[torch.randint(0, 40, (1500, ), generator=g)]
    x[1024:] = x[1024]
    for sizes in ([1024, 476], [300, 1200], [1500]):
        counts = torch.tensor(sizes)
        assert torch.equal(chain(x, counts), chain(x, counts,
                                                   backend='torch')), sizes


def test_row_sliced_same_bits_for_any_thread_count():
    r"""The row-sliced path shares its work out dynamically (rows packed
    in parallel, channel ranges taken one at a time): the bits do not
    depend on the number of threads, and a NaN in any row of a large group
    is reported."""
    need_cpp()
    chain = pointnet_like_chain()
    x = torch.randn(2100, 64)
    thr = torch.stack([torch.where(torch.rand(64) < 0.5, -1.0, 1.0),
                       torch.randn(64) * 0.1])
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for sizes in ([2100], [1024, 1076], [700, 700, 700]):
                outs.append(chain(x, torch.tensor(sizes), in_threshold=thr))
        for i in range(3):
            assert torch.equal(outs[i], outs[i + 3])
            assert torch.equal(outs[i], outs[i + 6])
        ref = chain(x, torch.tensor([1024, 1076]), in_threshold=thr,
                    backend='torch')
        assert torch.equal(outs[1], ref)
        x[1999, 5] = float('nan')
        for n in (1, 2):
            torch.set_num_threads(n)
            with pytest.raises(NonFiniteInput):
                chain(x, torch.tensor([2100]), in_threshold=thr)
    finally:
        torch.set_num_threads(threads)


def test_one_group_with_the_first_linear_layer():
    r"""One group with the full-precision first layer inside the
    operation gives the bits of torch's own linear output: where a
    rounding bound decides them, and where it cannot (thresholds placed
    exactly on outputs, huge inputs), by calling torch's operation. (Where
    this CPU's torch rounds exactly as the operation does, the bound's
    width is not exercised; its sign handling and the fallbacks are.)"""
    need_cpp()
    chain = pointnet_like_chain()
    g = torch.Generator().manual_seed(7)
    w, b = torch.randn(64, 3, generator=g), torch.randn(64, generator=g)
    s = torch.where(torch.rand(64, generator=g) < 0.5, -1.0, 1.0)
    u = torch.randn(64, generator=g) * 0.5
    u[3], u[4] = -float('inf'), float('nan')  # Always and never set.
    pos = torch.randn(1100, 3, generator=g)

    def both(pos, u, bias):
        thr = torch.stack([s, u])
        args = chain.one_group_args(pos.size(0), thr, first=(w, bias))
        got = BinaryChain.run_one_group(pos, args)
        expected = chain(torch.nn.functional.linear(pos, w, bias),
                         pos.size(0), in_threshold=thr)
        return got, expected

    for bias in (b, None):
        got, expected = both(pos, u, bias)
        assert torch.equal(got, expected)
    z = torch.nn.functional.linear(pos, w, b)
    on_edge = u.clone()
    on_edge[10:20] = s[10:20] * z[500, 10:20]  # Margin 0: undecided.
    assert torch.equal(*both(pos, on_edge, b))
    huge = pos * 1e31  # Beyond the bound's range (2^100), finite output.
    assert torch.isfinite(torch.nn.functional.linear(huge, w, b)).all()
    assert torch.equal(*both(huge, u, b))
    pos[900, 1] = float('nan')
    with pytest.raises(NonFiniteInput, match='non-finite'):
        both(pos, u, b)


def test_input_thresholds_and_non_finite(kernel_backend):
    lins, norms, act = make_stack([20, 70], seed=4)
    layers = pack_stack(lins, norms, act)
    chain = BinaryChain(layers, 'float')
    x = torch.randn(50, 20)
    s = torch.where(torch.rand(20) < 0.5, -1.0, 1.0)
    u = torch.randn(20)
    thr = torch.stack([s, u])
    bits = (x * s >= u).float() * 2 - 1
    assert torch.equal(chain(x, in_threshold=thr, backend=kernel_backend),
                       chain(bits, backend=kernel_backend))
    x[7, 3] = float('nan')
    with pytest.raises(NonFiniteInput):
        chain(x, in_threshold=thr, backend=kernel_backend)


def test_fma32_is_correctly_rounded():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=g) * 10 ** torch.randint(
        -5, 5, (2000, ), generator=g).float()
    a = torch.randn(2000, generator=g)
    b = -x * a + torch.randn(2000, generator=g) * 1e-6  # Cancellations.
    out = fma32(x, a, b)
    for i in range(0, 2000, 7):
        exact = Fraction(float(x[i])) * Fraction(float(a[i])) + \
            Fraction(float(b[i]))
        # The float32 nearest to the exact value (ties to even).
        f = torch.tensor(float(exact), dtype=torch.float64).float()
        lo = torch.nextafter(f, torch.tensor(-float('inf')))
        hi = torch.nextafter(f, torch.tensor(float('inf')))
        cands = [(abs(Fraction(float(c)) - exact),
                  int(c.view(torch.int32)) & 1, c.item())
                 for c in (lo, f, hi)]
        best = min(cands)[2]  # Nearest, ties to the even significand.
        assert out[i].item() == best


def test_affine_epilogue_verification():
    lin = BiLinear(9, 5).eval()
    lin.scale_initialized = True
    bn = torch.nn.BatchNorm1d(5).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.weight.normal_()
    ep = BinaryEpilogue(lin, bn, torch.nn.Hardtanh())
    aff = AffineEpilogue.from_epilogue(ep, 9)
    assert aff is not None
    d = torch.arange(-9, 10, 2)[:, None].expand(-1, 5).float()
    assert torch.equal(aff(d), ep(d))
    assert aff.to_dtype(torch.float16).alpha.dtype == torch.float16
    # Not a clamp: the full epilogue stays.
    ep = BinaryEpilogue(lin, bn, torch.nn.Tanh())
    assert AffineEpilogue.from_epilogue(ep, 9) is None


def test_cat_bits():
    a, b = torch.randn(6, 64), torch.randn(6, 3)
    c, d = torch.randn(6, 37), torch.randn(6, 70)
    for x, y in ((a, b), (c, d), (b, c)):
        got = cat_bits([(pack_bits(x), x.size(1)), (pack_bits(y), y.size(1))])
        assert torch.equal(got, pack_bits(torch.cat([x, y], 1)))


def test_global_pool_reference_helper():
    # The pooling the tests compare with is the model's.
    y = torch.randn(10, 4)
    batch = torch.tensor([0] * 3 + [1] * 7)
    assert torch.equal(global_ema_max_pool(y, batch, 2),
                       ema_max(y, batch, None, 2))
