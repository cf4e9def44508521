import json
import os

import h5py
import numpy as np
import pytest
import torch

from torch_geometric_binary.datasets import ShapeNetPart

SYN = ShapeNetPart.SYNSETS
TXT = 'shapenetcore_partanno_segmentation_benchmark_v0_normal'


def _shape(rng, category, n=20):
    parts = ShapeNetPart.PARTS[category]
    rows = np.concatenate([rng.normal(size=(n, 6)),
                           rng.choice(parts, (n, 1))], axis=1)
    rows[:len(parts), 6] = parts  # Every part present.
    return rows


def make_txt(root, rng=None):
    r"""Two categories; train 3 shapes, val 1, test 2."""
    rng = rng or np.random.default_rng(0)
    folder = root / TXT
    (folder / 'train_test_split').mkdir(parents=True)
    (folder / 'synsetoffset2category.txt').write_text(
        f"Airplane\t{SYN['Airplane']}\nMug\t{SYN['Mug']}\n")
    splits = {
        'train': [('Airplane', 'a1'), ('Airplane', 'a2'), ('Mug', 'm1')],
        'val': [('Mug', 'm2')],
        'test': [('Airplane', 'a3'), ('Mug', 'm3')],
    }
    for split, shapes in splits.items():
        entries = []
        for cat, name in shapes:
            (folder / SYN[cat]).mkdir(exist_ok=True)
            np.savetxt(folder / SYN[cat] / f'{name}.txt', _shape(rng, cat),
                       fmt='%.6f')
            entries.append(f'shape_data/{SYN[cat]}/{name}')
        (folder / 'train_test_split' /
         f'shuffled_{split}_file_list.json').write_text(json.dumps(entries))
    return folder


def make_h5(folder, rng=None, list_files=True, normals=False):
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, b in (('train', 3), ('val', 1), ('test', 2)):
        labels = np.arange(b) % 16
        pid = np.stack([np.resize(ShapeNetPart.PARTS[
            ShapeNetPart.CATEGORIES[c]], 16) for c in labels])
        with h5py.File(folder / f'ply_data_{split}0.h5', 'w') as f:
            f['data'] = rng.normal(size=(b, 16, 3)).astype(np.float32)
            f['label'] = labels[:, None].astype(np.uint8)
            f['pid'] = pid.astype(np.uint8)
            if normals:
                f['normal'] = np.ones((b, 16, 3), np.float32)
        if list_files:  # As released: paths of the original folder.
            (folder / f'{split}_hdf5_file_list.txt').write_text(
                f'hdf5_data/ply_data_{split}0.h5\n')
    return folder


def test_txt_layout(tmp_path):
    folder = make_txt(tmp_path)
    train = ShapeNetPart(str(tmp_path), split='train', log=False)
    assert len(train) == 3 and train.num_classes == 50
    data = train[0]
    assert data.pos.shape == (20, 3) and data.pos.dtype == torch.float32
    assert data.x.shape == (20, 3) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.long and data.category.tolist() == [0]
    raw = np.loadtxt(folder / SYN['Airplane'] / 'a1.txt', dtype=np.float32)
    assert torch.equal(data.pos, torch.from_numpy(raw[:, :3]))
    assert torch.equal(data.x, torch.from_numpy(raw[:, 3:6]))
    assert data.y.tolist() == raw[:, 6].astype(int).tolist()
    assert train[2].category.tolist() == [11]  # Mug.
    assert set(train[2].y.tolist()) == {36, 37}

    assert len(ShapeNetPart(str(tmp_path), 'val', log=False)) == 1
    assert len(ShapeNetPart(str(tmp_path), 'trainval', log=False)) == 4
    test = ShapeNetPart(str(tmp_path), 'test', log=False)
    assert test._data.category.tolist() == [0, 11]

    no_normals = ShapeNetPart(str(tmp_path), 'train', include_normals=False,
                              log=False)
    assert no_normals[0].x is None
    mugs = ShapeNetPart(str(tmp_path), 'trainval', categories='Mug',
                        log=False)
    assert mugs._data.category.tolist() == [11, 11]
    files = os.listdir(tmp_path / 'processed')  # Inside root, like PyG.
    assert sorted(f for f in files if f.startswith('shapenet_part')) == [
        'shapenet_part_test_all_normals.pt', 'shapenet_part_train_all.pt',
        'shapenet_part_train_all_normals.pt',
        'shapenet_part_trainval_all_normals.pt',
        'shapenet_part_trainval_mug_normals.pt',
        'shapenet_part_val_all_normals.pt'
    ]


