r"""The training driver of the example programs: one epoch loop, checkpoint
format, :obj:`--resume`, best-epoch tracking, distillation, weight
averaging, :obj:`torch.distributed` and JSON output for every task.

What differs between tasks (the data, the forward pass of a batch, the
metrics and the one that selects the best epoch) is a :class:`Task`; see
:mod:`torch_geometric_binary.train.tasks`. A program is an argument parser
and a call of :func:`run`::

    parser = argparse.ArgumentParser()
    add_model_args(parser, MODELS)
    ...  # The data options of the task.
    add_training_args(parser, epochs=200, batch_size=32, out='...')
    run(parser, Classification())

A run folder holds (:class:`~torch_geometric_binary.train.run_folder.
RunFolder`) :obj:`last.pt` (after every epoch: :func:`checkpoint_state`
plus the best epoch's weights), :obj:`best.pt` (the best epoch) and
:obj:`results.json` (:func:`results`).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from torch_geometric_binary.nn import advance_schedule
from torch_geometric_binary.train.checkpoint import (
    CHECKPOINT_VERSION, build_model, init_from_checkpoint, load_checkpoint,
    load_teacher, model_from_checkpoint, rng_state, save_checkpoint,
    set_rng_state)
from torch_geometric_binary.train.cli import (UsageError, check_args,
                                              check_root, log, make_progress,
                                              write_json)
from torch_geometric_binary.train.data import test_loader, train_loader
from torch_geometric_binary.train.distributed import (DistEnv,
                                                      broadcast_buffers,
                                                      cleanup_distributed,
                                                      setup_distributed)
from torch_geometric_binary.train.distill import precompute_teacher
from torch_geometric_binary.train.loop import (autocast, cosine_lr_lambda,
                                               epoch_seed,
                                               resolve_precision,
                                               seed_everything, train_epoch,
                                               weight_average)
from torch_geometric_binary.train.run_folder import (RunFolder,
                                                     RunFolderError,
                                                     clone_state_dict)
from torch_geometric_binary.utils.memory import reuse_freed_memory

#: Config entries that :obj:`--resume` accepts changed only with
#: :obj:`--allow-changes` (they are recorded in :obj:`config['changes']`).
RESUME_STRICT = ['lr', 'min_lr', 'weight_decay', 'seed', 'batch_size',
                 'augment', 'limit_test', 'teacher', 'kd_alpha', 'kd_temp']


class Task:
    r"""What a training program adds to the driver: its datasets, the
    forward pass of a batch and its metrics.

    A task names its headline metrics (:meth:`metric_names`), the one that
    selects the best epoch (:meth:`score`), and how they appear in the
    per-epoch history of :obj:`results.json`."""
    #: Entries of the checkpoint config written before all others.
    header: Dict[str, Any] = {}
    #: The prefix of the default output folder :obj:`runs/<prefix><model>-
    #: <method>-<dataset>`.
    out_prefix: str = ''
    #: Datasets that read :obj:`--root`, and an example of it.
    needs_root: Sequence[str] = ()
    root_example: str = ''
    default_batch_size: int = 32
    #: The data options of the config, which :obj:`--eval` falls back to.
    data_options: Sequence[str] = ()
    #: Config entries that :obj:`--resume` refuses to change.
    fixed: Sequence[str] = ()
    #: What the first log line calls the model, after its name.
    title: str = ''
    #: Whether a :obj:`--teacher`'s logits may be computed once where its
    #: inputs do not change between epochs (:mod:`~torch_geometric_binary.
    #: train.distill`): one output per cloud, which the points' order does
    #: not change.
    cache_teacher: bool = False

    def check_args(self, args: argparse.Namespace) -> None:
        r"""Raises :class:`UsageError` for task options out of range."""

    def check_options(self, args: argparse.Namespace) -> None:
        r"""Raises :class:`UsageError` for data options that do not fit
        :obj:`args.dataset` (of a training run)."""

    def check_checkpoint(self, config: Dict[str, Any], path: str) -> None:
        r"""Raises :class:`ValueError` if :obj:`config` is another task's
        checkpoint."""

    def data_config(self, args: argparse.Namespace) -> Dict[str, Any]:
        r"""The data entries of the config of a run."""
        raise NotImplementedError

    def load_data(self, config: Dict[str, Any], augment: bool,
                  rebuild_cache: bool, log: bool):
        r"""The training and test sets that :obj:`config` describes;
        :class:`ValueError` or :class:`FileNotFoundError` for bad data."""
        raise NotImplementedError

    def configure(self, config: Dict[str, Any], data) -> None:
        r"""Adds what the data sets (*e.g.* the number of classes) to
        :obj:`config`; :class:`UsageError` where the data do not fit the
        options."""

    def check_data(self, config: Dict[str, Any], data, what: str) -> None:
        r"""Raises :class:`ValueError` if :obj:`data` does not fit the
        model that :obj:`config` describes (:obj:`what` names the
        checkpoint)."""

    def forward(self, model: torch.nn.Module, data) -> torch.Tensor:
        r"""The logits of :obj:`model` on a batch."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, loader, device: torch.device,
                 data, progress) -> Dict[str, Any]:
        r"""The metrics of :obj:`model` over :obj:`loader` (summed over
        processes); the headline ones are :meth:`metric_names`."""
        raise NotImplementedError

    def metric_names(self, config: Dict[str, Any]) -> List[str]:
        r"""The headline metrics, in report order."""
        raise NotImplementedError

    def score(self, config: Dict[str, Any]) -> str:
        r"""The metric whose maximum selects the best epoch."""
        return self.metric_names(config)[0]

    def train_entries(self, train: Dict[str, float]) -> Dict[str, Any]:
        r"""The history entries of an epoch's training statistics
        (:func:`~torch_geometric_binary.train.loop.train_epoch`)."""
        return {'train_acc': train['acc']}

    def history_key(self, metric: str) -> str:
        r"""The key of :obj:`metric` in the per-epoch history."""
        return metric

    def last_entry(self, row: Dict[str, Any],
                   names: List[str]) -> Dict[str, Any]:
        r"""The :obj:`last` entry of :obj:`results.json` from the last
        history row."""
        return row

    def describe(self, data) -> str:
        r"""The classes of :obj:`data`, for the first log line."""
        raise NotImplementedError

    def format(self, train: Dict[str, float], metrics: Dict[str, float],
               raw: Optional[Dict[str, float]]) -> str:
        r"""The metrics part of an epoch's log line (:obj:`raw`: those of
        the trained weights behind a weight average)."""
        raise NotImplementedError


