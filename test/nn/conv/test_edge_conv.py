import copy

import pytest
import torch
import torch_cluster
from torch_geometric.nn import EdgeConv
from torch_geometric.utils import degree

from torch_geometric_binary.nn import (BiDynamicEdgeConv, BiEdgeConv, BiMLP,
                                       EMAMaxAggregation)
from torch_geometric_binary.nn.functional import ema_delta


def test_edge_conv_forward_backward_and_offsets(cloud_batch):
    data = cloud_batch
    conv = BiEdgeConv(BiMLP([2 * 3, 16, 16], first_fp=True,
                            plain_last=False))
    edge_index = torch_cluster.knn_graph(data.pos, 6, data.batch)
    out = conv(data.pos, edge_index)
    assert out.shape == (data.num_nodes, 16)
    out.square().mean().backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name

    conv.eval()
    ref = EdgeConv(conv.nn).eval()
    deg = degree(edge_index[1], data.num_nodes).long()
    expected = ref(data.pos, edge_index) - ema_delta(deg).view(-1, 1)
    assert torch.allclose(conv(data.pos, edge_index), expected, atol=1e-5)


def test_dynamic_edge_conv_matches_edge_conv_on_knn_graph(cloud_batch):
    data = cloud_batch
    k = 20  # larger than the 9-point and 17-point clouds of the batch
    conv = BiDynamicEdgeConv(BiMLP([2 * 4, 32, 32], first_fp=True,
                                   plain_last=False), k=k)
    assert isinstance(conv.aggr_module, EMAMaxAggregation)
    assert 'k=20' in str(conv)
    out = conv(data.x, data.batch)
    assert out.shape == (data.num_nodes, 32)
    out.square().mean().backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name

    conv.eval()
    edge_index = torch_cluster.knn(data.x, data.x, k, data.batch,
                                   data.batch).flip([0])
    # Neighbourhoods include the point itself, never cross clouds, and
    # small clouds give smaller groups.
    assert bool((edge_index[0] == edge_index[1]).any())
    assert torch.equal(data.batch[edge_index[0]], data.batch[edge_index[1]])
    deg = degree(edge_index[1], data.num_nodes).long()
    sizes = torch.bincount(data.batch)
    assert torch.equal(deg, sizes.clamp(max=k)[data.batch])
    expected = BiEdgeConv(conv.nn).eval()(data.x, edge_index)
    assert torch.allclose(conv(data.x, data.batch), expected, atol=1e-5)


def test_bad_inputs_raise(cloud_batch):
    data = cloud_batch
    conv = BiDynamicEdgeConv(BiMLP([2 * 4, 8], plain_last=False), k=4)
    with pytest.raises(ValueError, match="'batch' has 3 entries"):
        conv(data.x, data.batch[:3])
    x = data.x.clone()
    x[0, 0] = float('inf')
    with pytest.raises(ValueError, match='NaN or Inf'):
        conv(x, data.batch)
    with pytest.raises(ValueError, match='k >= 1'):
        BiDynamicEdgeConv(conv.nn, k=0)
    with pytest.raises(ValueError, match='expects inputs with 8 channels'):
        conv(data.x[:, :3], data.batch)


def test_compile_matches_eager(cloud_batch):
    data = cloud_batch
    edge_index = torch_cluster.knn_graph(data.x, 5, data.batch)
    cases = [(BiEdgeConv(BiMLP([8, 16], plain_last=False)), edge_index),
             (BiDynamicEdgeConv(BiMLP([8, 16], plain_last=False), k=5),
              data.batch),
             (BiDynamicEdgeConv(BiMLP([8, 16], plain_last=False), k=5,
                                metric='hamming'), data.batch)]
    for conv, arg in cases:
        conv(data.x, arg)  # LSR init
        conv.eval()
        compiled = torch.compile(conv)
        assert torch.allclose(compiled(data.x, arg), conv(data.x, arg),
                              atol=1e-5)


