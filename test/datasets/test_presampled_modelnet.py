r"""Tests of :class:`PreSampledModelNet` on tiny raw trees written into
``tmp_path`` (all three layouts), and on the real ModelNet40 folder when it
is present (skipped otherwise)."""
import json
import os
import os.path as osp
import re
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from torch_geometric_binary.datasets import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    PreSampledModelNet,
)
from torch_geometric_binary.datasets.presampled_modelnet import \
    raw_fingerprint


def _cloud(n, cols=3, seed=0):
    return np.random.default_rng(seed).standard_normal(
        (n, cols)).astype(np.float32)


def write_npy_tree(root, classes, num_train=3, num_test=2, cols=3, n=16):
    arrays = {}
    for c_idx, c in enumerate(classes):
        for split, num in (('train', num_train), ('test', num_test)):
            os.makedirs(osp.join(root, c, split), exist_ok=True)
            for i in range(num):
                shape_id = f'{c}_{i + 1:04d}' if split == 'train' else \
                    f'{c}_{num_train + i + 1:04d}'
                seed = 1000 * c_idx + 100 * (split == 'test') + i
                a = _cloud(n, cols, seed=seed)
                np.save(osp.join(root, c, split, f'{shape_id}.npy'), a)
                arrays[(split, shape_id)] = a
    return arrays


def write_txt_tree(root, classes, num_train=3, num_test=2, cols=6, n=16,
                   prefix='modelnet40'):
    os.makedirs(root, exist_ok=True)
    train_ids, test_ids = [], []
    for c in classes:
        os.makedirs(osp.join(root, c), exist_ok=True)
        for i in range(num_train + num_test):
            shape_id = f'{c}_{i + 1:04d}'
            a = _cloud(n, cols, seed=i)
            np.savetxt(osp.join(root, c, f'{shape_id}.txt'), a, fmt='%.6f',
                       delimiter=',')
            (train_ids if i < num_train else test_ids).append(shape_id)
    Path(root, f'{prefix}_shape_names.txt').write_text('\n'.join(classes) +
                                                       '\n')
    Path(root, f'{prefix}_train.txt').write_text('\n'.join(train_ids) + '\n')
    Path(root, f'{prefix}_test.txt').write_text('\n'.join(test_ids) + '\n')


def write_h5_tree(folder, classes=None, labels_train=(0, 1, 2, 1),
                  labels_test=(2, 0), normals=True, n=16, files=2):
    os.makedirs(folder, exist_ok=True)
    for split, labels in (('train', labels_train), ('test', labels_test)):
        chunks = np.array_split(np.asarray(labels), files)
        for k, chunk in enumerate(chunks):
            b = len(chunk)
            with h5py.File(osp.join(folder, f'ply_data_{split}{k}.h5'),
                           'w') as f:
                f['data'] = _cloud(b * n, seed=k).reshape(b, n, 3)
                f['label'] = chunk.reshape(b, 1).astype(np.uint8)
                if normals:
                    f['normal'] = _cloud(b * n, seed=k + 9).reshape(b, n, 3)
    if classes is not None:
        Path(folder, 'shape_names.txt').write_text('\n'.join(classes) + '\n')


def check_data(data, num_points=16, normal=False):
    assert data.x is None
    assert data.pos.dtype == torch.float32 and data.pos.shape == (num_points,
                                                                   3)
    assert data.y.dtype == torch.long and data.y.shape == (1, )
    if normal:
        assert data.normal.dtype == torch.float32
        assert data.normal.shape == (num_points, 3)
    else:
        assert 'normal' not in data


