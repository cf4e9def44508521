import glob
import json
import os.path as osp
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_geometric.data import Data

from torch_geometric_binary.datasets.local import (
    LocalDataset,
    natural_key,
    read_lines,
)

LAYOUTS = {
    'txt': "'shapenetcore_partanno_segmentation_benchmark_v0_normal' "
    "('synsetoffset2category.txt', 'train_test_split/shuffled_"
    "{train,val,test}_file_list.json' and '<synset>/<shape>.txt' with rows "
    "'x y z nx ny nz part')",
    'h5': "HDF5 ('ply_data_{train,val,test}*.h5' with keys 'data', 'label' "
    "and 'pid', listed by '{train,val,test}_hdf5_file_list.txt' if present)",
}

SPLITS = {
    'train': ['train'],
    'val': ['val'],
    'trainval': ['train', 'val'],
    'test': ['test'],
}


def _error(path: str, e: Exception) -> ValueError:
    return ValueError(f"Cannot read '{path}': {type(e).__name__}: {e}")


class ShapeNetPart(LocalDataset):
    r"""The ShapeNet part-segmentation benchmark from the `"A Scalable Active
    Framework for Region Annotation in 3D Shape Collections"
    <http://web.stanford.edu/~ericyi/papers/part_annotation_16_small.pdf>`_
    paper (16 categories, 50 parts), read from a local folder (nothing is
    downloaded; see :class:`torch_geometric.datasets.ShapeNet` for the
    download).

    The layout of :obj:`root` (or of one of its direct sub-folders) is
    detected automatically:

    1. **txt** (:obj:`shapenetcore_partanno_segmentation_benchmark_v0_normal`):
       :obj:`synsetoffset2category.txt` (rows :obj:`name<TAB>synset`), one
       folder per synset of :obj:`<shape>.txt` files with rows
       :obj:`x y z nx ny nz part` (the global part id as a float), and
       :obj:`train_test_split/shuffled_{train,val,test}_file_list.json`
       listing :obj:`"shape_data/<synset>/<shape>"`.
    2. **h5** (:obj:`shapenet_part_seg_hdf5_data`):
       :obj:`ply_data_{train,val,test}*.h5` with :obj:`data`
       :obj:`[B, N, 3]`, :obj:`label` :obj:`[B, 1]` (category) and
       :obj:`pid` :obj:`[B, N]` (global part id), optionally :obj:`normal`
       :obj:`[B, N, 3]`; the files of a split are those listed in
       :obj:`{split}_hdf5_file_list.txt` if present, else all that match.

    Each :class:`~torch_geometric.data.Data` object holds :obj:`pos`
    (float32 :obj:`[N, 3]`), :obj:`y` (long :obj:`[N]`, global part ids
    :obj:`0..49`), :obj:`category` (long :obj:`[1]`, the index in
    :obj:`CATEGORIES`) and :obj:`x`: the normals (float32 :obj:`[N, 3]`) if
    :obj:`include_normals` and the source has them (the txt layout does,
    the usual HDF5 files do not; if only some shapes of a split have them,
    they are dropped with a warning), else :obj:`None`.
    :obj:`PARTS` gives the part ids of each category (the standard
    :obj:`seg_classes`), for :func:`~torch_geometric_binary.train.metrics.
    mask_to_category` and :class:`~torch_geometric_binary.train.metrics.
    PartSegMetric`.

    Processing reads the requested split once and validates it: a missing
    file, a row with the wrong number of columns, a category unknown or a
    part id outside its category's parts raises an error naming the file.
    The processed file goes to :obj:`processed_dir` (default:
    :obj:`root/processed`, like PyG); :obj:`force_reload=True` rebuilds it.

    Args:
        root (str): The folder holding the raw data.
        split (str, optional): :obj:`"train"`, :obj:`"val"`,
            :obj:`"trainval"` or :obj:`"test"`. (default: :obj:`"trainval"`)
        categories (str or [str], optional): The categories to keep (their
            indices and part ids stay the global ones); all if :obj:`None`.
            (default: :obj:`None`)
        include_normals (bool, optional): Whether to put the normals into
            :obj:`x`. (default: :obj:`True`)
        transform (callable, optional): A function/transform applied on every
            access. (default: :obj:`None`)
        pre_transform (callable, optional): A function/transform applied
            before the data is saved to disk. (default: :obj:`None`)
        pre_filter (callable, optional): A function that returns whether a
            :class:`~torch_geometric.data.Data` object is kept.
            (default: :obj:`None`)
        processed_dir (str, optional): Where to store the processed file.
            (default: :obj:`None`, see above)
        force_reload (bool, optional): Whether to re-process the dataset.
            (default: :obj:`False`)
        log (bool, optional): Whether to print console output while
            processing. (default: :obj:`True`)
    """
    NAME = 'ShapeNet part'
    LAYOUTS = LAYOUTS

    CATEGORIES: List[str] = [
        'Airplane', 'Bag', 'Cap', 'Car', 'Chair', 'Earphone', 'Guitar',
        'Knife', 'Lamp', 'Laptop', 'Motorbike', 'Mug', 'Pistol', 'Rocket',
        'Skateboard', 'Table'
    ]
    PARTS: Dict[str, List[int]] = {
        'Airplane': [0, 1, 2, 3],
        'Bag': [4, 5],
        'Cap': [6, 7],
        'Car': [8, 9, 10, 11],
        'Chair': [12, 13, 14, 15],
        'Earphone': [16, 17, 18],
        'Guitar': [19, 20, 21],
        'Knife': [22, 23],
        'Lamp': [24, 25, 26, 27],
        'Laptop': [28, 29],
        'Motorbike': [30, 31, 32, 33, 34, 35],
        'Mug': [36, 37],
        'Pistol': [38, 39, 40],
        'Rocket': [41, 42, 43],
        'Skateboard': [44, 45, 46],
        'Table': [47, 48, 49],
    }
    SYNSETS: Dict[str, str] = {
        'Airplane': '02691156',
        'Bag': '02773838',
        'Cap': '02954340',
        'Car': '02958343',
        'Chair': '03001627',
        'Earphone': '03261776',
        'Guitar': '03467517',
        'Knife': '03624134',
        'Lamp': '03636649',
        'Laptop': '03642806',
        'Motorbike': '03790512',
        'Mug': '03797390',
        'Pistol': '03948459',
        'Rocket': '04099429',
        'Skateboard': '04225943',
        'Table': '04379243',
    }
    num_parts: int = 50

    def __init__(
        self,
        root: str,
        split: str = 'trainval',
        categories: Optional[List[str]] = None,
        include_normals: bool = True,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        processed_dir: Optional[str] = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"'split' must be one of {list(SPLITS)} (got "
                             f"'{split}')")
        if categories is None:
            categories = list(self.CATEGORIES)
        elif isinstance(categories, str):
            categories = [categories]
        unknown = [c for c in categories if c not in self.PARTS]
        if unknown or not categories:
            raise ValueError(f"Unknown categories {unknown}: choose from "
                             f"{self.CATEGORIES}")
        self.split = split
        self.categories = [c for c in self.CATEGORIES if c in categories]
        self.include_normals = include_normals
        root = osp.abspath(osp.expanduser(root))
        self._processed_dir = osp.abspath(osp.expanduser(
            processed_dir or osp.join(root, 'processed')))
        self._layout: Optional[Tuple[str, str]] = None
        path = osp.join(self._processed_dir, self.processed_file_names[0])
        if force_reload or not osp.exists(path):
            # Fail early with a clear message (before any folder is made):
            self._layout = self.detect_layout(root)

        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        self.load(self.processed_paths[0])

    @property
    def processed_file_names(self) -> List[str]:
        cats = 'all' if len(self.categories) == len(self.CATEGORIES) else \
            '_'.join(c.lower() for c in self.categories)
        normals = '_normals' if self.include_normals else ''
        return [f'shapenet_part_{self.split}_{cats}{normals}.pt']

    @property
    def num_classes(self) -> int:
        r"""The number of part labels (50)."""
        return self.num_parts

    # Layout detection ########################################################

    @staticmethod
    def match_layout(folder: str) -> Optional[str]:
        if osp.isfile(osp.join(folder, 'synsetoffset2category.txt')) and \
                osp.isdir(osp.join(folder, 'train_test_split')):
            return 'txt'
        for split in ('train', 'val', 'test'):
            if glob.glob(osp.join(folder, f'ply_data_{split}*.h5')):
                return 'h5'
        return None

    # Processing ##############################################################

    def process(self) -> None:
        if self._layout is None:  # `process()` called by hand.
            self._layout = self.detect_layout(self.root)
        layout, folder = self._layout
        read = self._read_txt if layout == 'txt' else self._read_h5
        data_list = [d for s in SPLITS[self.split] for d in read(folder, s)]
        if len(data_list) == 0:
            raise ValueError(f"Found no '{self.split}' shapes of the "
                             f"categories {self.categories} in '{folder}'")
        if len({'x' in d for d in data_list}) > 1:  # Collate needs all.
            warnings.warn(f"Only some shapes in '{folder}' have normals; "
                          f"dropping the normals of the '{self.split}' "
                          f"split", stacklevel=2)
            for d in data_list:
                if 'x' in d:
                    del d.x
        if self.pre_filter is not None:
            data_list = [d for d in data_list if self.pre_filter(d)]
        if self.pre_transform is not None:
            data_list = [self.pre_transform(d) for d in data_list]
        self.save(data_list, self.processed_paths[0])

    def _to_data(self, pos, pid, category: int, normal, source: str) -> Data:
        r"""Checks the part ids against the category and builds a
        :obj:`Data` object."""
        parts = self.PARTS[self.CATEGORIES[category]]
        pid = np.asarray(pid)
        bad = ~np.isin(pid, parts) | (np.round(pid) != pid)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"Part id {pid[i]:g} of point {i} in '{source}' is not a "
                f"part of its category {self.CATEGORIES[category]} (part ids "
                f"{parts})")
        if not np.isfinite(pos).all():
            raise ValueError(f"'{source}' holds NaN or Inf coordinates")
        data = Data(pos=torch.tensor(pos, dtype=torch.float32),
                    y=torch.from_numpy(pid.astype(np.int64)),
                    category=torch.tensor([category], dtype=torch.long))
        if self.include_normals and normal is not None:
            data.x = torch.tensor(normal, dtype=torch.float32)
        return data

    def _read_txt(self, folder: str, split: str) -> List[Data]:
        names_file = osp.join(folder, 'synsetoffset2category.txt')
        synset_to_cat: Dict[str, int] = {}
        for line in read_lines(names_file):
            fields = line.split()
            if len(fields) != 2 or fields[0] not in self.PARTS:
                raise ValueError(
                    f"Bad line '{line}' in '{names_file}': expected "
                    f"'<category><TAB><synset>' with a category of "
                    f"{self.CATEGORIES}")
            synset_to_cat[fields[1]] = self.CATEGORIES.index(fields[0])

        split_file = osp.join(folder, 'train_test_split',
                              f'shuffled_{split}_file_list.json')
        if not osp.isfile(split_file):
            raise FileNotFoundError(f"Missing split file '{split_file}'")
        try:
            with open(split_file) as f:
                entries = json.load(f)
        except ValueError as e:
            raise _error(split_file, e) from None

        keep = {self.CATEGORIES.index(c) for c in self.categories}
        data_list = []
        for entry in entries:
            # "shape_data/<synset>/<shape>"
            synset, shape = entry.split('/')[-2:]
            if synset not in synset_to_cat:
                raise ValueError(f"Shape '{entry}' in '{split_file}' has a "
                                 f"synset not listed in '{names_file}'")
            category = synset_to_cat[synset]
            if category not in keep:
                continue
            path = osp.join(folder, synset, f'{shape}.txt')
            if not osp.isfile(path):
                raise FileNotFoundError(f"Shape '{entry}' listed in "
                                        f"'{split_file}' not found at "
                                        f"'{path}'")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')  # Empty-file warning.
                    rows = np.loadtxt(path, dtype=np.float32, ndmin=2)
            except ValueError as e:  # Uneven or non-numeric rows.
                raise _error(path, e) from None
            if rows.shape[0] == 0 or rows.shape[1] != 7:
                raise ValueError(
                    f"Expected rows 'x y z nx ny nz part' (7 columns) in "
                    f"'{path}' (got shape {tuple(rows.shape)})")
            data_list.append(self._to_data(rows[:, :3], rows[:, 6],
                                           category, rows[:, 3:6], path))
        return data_list

    def _h5_files(self, folder: str, split: str) -> List[str]:
        list_file = osp.join(folder, f'{split}_hdf5_file_list.txt')
        if osp.isfile(list_file):
            # Entries may carry the original folder: resolve by name.
            paths = [osp.join(folder, osp.basename(line))
                     for line in read_lines(list_file)]
            missing = [p for p in paths if not osp.isfile(p)]
            if missing:
                raise FileNotFoundError(f"Files listed in '{list_file}' not "
                                        f"found: {missing}")
            return paths
        paths = sorted(glob.glob(osp.join(folder, f'ply_data_{split}*.h5')),
                       key=natural_key)
        if not paths:
            raise FileNotFoundError(f"Found no 'ply_data_{split}*.h5' files "
                                    f"(nor '{list_file}') in '{folder}'")
        return paths

    def _read_h5(self, folder: str, split: str) -> List[Data]:
        import h5py

        keep = {self.CATEGORIES.index(c) for c in self.categories}
        data_list = []
        for path in self._h5_files(folder, split):
            try:
                with h5py.File(path, 'r') as f:
                    missing = [k for k in ('data', 'label', 'pid')
                               if k not in f]
                    if missing:
                        raise KeyError(f"no {missing} datasets")
                    pos, pid = np.asarray(f['data']), np.asarray(f['pid'])
                    label = np.asarray(f['label'])
                    normal = np.asarray(f['normal']) if 'normal' in f \
                        else None
            except (OSError, KeyError) as e:
                raise _error(path, e) from None
            B = pos.shape[0] if pos.ndim else -1
            if pos.ndim != 3 or pos.shape[2] != 3 or label.size != B or \
                    label.ndim > 2 or pid.shape != pos.shape[:2] or (
                        normal is not None and normal.shape != pos.shape):
                raise ValueError(
                    f"Expected 'data' [B, N, 3], 'label' [B, 1] and 'pid' "
                    f"[B, N] in '{path}' (got {tuple(pos.shape)}, "
                    f"{tuple(label.shape)}, {tuple(pid.shape)})")
            label = label.reshape(-1)
            for i in range(B):
                if not 0 <= label[i] < len(self.CATEGORIES):
                    raise ValueError(
                        f"Category label {label[i]} of shape {i} in '{path}' "
                        f"is outside [0, {len(self.CATEGORIES)})")
                if int(label[i]) not in keep:
                    continue
                data_list.append(self._to_data(
                    pos[i], pid[i], int(label[i]),
                    None if normal is None else normal[i], f'{path}[{i}]'))
        return data_list

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self)}, '
                f'split={self.split!r})')
