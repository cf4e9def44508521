import copy

import pytest
import torch

from torch_geometric_binary.nn import BiMLP, global_ema_max_pool
from torch_geometric_binary.nn.aggr import global_max_pool
from torch_geometric_binary.nn.functional import ema_delta
from torch_geometric_binary import _ext
from torch_geometric_binary.nn.fused import (GroupMaxProduct, NarrowLinear,
                                             linear_norm_group_max,
                                             narrow_linear, use_fused)


def _grads(module, *tensors):
    out = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    return out + [t.grad.clone() for t in tensors]


# The C++ scans of each instruction set (capped by the environment; a CPU
# without one runs the next narrower), and the PyTorch path.
KERNELS = ['avx512', 'avx2', 'scalar', 'torch']


def _use_kernel(kernel, monkeypatch):
    if kernel != 'torch':
        if _ext.fused is None:
            pytest.skip('C++ kernels not built')
        monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_FUSED_ISA', kernel)
    return use_fused(kernel != 'torch')


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('binary', [False, True])
def test_group_max_product_matches_dense_max(binary, kernel, monkeypatch):
    fused = _use_kernel(kernel, monkeypatch)
    h = torch.randn(6, 40, 16)
    w = torch.randn(24, 16)
    if binary:  # Integer products: many ties, which share the gradient.
        h, w = h.sign(), w.sign()
    h.requires_grad_()
    w.requires_grad_()
    upstream = torch.randn(6, 24)
    ptr = torch.arange(0, 241, 40)
    with fused:
        out = GroupMaxProduct.apply(h.view(-1, 16), w, ptr, 40)
    out.backward(upstream)
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None

    ref = torch.amax(h @ w.t(), dim=1)  # amax splits ties evenly
    ref.backward(upstream)
    assert torch.equal(out, ref)
    torch.testing.assert_close(grads[0], h.grad)
    torch.testing.assert_close(grads[1], w.grad)
    if binary:
        assert ((h.detach() @ w.detach().t()) == out.unsqueeze(1)).sum() > \
            out.numel()