def test_npy_layout(tmp_path):
    root = tmp_path / 'raw'
    classes = ['chair', 'airplane', 'bed']
    arrays = write_npy_tree(root, classes)
    proc = tmp_path / 'proc'
    train = PreSampledModelNet(str(root), processed_dir=str(proc))
    test = PreSampledModelNet(str(root), train=False, processed_dir=str(proc))

    assert str(train) == 'PreSampledModelNet40(9)'
    assert str(test) == 'PreSampledModelNet40(6)'
    assert train.classes == ['airplane', 'bed', 'chair']  # Sorted.
    assert train.num_classes == test.num_classes == 3
    assert train.layout == 'npy'
    check_data(train[0])
    assert train._data.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert test._data.y.tolist() == [0, 0, 1, 1, 2, 2]
    # Files in sorted order, values unchanged:
    assert torch.equal(train[0].pos,
                       torch.from_numpy(arrays[('train', 'airplane_0001')]))
    assert torch.equal(test[5].pos,
                       torch.from_numpy(arrays[('test', 'chair_0005')]))
    # Nothing is written into the raw folder:
    assert sorted(os.listdir(root)) == sorted(classes)
    assert {'modelnet40_train.pt', 'modelnet40_test.pt',
            'modelnet40.json'} <= set(os.listdir(proc))


def test_npy_layout_with_normals_and_subfolder(tmp_path):
    write_npy_tree(tmp_path / 'raw' / 'ModelNet40', ['a', 'b'], cols=6)
    (tmp_path / 'raw' / 'README').write_text('not data')
    ds = PreSampledModelNet(str(tmp_path / 'raw'),
                            processed_dir=str(tmp_path / 'p'))
    assert len(ds) == 6 and ds.classes == ['a', 'b']
    check_data(ds[0], normal=True)


def test_txt_layout(tmp_path):
    root = tmp_path / 'modelnet40_normal_resampled'
    classes = ['sofa', 'airplane', 'toilet']  # File order, not sorted.
    write_txt_tree(root, classes, cols=6)
    train = PreSampledModelNet(str(root), processed_dir=str(tmp_path / 'p'))
    test = PreSampledModelNet(str(root), train=False,
                              processed_dir=str(tmp_path / 'p'))
    assert (len(train), len(test)) == (9, 6)
    assert train.classes == classes and train.layout == 'txt'
    assert train._data.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    check_data(train[0], normal=True)
    expected = _cloud(16, 6, seed=3)  # sofa_0004, first test shape.
    assert torch.allclose(test[0].pos, torch.from_numpy(expected[:, :3]),
                          atol=1e-5)
    assert torch.allclose(test[0].normal, torch.from_numpy(expected[:, 3:]),
                          atol=1e-5)


def test_txt_layout_three_columns_found_in_parent(tmp_path):
    write_txt_tree(tmp_path / 'data' / 'modelnet40_normal_resampled',
                   ['a', 'b'], cols=3)
    ds = PreSampledModelNet(str(tmp_path / 'data'), train=False,
                            processed_dir=str(tmp_path / 'p'))
    assert len(ds) == 4
    check_data(ds[0], normal=False)


def test_h5_layout(tmp_path):
    folder = tmp_path / 'root' / 'modelnet40_ply_hdf5_2048'
    write_h5_tree(folder, classes=['cup', 'bed', 'lamp'])
    train = PreSampledModelNet(str(tmp_path / 'root'),
                               processed_dir=str(tmp_path / 'p'))
    test = PreSampledModelNet(str(tmp_path / 'root'), train=False,
                              processed_dir=str(tmp_path / 'p'))
    assert (len(train), len(test)) == (4, 2)
    assert train.classes == ['cup', 'bed', 'lamp'] and train.layout == 'h5'
    assert train._data.y.tolist() == [0, 1, 2, 1]
    assert test._data.y.tolist() == [2, 0]
    check_data(train[0], normal=True)
    with h5py.File(folder / 'ply_data_train1.h5', 'r') as f:
        assert torch.equal(train[2].pos, torch.from_numpy(f['data'][0]))
        assert torch.equal(train[2].normal, torch.from_numpy(f['normal'][0]))


def test_h5_layout_without_names_or_normals(tmp_path):
    write_h5_tree(tmp_path, normals=False, files=1)
    ds = PreSampledModelNet(str(tmp_path), processed_dir=str(tmp_path / 'p'))
    assert ds.classes == ['class_0', 'class_1', 'class_2']
    check_data(ds[0], normal=False)


