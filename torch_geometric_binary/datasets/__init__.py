r"""Point-cloud datasets: pre-sampled ModelNet10/40 read from a local folder
and an embedded synthetic dataset that needs no download."""
from torch_geometric_binary.datasets.presampled_modelnet import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    PreSampledModelNet,
)
from torch_geometric_binary.datasets.synthetic_shapes import SyntheticShapes

__all__ = [
    'PreSampledModelNet',
    'SyntheticShapes',
    'MODELNET10_CLASSES',
    'MODELNET40_CLASSES',
]
