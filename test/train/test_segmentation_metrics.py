import math

import pytest
import torch

from torch_geometric.loader import DataLoader
from torch_geometric_binary.datasets import ShapeNetPart, SyntheticParts
from torch_geometric_binary.train import (PartSegMetric, SemSegMetric,
                                          category_part_mask,
                                          mask_to_category, part_iou)

PARTS = {'A': [0, 1], 'B': [2, 3, 4]}


def _example():
    # Shape 0 (A): part 0 IoU 1/2, part 1 IoU 2/3 -> 7/12.
    # Shape 1 (B): parts 2, 3 right, part 4 absent from both -> 1.
    # Shape 2 (B): part 2 IoU 2/4, part 3 IoU 0, part 4 absent -> 1/2.
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 2, 2])
    batch = torch.arange(3).repeat_interleave(4)
    category = torch.tensor([0, 1, 1])
    return pred, target, category, batch


def test_part_iou_known_values():
    pred, target, category, batch = _example()
    iou = part_iou(pred, target, category, PARTS, batch)
    assert torch.allclose(iou, torch.tensor([7 / 12, 1.0, 0.5]))
    # One shape without a batch vector:
    assert math.isclose(float(part_iou(pred[4:8], target[4:8],
                                       torch.tensor([1]), PARTS)), 1.0)


def test_absent_part_counts_as_one_and_foreign_parts_as_wrong():
    # Part 1 is in neither: IoU 1; the point predicted as part 2 (of
    # category B) is a miss of part 0: IoU 1/2.
    iou = part_iou(torch.tensor([2, 0]), torch.tensor([0, 0]),
                   torch.tensor([0]), PARTS)
    assert math.isclose(float(iou), (0.5 + 1.0) / 2)


def test_mask_to_category_and_logits():
    logits = torch.tensor([[0.1, 0.2, 5.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 0.3, 9.0],
                           [7.0, 0.0, 1.0, 0.0, 0.0]])
    category = torch.tensor([0, 0, 1])
    masked = mask_to_category(logits, category, PARTS)
    assert masked.argmax(-1).tolist() == [1, 0, 2]
    assert torch.isinf(masked[0, 2:]).all()
    assert torch.isinf(masked[2, :2]).all()
    # Per-shape categories with a batch vector give the same:
    same = mask_to_category(logits, torch.tensor([0, 1]), PARTS,
                            batch=torch.tensor([0, 0, 1]))
    assert torch.equal(same, masked)
    # part_iou takes the logits and restricts them itself:
    iou = part_iou(logits, torch.tensor([1, 0, 2]), torch.tensor([0, 1]),
                   PARTS, torch.tensor([0, 0, 1]))
    assert iou.tolist() == [1.0, 1.0]


def test_category_part_mask():
    mask = category_part_mask(PARTS)
    assert mask.shape == (2, 5) and mask.sum().item() == 5
    assert torch.equal(category_part_mask([[0, 1], [2, 3, 4]]), mask)
    assert torch.equal(category_part_mask({1: [2, 3, 4], 0: [0, 1]}), mask)
    assert category_part_mask(ShapeNetPart.PARTS).shape == (16, 50)
    assert category_part_mask(ShapeNetPart.PARTS).sum() == 50
    with pytest.raises(ValueError, match='num_parts'):
        category_part_mask(PARTS, num_parts=3)


def test_instance_vs_category_miou():
    pred, target, category, batch = _example()
    metric = PartSegMetric(PARTS)
    # In two batches: the sums do not depend on the batching.
    metric.update(pred[:4], target[:4], category[:1], batch[:4])
    metric.update(pred[4:], target[4:], category[1:], batch[4:] - 1)
    out = metric.compute()
    assert out['num_shapes'] == 3
    assert out['instance_miou'] == pytest.approx((7 / 12 + 1 + 0.5) / 3)
    # One A shape and two B shapes: the category mean weighs A more.
    assert out['category_miou'] == pytest.approx((7 / 12 + 0.75) / 2)
    assert out['instance_miou'] != pytest.approx(out['category_miou'])
    assert out['category_iou'] == pytest.approx({'A': 7 / 12, 'B': 0.75})

    unseen = PartSegMetric([[0, 1], [2, 3, 4], [5]])
    unseen.update(pred, target, category, batch)
    out = unseen.compute()
    assert out['category_iou'][2] is None  # Not in the mean.
    assert out['category_miou'] == pytest.approx((7 / 12 + 0.75) / 2)
    assert math.isnan(PartSegMetric(PARTS).compute()['instance_miou'])
    with pytest.raises(ValueError, match='Categories'):
        PartSegMetric(PARTS).update(pred, target, torch.tensor([0, 2, 1]),
                                    batch)


def test_part_metric_on_batches_of_a_dataset():
    ds = SyntheticParts(num_per_category=2, num_points=64)
    metric = PartSegMetric(SyntheticParts.PARTS)
    for data in DataLoader(ds, batch_size=5):
        logits = torch.nn.functional.one_hot(data.y, ds.num_parts).float()
        metric.update(logits, data.y, data.category, data.batch)
    out = metric.compute()
    assert out['num_shapes'] == len(ds)
    assert out['instance_miou'] == 1.0 and out['category_miou'] == 1.0


def test_semseg_known_confusion_matrix():
    # Labels -> predictions: class 0: 0, 0, 1; class 1: 1, 1; class 2:
    # none (absent from both: ignored); class 3: 0.
    target = torch.tensor([0, 0, 0, 1, 1, 3])
    pred = torch.tensor([0, 0, 1, 1, 1, 0])
    metric = SemSegMetric(4)
    metric.update(pred[:2], target[:2])
    metric.update(torch.nn.functional.one_hot(pred[2:], 4).float(),
                  target[2:])
    assert metric.confusion.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0],
                                         [0, 0, 0, 0], [1, 0, 0, 0]]
    out = metric.compute()
    assert math.isclose(out['overall_acc'], 4 / 6)
    assert math.isclose(out['mean_class_acc'], (2 / 3 + 1 + 0) / 3)
    assert out['class_iou'] == pytest.approx([2 / 4, 2 / 3, None, 0.0])
    assert math.isclose(out['miou'], (0.5 + 2 / 3 + 0) / 3)
    assert out['num_points'] == 6

    # A class only predicted counts in the mIoU (IoU 0), not in the mean
    # class accuracy:
    metric.update(torch.tensor([2]), torch.tensor([1]))
    out = metric.compute()
    assert out['class_iou'][2] == 0.0
    assert math.isclose(out['miou'], (0.5 + 2 / 4 + 0 + 0) / 4)
    assert math.isclose(out['mean_class_acc'], (2 / 3 + 2 / 3 + 0) / 3)


def test_semseg_ignore_and_errors():
    metric = SemSegMetric(3, ignore_index=-1)
    metric.update(torch.tensor([0, 2, 1]), torch.tensor([0, -1, 1]))
    assert metric.compute()['overall_acc'] == 1.0
    assert metric.compute()['num_points'] == 2
    with pytest.raises(ValueError, match='Labels'):
        metric.update(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match='Predictions'):
        metric.update(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(ValueError, match='positive'):
        SemSegMetric(0)
    assert math.isnan(SemSegMetric(2).compute()['miou'])