@pytest.mark.parametrize('kernel', KERNELS[:3])
def test_group_max_product_in_bfloat16(kernel, monkeypatch):
    r"""bf16 tiles (the autocast path): +-1 products over 16 channels are
    exact, so the maxima, their tied rows and the gradients are those of
    float32."""
    _use_kernel(kernel, monkeypatch)
    h = torch.randn(200, 16).sign()
    w = torch.randn(37, 16).sign()  # 37: vectors and a tail of channels.
    ptr = torch.tensor([0, 50, 51, 130, 200])
    upstream = torch.randn(4, 37)
    results = []
    for dtype in (torch.bfloat16, torch.float32):
        hi = h.to(dtype).requires_grad_()
        wi = w.to(dtype).requires_grad_()
        out = GroupMaxProduct.apply(hi, wi, ptr, None)
        out.backward(upstream)
        results.append((out, hi.grad.float(), wi.grad.float()))
    (out, gh, gw), (ref, gh_ref, gw_ref) = results
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    torch.testing.assert_close(gh, gh_ref, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(gw, gw_ref, atol=1e-2, rtol=1e-2)


@pytest.mark.skipif(_ext.fused is None or _ext.xnor_ops() is None,
                    reason='C++ kernels not built')
def test_group_max_product_of_packed_signs(monkeypatch):
    r"""With :obj:`signs`, the forward forms the product by XNOR-popcount
    of the packed operands: the same maxima, ties and gradients as the
    float product (+-1 products are exact integers either way)."""
    calls = []
    kernel = _ext.fused.group_max_forward
    monkeypatch.setattr(_ext.fused, 'group_max_forward',
                        lambda *a: calls.append(len(a)) or kernel(*a))
    sizes = torch.tensor([1, 64, 3, 130, 65])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    h = torch.randn(int(sizes.sum()), 70).sign()  # 70: two 64-bit words.
    w = torch.randn(19, 70).sign()
    upstream = torch.randn(5, 19)
    results = []
    for signs in (True, False):
        hi, wi = h.clone().requires_grad_(), w.clone().requires_grad_()
        out = GroupMaxProduct.apply(hi, wi, ptr, None, signs)
        out.backward(upstream)
        results.append((out, hi.grad, wi.grad))
    assert calls == [6, 4]  # With the packed signs, then without.
    for got, want in zip(*results):
        assert torch.equal(got, want)
    prod = h @ w.t()
    ties = sum(int((prod[a:b] == m).sum()) for a, b, m in
               zip(ptr[:-1], ptr[1:], results[0][0]))
    assert ties > results[0][0].numel()  # Ties, which share gradients.


def test_binary_mlp_pools_through_packed_signs(monkeypatch):
    r"""A binary MLP's fused max pool uses the packed product where its
    last layer's operands are signs (no activation scale), and not in full
    precision or with XNOR-Net's activation scale."""
    from torch_geometric_binary.nn import functional
    seen = []
    pack = functional.packed_signs
    monkeypatch.setattr(functional, 'packed_signs',
                        lambda *a: seen.append(True) or pack(*a))
    batch = torch.arange(3).repeat_interleave(20)
    for method, packed in (('bipointnet', True), ('react', True),
                           ('fp', False), ('xnor', False)):
        seen.clear()
        BiMLP([4, 16, 32], method, norm_last=True).max_pool(
            torch.randn(60, 4), batch, 3)
        assert bool(seen) == (packed and _ext.fused is not None), method


@pytest.mark.parametrize('method', ['fp', 'bipointnet', 'bnn', 'xnor', 'xnor++',
                                    'irnet', 'react'])
@pytest.mark.parametrize('ema', [False, True])
def test_mlp_max_pool_matches_unfused(method, ema):
    mlp = BiMLP([8, 16, 32, 64], method, norm_last=True)
    ref = copy.deepcopy(mlp)
    x = torch.randn(5 * 30, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    batch = torch.arange(5).repeat_interleave(30)
    pool = global_ema_max_pool if ema else global_max_pool

    for step in range(2):  # The second step sees updated running stats.
        out = mlp.max_pool(x, batch, 5, ema=ema)
        expected = pool(ref(x_ref), batch, 5)
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
        upstream = torch.randn_like(out)
        out.backward(upstream)
        expected.backward(upstream)
        for got, want in zip(_grads(mlp, x), _grads(ref, x_ref)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
        for got, want in zip(mlp.buffers(), ref.buffers()):
            torch.testing.assert_close(got, want)
        for m in (mlp, ref):
            m.zero_grad()
        x.grad = x_ref.grad = None

    mlp.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(mlp.max_pool(x, batch, 5, ema=ema),
                                   pool(ref(x), batch, 5), atol=1e-4,
                                   rtol=1e-4)


def test_negative_batch_norm_gamma_takes_the_min():
    mlp = BiMLP([4, 8, 16], 'bipointnet', norm_last=True)
    with torch.no_grad():
        mlp.last_norm.module.weight[::2] *= -1
    x = torch.randn(60, 4)
    batch = torch.arange(3).repeat_interleave(20)
    torch.testing.assert_close(mlp.max_pool(x, batch, 3, ema=True),
                               global_ema_max_pool(mlp(x), batch, 3),
                               atol=1e-4, rtol=1e-4)


def test_unequal_clouds_take_the_unfused_path():
    mlp = BiMLP([4, 8, 16], 'bipointnet', norm_last=True)
    x = torch.randn(50, 4)
    batch = torch.cat([torch.zeros(20), torch.ones(30)]).long()
    torch.testing.assert_close(mlp.max_pool(x, batch, 2, ema=True),
                               global_ema_max_pool(mlp(x), batch, 2))
    with pytest.raises(ValueError, match='no points'):
        mlp.max_pool(x, batch, 3, ema=True)


def test_non_finite_features_raise():
    mlp = BiMLP([4, 8, 16], 'fp', norm_last=True)
    x = torch.randn(40, 4)
    x[3, 1] = float('nan')
    with pytest.raises(ValueError, match='non-finite'):
        mlp.max_pool(x, torch.arange(2).repeat_interleave(20), 2, ema=False)


def test_running_stats_follow_batch_norm_without_momentum():
    mlp = BiMLP([4, 8, 16], 'fp', norm_last=True,
                norm_kwargs={'momentum': None})
    ref = copy.deepcopy(mlp)
    batch = torch.arange(4).repeat_interleave(10)
    for _ in range(3):
        x = torch.randn(40, 4)
        mlp.max_pool(x, batch, 4)
        ref(x)
    for got, want in zip(mlp.buffers(), ref.buffers()):
        torch.testing.assert_close(got, want)


def test_linear_norm_group_max_under_autocast():
    h = torch.randn(4 * 50, 128).sign().requires_grad_()
    w = torch.randn(256, 128).sign().requires_grad_()
    norm = torch.nn.BatchNorm1d(256)
    scale = torch.tensor(0.3, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = linear_norm_group_max(h, w, scale, norm,
                                    torch.arange(0, 201, 50), 50)
    out.sum().backward()
    ref_norm = torch.nn.BatchNorm1d(256)
    expected = torch.amax(ref_norm(scale.detach() * (h.detach() @
                                                     w.detach().t()))
                          .view(4, 50, 256), dim=1)
    # +-1 products are exact in bf16; the statistics are float32 and the
    # result is rounded once to bf16, as BatchNorm's output would be.
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=8e-3)
    assert h.grad.dtype == w.grad.dtype == torch.float32
    assert torch.isfinite(h.grad).all() and scale.grad is not None


@pytest.mark.parametrize('kernel', KERNELS[:3])
@pytest.mark.parametrize('binary', [False, True])
def test_group_max_product_groups_of_different_sizes(binary, kernel,
                                                     monkeypatch):
    _use_kernel(kernel, monkeypatch)
    sizes = torch.tensor([1, 7, 3, 12, 5])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    h = torch.randn(int(sizes.sum()), 10)
    w = torch.randn(6, 10)
    if binary:
        h, w = h.sign(), w.sign()
    h.requires_grad_()
    w.requires_grad_()
    upstream = torch.randn(5, 6)
    out = GroupMaxProduct.apply(h, w, ptr, None)
    out.backward(upstream)
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    prod = h @ w.t()  # amax of each group splits ties evenly
    ref = torch.stack([prod[a:b].amax(0) for a, b in zip(ptr[:-1], ptr[1:])])
    ref.backward(upstream)
    assert torch.equal(out, ref)
    torch.testing.assert_close(grads[0], h.grad)
    torch.testing.assert_close(grads[1], w.grad)


@pytest.mark.parametrize('method', ['fp', 'bipointnet'])
def test_mlp_group_max_of_ragged_groups_matches_unfused(method):
    sizes = torch.tensor([4, 9, 1, 16, 6, 6])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    mlp = BiMLP([5, 16, 24], method, norm_last=True)
    ref = copy.deepcopy(mlp)
    x = torch.randn(int(sizes.sum()), 5, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = mlp.group_max(x, ema=True, ptr=ptr)
    # The reference max of each group by amax, which shares ties evenly.
    # (torch's scatter_reduce 'amax' with include_self=False, behind PyG's
    # max, also counts its zero initial value as a tie where a maximum is
    # exactly 0, as here in the 1-point group.)
    with use_fused(False):
        dense = ref(x_ref)
    expected = torch.stack([dense[a:b].amax(0) - ema_delta(int(b - a))
                            for a, b in zip(ptr[:-1], ptr[1:])])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    for got, want in zip(_grads(mlp, x), _grads(ref, x_ref)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_narrow_linear_gradients():
    r"""The transposed weight gradient is the same sum: gradcheck, and
    the gradients of :func:`torch.nn.functional.linear`."""
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(NarrowLinear.apply, (x, w, b))
    torch.autograd.gradcheck(NarrowLinear.apply, (x, w, None))
    x, w, b = (t.detach().float().requires_grad_() for t in (x, w, b))
    upstream = torch.randn(4, 5, 7)
    got = torch.autograd.grad(narrow_linear(x, w, b), (x, w, b), upstream)
    want = torch.autograd.grad(torch.nn.functional.linear(x, w, b),
                               (x, w, b), upstream)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


def test_mlp_first_layer_takes_narrow_linear(monkeypatch):
    r"""An MLP's full-precision layers with few input channels use
    :class:`NarrowLinear` (with the same gradients), wider ones do not."""
    calls = []
    apply = NarrowLinear.apply
    monkeypatch.setattr(NarrowLinear, 'apply',
                        lambda *a: calls.append(a[0].size(-1)) or apply(*a))
    mlp = BiMLP([6, 32, 16], 'fp')
    ref = copy.deepcopy(mlp)
    x = torch.randn(50, 6)
    mlp(x).square().sum().backward()
    assert calls == [6]  # The first layer only (the second reads 32).
    with use_fused(False):
        ref(x).square().sum().backward()
    assert calls == [6]
    for (name, p), p_ref in zip(mlp.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)
