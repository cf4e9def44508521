import torch

from torch_geometric_binary.nn import BiLinear
from torch_geometric_binary.nn.models import PointNet
from torch_geometric_binary.train.checkpoint import load_matching_weights


def binary_layers(model):
    return [m for m in model.modules() if isinstance(m, BiLinear)]


def test_load_matching_weights_from_full_precision():
    torch.manual_seed(0)
    fp = PointNet(5, method='fp')
    model = PointNet(5, method='bipointnet')
    loaded, untouched, skipped = load_matching_weights(model, fp.state_dict())
    assert 'mlp2.lins.2.weight' in loaded
    assert torch.equal(model.mlp2.lins[2].weight, fp.mlp2.lins[2].weight)
    # FP sources have no scales: set from data on the first batch.
    assert all(k.endswith('.scale') for k in untouched) and untouched
    assert skipped == []
    for lin in binary_layers(model):
        assert not lin.scale_initialized and lin.scale.item() == 1.0


def test_load_matching_weights_keeps_learned_scales():
    torch.manual_seed(0)
    src = PointNet(5, method='bipointnet')
    with torch.no_grad():
        for i, lin in enumerate(binary_layers(src)):
            lin.scale.fill_(0.1 * (i + 2))
            lin.scale_initialized = True
    model = PointNet(5, method='bipointnet')
    load_matching_weights(model, src.state_dict())
    for lin, ref in zip(binary_layers(model), binary_layers(src)):
        assert lin.scale_initialized
        assert torch.equal(lin.scale, ref.scale)
