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
