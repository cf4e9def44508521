import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_geometric_binary.nn import BiLinear
from torch_geometric_binary.nn.functional import sign
from torch_geometric_binary.nn.linear import upgrade_scale


def test_forward_is_scaled_sign_product():
    lin = BiLinear(16, 8, bias=True)
    with torch.no_grad():
        lin.log_scale.fill_(math.log(0.25))
        lin.bias.uniform_()
    lin.scale_initialized = True
    x = torch.randn(10, 16)
    w = sign(lin.weight - lin.weight.mean())
    expected = 0.25 * (sign(x) @ w.t()) + lin.bias
    assert torch.allclose(lin(x), expected)
    assert str(lin) == ('BiLinear(16, 8, bias=True, scale=True, '
                        'method=bipointnet)')


def test_plain_layer_without_scale_gives_integers():
    lin = BiLinear(33, 5, scale=False)
    assert lin.scale is None and lin.log_scale is None
    assert not any('scale' in k for k in lin.state_dict())
    out = lin(torch.randn(7, 33))
    assert torch.equal(out, out.round())
    assert bool(((out + 33) % 2 == 0).all())  # K - 2 * popcount: same parity


def test_lsr_initialized_from_first_training_batch():
    lin = BiLinear(64, 32)
    x = torch.randn(256, 64) * 3
    fp_std = (x @ lin.weight.t()).std()
    bin_std = (sign(x) @ sign(lin.weight - lin.weight.mean()).t()).std()
    lin.train()
    out = lin(x)
    assert lin.scale_initialized
    assert torch.allclose(lin.scale, fp_std / bin_std, rtol=1e-5)
    assert torch.allclose(out.std(), fp_std, rtol=1e-4)
    # A second batch does not re-initialize it.
    first = lin.scale.item()
    lin(torch.randn(256, 64) * 100)
    assert lin.scale.item() == first


def test_lsr_scale_trains_and_is_a_parameter():
    lin = BiLinear(8, 4)
    assert any(p is lin.log_scale for p in lin.parameters())
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    x, target = torch.randn(32, 8), torch.randn(32, 4)
    lin(x)  # initialization batch
    before = lin.scale.item()
    for _ in range(3):
        opt.zero_grad()
        loss = ((lin(x) - target)**2).mean()
        loss.backward()
        assert lin.log_scale.grad is not None and lin.log_scale.grad != 0
        assert lin.weight.grad.abs().sum() > 0
        opt.step()
    assert lin.scale.item() != before


def test_eval_mode_does_not_initialize():
    lin = BiLinear(8, 4).eval()
    lin(torch.randn(5, 8))
    assert not lin.scale_initialized and lin.scale.item() == 1.0
    lin.init_scale(torch.randn(64, 8))
    assert lin.scale_initialized and lin.scale.item() != 1.0


def test_state_dict_and_deepcopy_keep_the_scale():
    lin = BiLinear(8, 4)
    lin(torch.randn(32, 8))
    clone = copy.deepcopy(lin)
    assert clone.scale_initialized and torch.equal(clone.scale, lin.scale)
    fresh = BiLinear(8, 4)
    fresh.load_state_dict(lin.state_dict())
    assert fresh.scale_initialized
    x = torch.randn(3, 8)
    fresh.train()
    assert torch.equal(fresh(x), lin(x))  # no re-initialization on load


def test_gradients_reach_input_and_weight_through_ste():
    lin = BiLinear(6, 3)
    x = (torch.rand(20, 6) * 4 - 2).requires_grad_()
    lin(x).sum().backward()
    outside = x.detach().abs() > 1
    assert torch.all(x.grad[outside] == 0)
    assert x.grad[~outside].abs().sum() > 0
    assert lin.weight.grad.abs().sum() > 0


def test_bad_inputs_raise():
    lin = BiLinear(6, 3)
    with pytest.raises(ValueError, match='expects inputs with 6 channels'):
        lin(torch.randn(4, 5))
    with pytest.raises(ValueError, match='positive channel'):
        BiLinear(0, 3)
    with pytest.raises(ValueError, match="binary method"):
        BiLinear(3, 3, method='fp')


