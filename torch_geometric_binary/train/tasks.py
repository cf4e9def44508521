r"""The tasks of the training driver (:mod:`~torch_geometric_binary.train.
trainer`): shape classification (:obj:`examples/modelnet.py`) and part or
semantic segmentation (:obj:`examples/segmentation.py`)."""
import argparse
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from torch_geometric_binary.train.checkpoint import check_classes
from torch_geometric_binary.train.cli import UsageError
from torch_geometric_binary.train.data import NEEDS_ROOT, build_datasets
from torch_geometric_binary.train.loop import evaluate
from torch_geometric_binary.train.segmentation import (SEG_NEEDS_ROOT,
                                                       SEG_SCORE,
                                                       build_seg_datasets,
                                                       evaluate_segmentation,
                                                       seg_forward)
from torch_geometric_binary.train.trainer import Task


def _pct(x: float) -> str:
    return f'{100 * x:.2f}%'


class Classification(Task):
    r"""Shape classification on :obj:`DATASETS`: cross-entropy on one label
    per cloud; overall accuracy (which selects the best epoch) and mean
    class accuracy."""
    needs_root = NEEDS_ROOT
    root_example = ' (e.g. --root ../shared/data/ModelNet40)'
    default_batch_size = 32
    cache_teacher = True
    data_options = ['dataset', 'root', 'num_points', 'limit_test',
                    'synthetic_classes', 'synthetic_points', 'batch_size']
    fixed = ['model', 'method', 'model_kwargs', 'dataset', 'num_points',
             'limit_train', 'synthetic_classes', 'synthetic_points',
             'weight_avg_decay']

    def check_checkpoint(self, config: Dict[str, Any], path: str) -> None:
        if config.get('task') is not None:
            raise ValueError(f"'{path}' is a {config['task']} checkpoint "
                             f"(evaluate it with examples/{config['task']}"
                             f".py --eval)")

    def data_config(self, args: argparse.Namespace) -> Dict[str, Any]:
        return {
            'dataset': args.dataset,
            'root': args.root,
            'num_points': args.num_points,
            'augment': not args.no_augment,
            'limit_train': args.limit_train,
            'limit_test': args.limit_test,
            'synthetic_classes': args.synthetic_classes,
            'synthetic_points': args.synthetic_points,
        }

    def load_data(self, config: Dict[str, Any], augment: bool,
                  rebuild_cache: bool, log: bool):
        return build_datasets(
            config['dataset'], config.get('root'), config.get('num_points'),
            augment=augment, limit_train=config.get('limit_train'),
            limit_test=config.get('limit_test'),
            synthetic_classes=config.get('synthetic_classes') or 10,
            synthetic_points=config.get('synthetic_points') or 512,
            log=log, rebuild_cache=rebuild_cache)

    def configure(self, config: Dict[str, Any], data) -> None:
        config['num_classes'] = data.num_classes
        config['classes'] = data.classes
        # Test clouds keep their first --num-points points: fewer means the
        # clouds are smaller than asked (training would silently use them).
        size = data.test[0].num_nodes if len(data.test) else None
        n = config['num_points']
        if n is not None and size is not None and size < n:
            raise UsageError(f"--num-points {n}: the clouds of --dataset "
                             f"{config['dataset']} have {size} points")

    def check_data(self, config: Dict[str, Any], data, what: str) -> None:
        if config['num_classes'] != data.num_classes:
            raise ValueError(f"{what} has {config['num_classes']} classes, "
                             f"the dataset {data.num_classes}")
        check_classes(config, data.classes, what)

    def forward(self, model: torch.nn.Module, data) -> Tensor:
        return model(data.pos, data.batch)

    def evaluate(self, model, loader, device, data, progress
                 ) -> Dict[str, Any]:
        metric = evaluate(model, loader, device, data.num_classes, progress)
        return {'overall_acc': metric.overall_acc,
                'mean_class_acc': metric.mean_class_acc}

    def metric_names(self, config: Dict[str, Any]) -> List[str]:
        return ['overall_acc', 'mean_class_acc']

    def train_entries(self, train: Dict[str, float]) -> Dict[str, Any]:
        return {'train_acc': train['acc'],
                'train_samples': train['num_samples']}

    def history_key(self, metric: str) -> str:
        return {'overall_acc': 'test_acc',
                'mean_class_acc': 'test_mean_class_acc'}[metric]

    def last_entry(self, row: Dict[str, Any],
                   names: List[str]) -> Dict[str, Any]:
        return {'epoch': row['epoch'],
                **{k: row[self.history_key(k)] for k in names}}

    def describe(self, data) -> str:
        return f'{data.num_classes} classes'

    def format(self, train: Dict[str, float], metrics: Dict[str, float],
               raw: Optional[Dict[str, float]]) -> str:
        return (f"train {_pct(train['acc'])} | test "
                f"{_pct(metrics['overall_acc'])} | mean class "
                f"{_pct(metrics['mean_class_acc'])}" +
                ('' if raw is None else
                 f" (trained weights {_pct(raw['overall_acc'])})"))