def test_cache_does_not_reread_raw(tmp_path):
    root = tmp_path / 'raw'
    write_npy_tree(root, ['a', 'b'])
    proc = tmp_path / 'proc'
    first = PreSampledModelNet(str(root), processed_dir=str(proc))
    shutil.rmtree(root)  # The raw data is no longer needed.
    second = PreSampledModelNet(str(root), processed_dir=str(proc))
    test = PreSampledModelNet(str(root), train=False,
                              processed_dir=str(proc))
    assert len(second) == len(first) == 6 and len(test) == 4
    assert second.classes == ['a', 'b'] and second.num_classes == 2
    assert torch.equal(first._data.pos, second._data.pos)
    # But re-processing needs the raw data:
    with pytest.raises(FileNotFoundError, match='does not exist'):
        PreSampledModelNet(str(root), processed_dir=str(proc),
                           force_reload=True)


def test_default_processed_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_HOME', str(tmp_path / 'home'))
    root = tmp_path / 'some data' / 'MN'
    write_npy_tree(root, ['a', 'b'])
    os.chmod(root, 0o555)  # Read-only raw folder.
    try:
        ds = PreSampledModelNet(str(root))
    finally:
        os.chmod(root, 0o755)
    assert sorted(os.listdir(root)) == ['a', 'b']
    cache = tmp_path / 'home'
    (sub, ) = os.listdir(cache)
    assert sub.endswith('some_data_MN') and '/' not in sub
    assert ds.processed_dir == str(cache / sub / 'processed')
    assert osp.isfile(cache / sub / 'processed' / 'modelnet40_train.pt')


def test_transforms_and_filter(tmp_path):
    write_npy_tree(tmp_path / 'raw', ['a', 'b'])

    def pre_transform(data):
        data.pos = data.pos * 2
        return data

    ds = PreSampledModelNet(
        str(tmp_path / 'raw'), processed_dir=str(tmp_path / 'p'),
        pre_transform=pre_transform,
        pre_filter=lambda d: int(d.y) == 1,
        transform=lambda d: d.update({'x': torch.ones(d.num_nodes, 1)}))
    assert len(ds) == 3 and ds._data.y.tolist() == [1, 1, 1]
    ref = np.load(tmp_path / 'raw' / 'b' / 'train' / 'b_0001.npy')
    assert torch.allclose(ds[0].pos, 2 * torch.from_numpy(ref))
    assert ds[0].x.shape == (16, 1)


def test_name_10_filters_40_class_tree(tmp_path):
    # A tree with some ModelNet10 classes and some others:
    classes = ['airplane', 'toilet', 'bed', 'guitar', 'chair']
    write_npy_tree(tmp_path / 'npy', classes)
    ds = PreSampledModelNet(str(tmp_path / 'npy'), name='10',
                            processed_dir=str(tmp_path / 'p1'))
    assert ds.classes == ['bed', 'chair', 'toilet']
    assert str(ds) == 'PreSampledModelNet10(9)'
    assert ds._data.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # The ModelNet40 view of the same tree (same processed folder):
    ds40 = PreSampledModelNet(str(tmp_path / 'npy'), name='40',
                              processed_dir=str(tmp_path / 'p1'))
    assert ds40.classes == sorted(classes) and len(ds40) == 15

    # txt layout without modelnet10 split files: filter the 40 classes.
    write_txt_tree(tmp_path / 'txt', classes)
    ds = PreSampledModelNet(str(tmp_path / 'txt'), name='10',
                            processed_dir=str(tmp_path / 'p2'))
    assert ds.classes == ['bed', 'chair', 'toilet'] and len(ds) == 9

    # h5 layout with the 40 standard names (40 labels, no names file):
    labels = np.arange(40)
    write_h5_tree(tmp_path / 'h5', labels_train=labels, labels_test=labels)
    ds = PreSampledModelNet(str(tmp_path / 'h5'), name='10', train=False,
                            processed_dir=str(tmp_path / 'p3'))
    assert ds.classes == MODELNET10_CLASSES and len(ds) == 10
    assert ds._data.y.tolist() == list(range(10))
    ds40 = PreSampledModelNet(str(tmp_path / 'h5'),
                              processed_dir=str(tmp_path / 'p3'))
    assert ds40.classes == MODELNET40_CLASSES and ds40.num_classes == 40


