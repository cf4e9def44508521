r"""Segmentation pieces of the training programs
(:obj:`examples/segmentation.py`): the datasets, the forward pass of a
segmentation network on a batch, and its evaluation (part or semantic
metrics). Training itself is :func:`~torch_geometric_binary.train.
train_epoch` with :func:`seg_forward`."""
import os.path as osp
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, List, Optional, Tuple,
                    Union)

import torch
import torch_geometric.transforms as T
from torch import Tensor

from torch_geometric_binary.train.data import _materialize, balanced_subset
from torch_geometric_binary.train.loop import autocast
from torch_geometric_binary.train.metrics import PartSegMetric, SemSegMetric
from torch_geometric_binary.train.transforms import (FirstPoints,
                                                     NormalizeUnitSphere,
                                                     RandomScaleTranslate)

#: Part segmentation (:obj:`synthetic`, :obj:`shapenet`) and semantic
#: segmentation (:obj:`s3dis`).
SEG_DATASETS = ['synthetic', 'shapenet', 's3dis']
SEG_NEEDS_ROOT = ['shapenet', 's3dis']


@dataclass
class SegDataSplits:
    r"""The training and test sets of a segmentation task.

    :obj:`task` is :obj:`"part"` (then :obj:`parts` maps every category to
    its part ids, and every example has a :obj:`category`) or
    :obj:`"semantic"`; :obj:`in_channels` is the number of point features
    :obj:`x` besides the coordinates."""
    train: Any
    test: Any
    task: str
    num_classes: int
    in_channels: int = 0
    parts: Optional[Dict[str, List[int]]] = None
    class_names: Optional[List[str]] = None
    info: dict = field(default_factory=dict)

    @property
    def categories(self) -> Optional[List[str]]:
        return None if self.parts is None else list(self.parts)

    @property
    def num_categories(self) -> int:
        return 0 if self.parts is None else len(self.parts)


def _limit(dataset, n: Optional[int], by_category: bool):
    r"""The first :obj:`n` examples (category-balanced for part
    segmentation, see :func:`balanced_subset`)."""
    if n is None or n >= len(dataset):
        return dataset
    if by_category:
        cat = dataset._data.category.view(-1)
        idx = balanced_subset([int(cat[j]) for j in dataset.indices()], n)
    else:
        idx = list(range(n))
    return dataset[torch.tensor(idx, dtype=torch.long)]


def select_categories(dataset, names: List[str],
                      parts: Dict[str, List[int]]
                      ) -> Tuple[Any, Dict[str, List[int]]]:
    r"""The examples of :obj:`dataset` whose category is one of
    :obj:`names` (a copy), and their categories' parts. Categories are
    renumbered :obj:`0..` in the order of :obj:`parts` (every category's
    part ids), and so are the part ids, so that a network has an output
    for each part it can meet only (as BiPointNet's per-category ShapeNet
    part networks)."""
    keep = [i for i, name in enumerate(parts) if name in names]
    kept = {name: ids for name, ids in parts.items() if name in names}
    cat = dataset._data.category.view(-1)
    idx = [j for j, i in enumerate(dataset.indices()) if int(cat[i]) in keep]
    sub = dataset.copy(torch.tensor(idx, dtype=torch.long))
    renumber = torch.full((len(parts), ), -1, dtype=torch.long)
    renumber[keep] = torch.arange(len(keep))
    sub._data.category = renumber[sub._data.category]
    old = [p for ids in kept.values() for p in ids]
    relabel = torch.full((max(max(v) for v in parts.values()) + 1, ), -1,
                         dtype=torch.long)
    relabel[old] = torch.arange(len(old))
    sub._data.y = relabel[sub._data.y]
    return sub, {name: relabel[ids].tolist() for name, ids in kept.items()}