def test_compile_matches_eager():
    lin = BiLinear(16, 8, bias=True)
    x = torch.randn(12, 16)
    lin(x)
    lin.eval()
    compiled = torch.compile(lin)
    assert torch.allclose(compiled(x), lin(x))


DDP_WORKER = """
import json, os, sys, torch
from torch_geometric_binary.nn import BiLinear
from torch_geometric_binary.train import (cleanup_distributed,
                                          setup_distributed)
rank = setup_distributed('cpu').rank
torch.manual_seed(0)  # same initial weights on every rank
lin = BiLinear(16, 8)
model = torch.nn.parallel.DistributedDataParallel(lin)
torch.manual_seed(100 + rank)  # a different batch on every rank
x = torch.randn(64, 16) * (rank + 1)
model(x).sum().backward()
with open(os.path.join(sys.argv[1], f'{rank}.json'), 'w') as f:
    json.dump([lin.scale.item(), lin.log_scale.grad.item()], f)
cleanup_distributed()
"""


@pytest.mark.slow
def test_scale_initialization_agrees_across_ddp_ranks(tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, '-m', 'torch.distributed.run',
                    '--standalone', '--nproc_per_node=2', str(script),
                    str(tmp_path)], check=True, env=env, timeout=120,
                   capture_output=True, cwd=Path(__file__).parents[2])
    (s0, g0), (s1, g1) = [json.loads((tmp_path / f'{r}.json').read_text())
                          for r in range(2)]
    # Each rank saw another batch, yet both hold the averaged scale.
    assert s0 == pytest.approx(s1) and s0 != 1.0
    assert g0 == pytest.approx(g1)  # DDP averaged the scale's gradient


@pytest.mark.parametrize('old_scale', [0.3, -0.02])
def test_state_dict_with_linear_scale_loads_exactly(old_scale):
    # State dicts saved before log_scale hold 'scale', possibly negative
    # (a linear scale could cross zero).
    torch.manual_seed(0)
    lin = BiLinear(16, 8, bias=True)
    old = {'weight': lin.weight.detach().clone(),
           'bias': torch.randn(8), 'scale': torch.tensor(old_scale)}
    x = torch.randn(10, 16)
    w = sign(old['weight'] - old['weight'].mean())
    expected = old_scale * (sign(x) @ w.t()) + old['bias']
    lin.load_state_dict(old)
    assert lin.scale_initialized and lin.scale.item() > 0
    assert torch.allclose(lin.scale, torch.tensor(abs(old_scale)))
    assert torch.allclose(lin.train()(x), expected, atol=1e-6)
    assert 'scale' in old  # the caller's dict is left alone


def test_negative_linear_scale_without_weight_raises():
    state = {'scale': torch.tensor(-0.5)}
    with pytest.raises(ValueError, match="'scale' is negative"):
        upgrade_scale(state)


def test_scale_before_batch_norm_moves_by_a_bounded_factor():
    # Followed by a BatchNorm, the loss barely depends on the scale, and Adam
    # still takes full learning-rate steps on it: a linear scale drifted
    # (2.7x here, to zero in long runs); a log scale moves by at most about
    # exp(lr) per step.
    torch.manual_seed(0)
    lin, bn = BiLinear(32, 64), torch.nn.BatchNorm1d(64)
    head = torch.nn.Linear(64, 4)
    x = torch.randn(512, 32)
    y = (x[:, :2] > 0).long() @ torch.tensor([1, 2])
    lr, steps = 1e-3, 300
    params = [*lin.parameters(), *bn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    lin(x[:64])
    first = lin.scale.item()
    for _ in range(steps):
        idx = torch.randint(0, 512, (64, ))
        loss = torch.nn.functional.cross_entropy(
            head(bn(lin(x[idx])).relu()), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ratio = lin.scale.item() / first
    bound = math.exp(1.1 * lr * steps)
    assert 1 / bound < ratio < bound
    assert ratio != 1.0  # it does train


@pytest.mark.parametrize('k', [64, 300, 1024])
def test_binary_products_exact_under_autocast(k):
    lin = BiLinear(k, 32)
    x = torch.randn(100, k)
    x[:32] = lin.binary_weight().detach()  # Products of magnitude k.
    exact = lin.binary_forward(x)
    assert exact.abs().max() == k
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = lin.binary_forward(x)
        out = lin(x)
    assert low.dtype == torch.float32 and torch.equal(low, exact)
    # The scaled output is rounded once, to bf16.
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (exact * lin.scale).to(torch.bfloat16))


def test_backward_under_autocast_matches_fp32():
    lin = BiLinear(48, 16)
    x = torch.randn(64, 48, requires_grad=True)
    upstream = torch.randn(64, 16)
    lin(x).backward(upstream)
    ref = [x.grad.clone(), lin.weight.grad.clone(), lin.log_scale.grad.clone()]
    x.grad = None
    lin.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = lin(x)
    out.float().backward(upstream)
    got = [x.grad, lin.weight.grad, lin.log_scale.grad]
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, r, atol=0.05, rtol=0.02)


