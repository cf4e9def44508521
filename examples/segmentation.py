r"""Train and evaluate (binary) point-cloud segmentation networks.

Part segmentation (the embedded ``SyntheticParts``, no download; ShapeNet
part from a local copy) and semantic segmentation (S3DIS blocks, Area-5
protocol) with PointNet, PointNet++ and DGCNN, full precision
(``--method fp``) or binary (``--method bipointnet``, ``bnn``, ...).
Part segmentation reports the instance mIoU and the category mIoU (the
logits restricted to each shape's category); semantic segmentation the
overall accuracy, mean class accuracy and mIoU.

Examples::

    # Quick run on the synthetic parts (no data needed):
    python examples/segmentation.py --model pointnet --method bipointnet \
        --epochs 10

    # ShapeNet part (16 categories, 50 parts), S3DIS (test on Area 5):
    python examples/segmentation.py --dataset shapenet \
        --root ../shared/data/shapenetcore_partanno_segmentation_benchmark_v0_normal \
        --num-points 2048 --out runs/seg-shapenet
    python examples/segmentation.py --dataset s3dis \
        --root ../shared/data/stanford_indoor3d --test-area 5 \
        --num-points 4096 --out runs/seg-s3dis

    # Continue an interrupted run, evaluate the best checkpoint:
    python examples/segmentation.py ... --out runs/seg --resume
    python examples/segmentation.py --eval runs/seg/best.pt

    # Two processes (DistributedDataParallel; gloo on CPU, nccl on GPUs):
    torchrun --nproc_per_node=2 examples/segmentation.py ...

Files written to ``--out``: ``last.pt`` (after every epoch), ``best.pt``
(the epoch of best instance mIoU, or mIoU for S3DIS) and ``results.json``.
``--eval`` prints a JSON line with the metrics as the last line of its
output; a training run ends with a JSON summary line.
"""
import argparse
import importlib.util
import json
import math
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional

if importlib.util.find_spec('torch_geometric_binary') is None:
    # Run from a source checkout without installing the package:
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

import torch_geometric_binary  # noqa: F401,E402 (silences PyG's warnings)
from torch_geometric_binary.nn import (advance_schedule,  # noqa: E402
                                       method_names)
from torch_geometric_binary.nn.models import SEG_MODELS  # noqa: E402
from torch_geometric_binary.train import (  # noqa: E402
    CHECKPOINT_VERSION,
    SEG_DATASETS,
    SEG_NEEDS_ROOT,
    SEG_SCORE,
    broadcast_buffers,
    build_model,
    build_seg_datasets,
    cleanup_distributed,
    cosine_lr_lambda,
    epoch_seed,
    evaluate_segmentation,
    load_checkpoint,
    model_from_checkpoint,
    resolve_precision,
    rng_state,
    save_checkpoint,
    seed_everything,
    seg_forward,
    set_rng_state,
    setup_distributed,
    test_loader,
    train_epoch,
    train_loader,
)
from torch_geometric_binary.train.cli import (  # noqa: E402
    HelpFormatter,
    UsageError,
    log,
    make_progress,
    method_name,
    write_json,
)
from torch_geometric_binary.train.run_folder import (  # noqa: E402
    RunFolder,
    RunFolderError,
    clone_state_dict,
)

#: Options stored in a checkpoint's config that ``--eval`` falls back to.
DATA_OPTIONS = ['dataset', 'root', 'num_points', 'limit_test', 'test_area',
                'normals', 'synthetic_per_category', 'synthetic_points',
                'batch_size']
