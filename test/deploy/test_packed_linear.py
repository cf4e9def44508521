import math

import pytest
import torch

from torch_geometric_binary.deploy import (
    INT32_MAX,
    INT32_MIN,
    PackedBiLinear,
    fold_threshold,
    num_words,
    pack_bits,
    unpack_bits,
)
from torch_geometric_binary.nn import BiLinear, BiMLP
from torch_geometric_binary.nn.functional import sign


def make_layer(K: int, N: int, bias: bool = True, scale: float = 0.37,
               method: str = 'bipointnet', dtype=torch.float32):
    lin = BiLinear(K, N, bias=bias, method=method).to(dtype)
    with torch.no_grad():
        if lin.log_scale is not None:
            # A scale of 0 (constant channels) is a log scale of -inf.
            lin.log_scale.fill_(math.log(scale) if scale else -math.inf)
        if lin.bias is not None:
            lin.bias.normal_(0, 2)
    lin.scale_initialized = True
    return lin.eval()


def make_bn(lin: BiLinear, K: int) -> torch.nn.BatchNorm1d:
    r"""A batch normalization with adversarial statistics: random, negative
    and zero gammas, huge running means, and means placed exactly on a
    reachable pre-activation (real-arithmetic ties, decided by rounding)."""
    N = lin.out_channels
    bn = torch.nn.BatchNorm1d(N).to(lin.weight.dtype)
    g = torch.Generator().manual_seed(N * 1000 + K)
    with torch.no_grad():
        bn.weight.normal_(0, 1, generator=g)
        bn.bias.normal_(0, 1, generator=g)
        bn.running_var.uniform_(0.1, 4, generator=g)
        bn.running_mean.normal_(0, K ** 0.5, generator=g)
        alpha = lin.scale if lin.scale is not None else torch.tensor(1.0)
        b = lin.bias if lin.bias is not None else torch.zeros(N)
        d0 = (torch.randint(0, K + 1, (N, ), generator=g) * 2 - K).to(b)
        tie = alpha * d0 + b  # The exact pre-activation at a dot value.
        kind = torch.arange(N) % 7
        bn.running_mean.copy_(torch.where(kind == 1, tie, bn.running_mean))
        bn.bias.masked_fill_(kind == 1, 0.0)
        # Ties with a shift: beta = gamma (mu - y0) / sigma in float64.
        sigma = (bn.running_var.double() + bn.eps).sqrt()
        shifted = bn.weight.double() * (bn.running_mean.double() -
                                        tie.double()) / sigma
        bn.bias.copy_(torch.where(kind == 2, shifted.to(b.dtype), bn.bias))
        bn.weight.masked_fill_(kind == 3, 0.0)  # Constant: sign of beta.
        bn.weight.copy_(torch.where(kind == 4, -bn.weight.abs(), bn.weight))
        bn.running_mean.masked_fill_(kind == 5, 1e6)  # Constant.
    return bn.eval()


def all_dot_inputs(lin: BiLinear) -> torch.Tensor:
    r"""Inputs on which every output channel takes every reachable dot
    value: for channel n, sign(W_n) with its first j entries negated,
    j = 0, ..., K, gives D_n = K - 2 j."""
    w = lin.binary_weight().detach()
    N, K = w.shape
    flips = (torch.arange(K)[None, :] < torch.arange(K + 1)[:, None])
    x = w[:, None, :] * torch.where(flips, -1.0, 1.0).to(w)[None]
    return x.reshape(N * (K + 1), K)


def reference(lin, bn=None, act=None):
    def f(x):
        out = lin(x)
        out = bn(out) if bn is not None else out
        return act(out) if act is not None else out
    return f


@pytest.mark.parametrize('K,N', [(1, 1), (7, 5), (64, 63), (65, 130),
                                 (200, 65)])
def test_threshold_folding_is_exact_on_every_dot_value(kernel_backend, K, N,
                                                       monkeypatch):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    lin = make_layer(K, N)
    bn = make_bn(lin, K)
    act = torch.nn.Hardtanh()
    packed = PackedBiLinear.from_bilinear(lin, bn, act)
    f = reference(lin, bn, act)
    x = torch.cat([all_dot_inputs(lin), torch.randn(33, K)])
    with torch.no_grad():
        expected = f(x)
    bits = packed(x)
    assert bits.shape == (x.size(0), num_words(N))
    assert torch.equal(bits, pack_bits(expected, backend='torch'))
    # Also from packed inputs, and the float output.
    assert torch.equal(packed(pack_bits(x)), bits)
    assert torch.equal(packed(x, output='float'), expected)


def test_folding_sign_cases(kernel_backend, monkeypatch):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_KERNELS', kernel_backend)
    K, N = 9, 6
    # The LSR scale is positive; a negative BN gamma makes a channel
    # decreasing in the dot product.
    negate = torch.nn.BatchNorm1d(N).eval()
    with torch.no_grad():
        negate.weight.fill_(-1.0)
    for scale, norm in ((0.37, None), (0.5, negate), (0.0, None)):
        lin = make_layer(K, N, scale=scale)
        with torch.no_grad():
            lin.bias.copy_(torch.tensor([0.0, -0.0, 0.37, -0.37, 100., 1.1]))
        t, flip = fold_threshold(lin, norm)
        x = all_dot_inputs(lin)
        with torch.no_grad():
            expected = lin(x) if norm is None else norm(lin(x))
        packed = PackedBiLinear.from_bilinear(lin, norm)
        assert torch.equal(packed(x), pack_bits(expected, backend='torch'))
        if norm is not None:
            assert bool(flip[2:4].all())  # Decreasing in the dot product.
        elif scale == 0.0:  # Constant channels: the sign of the bias.
            assert bool((t[[0, 1, 2, 4, 5]] == INT32_MIN).all())
            assert t[3] == INT32_MAX and not bool(flip.any())
        else:
            # bias 0: D >= 0; -0.37 -> alpha D >= 0.37: D >= 1, K odd.
            assert t[0] == 1 and t[3] == 1 and not bool(flip.any())
            assert t[4] == INT32_MIN  # 100 + 0.37 D > 0 for all |D| <= 9.


