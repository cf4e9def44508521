r"""binarize(): PyG-style models (as PyG's own examples define them) made
binary by one call."""
import pytest
import torch
import torch.nn.functional as F
import torch_cluster
import torch_geometric.typing
from torch_geometric.nn import (MLP, DynamicEdgeConv, EdgeConv, PointNetConv,
                                global_max_pool)

from torch_geometric_binary import binarize
from torch_geometric_binary.nn import (BiDynamicEdgeConv, BiEdgeConv,
                                       BiLinear, BiMLP, BiPointConv,
                                       EMAMaxAggregation, global_ema_max_pool)


class SAModule(torch.nn.Module):  # PyG's pointnet2_classification.py
    def __init__(self, ratio, r, nn):
        super().__init__()
        self.ratio, self.r = ratio, r
        self.conv = PointNetConv(nn, add_self_loops=False)

    def forward(self, x, pos, batch):
        idx = torch_cluster.fps(pos, batch, ratio=self.ratio,
                                random_start=False)
        row, col = torch_cluster.radius(pos, pos[idx], self.r, batch,
                                        batch[idx], max_num_neighbors=64)
        edge_index = torch.stack([col, row], dim=0)
        x_dst = None if x is None else x[idx]
        x = self.conv((x, x_dst), (pos, pos[idx]), edge_index)
        return x, pos[idx], batch[idx]


class GlobalSAModule(torch.nn.Module):
    def __init__(self, nn):
        super().__init__()
        self.nn = nn

    def forward(self, x, pos, batch):
        x = self.nn(torch.cat([x, pos], dim=1))
        x = global_max_pool(x, batch)  # The line binarize must name.
        return x


class GlobalSAModuleEMA(GlobalSAModule):
    r"""The change the report asks for: the EMA max."""
    def forward(self, x, pos, batch):
        x = self.nn(torch.cat([x, pos], dim=1))
        return global_ema_max_pool(x, batch)


class PointNet2(torch.nn.Module):
    def __init__(self, num_classes=4, global_sa=GlobalSAModule):
        super().__init__()
        self.sa1 = SAModule(0.5, 0.4, MLP([3, 16, 16, 32]))
        self.sa2 = global_sa(MLP([32 + 3, 32, 64]))
        self.mlp = MLP([64, 32, num_classes], dropout=0.5, norm=None)

    def forward(self, pos, batch):
        x, pos, batch = self.sa1(None, pos, batch)
        return self.mlp(self.sa2(x, pos, batch))


class EdgeNet(torch.nn.Module):  # Static-graph DGCNN-like, EdgeConv
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv1 = EdgeConv(MLP([2 * 3, 16, 16]), aggr='max')
        self.lin = torch.nn.Linear(16, num_classes)

    def forward(self, pos, batch):
        edge_index = torch_cluster.knn_graph(pos, 6, batch)
        x = self.conv1(pos, edge_index)
        return self.lin(global_max_pool(x, batch))


def clouds(n=4, points=48):
    torch.manual_seed(0)
    pos = torch.rand(n * points, 3) * 2 - 1
    return pos, torch.arange(n).repeat_interleave(points)


def test_pointnet2_conversion_report_and_weights():
    model = PointNet2()
    binary, report = binarize(model)
    assert isinstance(binary.sa1.conv, BiPointConv)
    assert isinstance(binary.sa1.conv.aggr_module, EMAMaxAggregation)
    assert isinstance(binary.sa1.conv.local_nn, BiMLP)
    assert isinstance(binary.sa2.nn, BiMLP) and isinstance(binary.mlp, BiMLP)
    # First layer (coordinates) and last (logits) stay full precision.
    assert not isinstance(binary.sa1.conv.local_nn.lins[0], BiLinear)
    assert not isinstance(binary.mlp.lins[-1], BiLinear)
    assert sum(isinstance(m, BiLinear) for m in binary.modules()) == 5
    names = [name for name, _ in report.swapped]
    assert {'sa1.conv', 'sa2.nn', 'mlp'} <= set(names)
    assert [name for name, _ in report.kept] == ['sa1.conv.local_nn.lins.0',
                                                 'mlp.lins.1']
    # The functional max pooling is named with its file and line.
    assert len(report.warnings) == 1
    assert 'test_conversion.py' in report.warnings[0]
    assert 'global_max_pool' in report.warnings[0]
    assert 'global_max_pool' in str(report)
    # Weights carried over; the original model is untouched.
    torch.testing.assert_close(binary.sa2.nn.lins[0].weight,
                               model.sa2.nn.lins[0].weight)
    assert isinstance(model.sa1.conv, PointNetConv)
    # A BatchNorm before the EMA max of the set abstraction.
    assert binary.sa1.conv.local_nn.last_norm is not None


