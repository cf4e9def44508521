r"""Training utilities of the ModelNet training program
(:obj:`examples/modelnet.py`) and the segmentation program
(:obj:`examples/segmentation.py`): datasets and transforms, the training and
evaluation loops, metrics, checkpoints and :obj:`torch.distributed` set-up.
"""
from .metrics import (ClassAccuracy, PartSegMetric, SemSegMetric,
                      category_part_mask, mask_to_category, part_iou)
from .transforms import FirstPoints, NormalizeUnitSphere, RandomScaleTranslate
from .data import (DATASETS, NEEDS_ROOT, DataSplits, balanced_subset,
                   build_datasets, train_loader, test_loader)
from .loop import (seed_everything, epoch_seed, cosine_lr_lambda, kd_loss,
                   weight_average, train_epoch, evaluate, PRECISIONS,
                   resolve_precision, autocast, fast_bf16)
from .checkpoint import (CHECKPOINT_VERSION, save_checkpoint, load_checkpoint,
                         strip_checkpoint,
                         build_model, load_matching_weights, load_teacher,
                         check_classes,
                         model_from_checkpoint,
                         init_from_checkpoint, rng_state, set_rng_state)
from .distributed import (DistEnv, resolve_device, setup_distributed,
                          cleanup_distributed, broadcast_buffers)
from .segmentation import (SEG_DATASETS, SEG_NEEDS_ROOT, SEG_SCORE,
                           SegDataSplits, build_seg_datasets, seg_forward,
                           evaluate_segmentation)

__all__ = [
    'PRECISIONS',
    'resolve_precision',
    'autocast',
    'fast_bf16',
    'ClassAccuracy',
    'PartSegMetric',
    'SemSegMetric',
    'category_part_mask',
    'mask_to_category',
    'part_iou',
    'FirstPoints',
    'NormalizeUnitSphere',
    'RandomScaleTranslate',
    'DATASETS',
    'NEEDS_ROOT',
    'DataSplits',
    'balanced_subset',
    'build_datasets',
    'train_loader',
    'test_loader',
    'seed_everything',
    'epoch_seed',
    'cosine_lr_lambda',
    'kd_loss',
    'weight_average',
    'train_epoch',
    'evaluate',
    'CHECKPOINT_VERSION',
    'save_checkpoint',
    'load_checkpoint',
    'strip_checkpoint',
    'build_model',
    'load_matching_weights',
    'load_teacher',
    'check_classes',
    'model_from_checkpoint',
    'init_from_checkpoint',
    'rng_state',
    'set_rng_state',
    'DistEnv',
    'resolve_device',
    'setup_distributed',
    'cleanup_distributed',
    'broadcast_buffers',
    'SEG_DATASETS',
    'SEG_NEEDS_ROOT',
    'SEG_SCORE',
    'SegDataSplits',
    'build_seg_datasets',
    'seg_forward',
    'evaluate_segmentation',
]
