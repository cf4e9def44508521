import pytest
import torch

from torch_geometric_binary.nn import (METHODS, BinaryMethod, BiLinear,
                                       advance_schedule, method_names,
                                       register_method, resolve_method)
from torch_geometric_binary.nn.functional import ede_schedule


def test_registry_names_and_switches():
    assert {'fp', 'bipointnet', 'bnn'} <= set(method_names())
    bi = resolve_method('BiPointNet')
    assert bi.binary and bi.ema and bi.lsr
    bnn = resolve_method('bnn')
    assert bnn.binary and not bnn.ema and not bnn.lsr
    assert not resolve_method(None).binary
    no_ema = resolve_method('bipointnet', ema=False)
    assert not no_ema.ema and no_ema.lsr and bi.ema  # a copy, not a mutation


def test_unknown_method_names_available_ones():
    with pytest.raises(ValueError, match="Unknown binarization method 'xnr'"
                       ".*bipointnet"):
        resolve_method('xnr')
    with pytest.raises(TypeError):
        resolve_method(3)


def test_register_custom_method_used_by_layers():
    class Shifted(BinaryMethod):
        def binarize_input(self, x, layer=None):
            return super().binarize_input(x - 10.0, layer)

    register_method(Shifted('test-shifted', lsr=False))
    try:
        with pytest.raises(ValueError, match='already registered'):
            register_method(Shifted('test-shifted'))
        lin = BiLinear(4, 3, method='test-shifted')
    finally:
        METHODS.pop('test-shifted')
    assert lin.scale is None
    x = torch.rand(5, 4)  # all < 10: the shifted binarizer gives all -1
    expected = -lin.binary_weight().sum(dim=1).expand(5, 3)
    assert torch.equal(lin(x), expected)


def test_bnn_does_not_center_weights():
    lin = BiLinear(2, 1, method='bnn')
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, 0.2]]))
    assert lin.binary_weight().tolist() == [[1.0, 1.0]]
    lin_bi = BiLinear(2, 1, method='bipointnet')
    with torch.no_grad():
        lin_bi.weight.copy_(torch.tensor([[0.1, 0.2]]))
    assert lin_bi.binary_weight().tolist() == [[-1.0, 1.0]]


def test_registry_has_the_papers_methods():
    assert {'bnn', 'xnor', 'xnor++', 'bireal', 'irnet', 'react',
            'bipointnet'} <= set(method_names())
    m = resolve_method('xnor+++ema+lsr')  # '+' inside a name and switches
    assert m.weight_scale == 'learned' and m.ema and m.lsr
    assert resolve_method('irnet+ema').estimator == 'ede'
    with pytest.raises(ValueError, match=r"Unknown switch '\+foo'"):
        resolve_method('bireal+foo')
    with pytest.raises(ValueError, match="unknown weight_scale 'max'"):
        BinaryMethod('bad', weight_scale='max')
    with pytest.raises(ValueError, match="unknown estimator 'tanh'"):
        BinaryMethod('bad', estimator='tanh')


def weighted(method, weight, **kwargs):
    lin = BiLinear(weight.size(1), weight.size(0), method=method, **kwargs)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


W = torch.tensor([[0.5, -1.5, 1.0, 0.2], [-0.1, -0.3, 0.2, -0.2]])
X = torch.tensor([[0.3, -0.7, 2.0, -0.1]])


def test_xnor_scales_weights_and_activations():
    lin = weighted('xnor', W)
    signs = torch.sign(W)  # no centering
    beta = X.abs().mean()  # XNOR-Net's K for this row
    gamma = W.abs().mean(dim=1)
    expected = (torch.sign(X) @ signs.t()) * gamma * beta
    assert torch.allclose(lin(X), expected)
    assert torch.allclose(lin.output_scale(), gamma)
    # Gradients reach the weight through its sign and its mean magnitude.
    lin(X).sum().backward()
    assert lin.weight.grad.abs().sum() > 0


def test_xnorpp_learns_a_scale_per_channel():
    lin = weighted('xnor++', W)
    lin.reset_parameters()  # gain starts at mean |W| of each channel
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.weight_gain.copy_(torch.tensor([2.0, -0.5]))
    expected = (torch.sign(X) @ torch.sign(W).t()) * torch.tensor([2.0, -0.5])
    assert torch.allclose(lin(X), expected)
    lin(X)[0, 1].backward()
    dot = float(torch.sign(X) @ torch.sign(W[1]))
    assert lin.weight_gain.grad.tolist() == [0.0, dot]
    fresh = BiLinear(4, 2, method='xnor++')
    assert torch.allclose(fresh.weight_gain, fresh.weight.abs().mean(dim=1))