def test_name_10_prefers_modelnet10_split_files(tmp_path):
    root = tmp_path / 'raw'
    write_txt_tree(root, ['bed', 'chair', 'plant'], prefix='modelnet40')
    write_txt_tree(root, ['bed', 'chair'], num_train=2, num_test=1,
                   prefix='modelnet10')
    ds = PreSampledModelNet(str(root), name='10',
                            processed_dir=str(tmp_path / 'p'))
    assert ds.classes == ['bed', 'chair'] and len(ds) == 4


def test_name_10_without_modelnet10_classes(tmp_path):
    write_npy_tree(tmp_path / 'raw', ['a', 'b'])
    with pytest.raises(ValueError, match='none of the ModelNet10 classes'):
        PreSampledModelNet(str(tmp_path / 'raw'), name='10',
                           processed_dir=str(tmp_path / 'p'))
    with pytest.raises(ValueError, match="'10' or '40'"):
        PreSampledModelNet(str(tmp_path / 'raw'), name='20')


def test_missing_root(tmp_path):
    missing = tmp_path / 'nope'
    match = re.escape(str(missing))
    with pytest.raises(FileNotFoundError, match=match) as info:
        PreSampledModelNet(str(missing), processed_dir=str(tmp_path / 'p'))
    assert 'ply_data_train' in str(info.value)  # Names the layouts.
    assert not osp.exists(tmp_path / 'p')


def test_unknown_layout(tmp_path):
    root = tmp_path / 'raw'
    (root / 'airplane').mkdir(parents=True)
    (root / 'airplane' / 'airplane_0001.off').write_text('OFF\n')
    with pytest.raises(FileNotFoundError, match='Could not find') as info:
        PreSampledModelNet(str(root), processed_dir=str(tmp_path / 'p'))
    msg = str(info.value)
    assert str(root) in msg and 'npy' in msg and 'modelnet40_normal' in msg


@pytest.mark.parametrize('layout', ['npy', 'txt', 'h5'])
def test_nan_points(tmp_path, layout):
    root = tmp_path / 'raw'
    if layout == 'npy':
        write_npy_tree(root, ['a', 'b'])
        bad = root / 'b' / 'test' / 'b_0005.npy'
        a = np.load(bad)
        a[3, 1] = np.nan
        np.save(bad, a)
    elif layout == 'txt':
        write_txt_tree(root, ['a', 'b'])
        bad = root / 'a' / 'a_0002.txt'
        lines = bad.read_text().splitlines()
        lines[0] = 'inf,0,0,0,0,1'
        bad.write_text('\n'.join(lines) + '\n')
    else:
        write_h5_tree(root, files=1)
        bad = root / 'ply_data_test0.h5'
        with h5py.File(bad, 'r+') as f:
            f['data'][1, 0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN or Inf') as info:
        PreSampledModelNet(str(root), processed_dir=str(tmp_path / 'p'))
    assert str(bad) in str(info.value)


@pytest.mark.parametrize('layout', ['npy', 'txt'])
def test_empty_cloud(tmp_path, layout):
    root = tmp_path / 'raw'
    if layout == 'npy':
        write_npy_tree(root, ['a', 'b'])
        bad = root / 'a' / 'train' / 'a_0002.npy'
        np.save(bad, np.zeros((0, 3), dtype=np.float32))
    else:
        write_txt_tree(root, ['a', 'b'])
        bad = root / 'b' / 'b_0001.txt'
        bad.write_text('')
    with pytest.raises(ValueError, match='no points') as info:
        PreSampledModelNet(str(root), processed_dir=str(tmp_path / 'p'))
    assert str(bad) in str(info.value)


def test_bad_shape(tmp_path):
    write_npy_tree(tmp_path / 'raw', ['a'])
    bad = tmp_path / 'raw' / 'a' / 'train' / 'a_0001.npy'
    np.save(bad, np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r'\[N, 3\] or \[N, 6\]'):
        PreSampledModelNet(str(tmp_path / 'raw'),
                           processed_dir=str(tmp_path / 'p'))


def _real_root():
    env = os.environ.get('MODELNET40_ROOT')
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / '..' / 'shared' /
               'data' / 'ModelNet40')


