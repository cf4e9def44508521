import glob
import hashlib
import json
import os
import os.path as osp
import re
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_geometric.data import Data

from torch_geometric_binary.datasets.local import (
    LocalDataset,
    load_npy,
    natural_key,
    read_lines,
)

MODELNET40_CLASSES = [
    'airplane', 'bathtub', 'bed', 'bench', 'bookshelf', 'bottle', 'bowl',
    'car', 'chair', 'cone', 'cup', 'curtain', 'desk', 'door', 'dresser',
    'flower_pot', 'glass_box', 'guitar', 'keyboard', 'lamp', 'laptop',
    'mantel', 'monitor', 'night_stand', 'person', 'piano', 'plant', 'radio',
    'range_hood', 'sink', 'sofa', 'stairs', 'stool', 'table', 'tent',
    'toilet', 'tv_stand', 'vase', 'wardrobe', 'xbox'
]

MODELNET10_CLASSES = [
    'bathtub', 'bed', 'chair', 'desk', 'dresser', 'monitor', 'night_stand',
    'sofa', 'table', 'toilet'
]

LAYOUTS = {
    'npy': "'<class>/{train,test}/*.npy' (one folder per class, arrays of "
    "shape [N, 3] or [N, 6])",
    'txt': "'modelnet40_normal_resampled' ('modelnet{40,10}_shape_names.txt',"
    " 'modelnet{40,10}_{train,test}.txt' and '<class>/<shape_id>.txt' with "
    "rows 'x,y,z[,nx,ny,nz]')",
    'h5': "HDF5 ('ply_data_train*.h5' / 'ply_data_test*.h5' with keys 'data',"
    " 'label' and optionally 'normal')",
}


def default_cache_dir() -> str:
    r"""Returns the base folder of processed caches:
    :obj:`$TORCH_GEOMETRIC_BINARY_HOME`, else
    :obj:`$XDG_CACHE_HOME/torch_geometric_binary`, else
    :obj:`~/.cache/torch_geometric_binary`."""
    home = os.environ.get('TORCH_GEOMETRIC_BINARY_HOME')
    if home:
        return osp.expanduser(home)
    xdg = os.environ.get('XDG_CACHE_HOME') or osp.join('~', '.cache')
    return osp.join(osp.expanduser(xdg), 'torch_geometric_binary')


def _sanitize(path: str) -> str:
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', osp.abspath(path)).strip('_')
    return name or 'root'


# Version of the processed files; a cache of another version is rebuilt.
# 2: the description records a fingerprint of the raw files.
CACHE_VERSION = 2

_RAW_SUFFIXES = ('.npy', '.txt', '.h5')


def raw_fingerprint(folder: str) -> Dict[str, object]:
    r"""A cheap fingerprint of the raw files under :obj:`folder` (every
    :obj:`.npy`, :obj:`.txt` and :obj:`.h5` file, hidden ones excepted): a
    SHA-256 of their relative paths, sizes, modification and status-change
    times, with their count and total size. Adding, removing, truncating or
    rewriting a file changes it; reading 12k files' metadata takes ~0.1 s,
    hashing their content would take seconds."""
    rows = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # A symlink loop.
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        for f in filenames:
            if f.startswith('.') or not f.endswith(_RAW_SUFFIXES):
                continue
            path = osp.join(dirpath, f)
            st = os.stat(path)
            # ctime too: a file copied over with its old mtime kept (cp -p,
            # rsync -t) gets a new ctime, which no user can set.
            rows.append((osp.relpath(path, folder), st.st_size,
                         st.st_mtime_ns, st.st_ctime_ns))
    rows.sort()
    h = hashlib.sha256()
    for row in rows:
        h.update(('\t'.join(map(str, row)) + '\n').encode('utf-8',
                                                          'surrogateescape'))
    return {'sha256': h.hexdigest(), 'files': len(rows),
            'bytes': sum(r[1] for r in rows)}


