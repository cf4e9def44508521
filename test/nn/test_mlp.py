import torch
from torch_geometric.nn import Linear

from torch_geometric_binary.nn import BiLinear, BiMLP


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
