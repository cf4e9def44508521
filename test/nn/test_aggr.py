import pytest
import torch
from torch_geometric.nn import global_max_pool

from torch_geometric_binary.nn import EMAMaxAggregation, global_ema_max_pool
from torch_geometric_binary.nn.functional import ema_delta


def _groups(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)),
                                   torch.tensor(sizes))


def test_variable_group_sizes_each_get_their_own_delta():
    sizes = [1, 20, 64, 7]
    index = _groups(sizes)
    x = torch.randn(index.numel(), 5)
    out = EMAMaxAggregation()(x, index)
    for g, n in enumerate(sizes):
        expected = x[index == g].max(dim=0).values - ema_delta(n)
        assert torch.allclose(out[g], expected, atol=1e-6)


def test_ptr_index_and_unsorted_index_agree():
    sizes = [3, 5, 2]
    index = _groups(sizes)
    ptr = torch.tensor([0, 3, 8, 10])
    x = torch.randn(10, 4)
    aggr = EMAMaxAggregation()
    by_index = aggr(x, index)
    assert torch.allclose(aggr(x, ptr=ptr), by_index)
    perm = torch.randperm(10)
    assert torch.allclose(aggr(x[perm], index[perm], dim_size=3), by_index)


def test_empty_group_gives_zero_like_max_aggregation():
    index = torch.tensor([0, 0, 2])
    out = EMAMaxAggregation()(torch.randn(3, 2), index, dim_size=4)
    assert torch.equal(out[1], torch.zeros(2))
    assert torch.equal(out[3], torch.zeros(2))


def test_other_dims():
    x = torch.randn(2, 6, 3)
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    out = EMAMaxAggregation()(x, index, dim=1)
    assert out.shape == (2, 2, 3)
    assert torch.allclose(out[:, 0], x[:, :3].max(dim=1).values -
                          ema_delta(3))


def test_pooled_sign_balanced_within_one_batch():
    sizes = [20] * 300 + [64] * 300 + [1024] * 100
    index = _groups(sizes)
    x = torch.randn(index.numel(), 16)
    ema = EMAMaxAggregation()(x, index) >= 0
    plain = global_max_pool(x, index) >= 0
    assert plain.float().mean() > 0.99
    for lo, hi in [(0, 300), (300, 600), (600, 700)]:
        assert abs(ema[lo:hi].float().mean() - 0.5) < 0.05


def test_global_pool_matches_global_max_pool_minus_delta():
    sizes = [10, 30, 5]
    batch = _groups(sizes)
    x = torch.randn(45, 8)
    out = global_ema_max_pool(x, batch)
    delta = torch.tensor([ema_delta(n) for n in sizes]).view(-1, 1)
    assert torch.allclose(out, global_max_pool(x, batch) - delta)
    single = global_ema_max_pool(x, None)
    assert single.shape == (1, 8)
    assert torch.allclose(single, x.max(0, keepdim=True).values -
                          ema_delta(45))


def test_bad_inputs_raise():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="'batch' has 5 entries"):
        global_ema_max_pool(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r'cloud\(s\) \[1\] of 3'):
        global_ema_max_pool(x, torch.tensor([0, 0, 0, 2, 2, 2]))
    with pytest.raises(ValueError, match=r'cloud\(s\) \[1, 2\] of 3'):
        global_ema_max_pool(x, torch.zeros(6, dtype=torch.long), size=3)
    with pytest.raises(ValueError, match='empty input'):
        global_ema_max_pool(torch.randn(0, 3), None)
    x[2, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        global_ema_max_pool(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match='NaN or Inf'):
        EMAMaxAggregation()(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match='5 group indices for 6'):
        EMAMaxAggregation()(x, torch.zeros(5, dtype=torch.long), dim_size=1)


def test_compile_matches_eager():
    index = _groups([4, 9, 1])
    x = torch.randn(14, 6)
    aggr = EMAMaxAggregation()
    compiled = torch.compile(aggr)
    assert torch.allclose(compiled(x, index, dim_size=3), aggr(x, index))
    pool = torch.compile(global_ema_max_pool)
    assert torch.allclose(pool(x, index, 3), global_ema_max_pool(x, index))


def test_dense_fast_path_matches_scatter_values_and_gradients():
    from torch_geometric.utils import scatter

    from torch_geometric_binary.nn.aggr import global_max_pool, segment_max
    batch = torch.arange(4).repeat_interleave(25)  # equal, sorted clouds
    x = torch.randn(100, 6, requires_grad=True)
    count = torch.full((4, ), 25)
    out = segment_max(x, batch, 4, 0, count)
    ref_x = x.detach().clone().requires_grad_()
    ref = scatter(ref_x, batch, 0, 4, reduce='max')
    assert torch.equal(out, ref)
    out.sum().backward()
    ref.sum().backward()
    assert torch.equal(x.grad, ref_x.grad)
    assert torch.equal(global_max_pool(x, batch), ref)
    # Ties (binary layers give few distinct values) share the gradient
    # evenly, as in the scatter max.
    x = torch.randint(-2, 3, (100, 6)).float().requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    g = torch.randn(4, 6)
    segment_max(x, batch, 4, 0, count).backward(g)
    scatter(ref_x, batch, 0, 4, reduce='max').backward(g)
    assert torch.allclose(x.grad, ref_x.grad)
    assert (x.grad != 0).sum() > 4 * 6  # There were ties.
    x = torch.randn(100, 6, requires_grad=True)
    ref = scatter(x.detach(), batch, 0, 4, reduce='max')
    # Unsorted or unequal groups take the scatter path, same result.
    perm = torch.randperm(100)
    assert torch.equal(global_max_pool(x[perm], batch[perm], 4), ref)
    assert torch.allclose(global_ema_max_pool(x, batch),
                          ref - ema_delta(25))


def test_dense_input_pools_like_pyg():
    x = torch.randn(3, 16, 32)
    out = global_ema_max_pool(x, None)
    assert out.shape == global_max_pool(x, None).shape == (3, 32)
    torch.testing.assert_close(out, x.amax(1) - ema_delta(16))