def _load_txt(path: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # Empty-file warning.
            points = np.loadtxt(path, delimiter=',', ndmin=2,
                                dtype=np.float32)
    except ValueError as e:  # (also UnicodeDecodeError)
        # numpy says "could not convert string 'x' to float32 at row 3" or
        # "the number of columns changed", but not in which file.
        raise ValueError(f"Bad row in raw file '{path}': {e}") from None
    if points.size == 0:
        points = points.reshape(0, 3)
    return points


def _write_atomic(path: str, write: Callable[[str], None]) -> None:
    # Readers (another run starting) never see a half-written file.
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _to_data(points: np.ndarray, label: int, source: str) -> Data:
    r"""Validates a [N, 3] / [N, 6] array and converts it to a :obj:`Data`."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] not in (3, 6):
        raise ValueError(f"Expected points of shape [N, 3] or [N, 6] in "
                         f"'{source}' (got shape {tuple(points.shape)})")
    if points.shape[0] == 0:
        raise ValueError(f"Point cloud '{source}' contains no points")
    if not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"Point cloud '{source}' has non-numeric dtype "
                         f"{points.dtype}")
    points = np.array(points, dtype=np.float32, order='C')  # Writable copy.
    if not np.isfinite(points).all():
        raise ValueError(f"Point cloud '{source}' contains NaN or Inf values")
    points = torch.from_numpy(points)
    data = Data(pos=points[:, :3].contiguous(),
                y=torch.tensor([label], dtype=torch.long))
    if points.size(1) == 6:
        data.normal = points[:, 3:].contiguous()
    return data


class PreSampledModelNet(LocalDataset):
    r"""Pre-sampled point clouds of the ModelNet10/40 datasets from the
    `"3D ShapeNets: A Deep Representation for Volumetric Shapes"
    <https://people.csail.mit.edu/khosla/papers/cvpr2015_wu.pdf>`_ paper,
    read from a local folder (nothing is downloaded).

    In contrast to :class:`torch_geometric.datasets.ModelNet`, which holds
    meshes, every example already is a point cloud: a
    :class:`~torch_geometric.data.Data` object with :obj:`pos` (float32
    :obj:`[N, 3]`), :obj:`y` (long :obj:`[1]`), :obj:`x=None` and, when the
    source provides them, :obj:`normal` (float32 :obj:`[N, 3]`).

    The layout of :obj:`root` (or of one of its direct sub-folders) is
    detected automatically:

    1. **npy**: one folder per class with :obj:`train/` and :obj:`test/`
       sub-folders of :obj:`.npy` arrays of shape :obj:`[N, 3]` or
       :obj:`[N, 6]` (xyz + normals), *e.g.*,
       :obj:`ModelNet40/airplane/train/airplane_0001.npy`.
       The class index is the rank of the class folder name in sorted order.
    2. **txt** (:obj:`modelnet40_normal_resampled`):
       :obj:`<class>/<class>_<id>.txt` with comma-separated rows
       :obj:`x,y,z,nx,ny,nz` (or :obj:`x,y,z`), split files
       :obj:`modelnet40_train.txt` / :obj:`modelnet40_test.txt` (or
       :obj:`modelnet10_*`) listing shape ids, and
       :obj:`modelnet40_shape_names.txt` giving the class order.
    3. **h5** (:obj:`modelnet40_ply_hdf5_2048`): :obj:`ply_data_train*.h5`
       / :obj:`ply_data_test*.h5` with keys :obj:`data` :obj:`[B, N, 3]`,
       :obj:`label` :obj:`[B, 1]` and optionally :obj:`normal`; class names
       are read from :obj:`shape_names.txt` if present (otherwise the
       standard ModelNet40/10 names are used when there are 40/10 labels,
       else :obj:`"class_<i>"`).

    Processing reads both splits once and validates them: an empty,
    truncated or unparsable file, or a point cloud holding NaN/Inf values,
    raises a :class:`ValueError` naming the file.
    Because :obj:`root` may be read-only (or shared), processed files are
    never written into it: they go to :obj:`processed_dir` if given, else to
    :obj:`~/.cache/torch_geometric_binary/<sanitized absolute root>/processed`
    (the base folder can be changed via :obj:`$TORCH_GEOMETRIC_BINARY_HOME`
    or :obj:`$XDG_CACHE_HOME`).
    The processed files record a fingerprint of the raw files (paths, sizes,
    modification times, see :func:`raw_fingerprint`); when the raw files no
    longer match it (a class or file added or removed, a file truncated or
    rewritten), the dataset is re-processed, with a warning saying why.
    :obj:`force_reload=True` re-processes unconditionally. If :obj:`root`
    no longer exists, the processed files are used as they are.

    Args:
        root (str): The folder holding the raw (pre-sampled) data.
        name (str, optional): :obj:`"40"` uses all classes found,
            :obj:`"10"` selects the ModelNet10 split: the
            :obj:`modelnet10_*` split files of the txt layout if present,
            otherwise the ten ModelNet10 classes of a larger tree
            (re-indexed :obj:`0..9` in sorted order).
            (default: :obj:`"40"`)
        train (bool, optional): If :obj:`True`, loads the training set,
            otherwise the test set. (default: :obj:`True`)
        transform (callable, optional): A function/transform that takes in a
            :class:`~torch_geometric.data.Data` object and returns a
            transformed version, applied on every access.
            (default: :obj:`None`)
        pre_transform (callable, optional): A function/transform applied
            before the data is saved to disk. (default: :obj:`None`)
        pre_filter (callable, optional): A function that takes in a
            :class:`~torch_geometric.data.Data` object and returns whether it
            should be included in the final dataset. (default: :obj:`None`)
        processed_dir (str, optional): Where to store the processed files.
            (default: :obj:`None`, see above)
        force_reload (bool, optional): Whether to re-process the dataset
            even if the raw files match the cache. (default: :obj:`False`)
        log (bool, optional): Whether to print console output while
            processing. (default: :obj:`True`)
    """
    NAME = 'pre-sampled ModelNet'
    LAYOUTS = LAYOUTS

    def __init__(
        self,
        root: str,
        name: str = '40',
        train: bool = True,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        processed_dir: Optional[str] = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        name = str(name)
        if name not in ('10', '40'):
            raise ValueError(f"'name' must be '10' or '40' (got '{name}')")
        self.name = name
        self.train = train
        root = osp.abspath(osp.expanduser(root))
        if processed_dir is None:
            processed_dir = osp.join(default_cache_dir(), _sanitize(root),
                                     'processed')
        self._processed_dir = osp.abspath(osp.expanduser(processed_dir))
        self._layout: Optional[Tuple[str, str]] = None

        paths = [osp.join(self._processed_dir, f)
                 for f in self.processed_file_names]
        if not force_reload and all(osp.exists(p) for p in paths):
            stale = self._stale(root, paths[2])
            if stale is not None:
                warnings.warn(f"Re-processing the cache "
                              f"'{self._processed_dir}' of ModelNet{name}: "
                              f"{stale}", stacklevel=2)
                force_reload = True
        else:
            force_reload = True
        if force_reload and self._layout is None:
            # Fail early with a clear message (before any folder is created):
            self._layout = self.detect_layout(root)

        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)

        with open(self.processed_paths[2]) as f:
            meta = json.load(f)
        self.classes: List[str] = list(meta['classes'])
        self.layout: str = meta['layout']
        self.load(self.processed_paths[0 if train else 1])

    def _stale(self, root: str, meta_path: str) -> Optional[str]:
        r"""Why the processed files no longer match the raw files in
        :obj:`root` (:obj:`None` if they do)."""
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except ValueError as e:
            return f"its description '{meta_path}' is unreadable ({e})"
        if not isinstance(meta, dict):
            return f"its description '{meta_path}' is not a JSON object"
        if not osp.isdir(root):  # Raw data removed after processing.
            return None
        if meta.get('cache_version') != CACHE_VERSION or \
                'fingerprint' not in meta:
            return (f"it was written by another version of "
                    f"torch_geometric_binary (cache version "
                    f"{meta.get('cache_version', 1)}, this is "
                    f"{CACHE_VERSION}) and cannot be checked against the "
                    f"raw files")
        self._layout = self.detect_layout(root)
        layout, folder = self._layout
        if [layout, folder] != [meta.get('layout'), meta.get('root')]:
            return (f"the raw data is now the {layout} layout in '{folder}' "
                    f"(was the {meta.get('layout')} layout in "
                    f"'{meta.get('root')}')")
        old, new = meta['fingerprint'], raw_fingerprint(folder)
        if old != new:
            return (f"the raw files in '{folder}' changed since it was "
                    f"built ({old.get('files')} files of "
                    f"{old.get('bytes')} bytes then, {new['files']} files of "
                    f"{new['bytes']} bytes now, or changed modification "
                    f"times)")
        return None

    # Paths ###################################################################

    @property
    def processed_file_names(self) -> List[str]:
        prefix = f'modelnet{self.name}'
        return [f'{prefix}_train.pt', f'{prefix}_test.pt', f'{prefix}.json']

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # Layout detection ########################################################

    @staticmethod
    def match_layout(folder: str) -> Optional[str]:
        if glob.glob(osp.join(folder, 'ply_data_train*.h5')):
            return 'h5'
        for n in ('40', '10'):
            if osp.isfile(osp.join(folder, f'modelnet{n}_shape_names.txt')) \
                    and osp.isfile(osp.join(folder, f'modelnet{n}_train.txt')):
                return 'txt'
        with os.scandir(folder) as entries:  # Closed on an early return.
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith('.'):
                    for split in ('train', 'test'):
                        if glob.glob(osp.join(entry.path, split, '*.npy')):
                            return 'npy'
        return None

    # Processing ##############################################################

    def process(self) -> None:
        if self._layout is None:  # `process()` called by hand.
            self._layout = self.detect_layout(self.root)
        layout, folder = self._layout
        # Taken before reading: a file changed while processing runs makes
        # the next load re-process.
        fingerprint = raw_fingerprint(folder)
        fn = {
            'npy': self._read_npy,
            'txt': self._read_txt,
            'h5': self._read_h5
        }[layout]
        classes, splits = fn(folder)

        for i, split in enumerate(['train', 'test']):
            data_list = splits[split]
            if len(data_list) == 0:
                raise ValueError(f"Found no '{split}' examples of the "
                                 f"ModelNet{self.name} classes in '{folder}'")
            if len({'normal' in d for d in data_list}) > 1:
                warnings.warn(
                    f"Only some point clouds in '{folder}' have normals; "
                    f"dropping the normals of the '{split}' split",
                    stacklevel=2)
                for d in data_list:
                    if 'normal' in d:
                        del d.normal
            if self.pre_filter is not None:
                data_list = [d for d in data_list if self.pre_filter(d)]
            if self.pre_transform is not None:
                data_list = [self.pre_transform(d) for d in data_list]
            _write_atomic(self.processed_paths[i],
                          lambda p: self.save(data_list, p))

        def write_meta(path):
            with open(path, 'w') as f:
                json.dump({'classes': classes, 'layout': layout,
                           'root': folder, 'cache_version': CACHE_VERSION,
                           'fingerprint': fingerprint}, f, indent=1)

        # Written last: it vouches for the two data files.
        _write_atomic(self.processed_paths[2], write_meta)

    def _select(self, classes: List[str]) -> Dict[str, int]:
        r"""Maps the class names to keep onto their new indices."""
        if self.name == '10' and not set(classes) <= set(MODELNET10_CLASSES):
            kept = sorted(set(classes) & set(MODELNET10_CLASSES))
            if len(kept) == 0:
                raise ValueError(
                    f"name='10' but none of the ModelNet10 classes "
                    f"{MODELNET10_CLASSES} exists in '{self.root}' "
                    f"(classes found: {classes})")
            return {c: i for i, c in enumerate(kept)}
        return {c: i for i, c in enumerate(classes)}

    def _read_npy(self, folder: str) -> Tuple[List[str], Dict[str, List]]:
        classes = sorted(
            e.name for e in os.scandir(folder)
            if e.is_dir() and not e.name.startswith('.') and any(
                osp.isdir(osp.join(e.path, s)) for s in ('train', 'test')))
        mapping = self._select(classes)
        splits: Dict[str, List[Data]] = {'train': [], 'test': []}
        for c, label in mapping.items():
            for split in ('train', 'test'):
                split_dir = osp.join(folder, c, split)
                if not osp.isdir(split_dir):
                    continue
                names = sorted((f for f in os.listdir(split_dir)
                                if f.endswith('.npy')), key=natural_key)
                for f in names:
                    path = osp.join(split_dir, f)
                    points = load_npy(path)
                    splits[split].append(_to_data(points, label, path))
        return list(mapping), splits

    def _read_txt(self, folder: str) -> Tuple[List[str], Dict[str, List]]:
        prefixes = ['modelnet10', 'modelnet40'] if self.name == '10' else [
            'modelnet40', 'modelnet10'
        ]
        for prefix in prefixes:
            files = [
                osp.join(folder, f'{prefix}_{s}.txt')
                for s in ('shape_names', 'train', 'test')
            ]
            if all(osp.isfile(f) for f in files):
                break
        else:
            raise FileNotFoundError(
                f"Missing split files in '{folder}': expected "
                f"'modelnet{{40,10}}_{{shape_names,train,test}}.txt'")
        classes = read_lines(files[0])
        mapping = self._select(classes)

        splits: Dict[str, List[Data]] = {'train': [], 'test': []}
        for split, split_file in zip(('train', 'test'), files[1:]):
            for shape_id in read_lines(split_file):
                c = shape_id.rsplit('_', 1)[0]
                if c not in classes:
                    raise ValueError(f"Shape '{shape_id}' listed in "
                                     f"'{split_file}' has an unknown class "
                                     f"'{c}' (see '{files[0]}')")
                if c not in mapping:
                    continue
                path = osp.join(folder, c, f'{shape_id}.txt')
                if not osp.isfile(path):
                    raise FileNotFoundError(
                        f"Shape '{shape_id}' listed in '{split_file}' not "
                        f"found at '{path}'")
                points = _load_txt(path)
                splits[split].append(_to_data(points, mapping[c], path))
        return list(mapping), splits

    def _read_h5(self, folder: str) -> Tuple[List[str], Dict[str, List]]:
        import h5py

        names_file = osp.join(folder, 'shape_names.txt')
        raw = {}
        max_label = -1
        for split in ('train', 'test'):
            pattern = osp.join(folder, f'ply_data_{split}*.h5')
            paths = sorted(glob.glob(pattern), key=natural_key)
            if len(paths) == 0:
                raise FileNotFoundError(
                    f"Found no 'ply_data_{split}*.h5' files in '{folder}'")
            raw[split] = []
            for path in paths:
                try:
                    with h5py.File(path, 'r') as f:
                        for key in ('data', 'label'):
                            if key not in f:
                                raise KeyError(f"no '{key}' dataset")
                        pos = np.asarray(f['data'])
                        label = np.asarray(f['label']).reshape(-1).astype(
                            np.int64)
                        normal = np.asarray(f['normal']) \
                            if 'normal' in f else None
                except (OSError, KeyError, ValueError, TypeError) as e:
                    # h5py's "Unable to open file (truncated file ...)"
                    # names no file.
                    why = e.args[0] if isinstance(e, KeyError) else e
                    raise ValueError(f"Cannot read HDF5 file '{path}' "
                                     f"({osp.getsize(path)} bytes): "
                                     f"{why}") from None
                if pos.ndim != 3 or pos.shape[-1] != 3:
                    raise ValueError(f"Expected 'data' of shape [B, N, 3] in "
                                     f"'{path}' (got {tuple(pos.shape)})")
                if label.shape[0] != pos.shape[0] or (
                        normal is not None and normal.shape != pos.shape):
                    raise ValueError(f"Mismatching 'data'/'label'/'normal' "
                                     f"shapes in '{path}'")
                if label.size and label.min() < 0:
                    raise ValueError(f"Negative labels in '{path}'")
                max_label = max(max_label, int(label.max(initial=-1)))
                raw[split].append((path, pos, label, normal))

        if osp.isfile(names_file):
            classes = read_lines(names_file)
            if max_label >= len(classes):
                raise ValueError(f"Label {max_label} out of range of the "
                                 f"{len(classes)} names in '{names_file}'")
        elif max_label + 1 == 40:
            classes = list(MODELNET40_CLASSES)
        elif max_label + 1 == 10:
            classes = list(MODELNET10_CLASSES)
        else:
            classes = [f'class_{i}' for i in range(max_label + 1)]
        mapping = self._select(classes)
        remap = np.full(len(classes), -1, dtype=np.int64)
        for c, i in mapping.items():
            remap[classes.index(c)] = i

        splits: Dict[str, List[Data]] = {'train': [], 'test': []}
        for split, items in raw.items():
            for path, pos, label, normal in items:
                pts = pos if normal is None else np.concatenate(
                    [pos, normal], axis=-1)
                for j in range(pts.shape[0]):
                    new = int(remap[label[j]])
                    if new < 0:
                        continue
                    splits[split].append(
                        _to_data(pts[j], new, f'{path}[{j}]'))
        return list(mapping), splits

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}{self.name}({len(self)})'