def test_cache(tmp_path):
    make_txt(tmp_path)
    cache = tmp_path / 'cache'
    a = ShapeNetPart(str(tmp_path), 'test', processed_dir=str(cache),
                     log=False)
    assert not (tmp_path / 'processed').exists()
    # Processed once: later loads do not read the raw files.
    (tmp_path / TXT / SYN['Mug'] / 'm3.txt').write_text('1 2\n')
    b = ShapeNetPart(str(tmp_path), 'test', processed_dir=str(cache),
                     log=False)
    assert torch.equal(a._data.pos, b._data.pos)
    with pytest.raises(ValueError, match='7 columns'):
        ShapeNetPart(str(tmp_path), 'test', processed_dir=str(cache),
                     force_reload=True, log=False)


def test_h5_layout(tmp_path):
    make_h5(tmp_path / 'hdf5_data')
    train = ShapeNetPart(str(tmp_path), 'train', log=False)
    assert len(train) == 3
    assert train._data.category.tolist() == [0, 1, 2]
    data = train[1]  # Bag: parts 4, 5.
    assert data.pos.shape == (16, 3) and data.pos.dtype == torch.float32
    assert data.y.dtype == torch.long and set(data.y.tolist()) == {4, 5}
    assert data.x is None  # No normals in these files.
    assert len(ShapeNetPart(str(tmp_path), 'trainval', log=False)) == 4
    assert len(ShapeNetPart(str(tmp_path), 'test', log=False)) == 2
    cap = ShapeNetPart(str(tmp_path), 'train', categories=['Cap'], log=False)
    assert len(cap) == 1 and cap[0].category.tolist() == [2]


def test_h5_by_glob_with_normals(tmp_path):
    folder = make_h5(tmp_path, list_files=False, normals=True)
    with h5py.File(folder / 'ply_data_train1.h5', 'w') as f:
        f['data'] = np.zeros((1, 4, 3), np.float32)
        f['normal'] = np.ones((1, 4, 3), np.float32)
        f['label'] = np.array([[15]])
        f['pid'] = np.array([[47, 48, 49, 47]])
    train = ShapeNetPart(str(tmp_path), 'train', log=False)
    assert len(train) == 4
    assert train[3].category.tolist() == [15]
    assert torch.equal(train[3].x, torch.ones(4, 3))
    assert ShapeNetPart(str(tmp_path), 'train', include_normals=False,
                        log=False)[3].x is None

    # Only some files with normals: dropped, with a warning.
    with h5py.File(folder / 'ply_data_test0.h5', 'a') as f:
        del f['normal']
    with h5py.File(folder / 'ply_data_test1.h5', 'w') as f:
        f['data'] = np.zeros((1, 4, 3), np.float32)
        f['normal'] = np.ones((1, 4, 3), np.float32)
        f['label'] = np.array([[15]])
        f['pid'] = np.array([[47, 48, 49, 47]])
    with pytest.warns(UserWarning, match='Only some shapes'):
        test = ShapeNetPart(str(tmp_path), 'test', log=False)
    assert len(test) == 3 and test[2].x is None