def test_nan_and_negative_variance_give_minus_one():
    K, N = 5, 3
    lin = make_layer(K, N)
    bn = torch.nn.BatchNorm1d(N).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([float('nan'), 0.0, 0.0]))
        bn.running_var.copy_(torch.tensor([1.0, -5.0, 1.0]))
    t, flip = fold_threshold(lin, bn)
    assert t[0] == INT32_MAX and t[1] == INT32_MAX
    x = all_dot_inputs(lin)
    with torch.no_grad():
        expected = bn(lin(x))
    assert torch.equal(PackedBiLinear.from_bilinear(lin, bn)(x),
                       pack_bits(expected, backend='torch'))


def test_train_mode_bn_uses_running_stats_without_updating_them():
    lin = make_layer(20, 10)
    bn = make_bn(lin, 20).train()
    mean = bn.running_mean.clone()
    packed = PackedBiLinear.from_bilinear(lin, bn, output='float')
    assert torch.equal(bn.running_mean, mean)
    x = torch.randn(16, 20)
    with torch.no_grad():
        expected = bn.eval()(lin(x))
    bn.train()
    assert torch.equal(packed(x), expected)
    packed.train()  # Packed layers are inference-only: still the same.
    assert torch.equal(packed(x), expected)


def test_float64_and_bnn_method():
    K, N = 70, 9
    lin = make_layer(K, N, dtype=torch.float64)
    bn = make_bn(lin, K)
    x = torch.cat([all_dot_inputs(lin), torch.randn(5, K,
                                                    dtype=torch.float64)])
    packed = PackedBiLinear.from_bilinear(lin, bn)
    with torch.no_grad():
        expected = bn(lin(x))
    assert torch.equal(packed(x), pack_bits(expected, backend='torch'))
    assert torch.equal(packed(x, output='float'), expected)

    lin = make_layer(K, N, method='bnn', scale=1.0)  # Uncentered weights.
    with torch.no_grad():
        lin.weight.add_(0.3)
        expected = lin(x.float())
    packed = PackedBiLinear.from_bilinear(lin, output='float')
    assert torch.equal(packed(x.float()), expected)
    assert torch.equal(unpack_bits(packed.weight, K), sign(lin.weight))


def test_leading_dims():
    lin = make_layer(30, 12)
    bn = make_bn(lin, 30)
    packed = PackedBiLinear.from_bilinear(lin, bn, output='float')
    x = torch.randn(2, 5, 30)
    with torch.no_grad():
        expected = bn(lin(x).view(10, 12)).view(2, 5, 12)
    assert torch.equal(packed(x), expected)
    assert packed(x, output='bits').shape == (2, 5, 1)


def test_packed_bimlp_equals_bimlp():
    mlp = BiMLP([40, 70, 33, 10]).eval()
    with torch.no_grad():
        for lin in mlp.lins:
            lin.log_scale.uniform_(math.log(0.1), 0.0)
            lin.scale_initialized = True
        for norm in mlp.norms:
            norm.module.running_mean.normal_(0, 3)
            norm.module.running_var.uniform_(0.5, 2)
            norm.module.weight.normal_()
            norm.module.bias.normal_()
        mlp.lins[-1].bias.normal_()
    layers = [PackedBiLinear.from_bilinear(lin, norm, mlp.act)
              for lin, norm in zip(mlp.lins[:-1], mlp.norms)]
    layers.append(PackedBiLinear.from_bilinear(mlp.lins[-1], output='float'))
    x = torch.randn(100, 40)
    out = x
    for layer in layers:
        out = layer(out)
    with torch.no_grad():
        assert torch.equal(out, mlp(x))


def test_storage_and_checks():
    lin = make_layer(130, 65)
    packed = PackedBiLinear.from_bilinear(lin, make_bn(lin, 130))
    assert packed.weight.shape == (65, 3)
    assert packed.weight.dtype == torch.int64
    assert packed.num_bytes() == 65 * 3 * 8 + 65 * 4 + 65
    assert packed.num_bytes('float') > packed.num_bytes('bits')
    assert str(packed).startswith('PackedBiLinear(\n  130, 65, output=bits')
    assert ('BinaryEpilogue(65, scale=True, bias=True, norm=True)'
            in str(packed))
    with pytest.raises(ValueError, match='input channels'):
        packed(torch.randn(2, 129))
    with pytest.raises(ValueError, match='output'):
        packed(torch.randn(2, 130), output='int8')
    with pytest.raises(TypeError):
        PackedBiLinear.from_bilinear(torch.nn.Linear(3, 4))

    # An activation that is not monotone has no threshold.
    lin = make_layer(4, 2, scale=1.0, bias=False)
    with pytest.raises(ValueError, match='not monotone'):
        fold_threshold(lin, act=lambda y: 1 - y.abs())
