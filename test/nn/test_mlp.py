import pytest
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
