r"""Point-cloud datasets: pre-sampled ModelNet10/40 read from a local folder
and an embedded synthetic dataset that needs no download; part and
semantic segmentation: ShapeNet part and S3DIS read from local folders and
an embedded synthetic part-segmentation dataset."""
from torch_geometric_binary.datasets.presampled_modelnet import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    PreSampledModelNet,
)
from torch_geometric_binary.datasets.synthetic_shapes import SyntheticShapes
from torch_geometric_binary.datasets.synthetic_parts import SyntheticParts
from torch_geometric_binary.datasets.shapenet_part import ShapeNetPart
from torch_geometric_binary.datasets.s3dis import S3DISRooms

__all__ = [
    'PreSampledModelNet',
    'SyntheticShapes',
    'SyntheticParts',
    'ShapeNetPart',
    'S3DISRooms',
    'MODELNET10_CLASSES',
    'MODELNET40_CLASSES',
]
