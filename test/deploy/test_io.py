r"""save / load of packed models, and their storage."""
import io
import json
import re
import warnings
import zipfile
import zlib

import pytest
import torch

from torch_geometric_binary.deploy import (file_size, load, num_bytes, pack,
                                           save)
from torch_geometric_binary.deploy.io import KINDS, PackedFileError
from torch_geometric_binary.deploy.registry import (PACKED_TYPES, is_packed,
                                                    register_packed)
from torch_geometric_binary.nn import BiMLP
from torch_geometric_binary.nn.models import (DGCNN, PointNet, PointNet2,
                                              PointNet2Seg)

from .test_pack_models import IDS, MODELS, batch_of, cached


CASES = [(cls, kwargs, (torch.float32, torch.float32))
         for cls, kwargs in MODELS] + [
    (PointNet, {}, (torch.float16, torch.float32)),
    (PointNet, {}, (torch.float16, torch.float16)),
]


@pytest.mark.parametrize('cls,kwargs,dtypes', CASES,
                         ids=IDS + ['pointnet_fp16', 'pointnet_fp16_all'])
def test_round_trip_gives_identical_outputs(tmp_path, cls, kwargs, dtypes):
    model, packed = cached(cls, adversarial=True, **kwargs)
    if dtypes != (torch.float32, torch.float32):
        packed = pack(model, fp_dtype=dtypes[0], epilogue_dtype=dtypes[1])
    path = tmp_path / 'model.tgb'
    written = save(packed, path)
    assert written == file_size(path) == path.stat().st_size
    loaded = load(path)
    assert type(loaded) is type(packed)
    assert not loaded.training
    for sizes in ([37], [101, 37, 5]):
        pos, batch = batch_of(sizes, seed=len(sizes))
        out = packed(pos, batch)
        assert torch.equal(loaded(pos, batch), out)
        assert torch.equal(loaded.forward_layers(pos, batch),
                           packed.forward_layers(pos, batch))
    # Saving the loaded model stores the same content.
    payloads = []
    for m in (packed, loaded):
        buf = io.BytesIO()
        save(m, buf)
        buf.seek(0)
        payloads.append(torch.load(buf, weights_only=True))
    for key in ('meta', 'blob'):
        assert torch.equal(payloads[0][key], payloads[1][key])
    assert num_bytes(loaded) == num_bytes(packed)


def test_round_trip_of_fixed_cloud_size(tmp_path):
    model, general = cached(PointNet, adversarial=True,
                            input_transform=True, feature_transform=True)
    packed = pack(model, fp_dtype=torch.float16, num_points=37)
    save(packed, tmp_path / 'fixed.tgb')
    loaded = load(tmp_path / 'fixed.tgb')
    assert loaded.num_points == 37
    assert loaded.input_tnet.point_mlp.pool_size == 37
    assert num_bytes(loaded) == num_bytes(packed)
    assert file_size(loaded) < file_size(pack(model, fp_dtype=torch.float16))
    pos, batch = batch_of([37, 37], seed=4)
    assert torch.equal(loaded(pos, batch), packed(pos, batch))
    assert torch.equal(loaded.forward_layers(pos, batch),
                       packed.forward_layers(pos, batch))
    with pytest.raises(ValueError, match='exactly 37 points'):
        loaded(pos[:40])


def test_storage_is_small():
    model, packed = cached(PointNet)
    fp32 = PointNet(5, method='fp')
    bits = num_bytes(packed, by_kind=True)
    # 1 bit per binary weight: mlp1.lins.1, mlp2, head.lins.0-1.
    n_binary = 64 * 64 + 64 * 64 + 64 * 128 + 128 * 1024 + 1024 * 512 + \
        512 * 256
    assert bits['binary_weights'] == n_binary // 8
    assert sum(bits.values()) == num_bytes(packed)
    assert file_size(packed) < num_bytes(packed) + 4096  # Container.
    assert file_size(fp32) / file_size(packed) > 20
    p16 = pack(model, fp_dtype=torch.float16)
    assert file_size(fp32) / file_size(p16) > file_size(fp32) / \
        file_size(packed)


def test_file_is_plain_tensors(tmp_path):
    _, packed = cached(PointNet)
    path = tmp_path / 'm.tgb'
    save(packed, path)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {'format', 'version', 'meta', 'blob', 'checksum'}
    assert payload['format'] == 'torch_geometric_binary.packed'
    assert payload['version'] == 2
    assert re.fullmatch('sha256:[0-9a-f]{64}', payload['checksum'])
    assert payload['blob'].dtype == torch.uint8
    # No pickled classes or functions: only the standard tensor plumbing.
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith('data.pkl')][0]
        raw = z.read(pkl)
    assert b'torch_geometric_binary.deploy' not in raw


