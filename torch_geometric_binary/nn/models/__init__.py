from .pointnet import PointNet
from .pointnet2 import PointNet2
from .dgcnn import DGCNN
from .segmentation import PointNetSeg, PointNet2Seg, DGCNNSeg

#: The classifiers by name (:obj:`examples/modelnet.py --model`).
MODELS = {
    'pointnet': PointNet,
    'pointnet2': PointNet2,
    'dgcnn': DGCNN,
}

#: The segmentation networks by backbone name (:obj:`examples/segmentation.py
#: --model`); checkpoints whose config has :obj:`task="segmentation"` are
#: built from here (:func:`~torch_geometric_binary.train.build_model`).
SEG_MODELS = {
    'pointnet': PointNetSeg,
    'pointnet2': PointNet2Seg,
    'dgcnn': DGCNNSeg,
}

__all__ = ['PointNet', 'PointNet2', 'DGCNN', 'MODELS', 'PointNetSeg',
           'PointNet2Seg', 'DGCNNSeg', 'SEG_MODELS']
