import pytest
import torch
from torch_geometric.data import Data

from torch_geometric_binary.train import (FirstPoints, NormalizeUnitSphere,
                                          RandomScaleTranslate,
                                          balanced_subset)


def test_subsets_and_transforms():
    labels = [0, 0, 0, 1, 1, 2]
    assert balanced_subset(labels, 3) == [0, 3, 5]
    assert balanced_subset(labels, 5) == [0, 1, 3, 4, 5]
    assert balanced_subset(labels, 10) == list(range(6))

    pos = torch.randn(10, 3) * 5 + 2
    data = FirstPoints(4)(Data(pos=pos.clone(), normal=pos.clone(),
                               y=torch.tensor([1])))
    assert torch.equal(data.pos, pos[:4]) and data.normal.size(0) == 4
    assert data.y.tolist() == [1]
    assert FirstPoints(20)(Data(pos=pos.clone())).pos.size(0) == 10

    data = NormalizeUnitSphere()(Data(pos=pos.clone()))
    assert torch.allclose(data.pos.mean(0), torch.zeros(3), atol=1e-5)
    assert data.pos.norm(dim=-1).max() == pytest.approx(1.0)

    data = RandomScaleTranslate((0.5, 2.0), 0.2)(Data(pos=pos.clone()))
    ratio = (data.pos - data.pos[:1]) / (pos - pos[:1])
    assert torch.allclose(ratio[1:], ratio[1:2].expand(9, 3), atol=1e-4)
    assert ((ratio[1] >= 0.5 - 1e-4) & (ratio[1] <= 2.0 + 1e-4)).all()


def test_huge_coordinates_are_refused():
    pos = torch.randn(64, 3) * 1e20
    with pytest.raises(ValueError, match='cannot be normalized'):
        NormalizeUnitSphere()(Data(pos=pos))
    # Large but representable clouds still normalize.
    out = NormalizeUnitSphere()(Data(pos=torch.randn(64, 3) * 1e15))
    assert torch.isclose(out.pos.norm(dim=-1).max(), torch.tensor(1.0))
