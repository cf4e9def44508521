import torch
from torch_geometric.loader import DataLoader

from torch_geometric_binary.nn.models import PointNet
from torch_geometric_binary.train.data import build_datasets
from torch_geometric_binary.train.distill import (IndexedDataset,
                                                  precompute_teacher,
                                                  teacher_logits,
                                                  varying_teacher_inputs)


def synthetic(num_points=None, augment=False):
    return build_datasets('synthetic', num_points=num_points,
                          augment=augment, limit_train=24,
                          synthetic_classes=3, synthetic_points=48).train


def config(**kw):
    return {'dataset': 'synthetic', 'augment': False, 'num_points': None,
            **kw}


def test_sample_ids_survive_batching():
    ds = synthetic()
    batch = next(iter(DataLoader(IndexedDataset(ds), batch_size=5,
                                 shuffle=False)))
    # Not offset by the clouds' sizes as PyG offsets '*index' attributes.
    assert batch.sample_id.tolist() == [0, 1, 2, 3, 4]
    assert len(IndexedDataset(ds)) == len(ds) == 24


def test_when_the_teacher_inputs_vary():
    ds = synthetic()
    assert varying_teacher_inputs(config(), ds) is None
    assert varying_teacher_inputs(config(num_points=48), ds) is None
    assert varying_teacher_inputs(config(num_points=32), ds) == \
        'clouds subsampled to --num-points 32'
    assert varying_teacher_inputs(config(augment=True), ds) == \
        'random augmentation'
    assert varying_teacher_inputs(config(dataset='pyg-modelnet40'), ds) == \
        'points sampled anew each epoch'


def test_cached_logits_are_the_teachers():
    torch.manual_seed(0)
    ds = synthetic(num_points=48)  # Shuffles the points of each cloud.
    teacher = PointNet(3).eval()
    state = torch.get_rng_state()
    logits = teacher_logits(teacher, ds, 7, torch.device('cpu'))
    assert torch.equal(torch.get_rng_state(), state)
    assert logits.shape == (24, 3) and torch.isfinite(logits).all()
    with torch.no_grad():
        for i in (0, 13, 23):
            d = ds[i]
            ref = teacher(d.pos, torch.zeros(d.num_nodes, dtype=torch.long))
            assert torch.allclose(logits[i], ref[0], atol=1e-4)
    cached, train_set, note = precompute_teacher(
        teacher, config(num_points=48), ds, 8, torch.device('cpu'))
    assert isinstance(train_set, IndexedDataset) and 'computed once' in note
    assert torch.allclose(cached, logits)
    same, train_set, note = precompute_teacher(
        teacher, config(augment=True), ds, 8, torch.device('cpu'))
    assert same is teacher and train_set is ds
    assert note == '--teacher: runs at every step (random augmentation)'
