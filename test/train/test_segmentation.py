import pytest
import torch

from torch_geometric_binary.datasets import SyntheticParts
from torch_geometric_binary.train.segmentation import (build_seg_datasets,
                                                       select_categories)


def test_select_categories():
    data = SyntheticParts(num_per_category=3, num_points=32)
    parts = SyntheticParts.PARTS
    before = data._data.category.clone(), data._data.y.clone()
    # The order given does not matter: categories follow the dataset's,
    # and parts are renumbered in that order (chair 2-5 -> 0-3, rocket
    # 15-17 -> 4-6).
    sub, new = select_categories(data, ['rocket', 'chair'], parts)
    assert new == {'chair': [0, 1, 2, 3], 'rocket': [4, 5, 6]}
    assert len(sub) == 6
    cats = [int(d.category) for d in sub]
    assert sorted(cats) == [0, 0, 0, 1, 1, 1]
    originals = [d for d in data if int(d.category) in (1, 5)]
    for d, o in zip(sub, originals):
        offset = 2 if int(o.category) == 1 else 15 - 4
        assert torch.equal(d.y, o.y - offset)
        assert torch.equal(d.pos, o.pos)
    assert torch.equal(data._data.category, before[0])  # A copy.
    assert torch.equal(data._data.y, before[1])
    # A subset of a subset keeps the right shapes.
    again, last = select_categories(sub[torch.tensor([1, 4])], ['rocket'],
                                    new)
    assert last == {'rocket': [0, 1, 2]}
    assert [int(d.category) for d in again] == [0]
    assert torch.equal(again[0].y, originals[4].y - 15)


def test_build_with_categories():
    splits = build_seg_datasets('synthetic', num_points=16, augment=False,
                                synthetic_per_category=4,
                                synthetic_points=32, categories=['mug'])
    assert splits.parts == {'mug': [0, 1, 2]}
    assert splits.num_categories == 1 and splits.num_classes == 3
    assert splits.class_names == [SyntheticParts.PART_NAMES[p]
                                  for p in (9, 10, 11)]
    assert set(torch.cat([d.y for d in splits.train]).tolist()) == {0, 1, 2}
    assert len(splits.train) == 4 and len(splits.test) == 1
    assert {int(d.category) for d in splits.train} == {0}
    with pytest.raises(ValueError, match=r"Unknown categories \['cup'\]"):
        build_seg_datasets('synthetic', synthetic_per_category=4,
                           synthetic_points=32, categories=['cup'])
    with pytest.raises(ValueError, match='Unknown categories'):
        build_seg_datasets('synthetic', synthetic_per_category=4,
                           synthetic_points=32, categories=[])
