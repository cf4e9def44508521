r"""The package's training kernels in C++ (:obj:`torch_geometric_binary.
_fused`, built by :obj:`setup.py`), or :obj:`None` where they are not built:
callers then take their pure PyTorch paths (same results, slower).
:obj:`TORCH_GEOMETRIC_BINARY_REQUIRE_EXT=1` (set by CI) turns a missing
build into an import error."""
import os

try:
    from torch_geometric_binary import _fused as fused
except ImportError:
    if os.environ.get('TORCH_GEOMETRIC_BINARY_REQUIRE_EXT') == '1':
        raise
    fused = None

#: Whether the fused paths and these kernels are used; the switch of
#: :func:`torch_geometric_binary.nn.fused.use_fused`.
enabled = True


def xnor_ops():
    r"""The packed-sign operators of :mod:`torch_geometric_binary.deploy`
    (:obj:`torch.ops.torch_geometric_binary`: :obj:`pack_bits`,
    :obj:`xnor_gemm`, ...), loading their library on first use, or
    :obj:`None` where it is not built."""
    global _xnor
    if _xnor is None:
        try:
            import torch
            from torch_geometric_binary.deploy import _xnor as _  # noqa: F401
            _xnor = torch.ops.torch_geometric_binary
        except ImportError:
            if os.environ.get('TORCH_GEOMETRIC_BINARY_REQUIRE_EXT') == '1':
                raise
            _xnor = False
    return _xnor or None


_xnor = None
