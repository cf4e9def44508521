from .pointnet import PointNet
from .pointnet2 import PointNet2
from .dgcnn import DGCNN

MODELS = {
    'pointnet': PointNet,
    'pointnet2': PointNet2,
    'dgcnn': DGCNN,
}

__all__ = ['PointNet', 'PointNet2', 'DGCNN', 'MODELS']