def test_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ShapeNetPart(str(tmp_path / 'nothing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError,
                       match='synsetoffset2category.txt.*ply_data_'):
        ShapeNetPart(str(tmp_path / 'empty'))
    assert os.listdir(tmp_path / 'empty') == []  # Nothing written.

    folder = make_txt(tmp_path / 'txt')
    os.remove(folder / 'train_test_split' / 'shuffled_val_file_list.json')
    with pytest.raises(FileNotFoundError, match='shuffled_val_file_list'):
        ShapeNetPart(str(tmp_path / 'txt'), 'trainval', log=False)
    os.remove(folder / SYN['Mug'] / 'm3.txt')
    with pytest.raises(FileNotFoundError, match="m3' listed in"):
        ShapeNetPart(str(tmp_path / 'txt'), 'test', log=False)

    folder = make_h5(tmp_path / 'h5')
    os.remove(folder / 'ply_data_val0.h5')
    with pytest.raises(FileNotFoundError, match='val_hdf5_file_list.txt'):
        ShapeNetPart(str(tmp_path / 'h5'), 'val', log=False)


def test_malformed_txt(tmp_path):
    folder = make_txt(tmp_path)
    path = folder / SYN['Mug'] / 'm3.txt'
    rows = np.loadtxt(path)
    np.savetxt(path, rows[:, :6])
    with pytest.raises(ValueError, match=r"7 columns.*m3\.txt.*\(20, 6\)"):
        ShapeNetPart(str(tmp_path), 'test', log=False)

    with open(path, 'w') as f:
        f.write('0 0 0 0 0 1 36\n0 0 0 0 1 37\n')
    with pytest.raises(ValueError, match=r"m3\.txt.*number of columns"):
        ShapeNetPart(str(tmp_path), 'test', log=False)

    rows[5, 6] = 3  # An airplane part in a mug.
    np.savetxt(path, rows)
    with pytest.raises(ValueError, match=r"Part id 3 of point 5 in '.*m3"
                       r"\.txt' is not a part of its category Mug"):
        ShapeNetPart(str(tmp_path), 'test', log=False)

    (folder / 'synsetoffset2category.txt').write_text('Spaceship\t0123\n')
    with pytest.raises(ValueError, match='Spaceship'):
        ShapeNetPart(str(tmp_path), 'train', log=False)


def test_malformed_h5(tmp_path):
    folder = make_h5(tmp_path)
    path = folder / 'ply_data_test0.h5'
    with h5py.File(path, 'a') as f:
        del f['pid']
    with pytest.raises(ValueError, match=r"ply_data_test0\.h5.*'pid'"):
        ShapeNetPart(str(tmp_path), 'test', log=False)

    with h5py.File(path, 'a') as f:
        f['pid'] = np.full((2, 16), 47)  # Table parts for Airplane, Bag.
    with pytest.raises(ValueError, match=r"Part id 47 of point 0 in .*"
                       r"test0\.h5\[0\]' .*Airplane \(part ids \[0, 1, 2, "
                       r"3\]\)"):
        ShapeNetPart(str(tmp_path), 'test', log=False)

    with h5py.File(path, 'a') as f:
        del f['label']
        f['label'] = np.array([[16], [0]])
    with pytest.raises(ValueError, match=r'Category label 16 .* \[0, 16\)'):
        ShapeNetPart(str(tmp_path), 'test', log=False)

    path.write_bytes(b'not hdf5')
    with pytest.raises(ValueError, match=r"Cannot read '.*test0\.h5'"):
        ShapeNetPart(str(tmp_path), 'test', log=False)


def test_arguments():
    with pytest.raises(ValueError, match="'split'"):
        ShapeNetPart('.', split='all')
    with pytest.raises(ValueError, match='Spaceship'):
        ShapeNetPart('.', categories=['Spaceship'])
    assert len(ShapeNetPart.CATEGORIES) == 16
    ids = [p for c in ShapeNetPart.CATEGORIES for p in ShapeNetPart.PARTS[c]]
    assert ids == list(range(50))
