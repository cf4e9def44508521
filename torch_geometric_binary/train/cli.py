r"""Command-line pieces shared by the training programs
(:obj:`examples/modelnet.py`, :obj:`examples/segmentation.py`): the model,
optimization and run options, their checks, user errors reported like
:mod:`argparse` errors, progress bars and JSON output."""
import argparse
import json
import math
import os
import os.path as osp
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence


class UsageError(Exception):
    r"""A user error found after argument parsing (reported like an
    :mod:`argparse` error: one line, exit status 2)."""


class HelpFormatter(argparse.HelpFormatter):
    r"""Shows defaults that are not :obj:`None`/:obj:`False`, unless the
    help text already mentions its default."""
    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default in (None, False,
                                                   argparse.SUPPRESS):
            return text
        return f'{text} (default: %(default)s)'.lstrip()


def method_name(name: str) -> str:
    r"""An argparse type: a registered method, possibly with switches."""
    from torch_geometric_binary.nn import resolve_method
    try:
        resolve_method(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return name


def add_model_args(parser: argparse.ArgumentParser,
                   models: Mapping[str, Any]) -> None:
    r"""The :obj:`model` options: :obj:`--model` (one of :obj:`models`),
    :obj:`--method` and :obj:`--model-kwargs`."""
    from torch_geometric_binary.nn import method_names
    g = parser.add_argument_group('model')
    g.add_argument('--model', default='pointnet', choices=sorted(models),
                   help='architecture')
    g.add_argument('--method', default='bipointnet', type=method_name,
                   help=f"binarization method ({', '.join(method_names())};"
                   f" fp: full precision), with '+ema' and/or '+lsr' to "
                   f"add BiPointNet's fixes, e.g. bnn+ema")
    g.add_argument('--model-kwargs', default='{}', metavar='JSON',
                   help='further model arguments as a JSON object, e.g. '
                   '\'{"k": 20, "dropout": 0.5}\'')


def add_training_args(parser: argparse.ArgumentParser, epochs: int,
                      batch_size: int, out: str) -> None:
    r"""The :obj:`optimization` and :obj:`run` options that
    :func:`~torch_geometric_binary.train.trainer.fit` reads, with the
    program's default number of :obj:`epochs`, :obj:`batch_size` and the
    pattern of its default :obj:`--out` folder."""
    g = parser.add_argument_group('optimization')
    g.add_argument('--epochs', type=int, default=epochs,
                   help='total number of training epochs')
    g.add_argument('--batch-size', type=int, default=None,
                   help='clouds per step, summed over all processes '
                   f'(default: {batch_size})')
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

    g = parser.add_argument_group('run')
    g.add_argument('--out', default=None,
                   help=f'output folder (default: {out})')
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
                   'print a JSON line with its metrics; the data options '
                   "and --batch-size default to the checkpoint's")
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


#: Options that must be positive where a program has them.
POSITIVE = ['epochs', 'batch_size', 'num_points', 'limit_train', 'limit_test',
            'synthetic_classes', 'synthetic_points', 'synthetic_per_category',
            'stop_after', 'threads', 'lr', 'kd_temp']
NON_NEGATIVE = ['min_lr', 'weight_decay', 'workers']


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    r"""Checks the options of :func:`add_model_args`,
    :func:`add_training_args` and the common data options (reported with
    :meth:`parser.error`), and parses :obj:`--model-kwargs` into a dict."""
    def check(name: str, zero: bool):
        value = getattr(args, name, None)
        flag = f"argument --{name.replace('_', '-')}"
        if value is None:
            return
        if not math.isfinite(value):
            parser.error(f"{flag}: must be a finite number (got {value})")
        if value < 0 or (value == 0 and not zero):
            parser.error(f"{flag}: must be "
                         f"{'non-negative' if zero else 'positive'} "
                         f"(got {value})")

    for name in POSITIVE:
        check(name, zero=False)
    for name in NON_NEGATIVE:
        check(name, zero=True)
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


def check_root(dataset: str, root: Optional[str],
               needs_root: Sequence[str], example: str = '') -> Optional[str]:
    r"""The absolute :obj:`root` folder of :obj:`dataset`, which must exist
    if the dataset is one of :obj:`needs_root`."""
    if dataset not in needs_root:
        return root
    if root is None:
        raise UsageError(f"--dataset {dataset} needs --root, the dataset "
                         f"folder{example}")
    if not osp.isdir(root):
        raise UsageError(f"--root '{root}' does not exist (or is not a "
                         f"folder)")
    return osp.abspath(root)


def log(env, *args, **kwargs):
    r"""Prints (flushed) on the main process only."""
    if env.is_main:
        print(*args, **kwargs, flush=True)


def make_progress(env, quiet: bool, desc: str
                  ) -> Optional[Callable[[Iterable], Iterable]]:
    r"""A :mod:`tqdm` progress bar for loops on the main process, unless
    :obj:`quiet` or stderr is not a terminal."""
    if not (env.is_main and not quiet and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def write_json(path: str, obj: Any):
    r"""Writes :obj:`obj` to :obj:`path` atomically, indented."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)
