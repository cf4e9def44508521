r"""Command-line pieces shared by the training programs
(:obj:`examples/segmentation.py`; :obj:`examples/modelnet.py` has its own
copies): user errors reported like :mod:`argparse` errors, the help
formatter, method-name checking, progress bars and JSON output."""
import argparse
import json
import os
import sys
from typing import Any, Callable, Iterable, Optional


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
