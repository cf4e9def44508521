import math

import pytest
import torch

from torch_geometric_binary.nn import BiLinear
from torch_geometric_binary.nn.models import PointNet
from torch_geometric_binary.train.checkpoint import (build_model,
                                                     load_matching_weights)


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
    assert all(k.endswith('.log_scale') for k in untouched) and untouched
    assert skipped == []
    for lin in binary_layers(model):
        assert not lin.scale_initialized and lin.scale.item() == 1.0


def test_load_matching_weights_keeps_learned_scales():
    torch.manual_seed(0)
    src = PointNet(5, method='bipointnet')
    with torch.no_grad():
        for i, lin in enumerate(binary_layers(src)):
            lin.log_scale.fill_(math.log(0.1 * (i + 2)))
            lin.scale_initialized = True
    model = PointNet(5, method='bipointnet')
    load_matching_weights(model, src.state_dict())
    for lin, ref in zip(binary_layers(model), binary_layers(src)):
        assert lin.scale_initialized
        assert torch.equal(lin.scale, ref.scale)


def test_load_matching_weights_upgrades_linear_scales():
    # A binary checkpoint saved before log_scale, with a scale below zero.
    torch.manual_seed(0)
    src = PointNet(5, method='bipointnet').eval()
    for lin in binary_layers(src):
        lin.scale_initialized = True
    pos, batch = torch.randn(64, 3), torch.arange(4).repeat_interleave(16)
    expected = src(pos, batch)
    old = {}
    for k, v in src.state_dict().items():
        if k.endswith('.log_scale'):
            old[k[:-len('log_scale')] + 'scale'] = v.exp()
        else:
            old[k] = v
    old['mlp2.lins.1.scale'] = -old['mlp2.lins.1.scale']
    old['mlp2.lins.1.weight'] = -old['mlp2.lins.1.weight']
    model = PointNet(5, method='bipointnet')
    loaded, untouched, skipped = load_matching_weights(model, old)
    assert untouched == [] and skipped == []
    assert all(lin.scale_initialized for lin in binary_layers(model))
    assert torch.allclose(model.eval()(pos, batch), expected, atol=1e-5)


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    from torch_geometric_binary.train import checkpoint as ckpt
    path = tmp_path / 'last.pt'

    def full_disk(obj, f):
        with open(f, 'wb') as out:
            out.write(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(ckpt.torch, 'save', full_disk)
    with pytest.raises(OSError, match='No space'):
        ckpt.save_checkpoint(str(path), {'model': {}})
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_option_names_the_known_ones():
    with pytest.raises(ValueError, match='its options: .*dropout'):
        build_model({'model': 'dgcnn', 'num_classes': 3, 'method': 'fp',
                     'model_kwargs': {'kk': 4}})
