r"""Saving and loading packed models as a single file.

:func:`save` writes, with :func:`torch.save`, a dictionary of two
:obj:`uint8` tensors and three strings: :obj:`"meta"`, the zlib-compressed
JSON description of the module tree (types, plain attributes and a table of
tensors), :obj:`"blob"`, the raw bytes of all tensors back to back, and
:obj:`"checksum"`, the SHA-256 of both (:obj:`"sha256:<hex>"`).
:func:`load` reads it with :obj:`torch.load(weights_only=True)`: no pickled
code runs, and modules are rebuilt from a fixed registry of packed types.
It verifies the checksum first: :func:`torch.save`'s container checks
nothing, and one flipped weight byte would otherwise change predictions
silently. A damaged, truncated, empty or foreign file raises a
:class:`PackedFileError` (a :class:`ValueError`) naming the file. Files of
format version 1 (no checksum) still load, with a warning.

What is stored is the minimum the packed model needs: binary weights as
bits, thresholds in the smallest integer type that holds
:math:`[-K-1, K+1]` (where a threshold :math:`\le -K` means "always" and
:math:`> K` "never"), inversion flags as bits, and float tensors in their
packed storage type. Whatever can be derived (thresholds of layers with a
float output that the epilogue gives back exactly, the kernels' weight
layout, pooling tables) is recomputed on load.
"""
import hashlib
import io
import json
import os
import warnings
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from torch_geometric_binary.deploy.epilogue import AffineEpilogue
from torch_geometric_binary.deploy.fold import (BinaryEpilogue,
                                                fold_epilogue)
from torch_geometric_binary.deploy.kernels import _pack_bool, _unpack_bool
from torch_geometric_binary.deploy.linear import PackedBiLinear
from torch_geometric_binary.deploy.models import (PackedDGCNN,
                                                  PackedEdgeConv,
                                                  PackedPointConv,
                                                  PackedPointNet,
                                                  PackedPointNet2,
                                                  PackedSetAbstraction,
                                                  PackedTNet)
from torch_geometric_binary.deploy.modules import (FrozenBatchNorm,
                                                   PackedGlobalPool,
                                                   PackedLinear, PackedMLP,
                                                   act_spec, make_act)

FORMAT = 'torch_geometric_binary.packed'
VERSION = 2  # 2: adds "checksum".
_READABLE = (1, 2)


class PackedFileError(ValueError):
    r"""A file that :func:`load` cannot read as a packed model: damaged,
    truncated, empty, of an unknown format version, or not a packed model at
    all. The message names the file."""


_DTYPES = {str(t).split('.')[-1]: t for t in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
    torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}

# Tensor kinds, for storage reports.
KINDS = ('binary_weights', 'thresholds', 'epilogues', 'fp_weights',
         'fp_norms')


class _Writer:
    def __init__(self):
        self.tensors: List[Tensor] = []
        self.kinds: List[str] = []

    def add(self, t: Optional[Tensor], kind: str) -> Optional[int]:
        if t is None:
            return None
        self.tensors.append(t.detach().cpu().contiguous())
        self.kinds.append(kind)
        return len(self.tensors) - 1


def _int_range(K: int) -> torch.dtype:
    for dtype in (torch.int8, torch.int16):
        if K + 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int32


def _compact_thresholds(t: Tensor, K: int) -> Tensor:
    return t.to(torch.int64).clamp(-K - 1, K + 1).to(_int_range(K))


def _pack_flags(b: Tensor) -> Tensor:
    return _pack_bool(b.reshape(1, -1).bool()).view(-1)


def _unpack_flags(words: Tensor, n: int) -> Tensor:
    return _unpack_bool(words.view(1, -1), n).view(-1)


# --------------------------------------------------------------------------
# Export: module -> node.

def _export(m: Optional[torch.nn.Module], w: _Writer) -> Optional[dict]:
    if m is None:
        return None
    if isinstance(m, torch.nn.ModuleList):
        return {'type': 'list', 'items': [_export(c, w) for c in m]}
    for cls, (name, fn) in _EXPORTERS.items():
        if type(m) is cls:
            attrs, tensors, children = fn(m, w)
            return {'type': name, 'attrs': attrs, 'tensors': tensors,
                    'children': {k: _export(c, w)
                                 for k, c in children.items()}}
    spec = act_spec(m, 'save')  # Raises a TypeError for unknown modules.
    return {'type': 'act', 'attrs': {'spec': list(spec)}}


_CHILDREN = {
    **{cls: cls.child_names()
       for cls in (PackedPointNet, PackedPointNet2, PackedDGCNN)},
    PackedTNet: ('point_mlp', 'pool', 'act', 'head'),
}


def _children(m) -> Dict[str, Optional[torch.nn.Module]]:
    return {k: getattr(m, k) for k in _CHILDREN[type(m)]}


