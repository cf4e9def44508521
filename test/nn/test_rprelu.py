import pytest
import torch

from torch_geometric_binary import _ext
from torch_geometric_binary.nn import RPReLU
from torch_geometric_binary.nn.fused import use_fused
from torch_geometric_binary.nn.rprelu import RPReLUFunction
from torch_geometric_binary.nn.functional import sign


def rprelu(gamma, beta, zeta, dtype=torch.float32):
    act = RPReLU(len(gamma)).to(dtype)
    with torch.no_grad():
        act.gamma.copy_(torch.tensor(gamma))
        act.beta.copy_(torch.tensor(beta))
        act.zeta.copy_(torch.tensor(zeta))
    return act


def test_init_reset_and_repr():
    act = RPReLU(3)
    assert str(act) == 'RPReLU(3)'
    assert torch.equal(act.gamma, torch.zeros(3))
    assert torch.equal(act.beta, torch.full((3, ), 0.25))
    assert torch.equal(act.zeta, torch.zeros(3))
    with torch.no_grad():
        for p in act.parameters():
            p.fill_(7.0)
    act.reset_parameters()
    assert torch.equal(act.beta, torch.full((3, ), 0.25))
    assert torch.equal(act.gamma + act.zeta, torch.zeros(3))
    assert torch.equal(RPReLU(2, init=0.5).beta, torch.full((2, ), 0.5))
    # At initialization it is PReLU.
    x = torch.randn(10, 3)
    torch.testing.assert_close(act(x), torch.nn.functional.prelu(
        x, torch.tensor([0.25])))


def test_forward_known_inputs():
    act = rprelu([0.5, -1.0], [0.25, 2.0], [1.0, -0.5])
    x = torch.tensor([[2.5, 0.0],    # above both input shifts
                      [0.5, -1.0],   # exactly at them: the slope branch
                      [-1.5, -3.0]])  # below
    expected = torch.tensor([[2.0 + 1.0, 1.0 - 0.5],
                             [0.0 + 1.0, 0.0 - 0.5],
                             [0.25 * -2.0 + 1.0, 2.0 * -2.0 - 0.5]])
    assert torch.equal(act(x), expected)
    # Any leading dimensions; channels last.
    assert torch.equal(act(x.view(3, 1, 2)), expected.view(3, 1, 2))


def test_backward_known_inputs():
    act = rprelu([0.5, -1.0], [0.25, 2.0], [1.0, -0.5])
    x = torch.tensor([[2.5, 0.0], [-1.5, -3.0], [0.5, -1.0]],
                     requires_grad=True)
    act(x).sum().backward()
    # d/dx: 1 above the input shift, beta below and at it (as PReLU).
    assert torch.equal(x.grad, torch.tensor([[1.0, 1.0], [0.25, 2.0],
                                             [0.25, 2.0]]))
    assert torch.equal(act.gamma.grad, torch.tensor([-1.0 - 2 * 0.25,
                                                     -1.0 - 2 * 2.0]))
    # d/dbeta: x - gamma on the slope branch only.
    assert torch.equal(act.beta.grad, torch.tensor([-2.0, -2.0]))
    assert torch.equal(act.zeta.grad, torch.tensor([3.0, 3.0]))


def test_gradients_match_the_elementwise_form():
    r"""The fused backward against autograd of the definition and
    finite differences, with leading dimensions."""
    act = rprelu([0.3, -0.2, 0.0], [0.25, 1.5, -0.5], [0.1, -0.4, 0.7],
                 torch.float64)
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    params = (act.gamma, act.beta, act.zeta)
    torch.autograd.gradcheck(lambda x, *p: RPReLUFunction.apply(x, *p),
                             (x, *params))
    z = x - act.gamma
    ref = torch.where(z > 0, z, z * act.beta) + act.zeta
    upstream = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, *params), upstream)
    got = torch.autograd.grad(act(x), (x, *params), upstream)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w)


def test_keeps_the_input_dtype_under_autocast():
    act = RPReLU(4)
    x = torch.randn(6, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = act(x.bfloat16())
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert act.beta.grad.dtype == torch.float32


def test_bad_arguments():
    for channels in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match='positive number of channels'):
            RPReLU(channels)
    with pytest.raises(ValueError, match='4 channels in the last dimension'):
        RPReLU(4)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="'offset' must have 2 entries"):
        RPReLU(2).sign_threshold(torch.zeros(3))


