import os

import pytest
import torch

from torch_geometric.data import Batch, Data
from torch_geometric.nn import global_mean_pool

from torch_geometric_binary.train import (cosine_lr_lambda, kd_loss,
                                          resolve_precision, train_epoch,
                                          weight_average)
from torch_geometric_binary.train.loop import (ONEDNN_CACHE_CAPACITY,
                                               bound_onednn_cache)

ENV = 'ONEDNN_PRIMITIVE_CACHE_CAPACITY'


def test_bf16_on_cpu_caps_the_onednn_kernel_cache(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_precision('fp32', torch.device('cpu')) == 'fp32'
    assert ENV not in os.environ
    assert resolve_precision('bf16', torch.device('cpu')) == 'bf16'
    assert os.environ[ENV] == str(ONEDNN_CACHE_CAPACITY)
    monkeypatch.setenv(ENV, '7')  # A user's own setting wins.
    bound_onednn_cache()
    assert os.environ[ENV] == '7'


def test_unknown_precision():
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        resolve_precision('fp8', torch.device('cpu'))
    with pytest.raises(ValueError, match='fp16 mixed precision needs a CUDA'):
        resolve_precision('fp16', torch.device('cpu'))


def test_kd_loss_and_cosine_schedule():
    F = torch.nn.functional
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(kd_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    T, a = 3.0, 0.7
    kl = (F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) -
                                  F.log_softmax(s / T, -1))).sum(-1).mean()
    expected = (1 - a) * F.cross_entropy(s, y) + a * T**2 * kl
    assert torch.allclose(kd_loss(s, t, y, a, T), expected, atol=1e-6)

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7,
                                                     eta_min=0.01)
    fn = cosine_lr_lambda(7, 0.01 / 0.1)
    for epoch in range(1, 8):
        opt.step()
        ref.step()
        assert 0.1 * fn(epoch) == pytest.approx(opt.param_groups[0]['lr'])


def test_weight_average_is_the_ema_of_every_step():
    r""":func:`train_epoch` updates the average after each optimizer step:
    weights and normalization statistics follow
    ``avg = d * avg + (1 - d) * current`` from the first step's values."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)
            self.norm = torch.nn.BatchNorm1d(4)

        def forward(self, pos, batch):
            return global_mean_pool(self.norm(self.lin(pos)), batch)

    torch.manual_seed(0)
    loader = [
        Batch.from_data_list([
            Data(pos=torch.randn(5, 3) + i, y=torch.tensor([j % 4]))
            for j in range(3)
        ]) for i in range(4)
    ]
    model, d = Net(), 0.7
    averaged = weight_average(model, d)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots = []
    opt.register_step_post_hook(lambda *_: snapshots.append({
        k: v.detach().clone()
        for k, v in model.state_dict().items() if v.is_floating_point()
    }))
    train_epoch(model, loader, opt, torch.device('cpu'), averaged=averaged)
    assert len(snapshots) == 4 and int(averaged.n_averaged) == 4
    expected = dict(snapshots[0])
    for snap in snapshots[1:]:
        expected = {k: d * expected[k] + (1 - d) * snap[k] for k in snap}
    state = averaged.module.state_dict()
    for k, v in expected.items():  # lin.weight/bias, norm.* and running_*.
        torch.testing.assert_close(state[k], v)
    assert not torch.equal(state['lin.weight'], model.lin.weight)
    assert not torch.equal(state['norm.running_mean'],
                           model.norm.running_mean)
    with pytest.raises(ValueError, match='decay must lie in'):
        weight_average(model, 1.0)
