import torch
from torch_geometric.explain import Explainer, GNNExplainer
from torch_geometric.nn.conv import EdgeConv, PointNetConv

from torch_geometric_binary.nn import BiEdgeConv, BiMLP, BiPointConv


class EdgeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = BiEdgeConv(BiMLP([6, 8, 4], first_fp=True))

    def forward(self, x, edge_index):
        return self.conv(x, edge_index)


class PointNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = BiPointConv(BiMLP([6, 8, 4], first_fp=True))

    def forward(self, x, edge_index):
        return self.conv(x, x, edge_index)


def test_edge_masks_get_gradients_after_pyg_parents_were_built():
    # PyG compiles propagate() per class when first built; the binary
    # subclasses must keep their own (explainable) propagate anyway.
    EdgeConv(torch.nn.Linear(6, 4))
    PointNetConv(torch.nn.Linear(6, 4))
    x = torch.randn(12, 3)
    edge_index = torch.randint(0, 12, (2, 40))
    for model in (EdgeNet().eval(), PointNet().eval()):
        explainer = Explainer(
            model, GNNExplainer(epochs=2), explanation_type='model',
            edge_mask_type='object', node_mask_type=None,
            model_config=dict(mode='multiclass_classification',
                              task_level='node', return_type='raw'))
        mask = explainer(x, edge_index).edge_mask
        assert mask.shape == (40, ) and bool((mask > 0).any())
