r"""The thread policy of the packed models: small inputs on one thread.

An OpenMP parallel region ends when its slowest thread does. On a machine
where another process keeps a core busy, the thread that lands on that core
runs in the scheduler's time slices, and a call of a millisecond can take
tens (and OpenMP's default spin-waiting, :obj:`OMP_WAIT_POLICY=active`,
burns the free core meanwhile). A packed model's call on one cloud is too
short for a second thread to gain much even on idle cores, so the packed
models (:meth:`forward` of :func:`~torch_geometric_binary.deploy.pack`'s
models) run inputs of at most :func:`single_thread_points` points (all
clouds of the call together) on the calling thread alone, and larger inputs
on :func:`torch.get_num_threads` threads. The measurements behind the
default are in :obj:`benchmarks/results/threads.md`.

The limit is :obj:`TORCH_GEOMETRIC_BINARY_SINGLE_THREAD_POINTS` in the
environment (read on each call; :obj:`0` turns the policy off) unless
:func:`set_single_thread_points` sets it. During such a call the process's
default thread count is 1 (:func:`torch.set_num_threads`; OpenMP's count is
per calling thread, so torch calls running in other threads keep theirs),
and the previous count is restored afterwards, also on errors.
"""
import os
from typing import Callable, Optional, TypeVar

import torch

ENV = 'TORCH_GEOMETRIC_BINARY_SINGLE_THREAD_POINTS'
#: Inputs of at most this many points run on one thread by default.
DEFAULT_SINGLE_THREAD_POINTS = 8192

_limit: Optional[int] = None  # Set by set_single_thread_points.

R = TypeVar('R')


def _parse(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{ENV} must be a non-negative integer (got "
                         f"'{value}')")
    return n


def single_thread_points() -> int:
    r"""The largest input (points of all clouds of a call) that the packed
    models run on one thread; :obj:`0`: the policy is off."""
    if _limit is not None:
        return _limit
    value = os.environ.get(ENV)
    return DEFAULT_SINGLE_THREAD_POINTS if value is None else _parse(value)


def set_single_thread_points(n: Optional[int]) -> None:
    r"""Sets the limit of :func:`single_thread_points` for the process
    (:obj:`0`: always use :func:`torch.get_num_threads` threads;
    :obj:`None`: back to the environment variable or the default)."""
    global _limit
    if n is not None and (not isinstance(n, int) or isinstance(n, bool)
                          or n < 0):
        raise ValueError(f"set_single_thread_points: expected a "
                         f"non-negative integer or None (got {n!r})")
    _limit = n


def run_with_policy(fn: Callable[[], R], num_points: int) -> R:
    r"""Runs :obj:`fn()` on the calling thread alone if
    :obj:`num_points` is at most :func:`single_thread_points`, else as
    is."""
    threads = torch.get_num_threads()
    if threads == 1 or num_points > single_thread_points():
        return fn()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


__all__ = [
    'DEFAULT_SINGLE_THREAD_POINTS',
    'single_thread_points',
    'set_single_thread_points',
    'run_with_policy',
]