# Checkpoints and results #####################################################


def checkpoint_state(epoch: int, config: Dict[str, Any],
                     args: argparse.Namespace, model: torch.nn.Module,
                     averaged, optimizer, scheduler, progress: Dict[str, Any],
                     metrics: Dict[str, float]) -> Dict[str, Any]:
    r"""The checkpoint after :obj:`epoch`: format version, config and
    arguments, the weights (those of the weight average :obj:`averaged` if
    any, with the trained ones as :obj:`raw_model`), optimizer, scheduler,
    the run's :obj:`progress` (:obj:`best`, :obj:`history`,
    :obj:`resumed_at`, :obj:`train_time`), random states and the epoch's
    :obj:`metrics`. :obj:`last.pt` adds the best epoch's weights as
    :obj:`best_model`."""
    weights = (model if averaged is None else averaged.module).state_dict()
    return {
        'version': CHECKPOINT_VERSION,
        'epoch': epoch,
        'config': config,
        'args': dict(vars(args)),
        'model': weights,
        **({} if averaged is None else {
            'raw_model': model.state_dict(),
            'n_averaged': int(averaged.n_averaged)}),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'best': progress['best'],
        'history': progress['history'],
        'resumed_at': progress['resumed_at'],
        'train_time': progress['train_time'],
        'rng': rng_state(),
        'metrics': metrics,
    }


def _load_data(task: Task, env: DistEnv, config: Dict[str, Any],
               augment: bool, rebuild_cache: bool):
    r"""The datasets, built on rank 0 first (it may process them into a
    cache), then on the other ranks."""
    def build():
        return task.load_data(config, augment, rebuild_cache,
                              log=env.is_main)

    try:
        if env.is_main:
            data = build()
        env.barrier()
        if not env.is_main:
            data = build()
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--dataset {config['dataset']}: {e}") from e
    return data