#: Options that ``--resume`` refuses to change.
RESUME_FIXED = ['model', 'method', 'model_kwargs', 'dataset', 'num_points',
                'limit_train', 'test_area', 'normals',
                'synthetic_per_category', 'synthetic_points', 'lr', 'min_lr',
                'weight_decay', 'seed', 'batch_size', 'augment',
                'limit_test']


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Train or evaluate (binary) point-cloud segmentation '
        'networks (PointNet, PointNet++, DGCNN; BiPointNet) on synthetic '
        'parts, ShapeNet part or S3DIS.', formatter_class=HelpFormatter)
    g = p.add_argument_group('model')
    g.add_argument('--model', default='pointnet', choices=sorted(SEG_MODELS),
                   help='backbone')
    g.add_argument('--method', default='bipointnet', type=method_name,
                   help=f"binarization method ({', '.join(method_names())};"
                   f" fp: full precision), with '+ema' and/or '+lsr' to "
                   f"add BiPointNet's fixes, e.g. bnn+ema")
    g.add_argument('--model-kwargs', default='{}', metavar='JSON',
                   help='further model arguments as a JSON object, e.g. '
                   '\'{"k": 20, "dropout": 0.5}\'')

    g = p.add_argument_group('data')
    g.add_argument('--dataset', default=None, choices=SEG_DATASETS,
                   help='synthetic: embedded parts, no data needed; '
                   'shapenet: ShapeNet part in --root; s3dis: S3DIS in '
                   "--root (default: synthetic, or the checkpoint's with "
                   "--eval)")
    g.add_argument('--root', default=None,
                   help='dataset folder (required for shapenet and s3dis)')
    g.add_argument('--test-area', type=int, default=None,
                   help='S3DIS area of the test split, 1-6 (default: 5)')
    g.add_argument('--normals', action='store_true',
                   help='ShapeNet part: the normals as point features')
    g.add_argument('--num-points', type=int, default=None,
                   help='points per cloud: a random subset each epoch for '
                   'training, a fixed subset for testing (default: all)')
    g.add_argument('--no-augment', action='store_true',
                   help='part segmentation: disable the random scaling and '
                   'translation of training shapes')
    g.add_argument('--limit-train', type=int, default=None, metavar='N',
                   help='use N training clouds (category-balanced for part '
                   'segmentation; smoke runs)')
    g.add_argument('--limit-test', type=int, default=None, metavar='N',
                   help='use N test clouds')
    g.add_argument('--synthetic-per-category', type=int, default=None,
                   metavar='N', help='synthetic: training objects per '
                   'category, N/4 test ones (default: 80 and 20)')
    g.add_argument('--synthetic-points', type=int, default=None,
                   help='synthetic: points per object (default: 1024)')

    g = p.add_argument_group('optimization')
    g.add_argument('--epochs', type=int, default=100,
                   help='total number of training epochs')
    g.add_argument('--batch-size', type=int, default=None,
                   help='clouds per step, summed over all processes '
                   '(default: 16)')
    g.add_argument('--lr', type=float, default=1e-3,
                   help='Adam learning rate, annealed by a cosine schedule '
                   'over --epochs')
    g.add_argument('--min-lr', type=float, default=0.0,
                   help='final learning rate of the cosine schedule')
    g.add_argument('--weight-decay', type=float, default=0.0,
                   help='Adam weight decay')
    g.add_argument('--seed', type=int, default=0,
                   help='random seed (initialization, data order, '
                   'augmentation)')

    g = p.add_argument_group('run')
    g.add_argument('--out', default=None,
                   help='output folder (default: runs/seg-<model>-<method>-'
                   '<dataset>)')
    g.add_argument('--resume', action='store_true',
                   help='continue from <out>/last.pt; starts from scratch '
                   'if there is none')
    g.add_argument('--overwrite', action='store_true',
                   help='replace the run already in --out')
    g.add_argument('--stop-after', type=int, default=None, metavar='EPOCHS',
                   help='stop after this many epochs in this invocation, as '
                   'if interrupted (continue with --resume)')
    g.add_argument('--eval', default=None, metavar='CHECKPOINT',
                   help='only evaluate CHECKPOINT on the test split and '
                   'print a JSON line with its metrics; the data options '
                   "default to the checkpoint's")
    g.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: cuda if available')
    g.add_argument('--precision', default='auto',
                   choices=['auto', 'fp32', 'bf16', 'fp16'],
                   help='training precision: bf16/fp16 mixed precision '
                   '(autocast) or fp32; auto (default) takes bf16 where the '
                   'hardware runs it natively and fp32 elsewhere')
    g.add_argument('--threads', type=int, default=None,
                   help='torch intra-op threads per process')
    g.add_argument('--workers', type=int, default=0,
                   help='DataLoader worker processes')
    g.add_argument('--quiet', action='store_true',
                   help='no progress bars (they are also off when stderr is '
                   'not a terminal)')
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    for name in ['epochs', 'batch_size', 'num_points', 'limit_train',
                 'limit_test', 'synthetic_per_category', 'synthetic_points',
                 'stop_after', 'threads', 'lr']:
        value = getattr(args, name)
        if value is not None and (not math.isfinite(value) or value <= 0):
            parser.error(f"argument --{name.replace('_', '-')}: must be "
                         f"positive (got {value})")
    for name in ['min_lr', 'weight_decay', 'workers']:
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            parser.error(f"argument --{name.replace('_', '-')}: must be "
                         f"non-negative (got {value})")
    if args.test_area is not None and args.test_area not in range(1, 7):
        parser.error(f"argument --test-area: must be 1-6 (got "
                     f"{args.test_area})")
    if args.batch_size is not None and args.batch_size < 2 and \
            args.eval is None:
        parser.error("argument --batch-size: training needs at least 2 "
                     "clouds per batch (BatchNorm normalizes over the batch)")
    if args.synthetic_points is not None and args.synthetic_points < 4:
        parser.error(f"argument --synthetic-points: at least 4 (one point "
                     f"per part; got {args.synthetic_points})")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"argument --model-kwargs: invalid JSON "
                     f"({e.msg}): {args.model_kwargs!r}")
    if not isinstance(kwargs, dict):
        parser.error("argument --model-kwargs: expected a JSON object, e.g. "
                     "'{\"k\": 20}'")
    for key in ('num_categories', 'in_channels'):
        if key in kwargs:
            parser.error(f"argument --model-kwargs: '{key}' is set from the "
                         f"dataset")
    args.model_kwargs = kwargs
    if args.eval is not None and not osp.isfile(args.eval):
        parser.error(f"argument --eval: checkpoint '{args.eval}' does not "
                     f"exist")


