import copy

import pytest
import torch
from torch_geometric.nn import Linear

from torch_geometric_binary.nn import (BiLinear, BiMLP, RPReLU,
                                       global_ema_max_pool, resolve_method)
from torch_geometric_binary.nn.fused import use_fused


def test_binary_mlp_layers():
    mlp = BiMLP([3, 64, 64, 10], first_fp=True, last_fp=True)
    assert [type(lin) for lin in mlp.lins] == [Linear, BiLinear, Linear]
    assert isinstance(mlp.act, torch.nn.Hardtanh)
    assert len(mlp.norms) == 2
    assert str(mlp) == 'BiMLP(3, 64, 64, 10, method=bipointnet)'
    # Binary layers followed by BatchNorm need no bias; the plain last does.
    assert mlp.lins[1].bias is None and mlp.lins[2].bias is not None

    all_binary = BiMLP([8, 16, 4], plain_last=False)
    assert all(isinstance(lin, BiLinear) for lin in all_binary.lins)
    assert len(all_binary.norms) == 2


def test_fp_method_is_plain_mlp():
    mlp = BiMLP([3, 16, 5], method='fp')
    assert all(type(lin) is Linear for lin in mlp.lins)
    assert isinstance(mlp.act, torch.nn.ReLU)


def test_forward_backward_reaches_every_parameter():
    mlp = BiMLP([3, 32, 32, 7], first_fp=True, dropout=0.1)
    x = torch.randn(50, 3)
    out = mlp(x)
    assert out.shape == (50, 7)
    out.square().mean().backward()
    for name, param in mlp.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_reset_parameters_resets_scales():
    mlp = BiMLP([4, 8, 8])
    mlp(torch.randn(16, 4))
    assert mlp.lins[0].scale_initialized
    mlp.reset_parameters()
    assert not mlp.lins[0].scale_initialized
    assert mlp.lins[0].scale.item() == 1.0


def test_bnn_mlp_has_no_scales():
    mlp = BiMLP([4, 8, 8], method='bnn')
    assert all(lin.scale is None for lin in mlp.lins)


def test_pyg_keyword_form_and_embedding():
    from torch_geometric.nn import MLP
    mlp = BiMLP(16, hidden_channels=32, out_channels=8, num_layers=3)
    ref = MLP(16, hidden_channels=32, out_channels=8, num_layers=3)
    assert mlp.channel_list == ref.channel_list == [16, 32, 32, 8]
    assert BiMLP(in_channels=4, hidden_channels=6, num_layers=2)\
        .channel_list == [4, 6, 6]
    out, emb = mlp(torch.randn(10, 16), return_emb=True)
    assert out.shape == (10, 8) and emb.shape == (10, 32)
    torch.testing.assert_close(mlp.lins[-1](emb), out)
    with pytest.raises(ValueError, match='lazy -1'):
        BiMLP([-1, 16, 8])
    with pytest.raises(ValueError, match="'num_layers'"):
        BiMLP(16, out_channels=8)


@pytest.mark.parametrize('method', ['fp', 'bipointnet'])
def test_hidden_outputs(method):
    mlp = BiMLP([3, 8, 16, 4], method, first_fp=True, norm_last=True).eval()
    x = torch.randn(10, 3)
    outs = mlp.hidden_outputs(x)
    assert [o.shape for o in outs] == [(10, 8), (10, 16)]
    # Layer by layer, as forward computes them.
    first = mlp.act(mlp.norms[0](mlp.lins[0](x)))
    torch.testing.assert_close(outs[0], first)
    torch.testing.assert_close(mlp.hidden(x), outs[-1])
    torch.testing.assert_close(mlp.output(outs[-1]), mlp(x))
    # Without a hidden layer: the input itself.
    one = BiMLP([3, 4], method)
    assert torch.equal(one.hidden_outputs(x)[0], x)


def test_react_has_one_rprelu_per_layer():
    mlp = BiMLP([3, 64, 128, 1024], 'react', first_fp=True, norm_last=True)
    assert mlp.act is None
    assert [type(a) for a in mlp.acts] == [RPReLU, RPReLU]
    assert [a.channels for a in mlp.acts] == [64, 128]
    # Without a plain last layer, every layer has its activation.
    full = BiMLP([8, 16, 4], 'react+ema', plain_last=False)
    assert [a.channels for a in full.acts] == [16, 4]
    assert str(full) == 'BiMLP(8, 16, 4, method=react+ema)'
    # Keyword arguments of the activation reach every module.
    slopes = BiMLP([4, 8, 8, 2], 'react', act_kwargs={'init': 0.5})
    assert all(torch.equal(a.beta.detach(), torch.full((8, ), 0.5))
               for a in slopes.acts)