def test_converted_model_trains_and_binarizing_twice_changes_nothing():
    pos, batch = clouds()
    y = torch.tensor([0, 1, 2, 3])
    binary, report = binarize(PointNet2(global_sa=GlobalSAModuleEMA))
    assert report.warnings == []
    again, report = binarize(binary)
    assert report.swapped == []
    assert str(again) == str(binary)
    out = binary(pos, batch)
    assert out.shape == (4, 4)
    opt = torch.optim.Adam(binary.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(binary(pos, batch), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Dropout 0.5 in the head (as PyG's example): compare averages.
    assert sum(losses[-5:]) < sum(losses[:5])
    for name, p in binary.named_parameters():
        assert p.grad is not None, name


def test_edge_conv_and_linear_conversion():
    pos, batch = clouds()
    binary, report = binarize(EdgeNet(), method='bnn')
    assert isinstance(binary.conv1, BiEdgeConv)
    assert isinstance(binary.conv1.aggr_module, EMAMaxAggregation)
    assert binary.conv1.nn.method.name == 'bnn'
    assert type(binary.lin) is torch.nn.Linear  # the last layer
    assert binary(pos, batch).shape == (4, 4)
    assert any('global_max_pool' in w for w in report.warnings)


def test_dynamic_edge_conv_conversion(monkeypatch):
    # PyG's DynamicEdgeConv needs pyg-lib to be built; the conversion does
    # not call it.
    monkeypatch.setattr(torch_geometric.typing, 'WITH_KNN', True)
    model = torch.nn.Module()
    model.conv = DynamicEdgeConv(MLP([6, 16, 16]), 5, 'max')
    model.head = torch.nn.Linear(16, 3)
    binary, report = binarize(model)
    assert isinstance(binary.conv, BiDynamicEdgeConv)
    assert binary.conv.k == 5
    pos, batch = clouds()
    assert binary.conv(pos, batch).shape == (pos.size(0), 16)


def test_nothing_to_binarize_and_bad_method():
    model = torch.nn.Sequential(torch.nn.ReLU())
    same, report = binarize(model)
    assert report.swapped == [] and report.warnings == []
    with pytest.raises(ValueError, match='binary method'):
        binarize(PointNet2(), method='fp')
    with pytest.raises(ValueError, match='Unknown binarization method'):
        binarize(PointNet2(), method='xnor-net-9000')


@pytest.mark.parametrize('make,method', [
    (lambda: PointNet2(global_sa=GlobalSAModuleEMA), 'bipointnet'),
    (PointNet2, 'bnn'), (EdgeNet, 'bipointnet')],
    ids=['pointnet2-ema', 'pointnet2-bnn', 'edgenet'])
def test_converted_models_pack_module_by_module(make, method):
    # deploy.pack packs a converted model module by module (its own
    # forward with the packed BiMLPs and full-precision layers), with the
    # binary model's outputs; it cannot save it (its class is the user's).
    import io

    from torch_geometric_binary import deploy
    torch.manual_seed(0)
    binary, _ = binarize(make(), method=method)
    pos, batch = clouds()
    binary.train()
    binary(pos, batch)  # LSR scales and BatchNorm statistics from data.
    binary.eval()
    packed = deploy.pack(binary)
    assert isinstance(packed, deploy.PackedModel)
    assert not any(isinstance(m, (BiLinear, BiMLP))
                   for m in packed.modules())
    assert not any(True for _ in packed.parameters())
    for seed in (0, 1):
        pos, batch = clouds()
        pos = pos + 0.05 * seed
        with torch.no_grad():
            ref = binary(pos, batch)
        out = packed(pos, batch)
        assert torch.equal(out.argmax(-1), ref.argmax(-1))
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max().clamp(min=1)
    with pytest.raises(TypeError, match='cannot save a packed'):
        deploy.save(packed, io.BytesIO())


def test_packing_names_a_module_it_cannot_pack():
    from torch_geometric_binary import deploy
    binary, _ = binarize(PointNet2())
    binary.sa2.extra = torch.nn.PReLU()
    with pytest.raises(TypeError, match=r'PointNet2\.sa2\.extra is a PReLU'):
        deploy.pack(binary.eval())


def test_method_state_follows_the_copied_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(MLP([3, 16, 16, 4]))
    converted, _ = binarize(model, method='xnor++', keep_first=False)
    lins = [m for m in converted.modules() if isinstance(m, BiLinear)]
    assert lins
    for lin in lins:  # XNOR-Net++'s scale starts at mean |W| of the copy
        torch.testing.assert_close(lin.weight_gain,
                                   lin.weight.abs().mean(dim=1))