def test_bireal_approx_sign_gradient():
    lin = weighted('bireal', W)
    x = torch.tensor([[-1.5, -0.5, 0.25, 0.9]], requires_grad=True)
    lin(x).sum().backward()
    g_out = (torch.sign(W) * W.abs().mean(dim=1, keepdim=True)).sum(0)
    slope = torch.tensor([0.0, 1.0, 1.5, 0.2])  # max(0, 2 - 2|x|)
    assert torch.allclose(x.grad[0], g_out * slope)


def test_irnet_balanced_weights_pow2_scale_and_ede():
    lin = weighted('irnet', W)
    centered = W - W.mean(dim=1, keepdim=True)
    std = centered / centered.std(dim=1, keepdim=True)
    assert torch.equal(lin.binary_weight(), torch.where(std >= 0, 1., -1.))
    scale = lin.output_scale()
    assert torch.equal(scale, 2.0 ** torch.round(torch.log2(
        std.abs().mean(dim=1))))
    assert scale.requires_grad is False
    # EDE: gradient k t (1 - tanh^2(t x)) at several points of training.
    x = torch.tensor([[0.0, 0.5, -1.0, 3.0]])
    for epoch, epochs in ((1, 5), (3, 5), (5, 5)):
        assert advance_schedule(lin, epoch, epochs) == 1
        t, k = ede_schedule((epoch - 1) / (epochs - 1))
        xi = x.clone().requires_grad_()
        lin(xi).sum().backward()
        g_out = lin.binary_weight().detach().mul(scale[:, None]).sum(0)
        slope = k * t * (1 - torch.tanh(t * x[0]) ** 2)
        assert torch.allclose(xi.grad[0], g_out * slope, rtol=1e-5)
    assert ede_schedule(0.0) == pytest.approx((0.1, 10.0))
    assert ede_schedule(1.0) == pytest.approx((10.0, 1.0))
    assert ede_schedule(0.5) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match='epoch 6 of 5'):
        advance_schedule(lin, 6, 5)
    # The schedule is saved with the weights (a resumed run keeps it).
    assert float(lin.state_dict()['ede_progress']) == 1.0


def test_react_learned_input_thresholds():
    lin = weighted('react', W)
    assert torch.equal(lin.input_threshold, torch.zeros(4))
    with torch.no_grad():
        lin.input_threshold.copy_(torch.tensor([0.5, -1.0, 2.5, 0.0]))
    shifted = torch.sign(X - lin.input_threshold)
    shifted[shifted == 0] = 1
    gamma = W.abs().mean(dim=1)
    assert torch.allclose(lin(X), (shifted @ torch.sign(W).t()) * gamma)
    lin(X).sum().backward()
    assert lin.input_threshold.grad.abs().sum() > 0


def test_switches_combine_with_every_method():
    for name in ('xnor', 'xnor++', 'bireal', 'irnet', 'react'):
        lin = BiLinear(4, 2, method=f'{name}+lsr')
        assert lin.scale is not None
        lin.train()
        lin(torch.randn(16, 4))  # LSR initializes on top of the method
        assert lin.scale_initialized and lin.scale.item() != 1.0


def test_pack_problem_names_the_reason():
    assert resolve_method('bipointnet').pack_problem() is None
    for name in ('bnn', 'xnor++', 'bireal', 'irnet'):
        assert resolve_method(name + '+ema').pack_problem() is None
    assert 'magnitude' in resolve_method('xnor').pack_problem()
    # RSign and RPReLU fold (pack refuses an RPReLU with a slope <= 0).
    assert resolve_method('react+ema').pack_problem() is None
    assert resolve_method('bnn').replace(
        activation='rprelu').pack_problem() is None
    assert 'full precision' in resolve_method('fp').pack_problem()

    class Custom(BinaryMethod):
        def binarize_weight(self, weight, layer=None):
            return super().binarize_weight(weight * 2, layer)

    assert "overrides 'binarize_weight'" in Custom('c').pack_problem()


def test_activation_is_declared_and_validated():
    assert resolve_method('react').activation == 'rprelu'
    assert resolve_method('react+ema+lsr').activation == 'rprelu'
    for name in ('fp', 'bipointnet', 'bnn', 'xnor', 'xnor++', 'bireal',
                 'irnet'):
        assert resolve_method(name).activation is None, name
    with pytest.raises(ValueError, match="unknown activation 'prelu' "
                       "\\(available: None, rprelu\\)"):
        BinaryMethod('mine', activation='prelu')