def test_other_methods_keep_one_shared_activation():
    for method in ('bipointnet', 'bnn', 'xnor', 'irnet'):
        mlp = BiMLP([4, 8, 16, 2], method)
        acts = [m for m in mlp.modules()
                if isinstance(m, (torch.nn.Hardtanh, RPReLU))]
        assert len(acts) == 1 and type(acts[0]) is torch.nn.Hardtanh
        assert mlp.act is acts[0] and mlp.acts is None
    assert type(BiMLP([4, 8, 2], 'fp').act) is torch.nn.ReLU
    # An explicit activation still wins over the method's.
    assert type(BiMLP([4, 8, 2], 'react', act='hardtanh').act) is \
        torch.nn.Hardtanh


def test_rprelu_must_come_from_the_method():
    with pytest.raises(ValueError, match="method 'bnn' does not"):
        BiMLP([4, 8, 2], 'bnn', act='rprelu')
    bnn_rprelu = resolve_method('bnn').replace(activation='rprelu')
    assert len(BiMLP([4, 8, 2], bnn_rprelu, act='RPReLU').acts) == 1


def _perturb(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split('.')[-1] in ('gamma', 'zeta', 'input_threshold'):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif name.endswith('beta') and p.dim() == 1 and \
                    name.startswith('acts'):
                p.copy_(torch.rand(p.shape, generator=g))


def test_react_forward_applies_each_layers_rprelu():
    mlp = BiMLP([6, 16, 12, 5], 'react').eval()
    _perturb(mlp)
    x = torch.randn(20, 6)
    h = x
    for i in range(2):
        h = mlp.acts[i](mlp.norms[i](mlp.lins[i](h)))
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.lins[2](h))
    mlp.train()
    mlp(x).square().mean().backward()
    for a in mlp.acts:
        for p in a.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_react_reset_and_state_dict_round_trip():
    mlp = BiMLP([6, 16, 12, 5], 'react')
    _perturb(mlp)
    mlp(torch.randn(30, 6))  # LSR scales and running statistics.
    other = BiMLP([6, 16, 12, 5], 'react')
    assert {k for k in other.state_dict() if '.gamma' in k} == \
        {'acts.0.gamma', 'acts.1.gamma'}
    other.load_state_dict(mlp.state_dict())
    x = torch.randn(10, 6)
    mlp.eval()
    other.eval()
    with torch.no_grad():
        assert torch.equal(mlp(x), other(x))
    # A model saved without RPReLU (the earlier 'react') does not load
    # silently.
    with pytest.raises(RuntimeError, match='acts.0.gamma'):
        other.load_state_dict(BiMLP([6, 16, 12, 5], 'bireal').state_dict())
    mlp.reset_parameters()
    assert all(torch.equal(a.zeta, torch.zeros_like(a.zeta))
               for a in mlp.acts)


@pytest.mark.parametrize('ema', [False, True])
def test_react_max_pool_fused_matches_unfused(ema, monkeypatch):
    r"""The fused last layer, BatchNorm and max read the output of the
    per-layer RPReLUs and the RSign thresholds of the last layer."""
    import torch_geometric_binary.nn.mlp as mlp_module
    calls = []
    fused = mlp_module.linear_norm_group_max
    monkeypatch.setattr(mlp_module, 'linear_norm_group_max',
                        lambda *args: calls.append(1) or fused(*args))
    mlp = BiMLP([8, 16, 32, 64], 'react', norm_last=True)
    _perturb(mlp)
    ref = copy.deepcopy(mlp)
    x = torch.randn(4 * 25, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    batch = torch.arange(4).repeat_interleave(25)
    out = mlp.max_pool(x, batch, 4, ema=ema)
    assert calls == [1]
    with use_fused(False):
        expected = ref.max_pool(x_ref, batch, 4, ema=ema)
        if ema:
            torch.testing.assert_close(
                expected, global_ema_max_pool(ref(x_ref), batch, 4))
    assert calls == [1]
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-3)
    for (name, p), q in zip(mlp.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3,
                                   msg=name)
