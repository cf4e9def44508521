r"""Bit-packed inference for trained binary layers: XNOR-popcount kernels
(C++ with a pure-PyTorch fallback) and packed layers whose batch
normalization is folded into integer thresholds."""
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
from .fold import (INT32_MAX, INT32_MIN, BinaryEpilogue, fold_epilogue,
                   fold_threshold)
from .linear import PackedBiLinear

__all__ = [
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
    'INT32_MIN',
    'INT32_MAX',
    'PackedBiLinear',
]
