r"""The datasets of the training program (:obj:`examples/modelnet.py`)."""
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import torch
import torch_geometric.transforms as T

from torch_geometric_binary.train.transforms import (FirstPoints,
                                                     NormalizeUnitSphere,
                                                     RandomScaleTranslate)

DATASETS = ['synthetic', 'modelnet40', 'modelnet10', 'pyg-modelnet40',
            'pyg-modelnet10']

#: Datasets that read (or, for PyG's meshes, download into) :obj:`--root`.
NEEDS_ROOT = [d for d in DATASETS if d != 'synthetic']


@dataclass
class DataSplits:
    train: Any
    test: Any
    num_classes: int
    classes: Optional[List[str]] = None
    info: dict = field(default_factory=dict)


def balanced_subset(labels: Sequence[int], n: int) -> List[int]:
    r"""The indices of a class-balanced subset of size :obj:`n` (the first
    example of every class, then the second, ...), in dataset order;
    deterministic, for smoke runs."""
    per_class = {}
    for i, y in enumerate(labels):
        per_class.setdefault(int(y), []).append(i)
    order = sorted(
        ((rank, y, i) for y, idx in per_class.items()
         for rank, i in enumerate(idx)))
    return sorted(i for _, _, i in order[:n])


def _labels(dataset) -> List[int]:
    if isinstance(dataset, list):
        return [int(d.y) for d in dataset]
    y = dataset._data.y.view(-1)  # One label per cloud.
    return [int(y[j]) for j in dataset.indices()]


def _limit(dataset, n: Optional[int]):
    if n is None or n >= len(dataset):
        return dataset
    idx = balanced_subset(_labels(dataset), n)
    if isinstance(dataset, list):
        return [dataset[i] for i in idx]
    return dataset[torch.tensor(idx, dtype=torch.long)]