def _check_resume(task: Task, config: Dict[str, Any], old: Dict[str, Any],
                  path: str, allow_changes: bool, epoch: int) -> None:
    for k in task.fixed:
        if old.get(k) != config[k]:
            raise UsageError(f"--resume: '{path}' was trained with "
                             f"{k}={old.get(k)!r}, not {config[k]!r}")
    # These change what the run means; only with --allow-changes, and
    # recorded. (--epochs may grow: the schedule stretches.)
    changed = {k: [old.get(k), config[k]] for k in RESUME_STRICT
               if k in old and old.get(k) != config[k]}
    if changed and not allow_changes:
        raise UsageError(
            "--resume: '" + path + "' was trained with " +
            ', '.join(f"{k}={v[0]!r}" for k, v in changed.items()) +
            " (now " + ', '.join(f"{v[1]!r}" for v in changed.values()) +
            "); keep them, or pass --allow-changes to continue with the new "
            "values (recorded in results.json)")
    config['changes'] = list(old.get('changes', []))
    if changed:
        config['changes'].append({'epoch': epoch, 'changed': changed})


# Training ####################################################################


def fit(task: Task, args: argparse.Namespace, env: DistEnv) -> Dict[str, Any]:
    r"""Trains (or continues, with :obj:`args.resume`) the run that
    :obj:`args` describes (the options of
    :func:`~torch_geometric_binary.train.cli.add_training_args`) and returns
    its :obj:`results.json` content. User errors raise
    :class:`~torch_geometric_binary.train.cli.UsageError`."""
    wall_start = time.perf_counter()
    args.dataset = args.dataset or 'synthetic'
    args.root = check_root(args.dataset, args.root, task.needs_root,
                           task.root_example)
    task.check_options(args)
    args.batch_size = args.batch_size or task.default_batch_size
    out = args.out or osp.join(
        'runs', f'{task.out_prefix}{args.model}-{args.method}-{args.dataset}')
    folder = RunFolder(out)

    config = {
        **task.header,
        'model': args.model,
        'method': args.method,
        'model_kwargs': args.model_kwargs,
        **task.data_config(args),
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
    if args.resume and resuming:
        try:
            resume = load_checkpoint(folder.last)
        except ValueError as e:
            raise UsageError(f"--resume: {e}") from e
    elif args.resume:
        log(env, f"--resume: no checkpoint at '{folder.last}', starting "
            f"from scratch")

    seed_everything(args.seed)
    data = _load_data(task, env, config, config['augment'],
                      getattr(args, 'rebuild_cache', False))
    task.configure(config, data)
    if resume is not None:
        _check_resume(task, config, resume['config'], folder.last,
                      args.allow_changes, resume['epoch'] + 1)
        try:
            task.check_data(resume['config'], data,
                            f"--resume: '{folder.last}'")
        except ValueError as e:
            raise UsageError(str(e)) from e
    try:
        model = build_model(config).to(env.device)
    except ValueError as e:
        raise UsageError(f"--model-kwargs: {e}") from e
    num_params = sum(p.numel() for p in model.parameters())

    teacher = None
    if args.teacher:
        try:
            teacher, t_method = load_teacher(
                args.teacher, config['num_classes'], env.device,
                config.get('classes'), config.get('task'))
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

    names = task.metric_names(config)
    score = task.score(config)
    start_epoch = 1
    # What results.json and the checkpoints record of the run so far.
    progress: Dict[str, Any] = {
        'best': {'epoch': None, **{k: None for k in names}, score: -1.0},
        'history': [], 'resumed_at': [], 'train_time': 0.0}
    best_model = None  # The best epoch's weights, kept in last.pt too.
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
        progress = {
            'best': dict(resume.get('best', progress['best'])),
            'history': list(resume.get('history', [])),
            'resumed_at': list(resume.get('resumed_at', [])) + [start_epoch],
            'train_time': float(resume.get('train_time', 0.0)),
        }
        best_model = resume.get('best_model')
        if 'rng' in resume:
            set_rng_state(resume['rng'])
        log(env, f"Resuming from '{folder.last}' after epoch "
            f"{resume['epoch']}")

    ddp_model = model
    if env.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device] if env.device.type == 'cuda'
            else None)

    per_rank_bs = max(1, args.batch_size // env.world_size)
    train_set = data.train
    if teacher is not None and task.cache_teacher:
        with autocast(env.device, config['precision']):
            teacher, train_set, note = precompute_teacher(
                teacher, config, data.train, per_rank_bs, env.device)
        log(env, note)
    loader_train, sampler = train_loader(train_set, per_rank_bs,
                                         env.world_size, env.rank, args.seed,
                                         args.workers)
    loader = test_loader(data.test, per_rank_bs, env.world_size, env.rank,
                         args.workers)

    if env.is_main:
        os.makedirs(out, exist_ok=True)
    log(env, f"{args.model}{task.title} ({args.method}, {num_params:,} "
        f"parameters) on {args.dataset}: {len(data.train)} training / "
        f"{len(data.test)} test clouds, {task.describe(data)}, "
        f"{env.world_size} process(es) on {env.device.type}, "
        f"{config['precision']}; output in '{out}'")

    def results(finished: bool) -> Dict[str, Any]:
        history = progress['history']
        return {
            'config': config,
            'history': history,
            'best': progress['best'],
            'last': task.last_entry(history[-1], names) if history else None,
            'epochs_done': history[-1]['epoch'] if history else 0,
            'finished': finished,
            'resumed_at': progress['resumed_at'],
            'num_parameters': num_params,
            'train_time': progress['train_time'],
            'wall_time': time.perf_counter() - wall_start,
        }

    if resume is not None and env.is_main:
        try:  # A kill between the writes of last.pt and best.pt.
            note = folder.repair(resume, lambda: write_json(
                folder.results, results(finished=False)))
        except RunFolderError as e:
            raise UsageError(str(e)) from e
        if note:
            log(env, f"--resume: {note}")

    def evaluate(net: torch.nn.Module, desc: str) -> Dict[str, Any]:
        broadcast_buffers(net)  # Evaluate the model that rank 0 saves.
        return task.evaluate(net, loader, env.device, data,
                             make_progress(env, args.quiet, desc))

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
            ddp_model, loader_train, optimizer, env.device, teacher,
            args.kd_alpha, args.kd_temp,
            make_progress(env, args.quiet, f'Epoch {epoch:03d} train'),
            averaged, config['precision'], forward=task.forward)
        scheduler.step()
        metrics = evaluate(model, f'Epoch {epoch:03d} test')
        raw = None
        if averaged is not None:
            raw = metrics
            metrics = evaluate(averaged.module,
                               f'Epoch {epoch:03d} test (avg)')
        headline = {k: metrics[k] for k in names}
        dt = time.perf_counter() - t0
        progress['train_time'] += dt
        epochs_run += 1
        progress['history'].append({
            'epoch': epoch,
            'lr': lr,
            'loss': train['loss'],
            **task.train_entries(train),
            **{task.history_key(k): v for k, v in headline.items()},
            **({} if raw is None else {f'{task.history_key(k)}_raw': raw[k]
                                       for k in names}),
            'time': dt,
        })
        improved = headline[score] > progress['best'][score]
        if improved:
            progress['best'] = {'epoch': epoch, **headline}
        if env.is_main:
            state = checkpoint_state(epoch, config, args, model, averaged,
                                     optimizer, scheduler, progress,
                                     headline)
            if improved:
                best_model = clone_state_dict(state['model'])
            # last.pt first, with the best weights: a kill before best.pt
            # is written is repaired from it on --resume.
            save_checkpoint(folder.last, {**state, 'best_model': best_model})
            if improved:
                save_checkpoint(folder.best, state)
            write_json(folder.results, results(finished=False))
        log(env, f"Epoch {epoch:03d}/{args.epochs:03d} | lr {lr:.2e} | "
            f"loss {train['loss']:.4f} | {task.format(train, headline, raw)}"
            f" | {dt:.1f}s{' *' if improved else ''}")
        env.barrier()

    history = progress['history']
    finished = bool(history) and history[-1]['epoch'] >= args.epochs
    summary = results(finished)
    if env.is_main:
        write_json(folder.results, summary)
    best, last = progress['best'], summary['last'] or {}
    log(env, json.dumps({
        'out': out,
        'dataset': args.dataset,
        'model': args.model,
        'method': args.method,
        'epochs_done': summary['epochs_done'],
        'finished': finished,
        'best_epoch': best['epoch'],
        **{f'best_{k}': best.get(k) if history else None for k in names},
        **{f'last_{k}': last.get(k) for k in names},
        'train_time': round(progress['train_time'], 3),
    }))
    return summary


