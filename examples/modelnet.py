r"""Train and evaluate (binary) point-cloud classifiers on ModelNet.

BiPointNet (Qin et al., ICLR 2021) and its baselines: PointNet, PointNet++
and DGCNN, full precision (``--method fp``) or binary (``--method
bipointnet``, ``bnn``, ...), on pre-sampled ModelNet40/10, PyG's ModelNet
meshes or an embedded synthetic dataset (no download).

Examples::

    # Quick run on the synthetic dataset (no data needed):
    python examples/modelnet.py --dataset synthetic --epochs 10

    # BiPointNet on pre-sampled ModelNet40 (paper setting: 1024 points,
    # Adam 1e-3, cosine schedule, 200 epochs):
    python examples/modelnet.py --model pointnet --method bipointnet \
        --dataset modelnet40 --root ../shared/data/ModelNet40 --out runs/bip

    # Continue an interrupted run, evaluate the best checkpoint:
    python examples/modelnet.py ... --out runs/bip --resume
    python examples/modelnet.py --eval runs/bip/best.pt

    # Two processes (DistributedDataParallel; gloo on CPU, nccl on GPUs):
    torchrun --nproc_per_node=2 examples/modelnet.py ...

Files written to ``--out``: ``last.pt`` (after every epoch: model, optimizer,
scheduler, epoch, best accuracy, random states), ``best.pt`` (the epoch of
best test overall accuracy) and ``results.json`` (config, per-epoch history,
best/last accuracies, times). ``--eval`` prints a JSON line with
``overall_acc`` and ``mean_class_acc`` as the last line of its output; a
training run ends with a JSON summary line.
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
from torch_geometric_binary.nn.models import MODELS  # noqa: E402
from torch_geometric_binary.train.cli import (  # noqa: E402
    HelpFormatter, UsageError, log, make_progress, method_name, write_json)
from torch_geometric_binary.train.run_folder import (  # noqa: E402
    RunFolder,
    RunFolderError,
    clone_state_dict,
)
from torch_geometric_binary.train import (  # noqa: E402
    CHECKPOINT_VERSION,
    DATASETS,
    NEEDS_ROOT,
    broadcast_buffers,
    build_datasets,
    build_model,
    cleanup_distributed,
    cosine_lr_lambda,
    epoch_seed,
    evaluate,
    init_from_checkpoint,
    load_checkpoint,
    load_teacher,
    resolve_precision,
    check_classes,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    setup_distributed,
    test_loader,
    train_epoch,
    train_loader,
    weight_average,
)

#: Options stored in a checkpoint's config that ``--eval`` falls back to.
DATA_OPTIONS = ['dataset', 'root', 'num_points', 'limit_test',
                'synthetic_classes', 'synthetic_points', 'batch_size']


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Train or evaluate (binary) point-cloud classifiers '
        '(PointNet, PointNet++, DGCNN; BiPointNet) on ModelNet.',
        formatter_class=HelpFormatter)
    g = p.add_argument_group('model')
    g.add_argument('--model', default='pointnet', choices=sorted(MODELS),
                   help='architecture')
    g.add_argument('--method', default='bipointnet', type=method_name,
                   help=f"binarization method ({', '.join(method_names())};"
                   f" fp: full precision), with '+ema' and/or '+lsr' to "
                   f"add BiPointNet's fixes, e.g. bnn+ema")
    g.add_argument('--model-kwargs', default='{}', metavar='JSON',
                   help='further model arguments as a JSON object, e.g. '
                   '\'{"k": 20, "dropout": 0.5}\'')

    g = p.add_argument_group('data')
    g.add_argument('--dataset', default=None, choices=DATASETS,
                   help='modelnet40/10: pre-sampled point clouds in --root; '
                   'pyg-modelnet40/10: PyG\'s meshes in --root (downloaded '
                   'into an existing empty folder); synthetic: embedded '
                   'shapes, no data needed (default: synthetic, or the '
                   "checkpoint's with --eval)")
    g.add_argument('--root', default=None,
                   help='dataset folder (required for the modelnet datasets)'
                   ', e.g. ../shared/data/ModelNet40')
    g.add_argument('--num-points', type=int, default=None,
                   help='points per cloud: a random subset each epoch for '
                   'training, the first N points for testing (default: all '
                   "points; 1024 sampled on PyG's meshes)")
    g.add_argument('--rebuild-cache', action='store_true',
                   help='re-process the dataset cache even if it matches the '
                   'raw files (it is rebuilt by itself when they change)')
    g.add_argument('--no-augment', action='store_true',
                   help='disable the random anisotropic scaling (x2/3-3/2 '
                   'per axis) and translation (+-0.2) of training clouds')
    g.add_argument('--limit-train', type=int, default=None, metavar='N',
                   help='use a class-balanced subset of N training clouds '
                   '(smoke runs)')
    g.add_argument('--limit-test', type=int, default=None, metavar='N',
                   help='use a class-balanced subset of N test clouds')
    g.add_argument('--synthetic-classes', type=int, default=None,
                   help='number of classes of the synthetic dataset '
                   '(default: 10)')
    g.add_argument('--synthetic-points', type=int, default=None,
                   help='points per synthetic cloud (default: 512)')

    g = p.add_argument_group('optimization')
    g.add_argument('--epochs', type=int, default=200,
                   help='total number of training epochs')
    g.add_argument('--batch-size', type=int, default=None,
                   help='clouds per step, summed over all processes '
                   '(default: 32)')
    g.add_argument('--lr', type=float, default=1e-3,
                   help='Adam learning rate, annealed by a cosine schedule '
                   'over --epochs')
    g.add_argument('--min-lr', type=float, default=0.0,
                   help='final learning rate of the cosine schedule')
    g.add_argument('--weight-decay', type=float, default=0.0,
                   help='Adam weight decay')
    g.add_argument('--seed', type=int, default=0,
                   help='random seed (model initialization, data order, '
                   'augmentation)')
    g.add_argument('--teacher', default=None, metavar='CHECKPOINT',
                   help='distill from this (full-precision) checkpoint: '
                   'loss = (1-a)*CE + a*T^2*KL(teacher/T || student/T)')
    g.add_argument('--kd-alpha', type=float, default=0.5, metavar='A',
                   help='weight a of the distillation term')
    g.add_argument('--kd-temp', type=float, default=4.0, metavar='T',
                   help='distillation temperature T')
    g.add_argument('--weight-avg-decay', type=float, default=None,
                   metavar='D',
                   help='keep an exponential moving average of the weights '
                   'and normalization statistics (decay D per step, e.g. '
                   '0.999); it is the model evaluated, checkpointed and '
                   'reported (the trained weights are kept for --resume '
                   'and their accuracy logged as test_acc_raw)')
    g.add_argument('--init-from', default=None, metavar='CHECKPOINT',
                   help='initialize the weights from a checkpoint of the '
                   'same architecture, full precision or binary (matching '
                   'tensors only; LSR scales it lacks are set from the '
                   'first batch); a fresh optimizer and schedule, e.g. a '
                   'warm restart of a finished binary run')

    g = p.add_argument_group('run')
    g.add_argument('--out', default=None,
                   help='output folder (default: runs/<model>-<method>-'
                   '<dataset>)')
    g.add_argument('--resume', action='store_true',
                   help='continue from <out>/last.pt (model, optimizer, '
                   'scheduler, epoch, best accuracy, random states); starts '
                   'from scratch if there is none')
    g.add_argument('--allow-changes', action='store_true',
                   help='with --resume: accept changed optimization, seed, '
                   'batch size, augmentation or test-subset arguments '
                   '(recorded in results.json); refused otherwise')
    g.add_argument('--overwrite', action='store_true',
                   help='replace the run already in --out (without it, a '
                   'folder holding a run is refused unless --resume)')
    g.add_argument('--stop-after', type=int, default=None, metavar='EPOCHS',
                   help='stop after this many epochs in this invocation, as '
                   'if interrupted (continue with --resume), e.g. for '
                   'time-limited jobs')
    g.add_argument('--eval', default=None, metavar='CHECKPOINT',
                   help='only evaluate CHECKPOINT on the test split and '
                   'print a JSON line with overall_acc and mean_class_acc; '
                   '--dataset, --root, --num-points, --limit-test, '
                   "--batch-size default to the checkpoint's")
    g.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: cuda if available')
    g.add_argument('--precision', default='auto',
                   choices=['auto', 'fp32', 'bf16', 'fp16'],
                   help='training precision: bf16/fp16 mixed precision '
                   '(autocast; binary products stay exact) or fp32; auto '
                   '(default) takes bf16 where the hardware runs it '
                   'natively (CPUs with AVX512-BF16 or AMX, GPUs with '
                   'bf16) and fp32 elsewhere')
    g.add_argument('--threads', type=int, default=None,
                   help='torch intra-op threads per process')
    g.add_argument('--workers', type=int, default=0,
                   help='DataLoader worker processes')
    g.add_argument('--quiet', action='store_true',
                   help='no progress bars (they are also off when stderr is '
                   'not a terminal)')
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    def positive(name: str, value: Optional[float], zero: bool = False):
        if value is not None and not math.isfinite(value):
            parser.error(f"argument --{name}: must be a finite number "
                         f"(got {value})")
        if value is not None and (value < 0 or (value == 0 and not zero)):
            parser.error(f"argument --{name}: must be "
                         f"{'non-negative' if zero else 'positive'} "
                         f"(got {value})")

    for name in ['epochs', 'batch_size', 'num_points', 'limit_train',
                 'limit_test', 'synthetic_classes', 'synthetic_points',
                 'stop_after', 'threads']:
        positive(name.replace('_', '-'), getattr(args, name))
    for name in ['lr']:
        positive(name, getattr(args, name))
    for name in ['min_lr', 'weight_decay', 'workers']:
        positive(name.replace('_', '-'), getattr(args, name), zero=True)
    positive('kd-temp', args.kd_temp)
    if args.weight_avg_decay is not None and \
            not 0.0 < args.weight_avg_decay < 1.0:
        parser.error(f"argument --weight-avg-decay: must lie in (0, 1) "
                     f"(got {args.weight_avg_decay})")
    if args.batch_size is not None and args.batch_size < 2 and \
            args.eval is None:
        parser.error("argument --batch-size: training needs at least 2 "
                     "clouds per batch (BatchNorm normalizes over the batch)")
    if not 0.0 <= args.kd_alpha <= 1.0:
        parser.error(f"argument --kd-alpha: must lie in [0, 1] "
                     f"(got {args.kd_alpha})")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"argument --model-kwargs: invalid JSON "
                     f"({e.msg}): {args.model_kwargs!r}")
    if not isinstance(kwargs, dict):
        parser.error("argument --model-kwargs: expected a JSON object, e.g. "
                     "'{\"k\": 20}'")
    args.model_kwargs = kwargs
    for name in ['eval', 'teacher', 'init_from']:
        path = getattr(args, name)
        if path is not None and not osp.isfile(path):
            parser.error(f"argument --{name.replace('_', '-')}: checkpoint "
                         f"'{path}' does not exist")


def check_root(dataset: str, root: Optional[str]) -> Optional[str]:
    if dataset not in NEEDS_ROOT:
        return root
    if root is None:
        raise UsageError(f"--dataset {dataset} needs --root, the dataset "
                         f"folder (e.g. --root ../shared/data/ModelNet40)")
    if not osp.isdir(root):
        raise UsageError(f"--root '{root}' does not exist (or is not a "
                         f"folder)")
    return osp.abspath(root)


# Helpers #####################################################################

# Arguments that --resume refuses to change without --allow-changes.
RESUME_STRICT = ['lr', 'min_lr', 'weight_decay', 'seed', 'batch_size',
                 'augment', 'limit_test', 'teacher', 'kd_alpha', 'kd_temp']


def load_data(env, config: Dict[str, Any], augment: bool,
              rebuild_cache: bool = False):
    r"""Builds the datasets on rank 0 first (it may process them into a
    cache), then on the other ranks."""
    def build():
        return build_datasets(
            config['dataset'], config.get('root'), config.get('num_points'),
            augment=augment, limit_train=config.get('limit_train'),
            limit_test=config.get('limit_test'),
            synthetic_classes=config.get('synthetic_classes') or 10,
            synthetic_points=config.get('synthetic_points') or 512,
            log=env.is_main, rebuild_cache=rebuild_cache)

    try:
        if env.is_main:
            data = build()
        env.barrier()
        if not env.is_main:
            data = build()
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--dataset {config['dataset']}: {e}") from e
    return data


def acc_str(x: float) -> str:
    return f'{100 * x:.2f}%'


# Evaluation ##################################################################


def run_eval(args, env) -> Dict[str, Any]:
    ckpt = load_checkpoint(args.eval)
    config = dict(ckpt['config'])
    data_config = {k: config.get(k) for k in DATA_OPTIONS}
    if args.dataset is not None and args.dataset != config.get('dataset'):
        data_config['root'] = None  # Another dataset: its own root.
    for k in DATA_OPTIONS:  # Command-line values override the checkpoint's.
        if getattr(args, k, None) is not None:
            data_config[k] = getattr(args, k)
    data_config['root'] = check_root(data_config['dataset'],
                                     data_config['root'])
    data_config['limit_train'] = 1  # The training set is not used.
    data = load_data(env, data_config, augment=False,
                     rebuild_cache=args.rebuild_cache)
    if data.num_classes != config['num_classes']:
        raise UsageError(
            f"--eval: the checkpoint has {config['num_classes']} classes, "
            f"--dataset {data_config['dataset']} has {data.num_classes}")
    try:
        check_classes(config, data.classes, f"--eval: '{args.eval}'")
    except ValueError as e:
        raise UsageError(str(e)) from e

    model = model_from_checkpoint(ckpt, env.device)
    batch_size = max(1, (data_config['batch_size'] or 32) // env.world_size)
    loader = test_loader(data.test, batch_size, env.world_size,
                         env.rank, args.workers)
    t = time.perf_counter()
    metric = evaluate(model, loader, env.device, data.num_classes,
                      make_progress(env, args.quiet, 'Test'))
    result = {
        'checkpoint': args.eval,
        'epoch': ckpt.get('epoch'),
        'dataset': data_config['dataset'],
        'model': config['model'],
        'method': config['method'],
        'num_test': metric.num_samples,
        'overall_acc': metric.overall_acc,
        'mean_class_acc': metric.mean_class_acc,
        'time': round(time.perf_counter() - t, 3),
    }
    log(env, json.dumps(result))
    return result


# Training ####################################################################


def run_train(args, env) -> Dict[str, Any]:
    wall_start = time.perf_counter()
    args.dataset = args.dataset or 'synthetic'
    args.root = check_root(args.dataset, args.root)
    args.batch_size = args.batch_size or 32
    out = args.out or osp.join('runs',
                               f'{args.model}-{args.method}-{args.dataset}')
    last_path = osp.join(out, 'last.pt')
    best_path = osp.join(out, 'best.pt')
    results_path = osp.join(out, 'results.json')

    config = {
        'model': args.model,
        'method': args.method,
        'model_kwargs': args.model_kwargs,
        'dataset': args.dataset,
        'root': args.root,
        'num_points': args.num_points,
        'augment': not args.no_augment,
        'limit_train': args.limit_train,
        'limit_test': args.limit_test,
        'synthetic_classes': args.synthetic_classes,
        'synthetic_points': args.synthetic_points,
        'epochs': args.epochs,
        'batch_size': args.batch_size,
        'lr': args.lr,
        'min_lr': args.min_lr,
        'weight_decay': args.weight_decay,
        'seed': args.seed,
        'teacher': args.teacher,
        'kd_alpha': args.kd_alpha if args.teacher else None,
        'kd_temp': args.kd_temp if args.teacher else None,
        'init_from': args.init_from,
        'weight_avg_decay': args.weight_avg_decay,
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

    resume = None
    if args.resume:
        if resuming:
            try:
                resume = load_checkpoint(last_path)
            except ValueError as e:
                raise UsageError(f"--resume: {e}") from e
            old = resume['config']
            for k in ['model', 'method', 'model_kwargs', 'dataset',
                      'num_points', 'limit_train', 'synthetic_classes',
                      'synthetic_points', 'weight_avg_decay']:
                if old.get(k) != config[k]:
                    raise UsageError(
                        f"--resume: '{last_path}' was trained with "
                        f"{k}={old.get(k)!r}, not {config[k]!r}")
            # These change what the run means; only with --allow-changes,
            # and recorded. (--epochs may grow: the schedule stretches.)
            changed = {k: [old.get(k), config[k]] for k in RESUME_STRICT
                       if k in old and old.get(k) != config[k]}
            if changed and not args.allow_changes:
                raise UsageError(
                    "--resume: '" + last_path + "' was trained with " +
                    ', '.join(f"{k}={v[0]!r}" for k, v in changed.items()) +
                    " (now " + ', '.join(f"{v[1]!r}" for v in
                                         changed.values()) +
                    "); keep them, or pass --allow-changes to continue "
                    "with the new values (recorded in results.json)")
            config['changes'] = list(old.get('changes', []))
            if changed:
                config['changes'].append({'epoch': resume['epoch'] + 1,
                                          'changed': changed})
        else:
            log(env, f"--resume: no checkpoint at '{last_path}', starting "
                f"from scratch")

    seed_everything(args.seed)
    data = load_data(env, config, augment=config['augment'],
                     rebuild_cache=args.rebuild_cache)
    config['num_classes'] = data.num_classes
    config['classes'] = data.classes
    if resume is not None:
        try:
            check_classes(resume['config'], data.classes,
                          f"--resume: '{last_path}'")
        except ValueError as e:
            raise UsageError(str(e)) from e
    # Test clouds keep their first --num-points points: fewer means the
    # clouds are smaller than asked (training would silently use them).
    size = data.test[0].num_nodes if len(data.test) else None
    if args.num_points is not None and size is not None and \
            size < args.num_points:
        raise UsageError(f"--num-points {args.num_points}: the clouds of "
                         f"--dataset {args.dataset} have {size} points")

    try:
        model = build_model(config).to(env.device)
    except ValueError as e:
        raise UsageError(f"--model-kwargs: {e}") from e
    num_params = sum(p.numel() for p in model.parameters())

    teacher = None
    if args.teacher:
        try:
            teacher, t_method = load_teacher(args.teacher, data.num_classes,
                                             env.device, data.classes)
        except ValueError as e:
            raise UsageError(f"--teacher: {e}") from e
        if t_method != 'fp':
            log(env, f"--teacher: note that '{args.teacher}' is a "
                f"'{t_method}' model, not full precision")

    if args.init_from and resume is None:
        try:
            loaded, untouched, skipped = init_from_checkpoint(
                model, args.init_from, args.model)
        except ValueError as e:
            raise UsageError(f"--init-from: {e}") from e
        log(env, f"--init-from: loaded {len(loaded)} tensors, "
            f"{len(untouched)} left at their initialization, "
            f"{len(skipped)} skipped")

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr,
                                 weight_decay=args.weight_decay)
    lr_lambda = cosine_lr_lambda(args.epochs, args.min_lr / args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    start_epoch = 1
    history: List[Dict[str, Any]] = []
    best = {'epoch': None, 'overall_acc': -1.0, 'mean_class_acc': None}
    train_time = 0.0
    best_model = None  # The best epoch's weights, kept in last.pt too.
    resumed_at: List[int] = []  # The epochs the run was resumed at.
    averaged = None  # The averaged model is the one evaluated and saved.
    if args.weight_avg_decay is not None:
        averaged = weight_average(model, args.weight_avg_decay)
    if resume is not None:
        # Marks LSR as initialized:
        model.load_state_dict(resume.get('raw_model', resume['model']))
        if averaged is not None:
            averaged.module.load_state_dict(resume['model'])
            averaged.n_averaged.fill_(resume['n_averaged'])
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

    if env.is_main:
        os.makedirs(out, exist_ok=True)
    log(env, f"{args.model} ({args.method}, {num_params:,} parameters) on "
        f"{args.dataset}: {len(data.train)} training / {len(data.test)} "
        f"test clouds, {data.num_classes} classes, {env.world_size} "
        f"process(es) on {env.device.type}, {config['precision']}; output "
        f"in '{out}'")

    def results(finished: bool) -> Dict[str, Any]:
        last = history[-1] if history else None
        return {
            'config': config,
            'history': history,
            'best': best,
            'last': None if last is None else {
                'epoch': last['epoch'],
                'overall_acc': last['test_acc'],
                'mean_class_acc': last['test_mean_class_acc'],
            },
            'epochs_done': history[-1]['epoch'] if history else 0,
            'finished': finished,
            'resumed_at': resumed_at,
            'num_parameters': num_params,
            'train_time': train_time,
            'wall_time': time.perf_counter() - wall_start,
        }

    if resume is not None and env.is_main:
        try:  # A kill between the writes of last.pt and best.pt.
            note = folder.repair(resume, lambda: write_json(
                results_path, results(finished=False)))
        except RunFolderError as e:
            raise UsageError(str(e)) from e
        if note:
            log(env, f"--resume: {note}")

    epochs_run = 0
    for epoch in range(start_epoch, args.epochs + 1):
        if args.stop_after is not None and epochs_run >= args.stop_after:
            break
        t0 = time.perf_counter()
        s = epoch_seed(args.seed, epoch, env.rank)
        seed_everything(s)
        if sampler is not None:
            sampler.set_epoch(epoch)
        advance_schedule(model, epoch, args.epochs)  # IR-Net's EDE.
        lr = optimizer.param_groups[0]['lr']
        train = train_epoch(
            ddp_model, loader_train, optimizer, env.device, teacher,
            args.kd_alpha, args.kd_temp,
            make_progress(env, args.quiet, f'Epoch {epoch:03d} train'),
            averaged, config['precision'])
        scheduler.step()
        broadcast_buffers(model)  # Evaluate the model that rank 0 saves.
        metric = evaluate(model, loader, env.device, data.num_classes,
                          make_progress(env, args.quiet,
                                        f'Epoch {epoch:03d} test'))
        extra = {}
        if averaged is not None:
            extra = {'test_acc_raw': metric.overall_acc,
                     'test_mean_class_acc_raw': metric.mean_class_acc}
            broadcast_buffers(averaged.module)
            metric = evaluate(averaged.module, loader, env.device,
                              data.num_classes,
                              make_progress(env, args.quiet,
                                            f'Epoch {epoch:03d} test (avg)'))
        dt = time.perf_counter() - t0
        train_time += dt
        epochs_run += 1
        row = {
            'epoch': epoch,
            'lr': lr,
            'loss': train['loss'],
            'train_acc': train['acc'],
            'train_samples': train['num_samples'],
            'test_acc': metric.overall_acc,
            'test_mean_class_acc': metric.mean_class_acc,
            **extra,
            'time': dt,
        }
        history.append(row)
        improved = metric.overall_acc > best['overall_acc']
        if improved:
            best = {'epoch': epoch, 'overall_acc': metric.overall_acc,
                    'mean_class_acc': metric.mean_class_acc}
        if env.is_main:
            weights = (model if averaged is None
                       else averaged.module).state_dict()
            if improved:
                best_model = clone_state_dict(weights)
            state = {
                'version': CHECKPOINT_VERSION,
                'epoch': epoch,
                'config': config,
                'args': {k: v for k, v in vars(args).items()},
                'model': weights,
                **({} if averaged is None else {
                    'raw_model': model.state_dict(),
                    'n_averaged': int(averaged.n_averaged)}),
                'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict(),
                'best': best,
                'history': history,
                'resumed_at': resumed_at,
                'train_time': train_time,
                'rng': rng_state(),
                'metrics': {'overall_acc': metric.overall_acc,
                            'mean_class_acc': metric.mean_class_acc},
            }
            # last.pt first, with the best weights: a kill before best.pt
            # is written is repaired from it on --resume.
            save_checkpoint(last_path, {**state, 'best_model': best_model})
            if improved:
                save_checkpoint(best_path, state)
            write_json(results_path, results(finished=False))
        log(env, f"Epoch {epoch:03d}/{args.epochs:03d} | lr {lr:.2e} | "
            f"loss {train['loss']:.4f} | train {acc_str(train['acc'])} | "
            f"test {acc_str(metric.overall_acc)} | mean class "
            f"{acc_str(metric.mean_class_acc)}"
            + (f" (trained weights {acc_str(extra['test_acc_raw'])})"
               if extra else '') + f" | {dt:.1f}s"
            f"{' *' if improved else ''}")
        env.barrier()

    finished = bool(history) and history[-1]['epoch'] >= args.epochs
    summary = results(finished)
    if env.is_main:
        write_json(results_path, summary)
    line = {
        'out': out,
        'dataset': args.dataset,
        'model': args.model,
        'method': args.method,
        'epochs_done': summary['epochs_done'],
        'finished': finished,
        'best_epoch': best['epoch'],
        'best_overall_acc': best['overall_acc'] if history else None,
        'best_mean_class_acc': best['mean_class_acc'],
        'last_overall_acc': (summary['last'] or {}).get('overall_acc'),
        'last_mean_class_acc': (summary['last'] or {}).get('mean_class_acc'),
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
