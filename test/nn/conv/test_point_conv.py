import pytest
import torch
import torch_cluster
from torch_geometric.nn import PointNetConv
from torch_geometric.utils import degree

from torch_geometric_binary.nn import BiMLP, BiPointConv, EMAMaxAggregation
from torch_geometric_binary.nn.functional import ema_delta


def set_abstraction(conv, x, pos, batch, ratio=0.5, r=0.4):
    r"""PyG's PointNet++ SA pattern: fps + radius, bipartite conv."""
    idx = torch_cluster.fps(pos, batch, ratio=ratio)
    row, col = torch_cluster.radius(pos, pos[idx], r, batch, batch[idx],
                                    max_num_neighbors=64)
    edge_index = torch.stack([col, row], dim=0)
    out = conv((x, x[idx]), (pos, pos[idx]), edge_index)
    return out, edge_index, idx


def make_conv(**kwargs):
    return BiPointConv(BiMLP([4 + 3, 32, 32], first_fp=True, plain_last=False),
                       BiMLP([32, 16], plain_last=False), **kwargs)


def test_set_abstraction_forward_backward(cloud_batch):
    conv = make_conv(add_self_loops=False)
    data = cloud_batch
    out, edge_index, idx = set_abstraction(conv, data.x, data.pos, data.batch)
    assert out.shape == (idx.numel(), 16)
    out.square().mean().backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert isinstance(conv.aggr_module, EMAMaxAggregation)
    assert 'EMAMaxAggregation' in str(conv) and 'BiMLP' in str(conv)


def test_ema_offset_is_per_neighbourhood(cloud_batch):
    data = cloud_batch
    conv = BiPointConv(BiMLP([4 + 3, 32, 32], first_fp=True,
                             plain_last=False), add_self_loops=False)
    conv.train()
    set_abstraction(conv, data.x, data.pos, data.batch)  # LSR init
    conv.eval()
    ref = PointNetConv(conv.local_nn, add_self_loops=False).eval()
    out, edge_index, idx = set_abstraction(conv, data.x, data.pos, data.batch)
    plain = ref((data.x, data.x[idx]), (data.pos, data.pos[idx]), edge_index)
    deg = degree(edge_index[1], idx.numel()).long()
    assert deg.unique().numel() > 1  # neighbourhood sizes really vary
    expected = plain - ema_delta(deg).view(-1, 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_self_loops_counted_in_group_size():
    pos = torch.rand(5, 3)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    conv = BiPointConv(BiMLP([3, 8], method='fp', plain_last=True)).eval()
    ref = PointNetConv(conv.local_nn).eval()
    # With self-loops: nodes 1..3 have 2 members, nodes 0 and 4 have 1.
    diff = ref(None, pos, edge_index) - conv(None, pos, edge_index)
    expected = torch.tensor([0.0, ema_delta(2), ema_delta(2), ema_delta(2),
                             0.0])
    assert torch.allclose(diff, expected.view(-1, 1).expand_as(diff),
                          atol=1e-6)


def test_bad_inputs_raise(cloud_batch):
    conv = make_conv()
    data = cloud_batch
    edge_index = torch.tensor([[0, 1], [1, 0]])
    pos = data.pos.clone()
    pos[3, 0] = float('nan')
    with pytest.raises(ValueError, match=r"NaN or Inf coordinates \(first "
                       r"at row 3\)"):
        conv(data.x, pos, edge_index)
    with pytest.raises(ValueError, match="'x\\[0\\]' has 10 rows"):
        conv(data.x[:10], data.pos, edge_index)
    with pytest.raises(ValueError, match='expects inputs with 7 channels'):
        conv(data.x[:, :3], data.pos, edge_index)


def test_compile_matches_eager(cloud_batch):
    data = cloud_batch
    conv = make_conv(add_self_loops=False)
    set_abstraction(conv, data.x, data.pos, data.batch)
    conv.eval()
    idx = torch_cluster.fps(data.pos, data.batch, ratio=0.5)
    row, col = torch_cluster.radius(data.pos, data.pos[idx], 0.4, data.batch,
                                    data.batch[idx])
    args = ((data.x, data.x[idx]), (data.pos, data.pos[idx]),
            torch.stack([col, row]))
    compiled = torch.compile(conv)
    assert torch.allclose(compiled(*args), conv(*args), atol=1e-5)


@pytest.mark.parametrize('method', ['fp', 'bipointnet'])
def test_fused_neighbourhoods_match_message_passing(method):
    import copy
    from torch_geometric_binary.nn.fused import use_fused
    torch.manual_seed(5)
    pos = torch.rand(2 * 60, 3)
    batch = torch.arange(2).repeat_interleave(60)
    x = torch.randn(pos.size(0), 4)
    conv = BiPointConv(BiMLP([7, 16, 24], method, first_fp=True,
                             norm_last=True), torch.nn.Hardtanh(),
                       add_self_loops=False)
    ref = copy.deepcopy(conv)
    inputs = [t.clone().requires_grad_() for t in (x, pos)]
    inputs_ref = [t.clone().requires_grad_() for t in (x, pos)]

    idx = torch_cluster.fps(pos, batch, ratio=0.5, random_start=False)
    row, col = torch_cluster.radius(pos, pos[idx], 0.4, batch, batch[idx],
                                    max_num_neighbors=64)
    edge_index = torch.stack([col, row], dim=0)
    counts = degree(edge_index[1], dtype=torch.long)
    assert counts.min() >= 1 and counts.max() > counts.min()  # ragged

    def run(module, x, pos):
        return module((x, x[idx]), (pos, pos[idx]), edge_index)

    out = run(conv, *inputs)
    with use_fused(False):
        expected = run(ref, *inputs_ref)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    for got, want in zip(inputs, inputs_ref):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-4, rtol=1e-3)
    for (name, p), p_ref in zip(conv.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-4, rtol=1e-3,
                                   msg=name)