def test_real_modelnet40(tmp_path):
    root = _real_root()
    if not osp.isdir(root):
        pytest.skip(f"Real ModelNet40 not found at '{root}' (set "
                    f"MODELNET40_ROOT)")
    before = sorted(os.listdir(root))
    train = PreSampledModelNet(root, processed_dir=str(tmp_path))
    test = PreSampledModelNet(root, train=False, processed_dir=str(tmp_path))
    assert (len(train), len(test)) == (9843, 2468)
    assert train.num_classes == 40 and train.classes == MODELNET40_CLASSES
    assert train._data.y.bincount().numel() == 40
    data = test[0]  # airplane_0627
    assert data.pos.shape == (1024, 3) and data.pos.dtype == torch.float32
    ref = np.load(osp.join(root, 'airplane', 'test', 'airplane_0627.npy'))
    assert torch.equal(data.pos, torch.from_numpy(ref))
    assert int(data.y) == 0 and data.x is None
    assert torch.isfinite(train._data.pos).all()
    assert sorted(os.listdir(root)) == before  # Nothing written there.


# Cache freshness #############################################################

def _load(root, proc, **kwargs):
    return PreSampledModelNet(str(root), processed_dir=str(proc), **kwargs)


def _quiet_load(root, proc, **kwargs):
    # A cache that matches its raw files is used without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        return _load(root, proc, **kwargs)


def test_cache_rebuilt_when_classes_added_or_removed(tmp_path):
    root, proc = tmp_path / 'raw', tmp_path / 'p'
    write_npy_tree(root, ['a', 'b'])
    assert _load(root, proc).classes == ['a', 'b']
    assert _quiet_load(root, proc).classes == ['a', 'b']
    write_npy_tree(root, ['c'])  # A class added.
    with pytest.warns(UserWarning, match='raw files .* changed'):
        ds = _load(root, proc)
    assert ds.classes == ['a', 'b', 'c'] and len(ds) == 9
    assert _quiet_load(root, proc, train=False).num_classes == 3
    shutil.rmtree(root / 'a')  # A class removed.
    with pytest.warns(UserWarning, match='10 files .* now'):
        ds = _load(root, proc, train=False)
    assert ds.classes == ['b', 'c'] and ds._data.y.tolist() == [0, 0, 1, 1]
    assert len(_quiet_load(root, proc)) == 6


def test_cache_rebuilt_when_a_file_is_rewritten(tmp_path):
    root, proc = tmp_path / 'raw', tmp_path / 'p'
    write_npy_tree(root, ['a', 'b'])
    _load(root, proc)
    # Same name, same size, new values.
    new = _cloud(16, 3, seed=77)
    np.save(root / 'b' / 'train' / 'b_0002.npy', new)
    with pytest.warns(UserWarning, match='changed'):
        ds = _load(root, proc)
    assert torch.equal(ds[4].pos, torch.from_numpy(new))
    # A file added to a split.
    np.save(root / 'a' / 'test' / 'a_0009.npy', new)
    with pytest.warns(UserWarning, match='changed'):
        assert len(_load(root, proc, train=False)) == 5


def test_cache_rebuilt_txt_layout(tmp_path):
    root, proc = tmp_path / 'raw', tmp_path / 'p'
    write_txt_tree(root, ['a', 'b'])
    _load(root, proc)
    write_txt_tree(root, ['a', 'b', 'c'])  # Split files list a new class.
    with pytest.warns(UserWarning, match='changed'):
        assert _load(root, proc).classes == ['a', 'b', 'c']


@pytest.mark.parametrize('size', [0, 100])
def test_truncated_raw_file_after_caching(tmp_path, size):
    # The cache is not used any more, and re-processing names the file.
    root, proc = tmp_path / 'raw', tmp_path / 'p'
    write_npy_tree(root, ['a', 'b'])
    _load(root, proc)
    bad = root / 'a' / 'test' / 'a_0004.npy'
    bad.write_bytes(bad.read_bytes()[:size])
    what = 'is empty' if size == 0 else 'is truncated'
    for _ in range(2):  # Still an error the second time: no half cache.
        with pytest.warns(UserWarning, match='changed'):
            with pytest.raises(ValueError, match=what) as info:
                _load(root, proc)
        assert str(bad) in str(info.value)


