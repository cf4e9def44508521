r"""Binary operators for PyG point-cloud networks (BiPointNet)."""
from . import functional
from .methods import (BinaryMethod, METHODS, register_method, resolve_method,
                      method_names, advance_schedule)
from .linear import BiLinear
from .rprelu import RPReLU
from .mlp import BiMLP
from .aggr import EMAMaxAggregation, global_ema_max_pool
from .conv import BiPointConv, BiEdgeConv, BiDynamicEdgeConv
from .lsr import init_lsr_scales

__all__ = [
    'functional',
    'BinaryMethod',
    'METHODS',
    'register_method',
    'resolve_method',
    'method_names',
    'advance_schedule',
    'BiLinear',
    'RPReLU',
    'BiMLP',
    'EMAMaxAggregation',
    'global_ema_max_pool',
    'BiPointConv',
    'BiEdgeConv',
    'BiDynamicEdgeConv',
    'init_lsr_scales',
]
from . import models  # noqa: E402,F401