class Segmentation(Task):
    r"""Part segmentation (:obj:`synthetic`, :obj:`shapenet`: instance and
    category mIoU, the logits restricted to each shape's category; the
    instance mIoU selects the best epoch) or semantic segmentation
    (:obj:`s3dis`: overall accuracy, mean class accuracy, mIoU, which
    selects the best epoch); cross-entropy per point."""
    header = {'task': 'segmentation'}
    title = ' segmentation'
    out_prefix = 'seg-'
    needs_root = SEG_NEEDS_ROOT
    default_batch_size = 16
    data_options = ['dataset', 'root', 'num_points', 'limit_test',
                    'test_area', 'normals', 'categories',
                    'synthetic_per_category',
                    'synthetic_points', 'batch_size']
    fixed = ['model', 'method', 'model_kwargs', 'dataset', 'num_points',
             'limit_train', 'test_area', 'normals', 'categories',
             'synthetic_per_category', 'synthetic_points',
             'weight_avg_decay']
    metrics = {'part': ['instance_miou', 'category_miou'],
               'semantic': ['overall_acc', 'mean_class_acc', 'miou']}

    def check_args(self, args: argparse.Namespace) -> None:
        if args.test_area is not None and args.test_area not in range(1, 7):
            raise UsageError(f"argument --test-area: must be 1-6 (got "
                             f"{args.test_area})")
        if args.synthetic_points is not None and args.synthetic_points < 4:
            raise UsageError(f"argument --synthetic-points: at least 4 (one "
                             f"point per part; got {args.synthetic_points})")
        for key in ('num_categories', 'in_channels'):
            if key in args.model_kwargs:
                raise UsageError(f"argument --model-kwargs: '{key}' is set "
                                 f"from the dataset")

    def check_options(self, args: argparse.Namespace) -> None:
        if args.dataset != 's3dis' and args.test_area is not None:
            raise UsageError("--test-area is an S3DIS option (--dataset "
                             "s3dis)")
        if args.dataset != 'shapenet' and args.normals:
            raise UsageError("--normals is a ShapeNet part option "
                             "(--dataset shapenet)")
        if args.dataset == 's3dis' and args.categories:
            raise UsageError("--categories is a part-segmentation option "
                             "(--dataset synthetic or shapenet)")
        if args.dataset != 'synthetic' and (
                args.synthetic_points or args.synthetic_per_category):
            raise UsageError("--synthetic-points/--synthetic-per-category "
                             "are options of --dataset synthetic")

    def check_checkpoint(self, config: Dict[str, Any], path: str) -> None:
        if config.get('task') != 'segmentation':
            raise ValueError(f"'{path}' is not a segmentation checkpoint "
                             f"(evaluate classifiers with "
                             f"examples/modelnet.py --eval)")

    def data_config(self, args: argparse.Namespace) -> Dict[str, Any]:
        return {
            'dataset': args.dataset,
            'root': args.root,
            'test_area': (args.test_area or 5) if args.dataset == 's3dis'
            else None,
            'normals': args.normals,
            'categories': args.categories,
            'num_points': args.num_points,
            'augment': not args.no_augment,
            'limit_train': args.limit_train,
            'limit_test': args.limit_test,
            'synthetic_per_category': args.synthetic_per_category,
            'synthetic_points': args.synthetic_points,
        }

    def load_data(self, config: Dict[str, Any], augment: bool,
                  rebuild_cache: bool, log: bool):
        data = build_seg_datasets(
            config['dataset'], config.get('root'), config.get('num_points'),
            augment=augment, limit_train=config.get('limit_train'),
            limit_test=config.get('limit_test'),
            test_area=config.get('test_area') or 5,
            synthetic_per_category=config.get('synthetic_per_category'),
            synthetic_points=config.get('synthetic_points') or 1024,
            normals=bool(config.get('normals')),
            categories=config.get('categories'), log=log)
        if len(data.train) == 0 or len(data.test) == 0:
            raise ValueError(f"an empty split ({len(data.train)} training, "
                             f"{len(data.test)} test clouds)")
        return data

    def configure(self, config: Dict[str, Any], data) -> None:
        config['seg_task'] = data.task
        config['num_classes'] = data.num_classes
        config['parts'] = data.parts
        config['model_kwargs'] = {**config['model_kwargs'],
                                  'num_categories': data.num_categories,
                                  'in_channels': data.in_channels}

    def check_data(self, config: Dict[str, Any], data, what: str) -> None:
        categories = config['model_kwargs'].get('num_categories', 0)
        if data.num_classes != config['num_classes'] or \
                data.num_categories != categories:
            raise ValueError(
                f"{what} has {config['num_classes']} classes and "
                f"{categories} categories, the dataset has "
                f"{data.num_classes} and {data.num_categories}")

    def forward(self, model: torch.nn.Module, data) -> Tensor:
        return seg_forward(model, data)

    def evaluate(self, model, loader, device, data, progress
                 ) -> Dict[str, Any]:
        return evaluate_segmentation(model, loader, device, data.num_classes,
                                     data.parts, progress).compute()

    def metric_names(self, config: Dict[str, Any]) -> List[str]:
        return self.metrics[config['seg_task']]

    def score(self, config: Dict[str, Any]) -> str:
        return SEG_SCORE[config['seg_task']]

    def train_entries(self, train: Dict[str, float]) -> Dict[str, Any]:
        return {'train_point_acc': train['acc']}

    def describe(self, data) -> str:
        return f'{data.num_classes} classes, {data.num_categories} categories'

    def format(self, train: Dict[str, float], metrics: Dict[str, float],
               raw: Optional[Dict[str, float]]) -> str:
        names = {'instance_miou': 'ins. mIoU', 'category_miou': 'cat. mIoU',
                 'overall_acc': 'OA', 'mean_class_acc': 'mAcc',
                 'miou': 'mIoU'}
        text = ' | '.join(f'{names[k]} {_pct(v)}' for k, v in metrics.items())
        if raw is not None:
            text += ' (trained weights ' + ', '.join(
                f'{names[k]} {_pct(v)}' for k, v in raw.items()
                if k in metrics) + ')'
        return f"train point acc {_pct(train['acc'])} | {text}"
