import pytest
import torch

from torch_geometric_binary.train import ClassAccuracy


def test_class_accuracy():
    metric = ClassAccuracy(4)
    # Class 0: 2/3 right, class 1: 1/1, class 2: 0/2, class 3 absent.
    metric.update(torch.tensor([0, 0, 1, 1, 0, 3]),
                  torch.tensor([0, 0, 0, 1, 2, 2]))
    assert metric.num_samples == 6
    assert metric.overall_acc == pytest.approx(3 / 6)
    assert metric.per_class_acc() == [pytest.approx(2 / 3), 1.0, 0.0, None]
    assert metric.mean_class_acc == pytest.approx((2 / 3 + 1 + 0) / 3)
    logits = torch.nn.functional.one_hot(torch.tensor([3]), 4).float()
    metric.update(logits, torch.tensor([3]))
    assert metric.per_class_acc()[3] == 1.0
    with pytest.raises(ValueError, match='Labels must lie'):
        metric.update(torch.tensor([0]), torch.tensor([4]))
