import pytest
import torch

from torch_geometric_binary.nn import BiLinear, BiMLP, init_lsr_scales
from torch_geometric_binary.nn.functional import sign


def test_init_lsr_scales_uses_each_layers_own_input():
    mlp = BiMLP([8, 32, 32, 4], first_fp=True).eval()
    x = torch.randn(128, 8)
    # What each binary layer sees in training mode.
    inputs = {}
    hooks = [lin.register_forward_pre_hook(
        lambda mod, inp: inputs.__setitem__(mod, inp[0].detach()))
        for lin in mlp.lins if isinstance(lin, BiLinear)]
    stats = {k: v.clone() for k, v in mlp.state_dict().items()
             if 'running' in k}

    assert init_lsr_scales(mlp, x) == 2
    for h in hooks:
        h.remove()
    assert not mlp.training  # mode restored
    for k, v in stats.items():  # running statistics restored
        assert torch.equal(mlp.state_dict()[k], v), k
    for lin, inp in inputs.items():
        fp = inp @ lin.weight.t()
        binary = sign(inp) @ sign(lin.weight - lin.weight.mean()).t()
        assert torch.allclose(lin.scale, fp.std() / binary.std(), rtol=1e-5)


def test_init_lsr_scales_reports_unreached_layers():
    class TwoBranches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used = BiLinear(4, 4)
            self.unused = BiLinear(4, 4)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(RuntimeError, match='1 of 2 BiLinear layers'):
        init_lsr_scales(TwoBranches(), torch.randn(8, 4))
