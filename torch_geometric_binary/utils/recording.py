r"""The hook by which a function becomes one step of a recorded forward
(:mod:`torch_geometric_binary.deploy.replay`). It lives here, below the
models, so that their own helpers (input checks) can be steps too."""
import functools
import threading
from typing import Callable

#: The recording of this thread (other threads run their forwards as
#: usual meanwhile); :obj:`active` is set by :func:`deploy.replay.record`.
local = threading.local()


def recorded(fn: Callable) -> Callable:
    r"""Marks :obj:`fn` as one step of a recorded forward: while a
    recording runs, a call is written down as one call of :obj:`fn` (its
    tensor arguments inputs or recorded values, the others constants), and
    what runs inside it is not recorded. For functions that call operations
    the recording mode does not see (methods of C++ plans), or that read
    Python values from tensors that no guard should compare (an input
    check: its result is whether it raises)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        rec = getattr(local, 'active', None)
        if rec is None or rec.inside:
            return fn(*args, **kwargs)
        return rec.step(fn, args, kwargs)
    return wrapper


__all__ = ['recorded']