def test_force_reload(tmp_path):
    root, proc = tmp_path / 'raw', tmp_path / 'p'
    write_npy_tree(root, ['a', 'b'])
    _load(root, proc)
    train_pt = proc / 'modelnet40_train.pt'
    before = train_pt.stat().st_mtime_ns
    train_pt.write_bytes(b'')  # Would fail to load if not rebuilt.
    ds = _quiet_load(root, proc, force_reload=True)
    assert len(ds) == 6 and train_pt.stat().st_mtime_ns > before
    assert len(_quiet_load(root, proc)) == 6
    assert not [f for f in os.listdir(proc) if '.tmp' in f]


def test_cache_of_older_version_is_rebuilt(tmp_path):
    root, proc = tmp_path / 'raw', tmp_path / 'p'
    write_npy_tree(root, ['a', 'b'])
    _load(root, proc)
    meta_path = proc / 'modelnet40.json'
    meta = json.loads(meta_path.read_text())
    del meta['fingerprint'], meta['cache_version']  # As version 1 wrote it.
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match='cache version 1'):
        _load(root, proc)
    assert json.loads(meta_path.read_text())['cache_version'] == 2
    meta_path.write_text('{"classes": [')  # Half-written.
    with pytest.warns(UserWarning, match='unreadable'):
        assert _load(root, proc).classes == ['a', 'b']


def test_raw_fingerprint(tmp_path):
    write_npy_tree(tmp_path, ['a'])
    (tmp_path / '.hidden').mkdir()
    (tmp_path / '.hidden' / 'x.npy').write_bytes(b'')
    (tmp_path / 'a' / 'notes.md').write_text('ignored')
    fp = raw_fingerprint(str(tmp_path))
    assert fp['files'] == 5 and fp['bytes'] == 5 * (128 + 16 * 3 * 4)
    assert raw_fingerprint(str(tmp_path)) == fp
    os.utime(tmp_path / 'a' / 'train' / 'a_0001.npy', ns=(1, 1))
    assert raw_fingerprint(str(tmp_path))['sha256'] != fp['sha256']


# Unreadable raw files ########################################################

@pytest.mark.parametrize('content', [b'', b'\x93NUMPY\x01\x00', 'half',
                                     b'not an array'])
def test_unreadable_npy(tmp_path, content):
    root = tmp_path / 'raw'
    write_npy_tree(root, ['a', 'b'])
    bad = root / 'b' / 'train' / 'b_0003.npy'
    if content == 'half':
        content = bad.read_bytes()[:150]
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        _load(root, tmp_path / 'p')


def test_npz_instead_of_npy(tmp_path):
    root = tmp_path / 'raw'
    write_npy_tree(root, ['a'])
    bad = root / 'a' / 'train' / 'a_0001.npy'
    with open(bad, 'wb') as f:
        np.savez(f, x=np.zeros((4, 3)))
    with pytest.raises(ValueError, match='not a .npy array') as info:
        _load(root, tmp_path / 'p')
    assert str(bad) in str(info.value)


@pytest.mark.parametrize('row', ['1,2,abc,0,0,1', '1,2,3,4', '\xff\xfe'])
def test_bad_txt_row(tmp_path, row):
    root = tmp_path / 'raw'
    write_txt_tree(root, ['a', 'b'])
    bad = root / 'b' / 'b_0002.txt'
    lines = bad.read_text().splitlines()
    lines[5] = row
    bad.write_bytes(('\n'.join(lines) + '\n').encode('latin-1'))
    with pytest.raises(ValueError, match='Bad row') as info:
        _load(root, tmp_path / 'p')
    assert str(bad) in str(info.value)


def test_truncated_h5(tmp_path):
    write_h5_tree(tmp_path / 'raw', files=1)
    bad = tmp_path / 'raw' / 'ply_data_test0.h5'
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match='Cannot read HDF5') as info:
        _load(tmp_path / 'raw', tmp_path / 'p')
    assert str(bad) in str(info.value)
