import math

import pytest
import torch

from torch_geometric_binary import _ext
from torch_geometric_binary.nn.functional import (binarize, binarize_shifted,
                                                  binarize_weight, ema_delta,
                                                  scaled_linear, sign,
                                                  sign_product)
from torch_geometric_binary.nn.fused import use_fused


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-1.5, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]
    assert binarize(x).tolist() == sign(x).tolist()
    assert sign(x.double()).dtype == torch.float64


def test_ste_gradient_clipped():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 7.0],
                     requires_grad=True)
    upstream = torch.arange(1.0, 9.0)
    binarize(x).backward(upstream)
    inside = (x.detach().abs() <= 1).float()
    assert torch.equal(x.grad, upstream * inside)
    assert x.grad[0] == 0 and x.grad[-1] == 0 and x.grad[3] == 4.0


def test_binarize_weight_centers_on_layer_mean():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = binarize_weight(w)  # mean 2.5: only 3 and 4 are above it
    assert out.tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    out.sum().backward()
    # The STE passes where |w - mean| <= 1 (2 and 3), then the centering
    # subtracts the mean of that gradient from every entry.
    assert w.grad.tolist() == [[-0.5, 0.5], [0.5, -0.5]]


@pytest.mark.parametrize('n,expected', [(20, 1.8268), (64, 2.2983),
                                        (1024, 3.2041)])
def test_ema_delta_paper_values(n, expected):
    # The paper's table is rounded (its n=20 entry is 2.6e-3 above the exact
    # quantile 1.82416); the exact property is tested below.
    assert abs(ema_delta(n) - expected) < 5e-3
    assert abs(float(ema_delta(torch.tensor([n]))[0]) - expected) < 5e-3


@pytest.mark.parametrize('n', [1, 2, 3, 20, 1000, 10**5, 10**7, 10**9])
def test_ema_delta_defining_property(n):
    # Phi(delta(n))^n = 1/2: the pooled max of n N(0,1) is above delta(n)
    # with probability exactly one half.
    delta = torch.tensor(ema_delta(n), dtype=torch.float64)
    log_cdf = torch.special.log_ndtr(delta)
    assert math.isclose(float(n * log_cdf), math.log(0.5), rel_tol=1e-6)


def test_ema_delta_matches_scipy():
    stats = pytest.importorskip('scipy.stats')
    for n in [1, 7, 50, 4096, 123457]:
        assert math.isclose(ema_delta(n), stats.norm.ppf(2**(-1 / n)),
                            rel_tol=1e-6, abs_tol=1e-9)


def test_ema_delta_one_and_invalid():
    assert ema_delta(1) == 0.0
    with pytest.raises(ValueError, match='group size'):
        ema_delta(0)
    sizes = torch.tensor([1, 20, 64, 1024])
    assert torch.allclose(ema_delta(sizes),
                          torch.tensor([ema_delta(int(n)) for n in sizes]))


def test_ema_balances_pooled_sign():
    # EMA-max of N(0,1) features is positive about half of the time, plain
    # max almost always, for each group size.
    for n in [20, 64, 1024]:
        x = torch.randn(4000, n)
        plain = (x.max(dim=1).values >= 0).float().mean()
        ema = (x.max(dim=1).values - ema_delta(n) >= 0).float().mean()
        assert plain > 0.99
        assert abs(ema - 0.5) < 0.04, (n, float(ema))


@pytest.mark.parametrize('shape', [(), (3, )], ids=['layer', 'channel'])
def test_scaled_linear_matches_autograd_and_gradcheck(shape):
    x = torch.randn(4, 6, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    s = (torch.rand(shape, dtype=torch.double) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(scaled_linear, (x, w, s))
    out = scaled_linear(x, w, s)
    ref = torch.nn.functional.linear(x, w) * s
    assert torch.equal(out, ref)  # The product first, then one rounding.
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, s), g)
    want = torch.autograd.grad(ref, (x, w, s), g)
    for a, b in zip(got, want):
        assert torch.allclose(a, b)
    # Only the inputs that need a gradient get one.
    out = scaled_linear(x.detach(), w.detach(), s)
    gs, = torch.autograd.grad(out.sum(), s)
    dots = torch.nn.functional.linear(x, w)
    assert torch.allclose(gs, dots.sum() if s.dim() == 0 else
                          dots.sum(dim=(0, 1)))


