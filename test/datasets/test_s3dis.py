import os

import h5py
import numpy as np
import pytest
import torch

from torch_geometric_binary.datasets import S3DISRooms

ROOMS = ['Area_1_office_1', 'Area_5_office_1', 'Area_5_hallway_2']
SMALL = dict(num_points=32, min_points=5, log=False)


def make_rooms(folder, n=200, rooms=ROOMS):
    r"""Rooms of 2m x 2m x 3m (shifted by 10m, which is taken off)."""
    folder.mkdir(parents=True, exist_ok=True)
    for r, name in enumerate(rooms):
        rng = np.random.default_rng(r)
        xyz = rng.uniform(0, 1, (n, 3)) * [2, 2, 3] + 10
        rgb = rng.integers(0, 256, (n, 3))
        label = rng.integers(0, 13, (n, 1))
        np.save(folder / f'{name}.npy', np.concatenate([xyz, rgb, label], 1))
    return folder


def make_blocks(folder, lists=True):
    r"""Five blocks of 8 points in two files; blocks 2 and 4 in Area 5."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (5, 8, 9)).astype(np.float32)
    label = rng.integers(0, 13, (5, 8)).astype(np.uint8)
    for i, sl in enumerate([slice(0, 3), slice(3, 5)]):
        with h5py.File(folder / f'ply_data_all_{i}.h5', 'w') as f:
            f['data'], f['label'] = data[sl], label[sl]
    (folder / 'room_filelist.txt').write_text(
        'Area_1_office_1\nArea_1_office_1\nArea_5_office_1\n'
        'Area_2_hallway_1\nArea_5_lobby_1\n')
    if lists:  # As released: paths of the original folder.
        (folder / 'all_files.txt').write_text(
            'indoor3d_sem_seg_hdf5_data/ply_data_all_0.h5\n'
            'indoor3d_sem_seg_hdf5_data/ply_data_all_1.h5\n')
    return data, label


def test_npy_rooms(tmp_path):
    folder = make_rooms(tmp_path / 'stanford_indoor3d')
    train = S3DISRooms(str(tmp_path), **SMALL)
    test = S3DISRooms(str(tmp_path), train=False, **SMALL)
    assert train.layout == 'npy' and train.num_classes == 13
    # 1m blocks of a 2m room, stride 1m: 2 x 2 blocks per room.
    assert len(train) == 4 and len(test) == 8
    data = test[0]
    assert data.pos.shape == (32, 3) and data.pos.dtype == torch.float32
    assert data.x.shape == (32, 6) and data.x.dtype == torch.float32
    assert data.y.shape == (32, ) and data.y.dtype == torch.long
    pos, x = test._data.pos, test._data.x
    assert pos[:, :2].abs().max() <= 0.5 and pos[:, 2].min() >= 0
    assert x.min() >= 0 and x.max() <= 1
    assert len(S3DISRooms.CLASSES) == 13

    # Every block point is a point of its room, with its color and label:
    room = np.load(folder / 'Area_1_office_1.npy')
    xyz = room[:, :3] - room[:, :3].min(0)
    block = train[3]  # Block (1, 1): center (1.5, 1.5).
    abs_pos = block.pos.double().numpy() + [1.5, 1.5, 0]
    d = np.linalg.norm(abs_pos[:, None] - xyz[None], axis=-1)
    nearest = d.argmin(1)
    assert d.min(1).max() < 1e-5
    assert np.allclose(block.x[:, :3].numpy(), room[nearest, 3:6] / 255,
                       atol=1e-6)
    assert np.allclose(block.x[:, 3:].numpy(), xyz[nearest] / xyz.max(0),
                       atol=1e-6)
    assert block.y.tolist() == room[nearest, 6].astype(int).tolist()
    # 200 points in 4 blocks: fewer than 32 nowhere, so no repeats.
    assert len(set(nearest.tolist())) == 32


def test_npy_blocks_options(tmp_path):
    make_rooms(tmp_path, n=40)
    a = S3DISRooms(str(tmp_path), processed_dir=str(tmp_path / 'a'),
                   **SMALL)
    b = S3DISRooms(str(tmp_path), processed_dir=str(tmp_path / 'b'),
                   **SMALL)
    assert torch.equal(a._data.pos, b._data.pos)  # Deterministic.
    assert sorted(f for f in os.listdir(tmp_path / 'a')
                  if f.startswith('s3dis')) == [
        's3dis_npy_area5_b1_s1_p32_m5_seed0_test.pt',
        's3dis_npy_area5_b1_s1_p32_m5_seed0_train.pt'
    ]
    c = S3DISRooms(str(tmp_path), seed=1, **SMALL)
    assert not torch.equal(a._data.pos, c._data.pos)

    # Overlapping blocks every 0.5m: 3 x 3 per room.
    half = S3DISRooms(str(tmp_path), stride=0.5, num_points=32,
                      min_points=1, log=False)
    assert len(half) == 9
    # Blocks of fewer than `num_points` points are padded by repeats:
    padded = S3DISRooms(str(tmp_path), num_points=64, min_points=1,
                        log=False)
    assert padded[0].num_nodes == 64
    assert torch.unique(padded[0].pos, dim=0).size(0) < 64
    # Blocks of fewer than `min_points` points are dropped:
    sparse = S3DISRooms(str(tmp_path), num_points=8, min_points=12,
                        log=False)
    assert 0 < len(sparse) < 4
    with pytest.raises(ValueError, match='no blocks of the training'):
        S3DISRooms(str(tmp_path), num_points=8, min_points=10 ** 6,
                   log=False)
    with pytest.raises(ValueError, match='no blocks of the test split '
                       r'\(test_area=3\)'):
        S3DISRooms(str(tmp_path), test_area=3, **SMALL)


def test_h5_blocks(tmp_path):
    data, label = make_blocks(tmp_path / 'indoor3d_sem_seg_hdf5_data')
    train = S3DISRooms(str(tmp_path), log=False)
    test = S3DISRooms(str(tmp_path), train=False, log=False)
    assert train.layout == 'h5'
    assert len(train) == 3 and len(test) == 2
    assert torch.equal(test[0].pos, torch.from_numpy(data[2, :, :3]))
    assert torch.equal(test[0].x, torch.from_numpy(data[2, :, 3:]))
    assert torch.equal(test[1].y, torch.from_numpy(label[4]).long())
    assert torch.equal(train[2].pos, torch.from_numpy(data[3, :, :3]))
    assert test[0].y.dtype == torch.long and test[0].x.shape == (8, 6)
    area2 = S3DISRooms(str(tmp_path), test_area=2, train=False, log=False)
    assert len(area2) == 1


def test_h5_blocks_by_glob(tmp_path):
    data, _ = make_blocks(tmp_path, lists=False)
    test = S3DISRooms(str(tmp_path), train=False, log=False)
    assert torch.equal(test[1].pos, torch.from_numpy(data[4, :, :3]))


def test_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        S3DISRooms(str(tmp_path / 'nothing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError,
                       match=r"Area_<a>_<room>\.npy.*ply_data_all_"):
        S3DISRooms(str(tmp_path / 'empty'))
    assert os.listdir(tmp_path / 'empty') == []  # Nothing written.

    make_blocks(tmp_path / 'h5')
    os.remove(tmp_path / 'h5' / 'room_filelist.txt')
    with pytest.raises(FileNotFoundError, match='room_filelist.txt'):
        S3DISRooms(str(tmp_path / 'h5'), log=False)


def test_malformed_rooms(tmp_path):
    folder = make_rooms(tmp_path)
    path = folder / 'Area_5_office_1.npy'
    room = np.load(path)
    np.save(path, room[:, :6])
    with pytest.raises(ValueError, match=r"\[N, 7\].*Area_5_office_1\.npy"
                       r".*\(200, 6\)"):
        S3DISRooms(str(tmp_path), **SMALL)
    bad = room.copy()
    bad[7, 6] = 13
    np.save(path, bad)
    with pytest.raises(ValueError, match=r"Label 13 \(entry 7\) in "
                       r"'.*Area_5_office_1\.npy' is not a class in 0\.\.12"):
        S3DISRooms(str(tmp_path), **SMALL)
    bad = room.copy()
    bad[0, 4] = 300
    np.save(path, bad)
    with pytest.raises(ValueError, match=r"Colors of .*office_1\.npy.*255"):
        S3DISRooms(str(tmp_path), **SMALL)
    path.write_bytes(b'')
    with pytest.raises(ValueError, match=r"office_1\.npy' is empty"):
        S3DISRooms(str(tmp_path), **SMALL)


def test_malformed_blocks(tmp_path):
    make_blocks(tmp_path)
    rooms = tmp_path / 'room_filelist.txt'
    text = rooms.read_text()
    rooms.write_text(text + 'Area_3_office_1\n')
    with pytest.raises(ValueError, match=r"names 6 rooms for 5 blocks"):
        S3DISRooms(str(tmp_path), log=False)
    rooms.write_text(text.replace('Area_2_hallway_1', 'hallway_1'))
    with pytest.raises(ValueError, match=r"Room 'hallway_1' in "
                       r"'.*room_filelist\.txt'"):
        S3DISRooms(str(tmp_path), log=False)
    rooms.write_text(text)

    path = tmp_path / 'ply_data_all_1.h5'
    with h5py.File(path, 'a') as f:
        f['label'][1, 3] = 20
    with pytest.raises(ValueError, match=r"Label 20 \(entry 11\) in "
                       r"'.*ply_data_all_1\.h5'"):
        S3DISRooms(str(tmp_path), log=False)
    with h5py.File(path, 'a') as f:
        del f['data']
        f['data'] = np.zeros((2, 8, 6), np.float32)
    with pytest.raises(ValueError, match=r"\[B, N, 9\].*all_1\.h5.*"
                       r"\(2, 8, 6\)"):
        S3DISRooms(str(tmp_path), log=False)


def test_arguments():
    for kwargs, match in ((dict(test_area=7), 'test_area'),
                          (dict(stride=0), 'positive'),
                          (dict(num_points=0), 'num_points')):
        with pytest.raises(ValueError, match=match):
            S3DISRooms('.', **kwargs)