def build_seg_datasets(
    name: str,
    root: Optional[str] = None,
    num_points: Optional[int] = None,
    augment: bool = True,
    limit_train: Optional[int] = None,
    limit_test: Optional[int] = None,
    test_area: int = 5,
    synthetic_per_category: Optional[int] = None,
    synthetic_points: int = 1024,
    normals: bool = False,
    test_seed: int = 0,
    categories: Optional[List[str]] = None,
    log: bool = False,
) -> SegDataSplits:
    r"""Builds the training and test sets of :obj:`name` (one of
    :obj:`SEG_DATASETS`).

    Part segmentation (:class:`~torch_geometric_binary.datasets.
    SyntheticParts`, generated in memory, or :class:`~torch_geometric_binary.
    datasets.ShapeNetPart` from :obj:`root`, train+val against test, with
    the normals as features if :obj:`normals`): every training shape keeps a
    random subset of :obj:`num_points` points (new every epoch), is
    normalized into the unit sphere and, if :obj:`augment`, randomly scaled
    and translated (:class:`RandomScaleTranslate`). Test shapes keep a
    fixed subset: their first points (synthetic shapes are in random order)
    or one drawn once under :obj:`test_seed` (ShapeNet part), normalized the
    same way. Semantic segmentation (:class:`~torch_geometric_binary.
    datasets.S3DISRooms` blocks from :obj:`root`, :obj:`Area_<test_area>`
    as test split, 6 features per point): the same point subsets, no
    normalization or augmentation (block coordinates are metric).
    :obj:`limit_train`/:obj:`limit_test` keep a subset for smoke runs
    (category-balanced for part segmentation). :obj:`categories` keeps
    the shapes of those part-segmentation categories only (one model per
    category, the protocol of BiPointNet's ShapeNet part results), with
    the categories and their parts renumbered in the dataset's order (see
    :func:`select_categories`).
    """
    if name not in SEG_DATASETS:
        raise ValueError(f"Unknown dataset '{name}' (available: "
                         f"{', '.join(SEG_DATASETS)})")
    if name in SEG_NEEDS_ROOT:
        if root is None:
            raise ValueError(f"Dataset '{name}' needs a root folder")
        root = osp.abspath(osp.expanduser(root))
        if not osp.isdir(root):
            raise FileNotFoundError(f"Dataset root '{root}' does not exist")

    sample_train = [] if num_points is None else [
        T.FixedPoints(num_points, replace=False, allow_duplicates=False)]
    sample_test = [] if num_points is None else [FirstPoints(num_points)]
    info: Dict[str, Any] = {}
    if name == 's3dis':
        from torch_geometric_binary.datasets import S3DISRooms
        train = S3DISRooms(root, test_area, train=True,
                           transform=T.Compose(sample_train), log=log)
        test = S3DISRooms(root, test_area, train=False, log=log)
        splits = SegDataSplits(None, None, 'semantic', train.num_classes,
                               6, None, list(S3DISRooms.CLASSES), info)
    else:
        augmentation = [RandomScaleTranslate()] if augment else []
        train_tf = T.Compose(sample_train + [NormalizeUnitSphere()] +
                             augmentation)
        if name == 'synthetic':
            from torch_geometric_binary.datasets import SyntheticParts
            kwargs = dict(num_points=synthetic_points, log=log)
            train = SyntheticParts(train=True, transform=train_tf,
                                   num_per_category=synthetic_per_category,
                                   **kwargs)
            test = SyntheticParts(
                train=False, transform=T.Compose(sample_test +
                                                 [NormalizeUnitSphere()]),
                num_per_category=None if synthetic_per_category is None
                else max(1, synthetic_per_category // 4), **kwargs)
            cls = SyntheticParts
        else:
            from torch_geometric_binary.datasets import ShapeNetPart
            train = ShapeNetPart(root, 'trainval', include_normals=normals,
                                 transform=train_tf, log=log)
            test = ShapeNetPart(root, 'test', include_normals=normals,
                                log=log)
            cls = ShapeNetPart
        has_x = getattr(train._data, 'x', None) is not None
        splits = SegDataSplits(None, None, 'part', cls.num_parts,
                               3 if has_x else 0, dict(cls.PARTS),
                               list(getattr(cls, 'PART_NAMES', []) or [])
                               or None, info)
    by_category = splits.task == 'part'
    if categories is not None:
        if not by_category:
            raise ValueError(f"Dataset '{name}' has no categories (part "
                             f"segmentation only)")
        known = list(splits.parts)
        unknown = [c for c in categories if c not in known]
        if unknown or not categories:
            raise ValueError(f"Unknown categories {unknown} of dataset "
                             f"'{name}' (available: {', '.join(known)})")
        train, parts = select_categories(train, categories, splits.parts)
        test, _ = select_categories(test, categories, splits.parts)
        if splits.class_names:  # The new ids, in order, of the old parts.
            splits.class_names = [splits.class_names[p] for c in parts
                                  for p in splits.parts[c]]
        splits.parts = parts
        splits.num_classes = sum(len(v) for v in parts.values())
    train = _limit(train, limit_train, by_category)
    test = _limit(test, limit_test, by_category)
    if name != 'synthetic':  # A fixed random subset of every test cloud.
        sub = [T.FixedPoints(num_points, replace=False,
                             allow_duplicates=False)] if num_points else []
        norm = [NormalizeUnitSphere()] if by_category else []
        if sub or norm:
            test = _materialize(test, T.Compose(sub + norm), test_seed)
    splits.train, splits.test = train, test
    return splits


def seg_forward(model: torch.nn.Module, data) -> Tensor:
    r"""The per-point logits of a segmentation network on a batch: its
    :obj:`pos` and :obj:`batch`, its features :obj:`x` if the model takes
    features, and the :obj:`category` of every cloud if it does part
    segmentation (also through a
    :class:`~torch.nn.parallel.DistributedDataParallel` wrapper)."""
    net = getattr(model, 'module', model)
    x = data.x if getattr(net, 'in_channels', 0) else None
    category = data.category if getattr(net, 'num_categories', 0) else None
    return model(data.pos, data.batch, x=x, category=category)


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    loader: Iterable,
    device: torch.device,
    num_classes: int,
    parts: Optional[Dict[str, List[int]]] = None,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    precision: str = 'fp32',
) -> Union[PartSegMetric, SemSegMetric]:
    r"""Evaluates a segmentation network (in eval mode) over :obj:`loader`:
    a :class:`PartSegMetric` over :obj:`parts` (the logits restricted to
    every shape's category) for part segmentation, else a
    :class:`SemSegMetric` of :obj:`num_classes`; summed over processes
    under :obj:`torch.distributed`."""
    model.eval()
    metric = PartSegMetric(parts, device=device) if parts is not None \
        else SemSegMetric(num_classes, device=device)
    it = progress(loader) if progress is not None else loader
    for data in it:
        data = data.to(device, non_blocking=True)
        with autocast(device, precision):
            out = seg_forward(model, data).float()
        if parts is not None:
            metric.update(out, data.y, data.category, data.batch)
        else:
            metric.update(out, data.y)
    return metric.all_reduce()


#: The metric that selects the best epoch, per task.
SEG_SCORE = {'part': 'instance_miou', 'semantic': 'miou'}