def check_root(dataset: str, root: Optional[str]) -> Optional[str]:
    if dataset not in SEG_NEEDS_ROOT:
        return root
    if root is None:
        raise UsageError(f"--dataset {dataset} needs --root, the dataset "
                         f"folder")
    if not osp.isdir(root):
        raise UsageError(f"--root '{root}' does not exist (or is not a "
                         f"folder)")
    return osp.abspath(root)


def load_data(env, config: Dict[str, Any], augment: bool):
    r"""Builds the datasets on rank 0 first (it may process them into a
    cache), then on the other ranks."""
    def build():
        return build_seg_datasets(
            config['dataset'], config.get('root'), config.get('num_points'),
            augment=augment, limit_train=config.get('limit_train'),
            limit_test=config.get('limit_test'),
            test_area=config.get('test_area') or 5,
            synthetic_per_category=config.get('synthetic_per_category'),
            synthetic_points=config.get('synthetic_points') or 1024,
            normals=bool(config.get('normals')), log=env.is_main)

    try:
        if env.is_main:
            data = build()
        env.barrier()
        if not env.is_main:
            data = build()
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--dataset {config['dataset']}: {e}") from e
    if len(data.train) == 0 or len(data.test) == 0:
        raise UsageError(f"--dataset {config['dataset']}: an empty split "
                         f"({len(data.train)} training, {len(data.test)} "
                         f"test clouds)")
    return data


def headline(metrics: Dict[str, Any]) -> Dict[str, Any]:
    r"""The summary numbers of a metric (without per-class lists)."""
    return {k: v for k, v in metrics.items()
            if k in ('instance_miou', 'category_miou', 'overall_acc',
                     'mean_class_acc', 'miou')}


def metric_str(metrics: Dict[str, Any]) -> str:
    names = {'instance_miou': 'ins. mIoU', 'category_miou': 'cat. mIoU',
             'overall_acc': 'OA', 'mean_class_acc': 'mAcc', 'miou': 'mIoU'}
    return ' | '.join(f'{names[k]} {100 * v:.2f}%'
                      for k, v in headline(metrics).items())