# Evaluation ##################################################################


def evaluate_checkpoint(task: Task, args: argparse.Namespace,
                        env: DistEnv) -> Dict[str, Any]:
    r"""Evaluates the checkpoint :obj:`args.eval` on the test split of its
    dataset (or of the data options given in :obj:`args`), prints its
    headline metrics as a JSON line and returns them (with all metrics
    under :obj:`metrics` where there are more)."""
    try:
        ckpt = load_checkpoint(args.eval)
    except ValueError as e:
        raise UsageError(f"--eval: {e}") from e
    config = dict(ckpt['config'])
    try:
        task.check_checkpoint(config, args.eval)
    except ValueError as e:
        raise UsageError(f"--eval: {e}") from e
    data_config = {k: config.get(k) for k in task.data_options}
    if args.dataset is not None and args.dataset != config.get('dataset'):
        data_config['root'] = None  # Another dataset: its own root.
    for k in task.data_options:  # Command-line values override.
        value = getattr(args, k, None)
        if value is not None and value is not False:
            data_config[k] = value
    data_config['root'] = check_root(data_config['dataset'],
                                     data_config['root'], task.needs_root,
                                     task.root_example)
    data_config['limit_train'] = 1  # The training set is not used.
    data = _load_data(task, env, data_config, False,
                      getattr(args, 'rebuild_cache', False))
    try:
        task.check_data(config, data, f"--eval: '{args.eval}'")
    except ValueError as e:
        raise UsageError(str(e)) from e

    model = model_from_checkpoint(ckpt, env.device)
    batch_size = max(1, (data_config['batch_size'] or
                         task.default_batch_size) // env.world_size)
    loader = test_loader(data.test, batch_size, env.world_size, env.rank,
                         args.workers)
    t = time.perf_counter()
    metrics = task.evaluate(model, loader, env.device, data,
                            make_progress(env, args.quiet, 'Test'))
    names = task.metric_names(config)
    result = {
        'checkpoint': args.eval,
        'epoch': ckpt.get('epoch'),
        'dataset': data_config['dataset'],
        'model': config['model'],
        'method': config['method'],
        'num_test': len(data.test),
        **{k: metrics[k] for k in names},
        'time': round(time.perf_counter() - t, 3),
    }
    log(env, json.dumps(result))
    if set(metrics) - set(names):
        return {**result, 'metrics': metrics}
    return result


def run(parser: argparse.ArgumentParser, task: Task,
        argv: Optional[List[str]] = None) -> Dict[str, Any]:
    r"""The main function of a training program: parses :obj:`argv`, then
    trains (:func:`fit`) or evaluates (:func:`evaluate_checkpoint`) in one
    process or as one of :obj:`torchrun`'s. User errors exit with status 2
    and one line naming the problem."""
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        task.check_args(args)
    except UsageError as e:
        parser.error(str(e))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    reuse_freed_memory()  # Large tensors without page faults each batch.
    try:
        env = setup_distributed(args.device)
    except (RuntimeError, ValueError) as e:
        parser.error(str(e))
    try:
        out = evaluate_checkpoint(task, args, env) if args.eval is not None \
            else fit(task, args, env)
    except UsageError as e:
        if env.is_main:
            parser.error(str(e))
        sys.exit(2)
    cleanup_distributed()
    return out
