import glob
import math
import os.path as osp
import re
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from torch_geometric.data import Data

from torch_geometric_binary.datasets.local import (
    LocalDataset,
    load_npy,
    natural_key,
    read_lines,
)

LAYOUTS = {
    'npy': "rooms as 'Area_<a>_<room>.npy' arrays of rows "
    "'x y z r g b label' (e.g. 'stanford_indoor3d/')",
    'h5': "HDF5 blocks ('ply_data_all_*.h5' with keys 'data' [B, 4096, 9] "
    "and 'label' [B, 4096], and 'room_filelist.txt', e.g. "
    "'indoor3d_sem_seg_hdf5_data/')",
}

_ROOM = re.compile(r'^Area_(\d+)_')


def _area(room: str, source: str) -> int:
    match = _ROOM.match(room)
    if match is None:
        raise ValueError(f"Room '{room}' in '{source}' is not named "
                         f"'Area_<a>_<room>'")
    return int(match.group(1))


def room_to_blocks(
    points: np.ndarray,
    rng: np.random.Generator,
    block_size: float = 1.0,
    stride: float = 1.0,
    num_points: int = 4096,
    min_points: int = 100,
) -> List[np.ndarray]:
    r"""Cuts a room (rows :obj:`x y z ...`, shifted so that its minimum is
    at the origin) into :obj:`block_size` squares in xy every
    :obj:`stride`, drops blocks of fewer than :obj:`min_points` points and
    samples :obj:`num_points` row indices per block (without replacement,
    padded by random repeats when the block has fewer), as PointNet's
    :obj:`room2blocks` does. Returns :obj:`(indices, corner)` per block,
    :obj:`corner` being the block's lower xy corner."""
    xy = points[:, :2]
    limit = xy.max(0)
    nx, ny = (max(math.ceil((lim - block_size) / stride), 0) + 1
              for lim in limit)
    blocks = []
    for i in range(nx):
        in_x = (xy[:, 0] >= i * stride) & (xy[:, 0] <= i * stride +
                                           block_size)
        for j in range(ny):
            idx = np.flatnonzero(in_x & (xy[:, 1] >= j * stride) &
                                 (xy[:, 1] <= j * stride + block_size))
            if idx.size == 0 or idx.size < min_points:
                continue
            choice = rng.permutation(idx.size)[:num_points]
            if idx.size < num_points:
                choice = np.concatenate([choice, rng.integers(
                    0, idx.size, num_points - idx.size)])
            blocks.append((idx[choice], (i * stride, j * stride)))
    return blocks


