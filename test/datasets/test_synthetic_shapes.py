import os

import numpy as np
import pytest
import torch

from torch_geometric_binary.datasets import SyntheticShapes

SMALL = dict(num_per_class=4, num_points=64)


def test_defaults():
    train = SyntheticShapes()
    test = SyntheticShapes(train=False)
    assert str(train) == 'SyntheticShapes(800)'
    assert str(test) == 'SyntheticShapes(200)'
    assert train.num_classes == 10 and len(train.classes) == 10
    assert train._data.y.bincount().tolist() == [80] * 10
    data = train[0]
    assert data.x is None
    assert data.pos.shape == (512, 3) and data.pos.dtype == torch.float32
    assert data.y.shape == (1, ) and data.y.dtype == torch.long


def test_all_classes_normalized():
    n = len(SyntheticShapes.SHAPES)
    assert n >= 10 and len(set(SyntheticShapes.SHAPES)) == n
    ds = SyntheticShapes(num_classes=n, **SMALL)
    assert len(ds) == 4 * n and ds.num_classes == n
    assert ds.classes == SyntheticShapes.SHAPES
    pos = ds._data.pos.view(len(ds), 64, 3)
    assert torch.isfinite(pos).all()
    assert torch.allclose(pos.mean(1), torch.zeros(len(ds), 3), atol=1e-5)
    radius = pos.norm(dim=-1).max(1)[0]
    assert torch.allclose(radius, torch.ones(len(ds)), atol=1e-5)
    # Points are not all the same (no degenerate clouds):
    assert (pos.std(1).max(1)[0] > 0.1).all()


def test_determinism_and_splits():
    a = SyntheticShapes(**SMALL)
    b = SyntheticShapes(**SMALL)
    assert torch.equal(a._data.pos, b._data.pos)
    assert torch.equal(a._data.y, b._data.y)

    c = SyntheticShapes(seed=1, **SMALL)
    assert not torch.allclose(a._data.pos, c._data.pos)

    test = SyntheticShapes(train=False, **SMALL)
    assert not torch.allclose(a._data.pos, test._data.pos)
    # No training cloud appears in the test set:
    pa = a._data.pos.view(len(a), -1)
    pt = test._data.pos.view(len(test), -1)
    assert torch.cdist(pa, pt).min() > 1e-3

    # Examples do not depend on how many are drawn per class:
    more = SyntheticShapes(num_per_class=6, num_points=64)
    assert torch.equal(more[6].pos, a[4].pos)  # Class 1, example 0.


def test_no_global_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    t_state, np_state = torch.get_rng_state(), np.random.get_state()[1]
    SyntheticShapes(num_classes=3, **SMALL)
    assert torch.equal(torch.get_rng_state(), t_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_bounding_box_is_not_enough():
    # Classes differ in more than their (z-rotation invariant) extents:
    # a nearest-centroid classifier on the bounding box is far from perfect.
    ds = SyntheticShapes(num_per_class=20, num_points=128)
    pos = ds._data.pos.view(len(ds), -1, 3)
    ext = pos.max(1)[0] - pos.min(1)[0]
    feat = torch.cat([ext[:, :2].sort(1)[0], ext[:, 2:]], dim=1)
    y = ds._data.y
    centroids = torch.stack([feat[y == c].mean(0) for c in range(10)])
    pred = torch.cdist(feat, centroids).argmin(1)
    assert (pred == y).float().mean() < 0.8


def test_cache(tmp_path):
    a = SyntheticShapes(str(tmp_path), pre_transform=None, **SMALL)
    files = os.listdir(tmp_path / 'processed')
    assert 'train_c10_n4_p64_s0.pt' in files
    b = SyntheticShapes(str(tmp_path), **SMALL)
    assert torch.equal(a._data.pos, b._data.pos)
    assert torch.equal(SyntheticShapes(**SMALL)._data.pos, b._data.pos)
    test = SyntheticShapes(str(tmp_path), train=False, **SMALL)
    assert len(test) == 40 and not torch.equal(test._data.pos, a._data.pos)


def test_in_memory_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SyntheticShapes(num_classes=2, **SMALL)
    assert os.listdir(tmp_path) == []


def test_transforms():
    def pre_transform(data):
        data.pos = data.pos[:10]
        return data

    ds = SyntheticShapes(num_classes=2, pre_transform=pre_transform,
                         transform=lambda d: d.update({'x': d.pos.norm(
                             dim=1, keepdim=True)}), **SMALL)
    assert ds[0].pos.shape == (10, 3) and ds[0].x.shape == (10, 1)


def test_errors():
    with pytest.raises(ValueError, match='num_classes'):
        SyntheticShapes(num_classes=100)
    with pytest.raises(ValueError, match='seed'):
        SyntheticShapes(seed=-1)
    with pytest.raises(ValueError, match='positive'):
        SyntheticShapes(num_points=0)
