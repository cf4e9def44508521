from typing import Dict, List, Optional

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
