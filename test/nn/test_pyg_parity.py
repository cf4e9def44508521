r"""The drop-in operators against the PyG operators they replace, on the
same inputs and weights: every difference is the one by design (the EMA
shift :math:`-\delta(n)` of each max group, binary values), asserted as
such."""
import copy

import pytest
import torch
from torch_geometric.nn import MLP, global_max_pool
from torch_geometric.nn.aggr import MaxAggregation
from torch_geometric.nn.conv import EdgeConv, PointNetConv
from torch_geometric.utils import degree, remove_self_loops

from torch_geometric_binary.nn import (BiDynamicEdgeConv, BiEdgeConv, BiMLP,
                                       BiPointConv, EMAMaxAggregation,
                                       global_ema_max_pool)
from torch_geometric_binary.nn.functional import ema_delta
from torch_geometric_binary.nn.neighbors import knn_edges


def fp_net(channels):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(channels[0], channels[1]),
                               torch.nn.ReLU(),
                               torch.nn.Linear(channels[1], channels[2]))


def same_weights(theirs, ours):
    # Both constructors reset their networks (PyG's reset_parameters).
    theirs.load_state_dict(ours.state_dict())
    return theirs


def graph(num_nodes=12, num_edges=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    dst = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    dst[:num_nodes] = torch.arange(num_nodes)  # No target without edges.
    return torch.stack([src, dst])


def delta_per_node(sizes):
    return ema_delta(sizes.clamp_min(1)).unsqueeze(-1)


def group_sizes_with_loops(edge_index, num_targets):
    r"""Neighbours per target after PyG's PointNetConv replaces the graph's
    self-loops by one loop per target."""
    edge_index, _ = remove_self_loops(edge_index)
    return degree(edge_index[1], num_targets) + 1


def test_point_conv_is_pyg_minus_the_ema_shift():
    x, pos = torch.randn(12, 4), torch.randn(12, 3)
    edge_index = graph()
    nn = fp_net([7, 16, 8])
    ours = BiPointConv(local_nn=nn)
    theirs = same_weights(PointNetConv(local_nn=copy.deepcopy(nn)), ours)
    sizes = group_sizes_with_loops(edge_index, 12)
    expected = theirs(x, pos, edge_index) - delta_per_node(sizes)
    torch.testing.assert_close(ours(x, pos, edge_index), expected)
    # Bipartite form, as in PointNet++'s set abstraction.
    idx = torch.tensor([0, 3, 5])
    bip = torch.stack([torch.arange(12), torch.arange(12) % 3])
    out = ours((x, x[idx]), (pos, pos[idx]), bip)
    ref = theirs((x, x[idx]), (pos, pos[idx]), bip)
    assert out.shape == ref.shape == (3, 8)
    sizes = group_sizes_with_loops(bip, 3)
    torch.testing.assert_close(out, ref - delta_per_node(sizes))


def test_edge_conv_is_pyg_minus_the_ema_shift():
    x = torch.randn(12, 5)
    edge_index = graph(seed=3)
    nn = fp_net([10, 16, 6])
    ours = BiEdgeConv(nn)
    theirs = same_weights(EdgeConv(copy.deepcopy(nn), aggr='max'), ours)
    sizes = degree(edge_index[1], 12)
    torch.testing.assert_close(ours(x, edge_index),
                               theirs(x, edge_index) - delta_per_node(sizes))


def test_dynamic_edge_conv_is_pyg_edge_conv_on_the_knn_graph():
    x = torch.randn(30, 3)
    batch = torch.arange(2).repeat_interleave(15)
    nn = fp_net([6, 16, 6])
    ours = BiDynamicEdgeConv(nn, 5, 'max')  # PyG's positional form
    theirs = same_weights(EdgeConv(copy.deepcopy(nn), aggr='max'), ours)
    edge_index = knn_edges(x, x, 5, batch, batch)
    expected = theirs(x, edge_index) - ema_delta(5)
    torch.testing.assert_close(ours(x, batch), expected)


def test_max_aggregation_and_global_pool_are_pyg_minus_the_shift():
    x = torch.randn(20, 7)
    index = torch.tensor([0] * 3 + [1] * 9 + [3] * 8)  # group 2 is empty
    ref = MaxAggregation()(x, index, dim_size=4)
    out = EMAMaxAggregation()(x, index, dim_size=4)
    sizes = torch.bincount(index, minlength=4)
    shift = torch.where(sizes > 0, ema_delta(sizes.clamp_min(1)),
                        torch.zeros(4)).unsqueeze(-1)
    torch.testing.assert_close(out, ref - shift)
    assert torch.equal(out[2], torch.zeros(7))  # empty group: 0, as PyG
    batch = torch.tensor([0] * 8 + [1] * 12)
    torch.testing.assert_close(
        global_ema_max_pool(x, batch),
        global_max_pool(x, batch) - ema_delta(torch.tensor([8, 12]))
        .unsqueeze(-1))
    # Dense input [B, N, C] without batch: same shape as PyG's.
    dense = torch.randn(3, 16, 32)
    assert global_ema_max_pool(dense, None).shape == \
        global_max_pool(dense, None).shape
    torch.testing.assert_close(global_ema_max_pool(dense, None),
                               global_max_pool(dense, None) - ema_delta(16))


@pytest.mark.parametrize('kwargs', [
    {'channel_list': [8, 16, 16, 4]},
    {'in_channels': 8, 'hidden_channels': 16, 'out_channels': 4,
     'num_layers': 3},
])
def test_full_precision_mlp_is_pyg_mlp(kwargs):
    torch.manual_seed(0)
    theirs = MLP(**kwargs)
    # PyG's default: a bias on every layer. BiMLP's default drops the
    # biases a BatchNorm makes redundant; asked for, they are there.
    ours = BiMLP(**kwargs, method='fp', bias=True)
    ours.load_state_dict(theirs.state_dict())
    theirs.eval()
    ours.eval()
    x = torch.randn(10, 8)
    assert torch.equal(ours(x), theirs(x))
    out, emb = ours(x, return_emb=True)
    ref_out, ref_emb = theirs(x, return_emb=True)
    assert torch.equal(out, ref_out) and torch.equal(emb, ref_emb)


def test_binary_mlp_keeps_pyg_mlp_interface_with_binary_values():
    mlp = BiMLP(in_channels=8, hidden_channels=16, out_channels=4,
                num_layers=3, method='bnn')
    x = torch.randn(10, 8)
    out = mlp(x)
    assert out.shape == (10, 4)
    # The hidden product is an integer sum of K = 16 signs: even values
    # between -16 and 16, before BatchNorm.
    h = mlp.lins[1].binary_forward(torch.randn(5, 16))
    assert torch.equal(h, h.round()) and bool((h.abs() <= 16).all())
    assert bool((h.remainder(2) == 0).all())
