import os
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
from torch_geometric.data import InMemoryDataset


def natural_key(s: str) -> List:
    r"""Sort key that orders :obj:`"shape_2"` before :obj:`"shape_10"`."""
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', s)]


def read_lines(path: str) -> List[str]:
    r"""The non-empty, stripped lines of a text file."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def load_npy(path: str) -> np.ndarray:
    r"""Loads a :obj:`.npy` array with an error that names the file and the
    problem."""
    # numpy names neither the file nor the problem (an empty file gives
    # "EOFError: No data left in file", a truncated one "cannot reshape").
    try:
        points = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise  # Missing or unreadable: already named.
        size = osp.getsize(path)
        problem = 'is empty (0 bytes)' if size == 0 else \
            f'is truncated or not a .npy array ({size} bytes)'
        raise ValueError(f"Raw file '{path}' {problem}: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(points, np.ndarray):  # An .npz archive.
        points.close()
        raise ValueError(f"Raw file '{path}' is not a .npy array")
    return points


class LocalDataset(InMemoryDataset):
    r"""Base of the readers of data sets that are not downloaded: the raw
    files are read in place under :obj:`root`, in one of several layouts
    told apart by their file names, and processed once into
    :obj:`processed_dir`.

    A subclass names the data set (:obj:`NAME`), describes its layouts
    (:obj:`LAYOUTS`, layout name to description) and recognizes them in a
    folder (:meth:`match_layout`); it sets :obj:`self._processed_dir` before
    calling :meth:`__init__`.
    """
    NAME: str = ''
    LAYOUTS: Dict[str, str] = {}

    _processed_dir: str

    @property
    def raw_dir(self) -> str:
        return self.root

    @property
    def processed_dir(self) -> str:
        return self._processed_dir

    @property
    def raw_file_names(self) -> List[str]:
        return []

    @staticmethod
    def match_layout(folder: str) -> Optional[str]:
        r"""The layout of the files directly in :obj:`folder`, if any."""
        raise NotImplementedError

    @classmethod
    def detect_layout(cls, root: str) -> Tuple[str, str]:
        r"""Returns :obj:`(layout, folder)`: the first of :obj:`root` and its
        direct sub-folders (by name) that holds one of :obj:`LAYOUTS`."""
        looked_for = '; '.join(f'{k}: {v}' for k, v in cls.LAYOUTS.items())
        if not osp.isdir(root):
            raise FileNotFoundError(
                f"{cls.NAME} root folder '{root}' does not exist (expected "
                f"one of the layouts {looked_for})")
        folders = [root] + sorted(
            e.path for e in os.scandir(root)
            if e.is_dir() and not e.name.startswith('.'))
        for folder in folders:
            layout = cls.match_layout(folder)
            if layout is not None:
                return layout, folder
        raise FileNotFoundError(
            f"Could not find {cls.NAME} data in '{root}' or its direct "
            f"sub-folders. Looked for: {looked_for}")