def _model(m, w):
    return ({'num_classes': m.num_classes, 'in_channels': m.in_channels},
            {}, _children(m))


def _tnet(m, w):
    return {'k': m.k}, {}, _children(m)


def _sa(m, w):
    return ({'ratio': m.ratio, 'r': m.r,
             'max_num_neighbors': m.max_num_neighbors}, {},
            {'conv': m.conv})


def _point_conv(m, w):
    return ({'ema': m.ema}, {},
            {'local_nn': m.local_nn, 'global_nn': m.global_nn})


def _edge_conv(m, w):
    return ({'k': m.k, 'ema': m.ema, 'num_workers': m.num_workers}, {},
            {'nn': m.nn})


def _mlp(m, w):
    return ({'channel_list': m.channel_list, 'plain_last': m.plain_last},
            {}, {'lins': m.lins, 'norms': m.norms, 'act': m.act,
                 'last_norm': m.last_norm})


def _linear(m, w):
    return ({}, {'weight': w.add(m.weight, 'fp_weights'),
                 'bias': w.add(m.bias, 'fp_weights')}, {})


def _bn(m, w):
    return ({'eps': m.eps},
            {k: w.add(getattr(m, k), 'fp_norms')
             for k in ('running_mean', 'running_var', 'weight', 'bias')}, {})


def _pool(m, w):
    return ({'ema': m.ema, 'num_points': m.num_points,
             'channels': m.channels}, {}, {})


def _affine(m, w):
    return ({'channels': m.channels, 'lo': m.lo, 'hi': m.hi},
            {k: w.add(getattr(m, k), 'epilogues')
             for k in ('alpha', 'beta', 'scale', 'bias')}, {})


def _binary_epilogue(m, w):
    spec = None if m.act is None else list(act_spec(m.act, 'save'))
    return ({'channels': m.channels, 'eps': m.eps,
             'dtype': str(m.dtype).split('.')[-1], 'act': spec},
            {k: w.add(getattr(m, k), 'epilogues')
             for k in ('scale', 'bias', 'running_mean', 'running_var',
                       'norm_weight', 'norm_bias')}, {})


def _bilinear(m, w):
    K = m.in_channels
    tensors = {'weight': w.add(m.weight, 'binary_weights')}
    keep = m.epilogue is None
    if not keep:  # Derivable from the epilogue? Then it is not stored.
        t, f = fold_epilogue(m.epilogue, K)
        keep = not (torch.equal(t, m.threshold) and torch.equal(f, m.flip))
    if keep:
        tensors['threshold'] = w.add(_compact_thresholds(m.threshold, K),
                                     'thresholds')
        tensors['flip'] = w.add(_pack_flags(m.flip), 'thresholds')
    return ({'in_channels': K, 'out_channels': m.out_channels,
             'output': m.output}, tensors, {'epilogue': m.epilogue})


_EXPORTERS: Dict[type, Tuple[str, Callable]] = {
    PackedPointNet: ('PackedPointNet', _model),
    PackedPointNet2: ('PackedPointNet2', _model),
    PackedDGCNN: ('PackedDGCNN', _model),
    PackedTNet: ('PackedTNet', _tnet),
    PackedSetAbstraction: ('PackedSetAbstraction', _sa),
    PackedPointConv: ('PackedPointConv', _point_conv),
    PackedEdgeConv: ('PackedEdgeConv', _edge_conv),
    PackedMLP: ('PackedMLP', _mlp),
    PackedLinear: ('PackedLinear', _linear),
    FrozenBatchNorm: ('FrozenBatchNorm', _bn),
    PackedGlobalPool: ('PackedGlobalPool', _pool),
    AffineEpilogue: ('AffineEpilogue', _affine),
    BinaryEpilogue: ('BinaryEpilogue', _binary_epilogue),
    PackedBiLinear: ('PackedBiLinear', _bilinear),
}


# --------------------------------------------------------------------------
# Import: node -> module.

def _import(node: Optional[dict], tensors: List[Tensor]
            ) -> Optional[torch.nn.Module]:
    if node is None:
        return None
    kind = node['type']
    if kind == 'list':
        return torch.nn.ModuleList([_import(c, tensors)
                                    for c in node['items']])
    if kind == 'act':
        name, kwargs = node['attrs']['spec']
        return make_act((name, kwargs))
    if kind not in _IMPORTERS:
        raise ValueError(f"load: unknown packed module type '{kind}'")
    a = node['attrs']
    t = {k: None if i is None else tensors[i]
         for k, i in node.get('tensors', {}).items()}
    c = {k: _import(v, tensors) for k, v in node.get('children', {}).items()}
    return _IMPORTERS[kind](a, t, c)