class S3DISRooms(LocalDataset):
    r"""The Stanford Large-Scale 3D Indoor Spaces dataset (S3DIS) from the
    "3D Semantic Parsing of Large-Scale Indoor Spaces" (Armeni et al., CVPR
    2016)
    paper for semantic segmentation (13 classes, :obj:`CLASSES`), as blocks
    of rooms read from a local folder (nothing is downloaded; see
    :class:`torch_geometric.datasets.S3DIS` for the download).

    The layout of :obj:`root` (or of one of its direct sub-folders) is
    detected automatically:

    1. **npy** (rooms, *e.g.*, :obj:`stanford_indoor3d/`): one
       :obj:`Area_<a>_<room>.npy` array per room (*e.g.*,
       :obj:`Area_5_office_1.npy`) of rows :obj:`x y z r g b label` (colors
       in :obj:`0..255`, labels in :obj:`0..12`). Each room is shifted to a
       minimum of zero and cut into :obj:`block_size` x :obj:`block_size`
       squares in xy every :obj:`stride` (all heights), blocks of fewer than
       :obj:`min_points` points are dropped and :obj:`num_points` points
       are sampled per block (see :func:`room_to_blocks`), as in PointNet
       and DGCNN. Block :obj:`k` of room :obj:`r` (in sorted order of all
       rooms) is sampled by a :class:`numpy.random.Generator` seeded by
       :obj:`(seed, r)`, so the blocks do not depend on the split.
       The features are those of PointNet's HDF5 blocks: :obj:`pos` is the
       room position with x and y relative to the block center, and
       :obj:`x` holds the colors in :obj:`[0, 1]` and the position divided
       by the room's extent (in :obj:`[0, 1]`).
    2. **h5** (PointNet's :obj:`indoor3d_sem_seg_hdf5_data`):
       :obj:`ply_data_all_*.h5` (those listed in :obj:`all_files.txt` if
       present) with :obj:`data` :obj:`[B, 4096, 9]` and :obj:`label`
       :obj:`[B, 4096]`, and :obj:`room_filelist.txt` naming the room of
       every block (one line per block, in file order). :obj:`pos` is
       :obj:`data[..., :3]` and :obj:`x` is :obj:`data[..., 3:]` (colors and
       normalized position, as provided); the block parameters are unused.

    The rooms of :obj:`Area_<test_area>` form the test split, the others
    the training split (the usual Area-5 protocol by default).
    Each :class:`~torch_geometric.data.Data` object holds :obj:`pos`
    (float32 :obj:`[N, 3]`), :obj:`x` (float32 :obj:`[N, 6]`) and :obj:`y`
    (long :obj:`[N]` in :obj:`0..12`).
    Processing reads all rooms once (both splits) and validates them: a
    file with the wrong shape, a label outside :obj:`0..12`, colors outside
    :obj:`0..255`, or a room list that does not match the blocks raises an
    error naming the file. The processed files go to
    :obj:`processed_dir` (default: :obj:`root/processed`, like PyG).

    Args:
        root (str): The folder holding the raw data.
        test_area (int, optional): The area of the test split (1-6).
            (default: :obj:`5`)
        train (bool, optional): If :obj:`True`, loads the training split,
            otherwise the test split. (default: :obj:`True`)
        block_size (float, optional): The side of a block in meters (npy).
            (default: :obj:`1.0`)
        stride (float, optional): The step between blocks in meters (npy).
            (default: :obj:`1.0`)
        num_points (int, optional): The number of points per block (npy).
            (default: :obj:`4096`)
        min_points (int, optional): Blocks with fewer points are dropped
            (npy). (default: :obj:`100`)
        seed (int, optional): The seed of the point sampling (npy).
            (default: :obj:`0`)
        transform (callable, optional): A function/transform applied on every
            access. (default: :obj:`None`)
        pre_transform (callable, optional): A function/transform applied
            before the data is saved to disk. (default: :obj:`None`)
        pre_filter (callable, optional): A function that returns whether a
            :class:`~torch_geometric.data.Data` object is kept.
            (default: :obj:`None`)
        processed_dir (str, optional): Where to store the processed files.
            (default: :obj:`None`, see above)
        force_reload (bool, optional): Whether to re-process the dataset.
            (default: :obj:`False`)
        log (bool, optional): Whether to print console output while
            processing. (default: :obj:`True`)
    """
    NAME = 'S3DIS'
    LAYOUTS = LAYOUTS

    CLASSES: List[str] = [
        'ceiling', 'floor', 'wall', 'beam', 'column', 'window', 'door',
        'table', 'chair', 'sofa', 'bookcase', 'board', 'clutter'
    ]

    def __init__(
        self,
        root: str,
        test_area: int = 5,
        train: bool = True,
        block_size: float = 1.0,
        stride: float = 1.0,
        num_points: int = 4096,
        min_points: int = 100,
        seed: int = 0,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        processed_dir: Optional[str] = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        if test_area not in range(1, 7):
            raise ValueError(f"'test_area' must be in 1..6 (got "
                             f"{test_area})")
        if not (block_size > 0 and stride > 0):
            raise ValueError(f"'block_size' and 'stride' must be positive "
                             f"(got {block_size}, {stride})")
        if num_points < 1 or min_points < 0 or seed < 0:
            raise ValueError(f"'num_points' must be positive, 'min_points' "
                             f"and 'seed' non-negative (got {num_points}, "
                             f"{min_points}, {seed})")
        self.test_area = test_area
        self.train = train
        self.block_size, self.stride = float(block_size), float(stride)
        self.num_points, self.min_points = num_points, min_points
        self.seed = seed
        root = osp.abspath(osp.expanduser(root))
        self._processed_dir = osp.abspath(osp.expanduser(
            processed_dir or osp.join(root, 'processed')))
        # The layout is part of the file names: detect it (a clear error
        # before any folder is made).
        self._layout: Tuple[str, str] = self.detect_layout(root)

        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        self.load(self.processed_paths[0 if train else 1])

    @property
    def layout(self) -> str:
        return self._layout[0]

    @property
    def processed_file_names(self) -> List[str]:
        key = f'h5_area{self.test_area}'
        if self.layout == 'npy':
            key = (f'npy_area{self.test_area}_b{self.block_size:g}_'
                   f's{self.stride:g}_p{self.num_points}_'
                   f'm{self.min_points}_seed{self.seed}')
        return [f's3dis_{key}_{split}.pt' for split in ('train', 'test')]

    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    # Layout detection ########################################################

    @staticmethod
    def match_layout(folder: str) -> Optional[str]:
        if glob.glob(osp.join(folder, 'ply_data_all_*.h5')):
            return 'h5'
        if glob.glob(osp.join(folder, 'Area_*_*.npy')):
            return 'npy'
        return None

    # Processing ##############################################################

    def process(self) -> None:
        layout, folder = self._layout
        read = self._read_npy if layout == 'npy' else self._read_h5
        splits: List[List[Data]] = [[], []]
        for area, data in read(folder):
            splits[int(area == self.test_area)].append(data)
        for i, data_list in enumerate(splits):
            if len(data_list) == 0:
                raise ValueError(
                    f"Found no blocks of the {['training', 'test'][i]} "
                    f"split (test_area={self.test_area}) in '{folder}'")
            if self.pre_filter is not None:
                data_list = [d for d in data_list if self.pre_filter(d)]
            if self.pre_transform is not None:
                data_list = [self.pre_transform(d) for d in data_list]
            self.save(data_list, self.processed_paths[i])

    @staticmethod
    def _check_labels(label: np.ndarray, source: str) -> None:
        bad = (label < 0) | (label > 12) | (np.round(label) != label)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise ValueError(f"Label {label.reshape(-1)[i]:g} (entry {i}) "
                             f"in '{source}' is not a class in 0..12")

    def _read_npy(self, folder: str):
        paths = sorted(glob.glob(osp.join(folder, 'Area_*_*.npy')),
                       key=natural_key)
        for r, path in enumerate(paths):
            room = np.asarray(load_npy(path))
            if room.ndim != 2 or room.shape[1] != 7 or room.shape[0] == 0 \
                    or not np.issubdtype(room.dtype, np.number):
                raise ValueError(
                    f"Expected rows 'x y z r g b label' (shape [N, 7]) in "
                    f"'{path}' (got shape {tuple(room.shape)}, dtype "
                    f"{room.dtype})")
            room = room.astype(np.float64)
            if not np.isfinite(room).all():
                raise ValueError(f"'{path}' holds NaN or Inf values")
            self._check_labels(room[:, 6], path)
            rgb = room[:, 3:6]
            if rgb.min() < 0 or rgb.max() > 255:
                raise ValueError(f"Colors of '{path}' are outside 0..255")
            xyz = room[:, :3] - room[:, :3].min(0)
            extent = np.maximum(xyz.max(0), 1e-12)
            rng = np.random.default_rng([self.seed, r])
            area = _area(osp.basename(path), path)
            for idx, corner in room_to_blocks(xyz, rng, self.block_size,
                                              self.stride, self.num_points,
                                              self.min_points):
                pos = xyz[idx].copy()
                # PointNet's block features: xy about the block center.
                pos[:, :2] -= np.asarray(corner) + self.block_size / 2
                x = np.concatenate([rgb[idx] / 255.0, xyz[idx] / extent], 1)
                yield area, Data(
                    pos=torch.tensor(pos, dtype=torch.float32),
                    x=torch.tensor(x, dtype=torch.float32),
                    y=torch.tensor(room[idx, 6], dtype=torch.long))

    def _read_h5(self, folder: str):
        import h5py

        list_file = osp.join(folder, 'all_files.txt')
        if osp.isfile(list_file):
            paths = [osp.join(folder, osp.basename(line))
                     for line in read_lines(list_file)]
        else:
            paths = sorted(glob.glob(osp.join(folder, 'ply_data_all_*.h5')),
                           key=natural_key)
        rooms_file = osp.join(folder, 'room_filelist.txt')
        if not osp.isfile(rooms_file):
            raise FileNotFoundError(
                f"Missing '{rooms_file}' (the room of every block, needed "
                f"for the area split)")
        rooms = read_lines(rooms_file)

        blocks = []
        for path in paths:
            try:
                with h5py.File(path, 'r') as f:
                    missing = [k for k in ('data', 'label') if k not in f]
                    if missing:
                        raise KeyError(f"no {missing} datasets")
                    data, label = np.asarray(f['data']), \
                        np.asarray(f['label'])
            except (OSError, KeyError) as e:
                raise ValueError(f"Cannot read '{path}': "
                                 f"{type(e).__name__}: {e}") from None
            if data.ndim != 3 or data.shape[2] != 9 or \
                    label.shape != data.shape[:2]:
                raise ValueError(
                    f"Expected 'data' [B, N, 9] and 'label' [B, N] in "
                    f"'{path}' (got {tuple(data.shape)}, "
                    f"{tuple(label.shape)})")
            self._check_labels(label, path)
            blocks += [(data[i], label[i], f'{path}[{i}]')
                       for i in range(data.shape[0])]
        if len(blocks) != len(rooms):
            raise ValueError(
                f"'{rooms_file}' names {len(rooms)} rooms for "
                f"{len(blocks)} blocks in {len(paths)} HDF5 files (one line "
                f"per block expected)")
        for (data, label, _), room in zip(blocks, rooms):
            yield _area(room, rooms_file), Data(
                pos=torch.tensor(data[:, :3], dtype=torch.float32),
                x=torch.tensor(data[:, 3:], dtype=torch.float32),
                y=torch.tensor(label, dtype=torch.long))

    def __repr__(self) -> str:
        split = 'train' if self.train else 'test'
        return (f'{self.__class__.__name__}({len(self)}, '
                f'test_area={self.test_area}, split={split!r})')