# One channel per case of RPReLU.sign_threshold (beta, zeta):
CASES = [
    (0.5, -0.75, 1.5 + 0.75),   # beta > 0, zeta < 0: identity branch
    (0.25, 0.0, 1.5),           # zeta = 0: the input shift itself
    (0.25, 0.5, 1.5 - 2.0),     # zeta > 0: slope branch, gamma - zeta/beta
    (2.0, 3.0, 1.5 - 1.5),
    (0.0, -0.25, 1.5 + 0.25),   # beta = 0, zeta < 0: still a threshold
    (0.0, 0.0, -float('inf')),  # beta = 0, zeta >= 0: always +1
    (-0.5, 0.25, -float('inf')),  # beta < 0, zeta >= 0: always +1
]


def test_sign_threshold_cases():
    gamma = [1.5] * len(CASES)
    act = rprelu(gamma, [c[0] for c in CASES], [c[1] for c in CASES],
                 torch.float64)
    t, non_monotone = act.sign_threshold()
    assert t.tolist() == [c[2] for c in CASES]
    assert not non_monotone.any()


def test_sign_of_rprelu_is_a_threshold_test_on_a_grid():
    r"""sign(RPReLU(x) - offset) == sign(x - t) at every grid point, the
    thresholds and their neighbours included. The parameters are dyadic,
    so that float64 computes both sides exactly."""
    gamma = torch.tensor([1.5, -0.5, 0.25, 0.0, 2.0, -1.0, 0.75])
    beta = torch.tensor([c[0] for c in CASES])
    zeta = torch.tensor([c[1] for c in CASES])
    act = rprelu(gamma.tolist(), beta.tolist(), zeta.tolist(), torch.float64)
    for offset in (None, torch.tensor([0.5, -0.25, 1.0, 0.0, -2.0, 0.125,
                                       0.5], dtype=torch.float64)):
        t, non_monotone = act.sign_threshold(offset)
        # beta < 0 and zeta' < 0 (the last channel with offset 0.5): not a
        # threshold test.
        flagged = (beta < 0) & (zeta - (0 if offset is None else offset) < 0)
        assert torch.equal(non_monotone, flagged)
        assert torch.isnan(t[flagged]).all()
        grid = torch.linspace(-6, 6, 385, dtype=torch.float64)  # step 1/32
        finite = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        edges = torch.stack([finite + d for d in (-2**-20, 0.0, 2**-20)])
        x = torch.cat([grid.unsqueeze(1).expand(-1, 7), edges])
        y = act(x) if offset is None else act(x) - offset
        keep = ~flagged
        assert torch.equal(sign(y)[:, keep], sign(x - t)[:, keep])
        # The flagged channel's sign really is not monotone on the grid.
        if flagged.any():
            col = sign(y)[:len(grid), flagged.nonzero()[0, 0]]
            assert (col[1:] < col[:-1]).any() and (col[1:] > col[:-1]).any()


def test_sign_threshold_of_trained_parameters():
    r"""Random (non-dyadic) parameters with beta > 0: the identity holds
    away from float rounding at the threshold."""
    g = torch.Generator().manual_seed(0)
    act = RPReLU(16).double()
    with torch.no_grad():
        act.gamma.copy_(torch.randn(16, generator=g, dtype=torch.float64))
        act.beta.copy_(torch.rand(16, generator=g, dtype=torch.float64) + .05)
        act.zeta.copy_(torch.randn(16, generator=g, dtype=torch.float64))
    t, non_monotone = act.sign_threshold()
    assert not non_monotone.any()
    x = torch.randn(4000, 16, generator=g, dtype=torch.float64) * 3
    far = (x - t).abs() > 1e-9
    assert torch.equal(sign(act(x))[far], sign(x - t)[far])