def _bilinear_in(a, t, c):
    K, N, epi = a['in_channels'], a['out_channels'], c['epilogue']
    if t.get('threshold') is not None:
        threshold = t['threshold'].to(torch.int32)
        flip = _unpack_flags(t['flip'], N)
    else:
        threshold, flip = fold_epilogue(epi, K)
    return PackedBiLinear(t['weight'], K, threshold, flip, epi, a['output'])


def _binary_epilogue_in(a, t, c):
    ep = BinaryEpilogue.__new__(BinaryEpilogue)
    torch.nn.Module.__init__(ep)
    ep.dtype = _DTYPES[a['dtype']]
    ep.channels = a['channels']
    ep.eps = a['eps']
    for k in ('scale', 'bias', 'running_mean', 'running_var', 'norm_weight',
              'norm_bias'):
        ep.register_buffer(k, t[k])
    ep.act = None if a['act'] is None else make_act(tuple(a['act']))
    return ep


def _classifier_in(cls):
    return lambda a, t, c: cls(a['num_classes'], a['in_channels'], **c)


_IMPORTERS: Dict[str, Callable] = {
    **{cls.__name__: _classifier_in(cls)
       for cls in (PackedPointNet, PackedPointNet2, PackedDGCNN)},
    'PackedTNet': lambda a, t, c: PackedTNet(
        a['k'], c['point_mlp'], c['pool'], c['act'], c['head']),
    'PackedSetAbstraction': lambda a, t, c: PackedSetAbstraction(
        a['ratio'], a['r'], a['max_num_neighbors'], c['conv']),
    'PackedPointConv': lambda a, t, c: PackedPointConv(
        c['local_nn'], c['global_nn'], a['ema']),
    'PackedEdgeConv': lambda a, t, c: PackedEdgeConv(
        c['nn'], a['k'], a['ema'], a['num_workers']),
    'PackedMLP': lambda a, t, c: PackedMLP(
        a['channel_list'], list(c['lins']), list(c['norms']), c['act'],
        a['plain_last'], c['last_norm']),
    'PackedLinear': lambda a, t, c: PackedLinear(t['weight'], t['bias']),
    'FrozenBatchNorm': lambda a, t, c: FrozenBatchNorm(
        t['running_mean'], t['running_var'], t['weight'], t['bias'],
        a['eps']),
    'PackedGlobalPool': lambda a, t, c: PackedGlobalPool(
        a['ema'], a.get('num_points'), a.get('channels')),
    'AffineEpilogue': lambda a, t, c: AffineEpilogue(
        a['channels'], t['alpha'], t['beta'], t['scale'], t['bias'],
        a['lo'], a['hi']),
    'BinaryEpilogue': _binary_epilogue_in,
    'PackedBiLinear': _bilinear_in,
}


# --------------------------------------------------------------------------
# Public API.

def _serialize(packed: torch.nn.Module) -> Tuple[dict, List[Tensor],
                                                  List[str]]:
    w = _Writer()
    root = _export(packed, w)
    return root, w.tensors, w.kinds


def save(packed: torch.nn.Module, path: Union[str, os.PathLike, io.IOBase]
         ) -> int:
    r"""Saves a packed model (from :func:`~torch_geometric_binary.deploy.pack`
    or :func:`load`) to one file; returns the number of bytes written."""
    root, tensors, _ = _serialize(packed)
    table, chunks, offset = [], [], 0
    for t in tensors:
        raw = t.reshape(-1).view(torch.uint8) if t.numel() else \
            torch.empty(0, dtype=torch.uint8)
        table.append([str(t.dtype).split('.')[-1], list(t.shape), offset,
                      raw.numel()])
        chunks.append(raw)
        offset += raw.numel()
    meta = json.dumps({'root': root, 'tensors': table},
                      separators=(',', ':')).encode()
    meta_t = torch.frombuffer(bytearray(zlib.compress(meta, 9)),
                              dtype=torch.uint8)
    blob = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)
    payload = {
        'format': FORMAT,
        'version': VERSION,
        'meta': meta_t,
        'blob': blob,
        'checksum': _checksum(meta_t, blob),
    }
    if isinstance(path, (str, os.PathLike)):
        torch.save(payload, path)
        return os.path.getsize(path)
    start = path.tell()
    torch.save(payload, path)
    return path.tell() - start


def _checksum(meta: Tensor, blob: Tensor) -> str:
    h = hashlib.sha256()
    for t in (meta, blob):
        h.update(len(t).to_bytes(8, 'little'))  # Where meta ends counts too.
        h.update(t.numpy().tobytes())
    return 'sha256:' + h.hexdigest()


def _name(path) -> str:
    if isinstance(path, (str, os.PathLike)):
        return f"'{os.fspath(path)}'"
    name = getattr(path, 'name', None)
    return f"'{name}'" if isinstance(name, str) else \
        f'<{type(path).__name__}>'