def _payload(packed):
    buf = io.BytesIO()
    save(packed, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _raises_naming(path, match):
    with pytest.raises(PackedFileError, match=match) as info:
        load(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
    return info.value


def test_bad_files(tmp_path):
    path = tmp_path / 'x.pt'
    torch.save({'a': torch.zeros(2)}, path)
    _raises_naming(path, 'not a packed')
    _, packed = cached(PointNet)
    payload = _payload(packed)
    payload['version'] = 999
    torch.save(payload, path)
    _raises_naming(path, 'version 999')
    with pytest.raises(FileNotFoundError):
        load(tmp_path / 'missing.tgb')


def test_damaged_byte_is_detected(tmp_path):
    _, packed = cached(PointNet)
    path = tmp_path / 'm.tgb'
    save(packed, path)
    good = path.read_bytes()
    payload = torch.load(path, weights_only=True)
    for key in ('blob', 'meta'):
        raw = payload[key].numpy().tobytes()
        at = good.find(raw[:64]) + len(raw) // 2  # A weight byte.
        assert good[at - len(raw) // 2:][:len(raw)] == raw
        bad = bytearray(good)
        bad[at] ^= 0x10
        path.write_bytes(bytes(bad))
        _raises_naming(path, 'damaged: its checksum does not match')
    # A stored checksum that is wrong (or missing) is as bad.
    for checksum in ('sha256:' + '0' * 64, None):
        p = dict(payload)
        if checksum is None:
            del p['checksum']
        else:
            p['checksum'] = checksum
        torch.save(p, path)
        _raises_naming(path, 'checksum')


def test_any_flipped_byte_fails_or_changes_nothing(tmp_path):
    # Wherever a byte flips (weights, description, container), load() either
    # raises an error naming the file or gives the same model.
    _, packed = cached(PointNet)
    path = tmp_path / 'm.tgb'
    save(packed, path)
    good = path.read_bytes()
    pos, batch = batch_of([37, 20], seed=5)
    ref = packed(pos, batch)
    failed = 0
    for at in range(0, len(good), max(1, len(good) // 48)):
        bad = bytearray(good)
        bad[at] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            loaded = load(path)
        except PackedFileError as e:
            assert str(path) in str(e)
            failed += 1
            continue
        assert torch.equal(loaded(pos, batch), ref), at
    assert failed > 40


def test_truncated_empty_and_foreign_files(tmp_path):
    _, packed = cached(PointNet)
    path = tmp_path / 'm.tgb'
    save(packed, path)
    good = path.read_bytes()
    for n in (len(good) - 1, len(good) // 2, 100, 1):
        path.write_bytes(good[:n])
        _raises_naming(path, 'truncated')
    path.write_bytes(b'')
    _raises_naming(path, 'is empty')
    path.write_bytes(b'id,label\n1,2\n')  # Text: was KeyError: 105.
    _raises_naming(path, 'not a packed')
    path.write_bytes(bytes(range(256)) * 8)
    _raises_naming(path, 'not a packed')
    torch.save(torch.nn.Linear(2, 3), path)  # Pickled classes.
    _raises_naming(path, 'not a packed')
    torch.save([1, 2], path)
    _raises_naming(path, 'not a packed')
    # File objects are named by their name, if they have one.
    with open(path, 'rb') as f:
        _raises_naming(f.name, 'not a packed')
    buf = io.BytesIO(good[:len(good) // 2])
    with pytest.raises(PackedFileError, match='<BytesIO> is truncated'):
        load(buf)


def test_description_not_matching_blob(tmp_path):
    # A consistent checksum over an inconsistent file (not written by save):
    # still a named error, not an IndexError deep in the loader.
    from torch_geometric_binary.deploy.io import _checksum
    _, packed = cached(PointNet)
    payload = _payload(packed)
    payload['blob'] = payload['blob'][:-8].clone()
    payload['checksum'] = _checksum(payload['meta'], payload['blob'])
    path = tmp_path / 'm.tgb'
    torch.save(payload, path)
    _raises_naming(path, 'cannot be rebuilt from its description')


def test_loads_version_1_files(tmp_path):
    _, packed = cached(PointNet)
    payload = _payload(packed)
    del payload['checksum']
    payload['version'] = 1
    path = tmp_path / 'v1.tgb'
    torch.save(payload, path)
    with pytest.warns(UserWarning, match='version 1, which has no checksum'):
        loaded = load(path)
    pos, batch = batch_of([37], seed=1)
    assert torch.equal(loaded(pos, batch), packed(pos, batch))
    # Saved again, it has a checksum and loads without a warning.
    save(loaded, path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        load(path)


def test_save_single_mlp_and_unknown_module():
    mlp = BiMLP([13, 70, 9], last_fp=True).eval()
    packed = pack(mlp)
    buf = io.BytesIO()
    save(packed, buf)
    buf.seek(0)
    loaded = load(buf)
    x = torch.randn(20, 13)
    assert torch.equal(loaded(x), packed(x))
    with pytest.raises(TypeError, match='Linear'):
        save(torch.nn.Linear(3, 4), io.BytesIO())


def _adder(stored):
    def add(t, kind):
        assert kind in KINDS
        if t is None:
            return None
        stored.append(t)
        return len(stored) - 1
    return add


def test_every_packed_type_round_trips_through_its_config():
    # The packed modules of the three models (with T-Nets), a BiMLP with
    # a non-clamp activation (its float tail stays a BinaryEpilogue), and
    # ReActNet (RPReLU activations, also inside a float tail), and a
    # segmentation network (packed module by module: PackedModel).
    mlp = BiMLP([13, 70, 40, 9], act='tanh', plain_last=False).eval()
    react = PointNet(5, method='react', feature_transform=True).eval()
    torch.manual_seed(0)
    seg = PointNet2Seg(5).eval()
    roots = [cached(PointNet, input_transform=True,
                    feature_transform=True)[1],
             cached(PointNet2)[1], cached(DGCNN, k=12)[1], pack(mlp),
             pack(react), pack(seg)]
    modules = [m for r in roots for m in r.modules() if is_packed(m)]
    assert {type(m) for m in modules} == set(PACKED_TYPES.values())
    assert all(cls.__name__ == name for name, cls in PACKED_TYPES.items())
    for m in modules:
        stored = []
        attrs, tensors, children = m.packed_config(_adder(stored))
        assert json.loads(json.dumps(attrs)) == attrs  # Plain data.
        out = type(m).from_packed_config(
            attrs, {k: None if i is None else stored[i]
                    for k, i in tensors.items()}, children)
        assert type(out) is type(m)
        # Its own config again: the same attributes, tensors and children.
        again = []
        attrs2, tensors2, children2 = out.packed_config(_adder(again))
        assert attrs2 == attrs and tensors2 == tensors
        assert len(again) == len(stored)
        assert all(torch.equal(a, b) for a, b in zip(again, stored))
        assert children2.keys() == children.keys()
        for k, c in children.items():
            if isinstance(c, torch.nn.ModuleList):
                assert len(children2[k]) == len(c)
                assert all(a is b for a, b in zip(children2[k], c))
            else:
                assert children2[k] is c


def test_registry_refuses_duplicates_and_incomplete_classes():
    with pytest.raises(ValueError, match="'PackedMLP' is already"):
        register_packed(type('PackedMLP', (torch.nn.Module, ), {
            'packed_config': lambda self, add: ({}, {}, {}),
            'from_packed_config': classmethod(lambda cls, a, t, c: cls())}))
    with pytest.raises(TypeError, match="no 'from_packed_config'"):
        register_packed(type('PackedNothing', (torch.nn.Module, ), {
            'packed_config': lambda self, add: ({}, {}, {})}))
    assert 'PackedNothing' not in PACKED_TYPES


def test_unknown_type_in_description(tmp_path):
    from torch_geometric_binary.deploy.io import _checksum
    _, packed = cached(PointNet)
    payload = _payload(packed)
    desc = json.loads(zlib.decompress(payload['meta'].numpy().tobytes()))
    desc['root']['children']['mlp1']['type'] = 'PackedNoSuchModule'
    meta = zlib.compress(json.dumps(desc).encode())
    payload['meta'] = torch.frombuffer(bytearray(meta), dtype=torch.uint8)
    payload['checksum'] = _checksum(payload['meta'], payload['blob'])
    path = tmp_path / 'm.tgb'
    torch.save(payload, path)
    _raises_naming(path, "unknown packed module type 'PackedNoSuchModule'")


@pytest.mark.parametrize('retired', ['PackedDGCNN', 'PackedPointNet',
                                     'PackedPointNet2'])
def test_retired_packed_file_names_its_version(tmp_path, retired):
    # Files of format version 2 whose root is a retired hand-fused packed
    # class (its description as that version wrote it).
    from torch_geometric_binary.deploy.io import _checksum
    _, packed = cached(PointNet)
    payload = _payload(packed)
    desc = json.loads(zlib.decompress(payload['meta'].numpy().tobytes()))
    desc['root']['type'] = retired
    meta = zlib.compress(json.dumps(desc).encode())
    payload['meta'] = torch.frombuffer(bytearray(meta), dtype=torch.uint8)
    payload['checksum'] = _checksum(payload['meta'], payload['blob'])
    path = tmp_path / 'retired.tgb'
    torch.save(payload, path)
    _raises_naming(path, rf'\(format version 2\) holds a {retired}.*'
                         r'pack the trained model again')