# Evaluation ##################################################################


def run_eval(args, env) -> Dict[str, Any]:
    try:
        ckpt = load_checkpoint(args.eval)
    except ValueError as e:
        raise UsageError(f"--eval: {e}") from e
    config = dict(ckpt['config'])
    if config.get('task') != 'segmentation':
        raise UsageError(f"--eval: '{args.eval}' is not a segmentation "
                         f"checkpoint (evaluate classifiers with "
                         f"examples/modelnet.py --eval)")
    data_config = {k: config.get(k) for k in DATA_OPTIONS}
    if args.dataset is not None and args.dataset != config.get('dataset'):
        data_config['root'] = None  # Another dataset: its own root.
    for k in DATA_OPTIONS:  # Command-line values override the checkpoint's.
        value = getattr(args, k, None)
        if value is not None and value is not False:
            data_config[k] = value
    data_config['root'] = check_root(data_config['dataset'],
                                     data_config['root'])
    data_config['limit_train'] = 1  # The training set is not used.
    data = load_data(env, data_config, augment=False)
    if data.num_classes != config['num_classes'] or \
            data.num_categories != config['model_kwargs'].get(
                'num_categories', 0):
        raise UsageError(
            f"--eval: the checkpoint has {config['num_classes']} classes "
            f"and {config['model_kwargs'].get('num_categories', 0)} "
            f"categories, --dataset {data_config['dataset']} has "
            f"{data.num_classes} and {data.num_categories}")
    model = model_from_checkpoint(ckpt, env.device)
    batch_size = max(1, (data_config['batch_size'] or 16) // env.world_size)
    loader = test_loader(data.test, batch_size, env.world_size, env.rank,
                         args.workers)
    t = time.perf_counter()
    metric = evaluate_segmentation(model, loader, env.device,
                                   data.num_classes, data.parts,
                                   make_progress(env, args.quiet, 'Test'))
    metrics = metric.compute()
    result = {
        'checkpoint': args.eval,
        'epoch': ckpt.get('epoch'),
        'dataset': data_config['dataset'],
        'model': config['model'],
        'method': config['method'],
        **headline(metrics),
        'num_test': len(data.test),
        'time': round(time.perf_counter() - t, 3),
    }
    log(env, json.dumps(result))
    return {**result, 'metrics': metrics}


# Training ####################################################################


def best_state(last: Dict[str, Any]) -> Dict[str, Any]:
    r"""The :obj:`best.pt` content that :obj:`last.pt`'s state implies
    (for :meth:`RunFolder.repair`)."""
    best = last['best']
    history = [h for h in last.get('history', [])
               if h['epoch'] <= best['epoch']]
    return {
        'version': last.get('version'), 'epoch': best['epoch'],
        'config': last.get('config'), 'args': last.get('args'),
        'model': last['best_model'], 'best': best, 'history': history,
        'train_time': sum(h.get('time', 0.0) for h in history),
        'metrics': {k: v for k, v in best.items() if k != 'epoch'},
    }


def run_train(args, env) -> Dict[str, Any]:
    wall_start = time.perf_counter()
    args.dataset = args.dataset or 'synthetic'
    args.root = check_root(args.dataset, args.root)
    if args.dataset != 's3dis' and args.test_area is not None:
        raise UsageError("--test-area is an S3DIS option (--dataset s3dis)")
    if args.dataset != 'shapenet' and args.normals:
        raise UsageError("--normals is a ShapeNet part option "
                         "(--dataset shapenet)")
    if args.dataset != 'synthetic' and (
            args.synthetic_points or args.synthetic_per_category):
        raise UsageError("--synthetic-points/--synthetic-per-category are "
                         "options of --dataset synthetic")
    args.batch_size = args.batch_size or 16
    out = args.out or osp.join(
        'runs', f'seg-{args.model}-{args.method}-{args.dataset}')
    last_path = osp.join(out, 'last.pt')
    best_path = osp.join(out, 'best.pt')
    results_path = osp.join(out, 'results.json')

    config = {
        'task': 'segmentation',
        'model': args.model,
        'method': args.method,
        'dataset': args.dataset,
        'root': args.root,
        'test_area': (args.test_area or 5) if args.dataset == 's3dis'
        else None,
        'normals': args.normals,
        'num_points': args.num_points,
        'augment': not args.no_augment,
        'limit_train': args.limit_train,
        'limit_test': args.limit_test,
        'synthetic_per_category': args.synthetic_per_category,
        'synthetic_points': args.synthetic_points,
        'epochs': args.epochs,
        'batch_size': args.batch_size,
        'lr': args.lr,
        'min_lr': args.min_lr,
        'weight_decay': args.weight_decay,
        'seed': args.seed,
        'world_size': env.world_size,
    }
    try:
        config['precision'] = resolve_precision(args.precision, env.device)
    except ValueError as e:
        raise UsageError(f"--precision: {e}") from e

    folder = RunFolder(out)
    try:  # Before any work: a taken, locked or read-only folder is refused.
        resuming = folder.check_start(args.resume, args.overwrite)
        if env.is_main:
            folder.check_writable()
            folder.lock()
            folder.remove_leftovers()
            if args.overwrite and not resuming:
                for name in folder.existing():
                    os.remove(osp.join(out, name))
    except RunFolderError as e:
        raise UsageError(str(e)) from e

    seed_everything(args.seed)
    data = load_data(env, config, augment=config['augment'])
    config['seg_task'] = data.task
    config['num_classes'] = data.num_classes
    config['parts'] = data.parts
    config['model_kwargs'] = {**args.model_kwargs,
                              'num_categories': data.num_categories,
                              'in_channels': data.in_channels}
    score = SEG_SCORE[data.task]

    resume = None
    if args.resume and resuming:
        try:
            resume = load_checkpoint(last_path)
        except ValueError as e:
            raise UsageError(f"--resume: {e}") from e
        old = resume['config']
        for k in RESUME_FIXED:
            if old.get(k) != config[k]:
                raise UsageError(f"--resume: '{last_path}' was trained with "
                                 f"{k}={old.get(k)!r}, not {config[k]!r}")
    elif args.resume:
        log(env, f"--resume: no checkpoint at '{last_path}', starting from "
            f"scratch")

    try:
        model = build_model(config).to(env.device)
    except ValueError as e:
        raise UsageError(f"--model-kwargs: {e}") from e
    num_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr,
                                 weight_decay=args.weight_decay)
    lr_lambda = cosine_lr_lambda(args.epochs, args.min_lr / args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    start_epoch = 1
    history: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {'epoch': None, score: -1.0}
    best_model = None
    train_time = 0.0
    resumed_at: List[int] = []
    if resume is not None:
        model.load_state_dict(resume['model'])
        optimizer.load_state_dict(resume['optimizer'])
        scheduler.load_state_dict(resume['scheduler'])
        # The rate of the next epoch under the (possibly extended) schedule:
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group['lr'] = base * lr_lambda(scheduler.last_epoch)
        start_epoch = resume['epoch'] + 1
        history = list(resume.get('history', []))
        best = dict(resume.get('best', best))
        best_model = resume.get('best_model')
        resumed_at = list(resume.get('resumed_at', [])) + [start_epoch]
        train_time = float(resume.get('train_time', 0.0))
        if 'rng' in resume:
            set_rng_state(resume['rng'])
        log(env, f"Resuming from '{last_path}' after epoch "
            f"{resume['epoch']}")

    ddp_model = model
    if env.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device] if env.device.type == 'cuda'
            else None)
    per_rank_bs = max(1, args.batch_size // env.world_size)
    loader_train, sampler = train_loader(data.train, per_rank_bs,
                                         env.world_size, env.rank, args.seed,
                                         args.workers)
    loader = test_loader(data.test, per_rank_bs, env.world_size, env.rank,
                         args.workers)
    log(env, f"{args.model} segmentation ({args.method}, {num_params:,} "
        f"parameters) on {args.dataset}: {len(data.train)} training / "
        f"{len(data.test)} test clouds, {data.num_classes} classes, "
        f"{data.num_categories} categories, {env.world_size} process(es) on "
        f"{env.device.type}, {config['precision']}; output in '{out}'")

    def results(finished: bool) -> Dict[str, Any]:
        return {
            'config': config, 'history': history, 'best': best,
            'last': history[-1] if history else None,
            'epochs_done': history[-1]['epoch'] if history else 0,
            'finished': finished, 'resumed_at': resumed_at,
            'num_parameters': num_params, 'train_time': train_time,
            'wall_time': time.perf_counter() - wall_start,
        }

    if resume is not None and env.is_main:
        try:  # A kill between the writes of last.pt and best.pt.
            note = folder.repair(resume, lambda: write_json(
                results_path, results(finished=False)), best_state)
        except RunFolderError as e:
            raise UsageError(str(e)) from e
        if note:
            log(env, f"--resume: {note}")

    epochs_run = 0
    for epoch in range(start_epoch, args.epochs + 1):
        if args.stop_after is not None and epochs_run >= args.stop_after:
            break
        t0 = time.perf_counter()
        seed_everything(epoch_seed(args.seed, epoch, env.rank))
        if sampler is not None:
            sampler.set_epoch(epoch)
        advance_schedule(model, epoch, args.epochs)  # IR-Net's EDE.
        lr = optimizer.param_groups[0]['lr']
        train = train_epoch(
            ddp_model, loader_train, optimizer, env.device,
            progress=make_progress(env, args.quiet,
                                   f'Epoch {epoch:03d} train'),
            precision=config['precision'], forward=seg_forward)
        scheduler.step()
        broadcast_buffers(model)  # Evaluate the model that rank 0 saves.
        metrics = evaluate_segmentation(
            model, loader, env.device, data.num_classes, data.parts,
            make_progress(env, args.quiet, f'Epoch {epoch:03d} test'),
        ).compute()
        dt = time.perf_counter() - t0
        train_time += dt
        epochs_run += 1
        row = {'epoch': epoch, 'lr': lr, 'loss': train['loss'],
               'train_point_acc': train['acc'], **headline(metrics),
               'time': dt}
        history.append(row)
        improved = metrics[score] > best[score]
        if improved:
            best = {'epoch': epoch, **headline(metrics)}
        if env.is_main:
            weights = model.state_dict()
            if improved:
                best_model = clone_state_dict(weights)
            state = {
                'version': CHECKPOINT_VERSION, 'epoch': epoch,
                'config': config, 'args': dict(vars(args)),
                'model': weights, 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict(), 'best': best,
                'history': history, 'resumed_at': resumed_at,
                'train_time': train_time, 'rng': rng_state(),
                'metrics': headline(metrics),
            }
            save_checkpoint(last_path, {**state, 'best_model': best_model})
            if improved:
                save_checkpoint(best_path, state)
            write_json(results_path, results(finished=False))
        log(env, f"Epoch {epoch:03d}/{args.epochs:03d} | lr {lr:.2e} | "
            f"loss {train['loss']:.4f} | train point acc "
            f"{100 * train['acc']:.2f}% | {metric_str(metrics)} | "
            f"{dt:.1f}s{' *' if improved else ''}")
        env.barrier()

    finished = bool(history) and history[-1]['epoch'] >= args.epochs
    summary = results(finished)
    if env.is_main:
        write_json(results_path, summary)
    line = {
        'out': out, 'dataset': args.dataset, 'model': args.model,
        'method': args.method, 'epochs_done': summary['epochs_done'],
        'finished': finished, 'best_epoch': best['epoch'],
        **{f'best_{k}': v for k, v in best.items() if k != 'epoch'},
        **{f'last_{k}': v for k, v in headline(
            summary['last'] or {}).items()},
        'train_time': round(train_time, 3),
    }
    log(env, json.dumps(line))
    return summary


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        env = setup_distributed(args.device)
    except (RuntimeError, ValueError) as e:
        parser.error(str(e))
    try:
        out = run_eval(args, env) if args.eval is not None else \
            run_train(args, env)
    except UsageError as e:
        if env.is_main:
            parser.error(str(e))
        sys.exit(2)
    cleanup_distributed()
    return out


if __name__ == '__main__':
    main()