def _materialize(dataset, transform, seed: int) -> list:
    r"""Applies a random :obj:`transform` (*e.g.* point sampling from
    meshes) once to every example under a fixed seed: a deterministic test
    set."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [transform(dataset[i]) for i in range(len(dataset))]


def build_datasets(
    name: str,
    root: Optional[str] = None,
    num_points: Optional[int] = None,
    augment: bool = True,
    limit_train: Optional[int] = None,
    limit_test: Optional[int] = None,
    synthetic_classes: int = 10,
    synthetic_points: int = 512,
    test_seed: int = 0,
    log: bool = False,
    rebuild_cache: bool = False,
) -> DataSplits:
    r"""Builds the training and test sets of :obj:`name` (one of
    :obj:`DATASETS`).

    Every training cloud is randomly subsampled to :obj:`num_points` points
    (:class:`~torch_geometric.transforms.FixedPoints` without replacement;
    a new subset each epoch), normalized into the unit sphere and, if
    :obj:`augment`, scaled per axis by a factor in :obj:`[2/3, 3/2]` and
    translated by up to :obj:`0.2` (:class:`RandomScaleTranslate`). Every
    test cloud keeps its *first* :obj:`num_points` points
    (:class:`FirstPoints`, deterministic) and is normalized the same way.
    :obj:`num_points=None` keeps all points (pre-sampled data) or samples
    1024 (PyG's meshes). For PyG's mesh datasets, points are sampled on the
    surfaces (:class:`~torch_geometric.transforms.SamplePoints`): anew every
    epoch for training, once under :obj:`test_seed` for the test set.
    :obj:`limit_train`/:obj:`limit_test` keep a class-balanced subset
    (:func:`balanced_subset`) for smoke runs. :obj:`rebuild_cache`
    re-processes the cached processed files of ModelNet (pre-sampled or
    PyG's) even if they match the raw files.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset '{name}' (available: "
                         f"{', '.join(DATASETS)})")
    if name in NEEDS_ROOT:
        if root is None:
            raise ValueError(f"Dataset '{name}' needs a root folder")
        root = osp.abspath(osp.expanduser(root))
        if not osp.isdir(root):
            raise FileNotFoundError(f"Dataset root '{root}' does not exist")

    augmentation = [RandomScaleTranslate()] if augment else []
    train_tf: List = []
    test_tf: List = []
    if num_points is not None and not name.startswith('pyg-'):
        train_tf.append(T.FixedPoints(num_points, replace=False,
                                      allow_duplicates=False))
        test_tf.append(FirstPoints(num_points))
    train_tf = T.Compose(train_tf + [NormalizeUnitSphere()] + augmentation)
    test_tf = T.Compose(test_tf + [NormalizeUnitSphere()])

    info = {}
    classes = None
    if name == 'synthetic':
        from torch_geometric_binary.datasets import SyntheticShapes
        pts = synthetic_points
        train = SyntheticShapes(train=True, num_classes=synthetic_classes,
                                num_points=pts, transform=train_tf, log=log)
        test = SyntheticShapes(train=False, num_classes=synthetic_classes,
                               num_points=pts, transform=test_tf, log=log)
        num_classes = train.num_classes
        classes = list(train.classes)
    elif name in ('modelnet40', 'modelnet10'):
        from torch_geometric_binary.datasets import PreSampledModelNet
        mn = name[len('modelnet'):]
        # One process() writes both splits: the test set reuses it.
        train = PreSampledModelNet(root, mn, train=True, transform=train_tf,
                                   log=log, force_reload=rebuild_cache)
        test = PreSampledModelNet(root, mn, train=False, transform=test_tf,
                                  log=log)
        num_classes = train.num_classes
        classes = list(train.classes)
    else:
        from torch_geometric.datasets import ModelNet
        mn = name[len('pyg-modelnet'):]
        n = num_points or 1024
        sample = T.SamplePoints(n)
        train = ModelNet(root, mn, train=True,
                         transform=T.Compose([sample, train_tf]),
                         pre_transform=T.NormalizeScale(),
                         force_reload=rebuild_cache)
        test = ModelNet(root, mn, train=False,
                        pre_transform=T.NormalizeScale())
        test = _limit(test, limit_test)
        limit_test = None
        test = _materialize(test, T.Compose([sample, test_tf]), test_seed)
        num_classes = int(mn)
        info['sample_points'] = n

    train = _limit(train, limit_train)
    test = _limit(test, limit_test)
    return DataSplits(train, test, num_classes, classes, info)


def train_loader(dataset, batch_size: int, world_size: int = 1,
                 rank: int = 0, seed: int = 0, workers: int = 0):
    r"""The shuffled training loader of one process, and its
    :class:`~torch.utils.data.distributed.DistributedSampler` under
    :obj:`torch.distributed` (:obj:`None` otherwise; call its
    :meth:`set_epoch` every epoch). :obj:`batch_size` is per process."""
    from torch_geometric.loader import DataLoader
    sampler = None
    n = len(dataset)
    if world_size > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True,
            seed=seed)
        n = len(sampler)
    # A last batch of a single cloud breaks BatchNorm: drop it (only then).
    drop_last = n > 1 and n % batch_size == 1
    loader = DataLoader(dataset, batch_size=batch_size,
                        shuffle=sampler is None, sampler=sampler,
                        drop_last=drop_last, num_workers=workers)
    return loader, sampler


def test_loader(dataset, batch_size: int, world_size: int = 1,
                rank: int = 0, workers: int = 0):
    r"""The evaluation loader of one process: every process takes a
    disjoint shard of :obj:`dataset` (no padding, so that every cloud counts
    once in the all-reduced metrics)."""
    from torch_geometric.loader import DataLoader
    if world_size > 1:
        idx = list(range(rank, len(dataset), world_size))
        dataset = [dataset[i] for i in idx] if isinstance(dataset, list) \
            else dataset[torch.tensor(idx, dtype=torch.long)]
    return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                      num_workers=workers)
