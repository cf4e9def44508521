r"""No graph breaks under torch.compile where PyG itself has none."""
import pytest
import torch
import torch._dynamo
import torch_cluster
from torch_geometric.nn import EdgeConv, PointNetConv
from torch_geometric.nn.aggr import MaxAggregation

from torch_geometric_binary.nn import (BiEdgeConv, BiLinear, BiMLP,
                                       BiPointConv, EMAMaxAggregation)


def graph_breaks(fn, *args) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


def test_bilinear_and_bimlp_compile_without_breaks():
    x = torch.randn(16, 8)
    lin = BiLinear(8, 4)
    lin(x)
    mlp = BiMLP([8, 16, 4], first_fp=True, norm_last=True)
    mlp(x)
    react = BiMLP([8, 16, 4], 'react', first_fp=True, norm_last=True)
    react(x)  # RPReLU's autograd.Function traces too.
    for module in [lin.eval(), mlp.eval(), react.eval()]:
        assert graph_breaks(module, x) == 0


def test_aggregation_breaks_no_more_than_max():
    x = torch.randn(30, 5)
    index = torch.arange(3).repeat_interleave(10)
    ours = graph_breaks(lambda x, i: EMAMaxAggregation()(x, i, dim_size=3),
                        x, index)
    pyg = graph_breaks(lambda x, i: MaxAggregation()(x, i, dim_size=3),
                       x, index)
    assert ours <= pyg


@pytest.mark.parametrize('kind', ['point', 'edge'])
def test_convs_break_no_more_than_pyg(kind):
    pos = torch.rand(40, 3)
    batch = torch.arange(2).repeat_interleave(20)
    edge_index = torch_cluster.knn_graph(pos, 6, batch)
    if kind == 'point':
        nn = BiMLP([3, 16], method='fp', plain_last=True)
        ours, pyg = BiPointConv(nn).eval(), PointNetConv(nn).eval()
        args = (None, pos, edge_index)
    else:
        nn = BiMLP([6, 16], plain_last=False)
        nn(torch.randn(8, 6))
        ours, pyg = BiEdgeConv(nn).eval(), EdgeConv(nn).eval()
        args = (pos, edge_index)
    assert graph_breaks(ours, *args) <= graph_breaks(pyg, *args)