@pytest.mark.parametrize('method', ['fp', 'bipointnet'])
def test_fused_dense_neighbourhoods_match_message_passing(method):
    from torch_geometric_binary.nn.fused import use_fused
    torch.manual_seed(3)
    pos = torch.rand(3 * 40, 3)
    batch = torch.arange(3).repeat_interleave(40)
    mlp = BiMLP([6, 16, 16, 24], method, first_fp=True, norm_last=True)
    conv = BiDynamicEdgeConv(mlp, k=8, aggr=EMAMaxAggregation())
    ref = copy.deepcopy(conv)  # LSR scales still to be initialized
    x = pos.clone().requires_grad_()
    x_ref = pos.clone().requires_grad_()
    out = conv(x, batch)
    with use_fused(False):
        expected = ref(x_ref, batch)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-3)
    for (name, p), p_ref in zip(conv.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-4, rtol=1e-3,
                                   msg=name)
    for b, b_ref in zip(conv.buffers(), ref.buffers()):
        torch.testing.assert_close(b, b_ref)


def test_pyg_signatures_keep_the_ema_max():
    from torch_geometric.nn.aggr import MaxAggregation
    # PyG's DGCNN example: DynamicEdgeConv(MLP(...), k, aggr).
    conv = BiDynamicEdgeConv(BiMLP([6, 16]), 20, 'max')
    assert isinstance(conv.aggr_module, EMAMaxAggregation)
    assert isinstance(BiEdgeConv(BiMLP([6, 16]), aggr='max').aggr_module,
                      EMAMaxAggregation)
    plain = BiEdgeConv(BiMLP([6, 16]), aggr=MaxAggregation())
    assert type(plain.aggr_module) is MaxAggregation  # explicit: kept
    with pytest.raises(ValueError, match="aggr='max'"):
        BiEdgeConv(BiMLP([6, 16]), aggr='mean')
    with pytest.raises(TypeError, match='num_workers by'):
        BiDynamicEdgeConv(BiMLP([6, 16]), 20, 1)


@pytest.mark.parametrize('method', ['bipointnet', 'react+ema'])
def test_dynamic_edge_conv_hamming_graph(cloud_batch, method):
    from torch_geometric_binary.nn.neighbors import knn_hamming_edges
    from torch_geometric_binary.utils.bits import pack_bool
    data = cloud_batch
    k = 12
    conv = BiDynamicEdgeConv(BiMLP([2 * 4, 32], method, plain_last=False),
                             k=k, metric='hamming')
    ref = BiEdgeConv(conv.nn)  # Before the thresholds: it resets nn.
    assert "metric='hamming'" in str(conv)
    theta = conv.nn.lins[0].input_threshold
    if theta is not None:  # ReAct: the codes are taken at the thresholds.
        with torch.no_grad():
            theta.normal_(0, 0.5)
    codes = pack_bool(data.x - (0 if theta is None else theta[:4].detach())
                      >= 0)
    assert torch.equal(conv.codes(data.x), codes)
    edge_index = knn_hamming_edges(codes, codes, k, data.batch, data.batch)
    assert torch.equal(conv.knn_graph((data.x, data.x),
                                      (data.batch, data.batch)), edge_index)
    # It differs from the Euclidean graph on the features.
    euclidean = copy.copy(conv)
    euclidean.metric = 'euclidean'
    assert not torch.equal(euclidean.knn_graph(
        (data.x, data.x), (data.batch, data.batch)), edge_index)
    out = conv(data.x, data.batch)
    out.square().mean().backward()
    conv.eval()
    expected = ref.eval()(data.x, edge_index)
    assert torch.allclose(conv(data.x, data.batch), expected, atol=1e-5)


def test_dynamic_edge_conv_hamming_needs_a_binary_first_layer():
    with pytest.raises(ValueError, match="first layer is binary"):
        BiDynamicEdgeConv(BiMLP([8, 16], first_fp=True), k=4,
                          metric='hamming')
    with pytest.raises(ValueError, match="first layer is binary"):
        BiDynamicEdgeConv(BiMLP([8, 16], 'fp'), k=4, metric='hamming')
    with pytest.raises(ValueError, match="unknown metric 'cosine'"):
        BiDynamicEdgeConv(BiMLP([8, 16]), k=4, metric='cosine')