@pytest.mark.skipif(_ext.fused is None, reason='C++ kernels not built')
@pytest.mark.parametrize('estimator', ['ste', 'approx'])
@pytest.mark.parametrize('shape', [(0, 4), (5, 3), (700, 64), (3, 90, 17)])
@pytest.mark.parametrize('threads', [1, 2])
def test_binarize_shifted_kernel_matches_the_pytorch_path(
        estimator, shape, threads, fused_spy, num_threads):
    r""":func:`binarize_shifted` in one C++ pass each way: the signs and the
    input's gradient of :func:`binarize` of ``x - theta`` bit for bit, the
    thresholds' gradient up to the order of summation."""
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[-1])
    C = shape[-1]
    theta = torch.randn(C, generator=g)
    x = torch.randn(shape, generator=g) * 1.5
    if x.numel():  # At the threshold, and at the estimators' edges.
        rows = x.view(-1, C)
        rows[0] = theta
        rows[-1] = theta + torch.tensor([1.0, -1.0, 0.5, -0.5])[
            torch.arange(C) % 4]
    upstream = torch.randn(shape, generator=g)
    calls = fused_spy('shifted_sign', 'shifted_sign_backward')
    num_threads(threads)
    results = []
    for kernels in (True, False):
        with use_fused(kernels):
            xi = x.clone().requires_grad_()
            ti = theta.clone().requires_grad_()
            out = binarize_shifted(xi, ti, estimator)
            results.append((out, *torch.autograd.grad(out, (xi, ti),
                                                      upstream)))
    assert calls == ['shifted_sign', 'shifted_sign_backward']
    (out, gx, gt), (out_ref, gx_ref, gt_ref) = results
    assert torch.equal(out, out_ref) and torch.equal(gx, gx_ref)
    assert torch.equal(out, sign(x - theta))
    want = -gx_ref.double().reshape(-1, C).sum(0)
    tol = 1e-6 * gx_ref.double().reshape(-1, C).abs().sum(0)
    assert ((gt.double() - want).abs() <= tol).all()
    torch.testing.assert_close(gt, gt_ref, rtol=1e-5, atol=1e-5)


def test_binarize_shifted_other_estimators_and_dtypes():
    r"""EDE and float64 take the PyTorch path, with the same meaning."""
    x = torch.tensor([[0.2, -0.3], [1.5, 0.1]], dtype=torch.float64,
                     requires_grad=True)
    theta = torch.tensor([0.5, 0.0], dtype=torch.float64, requires_grad=True)
    out = binarize_shifted(x, theta, 'ede', (1.0, 1.0))
    assert out.tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    out.sum().backward()
    d = (x - theta).detach()
    torch.testing.assert_close(x.grad, 1 - torch.tanh(d).square())
    torch.testing.assert_close(theta.grad, -x.grad.sum(0))


@pytest.mark.skipif(_ext.fused is None or _ext.xnor_ops() is None,
                    reason='C++ kernels not built')
@pytest.mark.parametrize('shape', [(0, 64), (5, 32), (300, 70), (4, 9, 200)])
def test_sign_product_of_packed_signs(shape, monkeypatch):
    r"""With :obj:`signs`, float32 products of +-1 operands come from the
    packed XNOR-popcount kernels: the exact integers of the float product,
    through :func:`scaled_linear` and its gradients too."""
    packed = []
    gemm = _ext.xnor_ops().xnor_gemm
    monkeypatch.setattr(_ext, 'xnor_ops', lambda: type(
        'Ops', (), {'pack_bits': _ext._xnor.pack_bits,
                    'xnor_gemm': staticmethod(
                        lambda *a: packed.append(a[2]) or gemm(*a))}))
    x = torch.randn(shape).sign()
    w = torch.randn(48, shape[-1]).sign()
    out = sign_product(x, w, signs=True)
    assert packed == [shape[-1]]
    assert out.dtype == torch.float32 and torch.equal(out, x @ w.t())
    scale = torch.rand(48, requires_grad=True)
    xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
    got = scaled_linear(xi, wi, scale, signs=True)
    upstream = torch.randn_like(got)
    grads = torch.autograd.grad(got, (xi, wi, scale), upstream)
    want = scaled_linear(xi, wi, scale)
    assert torch.equal(got, want)
    for g, r in zip(grads, torch.autograd.grad(want, (xi, wi, scale),
                                               upstream)):
        assert torch.equal(g, r)
    # Few channels, float64, or without signs: the float product.
    packed.clear()
    sign_product(x[..., :16], w[:, :16], signs=True)
    sign_product(x.double(), w.double(), signs=True)
    sign_product(x, w)
    assert packed == []


@pytest.mark.skipif(_ext.fused is None, reason='C++ kernels not built')
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('estimator', ['ste', 'approx'])
def test_binarize_shifted_16_bit_inputs_take_the_kernels(
        dtype, estimator, fused_spy):
    r"""A bf16 or fp16 input (autocast) is binarized against the float32
    thresholds by the float32 kernels: exact signs, and the input gradient
    of the float32 path rounded once to the input's dtype."""
    g = torch.Generator().manual_seed(3)
    C = 20
    theta = torch.randn(C, generator=g)
    x = (torch.randn(400, C, generator=g) * 1.5).to(dtype)
    x[0] = theta.to(dtype)  # Rounded: just above or below the threshold.
    upstream = torch.randn(400, C, generator=g).to(dtype)
    calls = fused_spy('shifted_sign', 'shifted_sign_backward')
    results = []
    for inp, up in ((x, upstream), (x.float(), upstream.float())):
        xi = inp.clone().requires_grad_()
        ti = theta.clone().requires_grad_()
        out = binarize_shifted(xi, ti, estimator)
        results.append((out, *torch.autograd.grad(out, (xi, ti), up)))
    assert calls == ['shifted_sign', 'shifted_sign_backward'] * 2
    (out, gx, gt), (out32, gx32, gt32) = results
    assert out.dtype == gx.dtype == dtype and gt.dtype == torch.float32
    # The signs against the float32 thresholds, not thresholds rounded to
    # the input's dtype.
    assert torch.equal(out.float(), sign(x.float() - theta))
    assert torch.equal(gx, gx32.to(dtype)) and torch.equal(gt, gt32)