def _decode(payload: dict, name: str) -> Tuple[dict, Tensor]:
    r"""Checks :obj:`payload` and returns its description and blob; raises a
    :class:`PackedFileError` naming :obj:`name` if anything is off."""
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        raise PackedFileError(f"load: {name} is not a packed "
                              f"torch_geometric_binary model")
    version = payload.get('version')
    if version not in _READABLE:
        raise PackedFileError(
            f"load: {name} has unsupported format version {version!r} (this "
            f"version of torch_geometric_binary reads versions "
            f"{', '.join(map(str, _READABLE))})")
    meta, blob = payload.get('meta'), payload.get('blob')
    if not all(isinstance(t, Tensor) and t.dtype == torch.uint8 and
               t.dim() == 1 for t in (meta, blob)):
        raise PackedFileError(f"load: {name} is damaged (no uint8 'meta' and "
                              f"'blob' tensors)")
    if version >= 2:
        stored = payload.get('checksum')
        if stored != _checksum(meta, blob):
            raise PackedFileError(
                f"load: {name} is damaged: its checksum does not match its "
                f"content (stored {stored!r}); the weights cannot be "
                f"trusted, pack and save the model again")
    else:
        warnings.warn(f"load: {name} was written in format version 1, which "
                      f"has no checksum: loaded without an integrity check "
                      f"(save it again to add one)", stacklevel=3)
    try:
        desc = json.loads(zlib.decompress(meta.numpy().tobytes()))
    except (zlib.error, ValueError) as e:  # (UnicodeError, JSONDecodeError)
        raise PackedFileError(f"load: {name} is damaged: its description "
                              f"cannot be decoded ({e})") from None
    return desc, blob


def load(path: Union[str, os.PathLike, io.IOBase]) -> torch.nn.Module:
    r"""Loads a packed model saved by :func:`save` (on the CPU, without
    unpickling code).

    Raises a :class:`PackedFileError` (a :class:`ValueError`) naming the
    file if it is damaged (checksum mismatch), truncated, empty or not a
    packed model; a missing file raises :class:`FileNotFoundError`."""
    name = _name(path)
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise  # Missing file, permissions: already named.
        # torch.load's own errors say nothing of the file: an empty one gives
        # EOFError(''), a foreign one KeyError: 105, a truncated one a zip
        # error.
        if isinstance(path, (str, os.PathLike)) and \
                os.path.getsize(path) == 0:
            raise PackedFileError(f"load: {name} is empty (0 bytes)") \
                from None
        raise PackedFileError(
            f"load: {name} is truncated, damaged or not a packed "
            f"torch_geometric_binary model (torch.load failed: "
            f"{type(e).__name__}: {e})") from None
    desc, blob = _decode(payload, name)
    try:
        tensors = []
        for dtype, shape, offset, nbytes in desc['tensors']:
            if not 0 <= offset <= offset + nbytes <= blob.numel():
                raise ValueError(f'tensor bytes {offset}..{offset + nbytes} '
                                 f'outside the blob of {blob.numel()}')
            raw = blob[offset:offset + nbytes].clone()
            tensors.append(raw.view(_DTYPES[dtype]).reshape(shape))
        return _import(desc['root'], tensors).eval()
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        # Only reachable with a checksum that matches (or version 1): a file
        # written by something else than save().
        raise PackedFileError(f"load: {name} cannot be rebuilt from its "
                              f"description ({type(e).__name__}: {e})") from e


def num_bytes(packed: torch.nn.Module,
              by_kind: bool = False) -> Union[int, Dict[str, int]]:
    r"""The bytes of the tensors :func:`save` stores for :obj:`packed`
    (without the file's container and description); with :obj:`by_kind`,
    split into :obj:`"binary_weights"`, :obj:`"thresholds"`,
    :obj:`"epilogues"` (float tails of binary layers), :obj:`"fp_weights"`
    and :obj:`"fp_norms"` (full-precision layers)."""
    _, tensors, kinds = _serialize(packed)
    out = {k: 0 for k in KINDS}
    for t, k in zip(tensors, kinds):
        out[k] += t.numel() * t.element_size()
    return out if by_kind else sum(out.values())


def file_size(obj: Union[str, os.PathLike, torch.nn.Module, Dict[str, Any]]
              ) -> int:
    r"""The size in bytes of a file, of a packed model as :func:`save`
    writes it, or of any other module's :obj:`state_dict` (or a dictionary)
    as :func:`torch.save` writes it."""
    if isinstance(obj, (str, os.PathLike)):
        return os.path.getsize(obj)
    buf = io.BytesIO()
    if isinstance(obj, torch.nn.Module) and type(obj) in _EXPORTERS:
        return save(obj, buf)
    torch.save(obj.state_dict() if isinstance(obj, torch.nn.Module) else obj,
               buf)
    return buf.tell()
