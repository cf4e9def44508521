r"""Bit-packed inference for trained binary layers and models: XNOR-popcount
kernels (C++ with a pure-PyTorch fallback), packed layers whose batch
normalization is folded into integer thresholds, :func:`pack` for whole
binary models (module by module, with consecutive packed MLPs fused at
run time, :mod:`~torch_geometric_binary.deploy.fusion`, and the model's
forward recorded and replayed, :mod:`~torch_geometric_binary.deploy.
replay`), and :func:`save` / :func:`load` of packed models."""
from .kernels import (
    backend,
    cpp_available,
    isa,
    num_words,
    pack_bits,
    set_isa,
    supported_isas,
    unpack_bits,
    xnor_gemm,
    xnor_gemm_threshold,
)
from .fold import (INT32_MAX, INT32_MIN, BinaryEpilogue, dot_thresholds,
                   fold_epilogue, fold_threshold)
from .activations import PackedRPReLU
from .registry import converter
from .linear import PackedBiLinear
from .epilogue import AffineEpilogue, fma32
from .chain import BinaryChain, PoolTable, pooled_floats
from .modules import (FrozenBatchNorm, PackedGlobalPool, PackedLinear,
                      PackedMLP)
from .models import (PackedEdgeConv, PackedPointConv, PackedSetAbstraction,
                     PackedTNet, pack)
from .kernels import cat_bits
from .generic import PackedFeaturePropagation, PackedModel, pack_modules
from .io import PackedFileError, file_size, load, num_bytes, save
from .threads import set_single_thread_points, single_thread_points

__all__ = [
    'PackedFileError',
    'backend',
    'cpp_available',
    'isa',
    'supported_isas',
    'set_isa',
    'num_words',
    'pack_bits',
    'unpack_bits',
    'xnor_gemm',
    'xnor_gemm_threshold',
    'BinaryEpilogue',
    'fold_threshold',
    'fold_epilogue',
    'dot_thresholds',
    'PackedRPReLU',
    'converter',
    'INT32_MIN',
    'INT32_MAX',
    'PackedBiLinear',
    'AffineEpilogue',
    'fma32',
    'BinaryChain',
    'PoolTable',
    'pooled_floats',
    'cat_bits',
    'PackedLinear',
    'FrozenBatchNorm',
    'PackedMLP',
    'PackedGlobalPool',
    'PackedTNet',
    'PackedSetAbstraction',
    'PackedPointConv',
    'PackedEdgeConv',
    'PackedFeaturePropagation',
    'PackedModel',
    'pack_modules',
    'pack',
    'save',
    'load',
    'num_bytes',
    'file_size',
    'single_thread_points',
    'set_single_thread_points',
]
