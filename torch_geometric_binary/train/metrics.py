from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor


def _dist_ready() -> bool:
    return (torch.distributed.is_available()
            and torch.distributed.is_initialized())


class ClassAccuracy:
    r"""Accumulates per-class counts of correct predictions and gives the
    overall accuracy and the mean class accuracy (the mean over classes of
    the per-class recall, over the classes present in the evaluated data),
    the two metrics reported on ModelNet40.

    Args:
        num_classes (int): The number of classes.
        device (torch.device, optional): Where the counts live.
    """
    def __init__(self, num_classes: int,
                 device: Optional[torch.device] = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive (got "
                             f"{num_classes})")
        self.num_classes = num_classes
        self.correct = torch.zeros(num_classes, dtype=torch.long,
                                   device=device)
        self.total = torch.zeros(num_classes, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        r"""Adds predictions :obj:`pred` (class indices, or logits
        :obj:`[N, num_classes]`) for the labels :obj:`target`."""
        if pred.dim() == 2:
            pred = pred.argmax(dim=-1)
        pred, target = pred.view(-1), target.view(-1)
        if pred.numel() != target.numel():
            raise ValueError(f"Got {pred.numel()} predictions for "
                             f"{target.numel()} labels")
        if target.numel() and (target.min() < 0
                               or target.max() >= self.num_classes):
            raise ValueError(f"Labels must lie in [0, {self.num_classes}) "
                             f"(got {int(target.min())}..."
                             f"{int(target.max())})")
        target = target.to(self.total.device)
        pred = pred.to(self.total.device)
        self.total += torch.bincount(target, minlength=self.num_classes)
        self.correct += torch.bincount(target[pred == target],
                                       minlength=self.num_classes)

    def all_reduce(self) -> 'ClassAccuracy':
        r"""Sums the counts over all processes (no-op without
        :obj:`torch.distributed`)."""
        if _dist_ready():
            torch.distributed.all_reduce(self.correct)
            torch.distributed.all_reduce(self.total)
        return self

    @property
    def num_samples(self) -> int:
        return int(self.total.sum())

    @property
    def overall_acc(self) -> float:
        n = self.num_samples
        return float(self.correct.sum()) / n if n > 0 else float('nan')

    def per_class_acc(self) -> List[Optional[float]]:
        r"""Per-class recall (:obj:`None` for classes absent from the
        data)."""
        return [
            float(c) / float(t) if t > 0 else None
            for c, t in zip(self.correct.tolist(), self.total.tolist())
        ]

    @property
    def mean_class_acc(self) -> float:
        accs = [a for a in self.per_class_acc() if a is not None]
        return sum(accs) / len(accs) if accs else float('nan')

    def summary(self) -> Dict[str, float]:
        return {
            'overall_acc': self.overall_acc,
            'mean_class_acc': self.mean_class_acc,
            'num_samples': self.num_samples,
        }


# Segmentation ###############################################################

PartTable = Union[Tensor, Mapping[Any, Sequence[int]],
                  Sequence[Sequence[int]]]


def category_part_mask(parts: PartTable, num_parts: Optional[int] = None,
                       device: Optional[torch.device] = None) -> Tensor:
    r"""The bool matrix :obj:`[num_categories, num_parts]` that says which
    part ids belong to which category.

    Args:
        parts: The part ids of every category: a list of lists (indexed by
            category), a dict like :obj:`ShapeNetPart.PARTS` (its values in
            category order; integer keys are the category indices), or an
            already built bool matrix (returned as it is).
        num_parts (int, optional): The number of columns (default: one more
            than the largest part id).
    """
    if isinstance(parts, Tensor):
        return parts.to(device=device, dtype=torch.bool)
    if isinstance(parts, Mapping):
        keys = list(parts)
        if all(isinstance(k, int) for k in keys):
            lists = [list(parts.get(c, ())) for c in range(max(keys) + 1)]
        else:
            lists = [list(v) for v in parts.values()]
    else:
        lists = [list(v) for v in parts]
    most = max((max(p) for p in lists if p), default=-1) + 1
    num_parts = most if num_parts is None else num_parts
    if most > num_parts:
        raise ValueError(f"Part id {most - 1} does not fit num_parts="
                         f"{num_parts}")
    mask = torch.zeros(len(lists), num_parts, dtype=torch.bool,
                       device=device)
    for c, p in enumerate(lists):
        mask[c, p] = True
    return mask


def mask_to_category(logits: Tensor, category: Tensor, parts: PartTable,
                     batch: Optional[Tensor] = None) -> Tensor:
    r"""Sets the logits :obj:`[N, num_parts]` of the parts that do not
    belong to a point's category to :obj:`-inf`, so that :obj:`argmax`
    picks one of the category's parts (PointNet's evaluation on ShapeNet
    part, where the category is known).

    Args:
        logits (Tensor): The part scores :obj:`[N, num_parts]`.
        category (Tensor): The category of every point :obj:`[N]`, or of
            every shape :obj:`[B]` if :obj:`batch` is given.
        parts: The part ids of every category (see
            :func:`category_part_mask`).
        batch (Tensor, optional): The shape of every point :obj:`[N]`.
    """
    if batch is not None:
        category = category.view(-1)[batch]
    mask = category_part_mask(parts, logits.size(-1), logits.device)
    return logits.masked_fill(~mask[category.view(-1)], float('-inf'))


def _part_counts(pred: Tensor, target: Tensor, batch: Tensor,
                 num_shapes: int, num_parts: int):
    r"""Intersections and unions :obj:`[num_shapes, num_parts]`."""
    size = num_shapes * num_parts
    hit = pred == target
    inter = torch.bincount(batch[hit] * num_parts + target[hit],
                           minlength=size)
    union = torch.bincount(batch * num_parts + pred, minlength=size) + \
        torch.bincount(batch * num_parts + target, minlength=size) - inter
    return inter.view(num_shapes, -1), union.view(num_shapes, -1)


def part_iou(pred: Tensor, target: Tensor, category: Tensor,
             parts_of_category: PartTable,
             batch: Optional[Tensor] = None) -> Tensor:
    r"""The mean IoU of every shape over the parts of its category
    :obj:`[num_shapes]`, as in PointNet's ShapeNet-part evaluation: a part
    absent from both the prediction and the label of a shape counts as IoU
    1; a point predicted as a part of another category counts as wrong.

    Args:
        pred (Tensor): Part ids :obj:`[N]`, or logits :obj:`[N,
            num_parts]` (then restricted to the category by
            :func:`mask_to_category` and argmaxed).
        target (Tensor): The part ids :obj:`[N]`.
        category (Tensor): The category of every shape :obj:`[B]` (or a
            single shape's :obj:`[1]` without :obj:`batch`).
        parts_of_category: The part ids of every category (see
            :func:`category_part_mask`).
        batch (Tensor, optional): The shape of every point :obj:`[N]`; all
            points form one shape if :obj:`None`.
    """
    target = target.view(-1)
    if batch is None:
        batch = torch.zeros_like(target)
    category = category.view(-1).to(target.device)
    if category.numel() == 0 or target.numel() == 0:
        return torch.zeros(0, dtype=torch.float, device=target.device)
    num_parts = pred.size(-1) if pred.dim() == 2 else None
    mask = category_part_mask(parts_of_category, num_parts, target.device)
    if pred.dim() == 2:
        pred = mask_to_category(pred, category, mask, batch).argmax(-1)
    pred = pred.view(-1)
    if pred.numel() != target.numel() or batch.numel() != target.numel():
        raise ValueError(f"Got {pred.numel()} predictions and "
                         f"{batch.numel()} batch entries for "
                         f"{target.numel()} labels")
    num_parts = max(mask.size(1), int(pred.max()) + 1,
                    int(target.max()) + 1)
    mask = torch.nn.functional.pad(mask, (0, num_parts - mask.size(1)))
    inter, union = _part_counts(pred, target, batch, category.numel(),
                                num_parts)
    iou = torch.where(union > 0, inter / union.clamp(min=1),
                      torch.ones_like(inter, dtype=torch.float))
    own = mask[category]  # The parts of each shape's category.
    return (iou * own).sum(1) / own.sum(1)


class PartSegMetric:
    r"""Accumulates per-shape part IoUs (see :func:`part_iou`) and gives the
    two metrics reported on ShapeNet part: the instance mIoU (mean over
    shapes) and the category mIoU (mean over the categories present of the
    mean over their shapes).

    Args:
        parts: The part ids of every category, *e.g.*,
            :obj:`ShapeNetPart.PARTS` (see :func:`category_part_mask`).
        device (torch.device, optional): Where the sums live.
    """
    def __init__(self, parts: PartTable,
                 device: Optional[torch.device] = None):
        self.names = list(parts) if isinstance(parts, Mapping) else None
        self.mask = category_part_mask(parts, device=device)
        num = self.mask.size(0)
        self.iou_sum = torch.zeros(num, dtype=torch.float64, device=device)
        self.count = torch.zeros(num, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, category: Tensor,
               batch: Optional[Tensor] = None) -> Tensor:
        r"""Adds a batch (arguments as in :func:`part_iou`) and returns its
        per-shape IoUs."""
        category = category.view(-1)
        if category.numel() and (category.min() < 0 or
                                 category.max() >= self.mask.size(0)):
            raise ValueError(f"Categories must lie in [0, "
                             f"{self.mask.size(0)}) (got "
                             f"{category.tolist()})")
        mask = self.mask.to(target.device)
        if pred.dim() == 2 and pred.size(-1) > mask.size(1):
            mask = torch.nn.functional.pad(
                mask, (0, pred.size(-1) - mask.size(1)))
        ious = part_iou(pred, target, category, mask, batch)
        dev = self.iou_sum.device
        category = category.to(dev)
        self.iou_sum.index_add_(0, category, ious.to(dev, torch.float64))
        self.count += torch.bincount(category, minlength=self.count.numel())
        return ious

    def all_reduce(self) -> 'PartSegMetric':
        r"""Sums over all processes (no-op without
        :obj:`torch.distributed`)."""
        if _dist_ready():
            torch.distributed.all_reduce(self.iou_sum)
            torch.distributed.all_reduce(self.count)
        return self

    def compute(self) -> Dict[str, Any]:
        r"""Returns :obj:`instance_miou`, :obj:`category_miou`,
        :obj:`category_iou` (per category, :obj:`None` where no shape was
        seen; a dict by name if :obj:`parts` was one) and
        :obj:`num_shapes`."""
        n = int(self.count.sum())
        seen = self.count > 0
        per_cat = self.iou_sum / self.count.clamp(min=1)
        cat = [float(v) if s else None
               for v, s in zip(per_cat.tolist(), seen.tolist())]
        return {
            'instance_miou': float(self.iou_sum.sum()) / n if n
            else float('nan'),
            'category_miou': float(per_cat[seen].mean()) if n
            else float('nan'),
            'category_iou': dict(zip(self.names, cat)) if self.names
            else cat,
            'num_shapes': n,
        }


class SemSegMetric:
    r"""Accumulates the confusion matrix of a semantic segmentation (rows:
    labels, columns: predictions) and gives the overall accuracy, the mean
    class accuracy (mean recall over the classes present in the labels)
    and the mean IoU over the classes present in the labels or the
    predictions (classes absent from both are ignored, not counted as 0 or
    1), the metrics reported on S3DIS.

    Args:
        num_classes (int): The number of classes.
        ignore_index (int, optional): Points with this label are skipped.
        device (torch.device, optional): Where the matrix lives.
    """
    def __init__(self, num_classes: int, ignore_index: Optional[int] = None,
                 device: Optional[torch.device] = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive (got "
                             f"{num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes,
                                     dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        r"""Adds predictions :obj:`pred` (class indices :obj:`[N]`, or
        logits :obj:`[N, num_classes]`) for the labels :obj:`target`."""
        if pred.dim() == 2:
            pred = pred.argmax(dim=-1)
        pred, target = pred.reshape(-1), target.reshape(-1)
        if pred.numel() != target.numel():
            raise ValueError(f"Got {pred.numel()} predictions for "
                             f"{target.numel()} labels")
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        C = self.num_classes
        for name, t in (('Labels', target), ('Predictions', pred)):
            if t.numel() and (t.min() < 0 or t.max() >= C):
                raise ValueError(f"{name} must lie in [0, {C}) (got "
                                 f"{int(t.min())}...{int(t.max())})")
        dev = self.confusion.device
        idx = target.to(dev) * C + pred.to(dev)
        self.confusion += torch.bincount(idx, minlength=C * C).view(C, C)

    def all_reduce(self) -> 'SemSegMetric':
        r"""Sums over all processes (no-op without
        :obj:`torch.distributed`)."""
        if _dist_ready():
            torch.distributed.all_reduce(self.confusion)
        return self

    def compute(self) -> Dict[str, Any]:
        r"""Returns :obj:`overall_acc`, :obj:`mean_class_acc`,
        :obj:`miou`, :obj:`class_iou` (per class, :obj:`None` for classes
        absent from both labels and predictions) and :obj:`num_points`."""
        cm = self.confusion.double()
        tp, label, predicted = cm.diag(), cm.sum(1), cm.sum(0)
        union = label + predicted - tp
        n = float(cm.sum())
        nan = float('nan')
        iou = [float(i / u) if u > 0 else None
               for i, u in zip(tp.tolist(), union.tolist())]
        present = label > 0
        return {
            'overall_acc': float(tp.sum()) / n if n else nan,
            'mean_class_acc': float((tp / label)[present].mean())
            if present.any() else nan,
            'miou': float((tp / union)[union > 0].mean())
            if (union > 0).any() else nan,
            'class_iou': iou,
            'num_points': int(n),
        }