@pytest.mark.skipif(_ext.fused is None, reason='C++ kernels not built')
@pytest.mark.parametrize('shape', [(0, 5), (3, 7), (1000, 64), (9, 70, 33)])
@pytest.mark.parametrize('threads', [1, 2])
def test_kernels_match_the_pytorch_path(shape, threads, fused_spy,
                                        num_threads):
    r"""The float32 C++ kernels give the PyTorch path's output and input
    gradient bit for bit (ATen vectorized, as on every x86-64-v3 CPU), and
    its parameter gradients up to the order of summation: closer to the
    float64 sums than rounding each term allows."""
    if not torch.backends.cpu.get_cpu_capability().startswith('AVX'):
        pytest.skip("ATen's scalar kernels round without fused multiply-add")
    g = torch.Generator().manual_seed(sum(shape))
    C = shape[-1]
    act = RPReLU(C)
    with torch.no_grad():
        act.gamma.copy_(torch.randn(C, generator=g))
        act.beta.copy_(torch.randn(C, generator=g) * 0.5 + 0.25)
        act.zeta.copy_(torch.randn(C, generator=g))
    x = torch.randn(shape, generator=g) * 2
    if x.numel():
        x.view(-1, C)[0] = act.gamma.detach()  # z = 0: the slope branch.
    upstream = torch.randn(shape, generator=g)
    calls = fused_spy('rprelu_forward', 'rprelu_backward')
    num_threads(threads)
    results = []
    for kernels in (True, False):
        with use_fused(kernels):
            xi = x.clone().requires_grad_()
            out = act(xi)
            grads = torch.autograd.grad(out, (xi, *act.parameters()),
                                        upstream)
        results.append((out, *grads))
    assert calls == ['rprelu_forward', 'rprelu_backward']
    (out, gx, *gp), (out_ref, gx_ref, *gp_ref) = results
    assert torch.equal(out, out_ref) and torch.equal(gx, gx_ref)
    z = (x - act.gamma.detach()).double().reshape(-1, C)
    u = upstream.double().reshape(-1, C)
    exact = {'gamma': -torch.where(z > 0, u, u * act.beta.detach().double()),
             'beta': u * z.clamp_max(0), 'zeta': u}
    for (name, _), got, ref in zip(act.named_parameters(), gp, gp_ref):
        want = exact[name].sum(0)
        tol = 1e-6 * exact[name].abs().sum(0) + 1e-30
        assert ((got.double() - want).abs() <= tol).all(), name
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(_ext.fused is None, reason='C++ kernels not built')
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_16_bit_inputs_take_the_kernels_in_float32(dtype, fused_spy):
    r"""Under autocast the activation sees bf16 or fp16: the float32
    kernels compute it, and the output and input gradient are the float32
    results rounded once to the input's dtype (the parameters' gradients
    are the float32 ones)."""
    g = torch.Generator().manual_seed(7)
    C = 24
    act = RPReLU(C)
    with torch.no_grad():
        act.gamma.copy_(torch.randn(C, generator=g))
        act.beta.copy_(torch.randn(C, generator=g) * 0.5 + 0.25)
        act.zeta.copy_(torch.randn(C, generator=g))
    x = (torch.randn(300, C, generator=g) * 2).to(dtype)
    upstream = torch.randn(300, C, generator=g).to(dtype)
    calls = fused_spy('rprelu_forward', 'rprelu_backward')
    results = []
    for inp, up in ((x, upstream), (x.float(), upstream.float())):
        xi = inp.clone().requires_grad_()
        out = act(xi)
        results.append((out, *torch.autograd.grad(
            out, (xi, *act.parameters()), up)))
    assert calls == ['rprelu_forward', 'rprelu_backward'] * 2
    (out, gx, *gp), (out32, gx32, *gp32) = results
    assert out.dtype == gx.dtype == dtype
    assert torch.equal(out, out32.to(dtype))
    assert torch.equal(gx, gx32.to(dtype))
    for got, ref in zip(gp, gp32):
        assert got.dtype == torch.float32 and torch.equal(got, ref)
    # And the float32 result is RPReLU's value of the 16-bit input.
    z = x.double() - act.gamma.detach().double()
    want = torch.where(z > 0, z, z * act.beta.detach().double()) + \
        act.zeta.detach().double()
    torch.testing.assert_close(out32.double(), want, rtol=1e-6, atol=1e-6)