def test_loading_an_untrained_state_keeps_data_initialization():
    untrained = BiLinear(8, 4)
    fresh = BiLinear(8, 4)
    fresh.load_state_dict(untrained.state_dict())
    assert not fresh.scale_initialized
    fresh.train()
    fresh(torch.randn(64, 8))  # initializes from this batch
    assert fresh.scale_initialized and fresh.scale.item() != 1.0
    # A state saved before the flag was kept (no '_extra_state'): its scale
    # was trained.
    old = {k: v for k, v in fresh.state_dict().items()
           if not k.endswith('_extra_state')}
    other = BiLinear(8, 4)
    other.load_state_dict(old)
    assert other.scale_initialized
    assert torch.equal(other.scale, fresh.scale)


def test_eval_before_initialization_does_not_mark_it():
    lin = BiLinear(8, 4)
    lin.eval()
    lin(torch.randn(5, 8))
    state = lin.state_dict()
    assert state['_extra_state'] == {'scale_initialized': False}
    lin.train()
    lin(torch.randn(64, 8))
    assert lin.scale_initialized and lin.scale.item() != 1.0


@pytest.mark.parametrize('dtype,message', [
    (torch.long, 'floating-point inputs'),
    (torch.float64, 'the input is torch.float64 but the weights are '
     'torch.float32'),
    (torch.float16, 'the input is torch.float16'),
])
def test_wrong_input_dtype_is_named(dtype, message):
    lin = BiLinear(8, 4)
    with pytest.raises(ValueError, match=message):
        lin(torch.ones(3, 8).to(dtype))
    lin.double()
    assert lin(torch.ones(3, 8, dtype=torch.float64)).dtype == torch.float64


def test_torchscript_is_refused_with_a_clear_message():
    from torch_geometric_binary.nn import BiMLP, BiPointConv
    for module in (BiLinear(4, 3), BiPointConv(BiMLP([6, 8, 4]))):
        with pytest.raises(RuntimeError, match='does not support '
                           'TorchScript.*torch.compile, torch.export'):
            torch.jit.script(module)


def test_nan_initialization_batch_is_refused():
    lin = BiLinear(4, 3)
    bad = torch.randn(16, 4)
    bad[0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        lin(bad)
    assert not lin.scale_initialized
    lin(torch.randn(1, 4))  # one row: no spread to measure yet
    assert not lin.scale_initialized


def test_operands_are_declared_signs_without_an_activation_scale(
        monkeypatch):
    r"""A binary layer lets its product come from packed signs exactly when
    both operands are signs: not with XNOR-Net's activation scale."""
    from torch_geometric_binary.nn import functional
    seen = []
    product = functional.sign_product
    monkeypatch.setattr(functional, 'sign_product',
                        lambda x, w, signs=False: seen.append(signs) or
                        product(x, w, signs))
    x = torch.randn(10, 40)
    for method, signs in (('bipointnet', True), ('react', True),
                          ('xnor', False)):
        seen.clear()
        layer = BiLinear(40, 8, method=method)
        layer(x)
        layer.binary_forward(x)
        assert seen and all(s == signs for s in seen), method
