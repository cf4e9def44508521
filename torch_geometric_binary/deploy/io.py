r"""Saving and loading packed models as a single file.

:func:`save` writes, with :func:`torch.save`, a dictionary of two
:obj:`uint8` tensors and three strings: :obj:`"meta"`, the zlib-compressed
JSON description of the module tree (types, plain attributes and a table of
tensors), :obj:`"blob"`, the raw bytes of all tensors back to back, and
:obj:`"checksum"`, the SHA-256 of both (:obj:`"sha256:<hex>"`).
:func:`load` reads it with :obj:`torch.load(weights_only=True)`: no pickled
code runs, and modules are rebuilt from a fixed registry of packed types
(:mod:`~torch_geometric_binary.deploy.registry`; each converts itself). It
verifies the checksum first: :func:`torch.save`'s container checks nothing,
and one flipped weight byte would otherwise change predictions silently.
A damaged, truncated, empty or foreign file raises a
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
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from torch_geometric_binary.deploy.activations import act_spec, make_act
from torch_geometric_binary.deploy.registry import (DTYPES, PACKED_TYPES,
                                                    dtype_name, is_packed)

FORMAT = 'torch_geometric_binary.packed'
VERSION = 2  # 2: adds "checksum".
#: Packed classes that files of format versions 1 and 2 may hold and that
#: this version no longer has, with what replaced them.
RETIRED = {
    'PackedDGCNN': 'the hand-fused DGCNN of format versions 1 and 2, '
                   'replaced by a PackedModel (packed module by module, as '
                   'fast)',
    'PackedPointNet': 'the hand-fused PointNet of format versions 1 and 2, '
                      'replaced by a PackedModel (packed module by module, '
                      'as fast)',
    'PackedPointNet2': 'the hand-fused PointNet++ of format versions 1 and '
                       '2, replaced by a PackedModel (packed module by '
                       'module, as fast)',
}
_READABLE = (1, 2)


class PackedFileError(ValueError):
    r"""A file that :func:`load` cannot read as a packed model: damaged,
    truncated, empty, of an unknown format version, or not a packed model at
    all. The message names the file."""


# Tensor kinds, for storage reports.
KINDS = ('binary_weights', 'thresholds', 'epilogues', 'fp_weights',
         'fp_norms')


class _Writer:
    def __init__(self):
        self.tensors: List[Tensor] = []
        self.kinds: List[str] = []

    def add(self, t: Optional[Tensor], kind: str) -> Optional[int]:
        if kind not in KINDS:
            raise ValueError(f"save: unknown tensor kind '{kind}' (one of "
                             f"{KINDS})")
        if t is None:
            return None
        self.tensors.append(t.detach().cpu().contiguous())
        self.kinds.append(kind)
        return len(self.tensors) - 1


# --------------------------------------------------------------------------
# The module tree: each registered packed type converts itself (see
# deploy.registry); lists and activations are nodes of their own.

def _export(m: Optional[torch.nn.Module], w: _Writer) -> Optional[dict]:
    if m is None:
        return None
    if isinstance(m, torch.nn.ModuleList):
        return {'type': 'list', 'items': [_export(c, w) for c in m]}
    if is_packed(m):
        attrs, tensors, children = m.packed_config(w.add)
        return {'type': type(m).__name__, 'attrs': attrs, 'tensors': tensors,
                'children': {k: _export(c, w) for k, c in children.items()}}
    spec = act_spec(m, 'save')  # Raises a TypeError for unknown modules.
    return {'type': 'act', 'attrs': {'spec': list(spec)}}


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
    if kind not in PACKED_TYPES:
        raise ValueError(f"load: unknown packed module type '{kind}'")
    t = {k: None if i is None else tensors[i]
         for k, i in node.get('tensors', {}).items()}
    c = {k: _import(v, tensors) for k, v in node.get('children', {}).items()}
    return PACKED_TYPES[kind].from_packed_config(node['attrs'], t, c)


# --------------------------------------------------------------------------
# Public API.

def _serialize(packed: torch.nn.Module
               ) -> Tuple[dict, List[Tensor], List[str]]:
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
        table.append([dtype_name(t.dtype), list(t.shape), offset,
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
    root = desc.get('root') if isinstance(desc, dict) else None
    kind = root.get('type') if isinstance(root, dict) else None
    if kind in RETIRED:
        raise PackedFileError(
            f"load: {name} (format version {payload['version']}) holds a "
            f"{kind}, {RETIRED[kind]}; pack the trained model again "
            f"(pack(model)) and save it")
    try:
        tensors = []
        for dtype, shape, offset, nbytes in desc['tensors']:
            if not 0 <= offset <= offset + nbytes <= blob.numel():
                raise ValueError(f'tensor bytes {offset}..{offset + nbytes} '
                                 f'outside the blob of {blob.numel()}')
            raw = blob[offset:offset + nbytes].clone()
            tensors.append(raw.view(DTYPES[dtype]).reshape(shape))
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
    if isinstance(obj, torch.nn.Module) and is_packed(obj):
        return save(obj, buf)
    torch.save(obj.state_dict() if isinstance(obj, torch.nn.Module) else obj,
               buf)
    return buf.tell()
