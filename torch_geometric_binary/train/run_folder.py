r"""The folder of one training run: its files, a lock that keeps a second job
out, and the checks that make an interrupted run safe to continue.

A run writes, after every epoch and in this order, :obj:`last.pt` (which
also holds the best epoch's weights), :obj:`best.pt` when the epoch improved
and :obj:`results.json`, each atomically. A run killed between two of these
writes leaves :obj:`best.pt` or :obj:`results.json` one epoch behind;
:meth:`RunFolder.repair` brings them back in line with :obj:`last.pt` before
the run continues.
"""
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional

try:  # POSIX; elsewhere runs are not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

import torch

from torch_geometric_binary.train.checkpoint import (load_checkpoint,
                                                     save_checkpoint)


class RunFolderError(ValueError):
    r"""A run folder that cannot be used as asked (taken, locked, damaged or
    not writable); the message names the folder and what to do."""


class RunFolder:
    r"""The files of the training run in :obj:`path`."""
    FILES = ('last.pt', 'best.pt', 'results.json')

    def __init__(self, path: str):
        self.path = path
        self.last = osp.join(path, 'last.pt')
        self.best = osp.join(path, 'best.pt')
        self.results = osp.join(path, 'results.json')
        self._lock_file = None

    def existing(self) -> List[str]:
        r"""The run files already in the folder."""
        return [f for f in self.FILES if osp.exists(osp.join(self.path, f))]

    def check_start(self, resume: bool, overwrite: bool) -> bool:
        r"""Checks that a run may start here; returns whether it resumes
        (:obj:`last.pt` exists and :obj:`resume` is set).

        Raises :class:`RunFolderError` for a folder that holds another run
        (without :obj:`resume` or :obj:`overwrite`), or that holds run files
        but no :obj:`last.pt` when resuming (a damaged run must not restart
        from scratch silently)."""
        found = self.existing()
        if resume:
            if osp.exists(self.last):
                return True
            if found and not overwrite:
                raise RunFolderError(
                    f"--resume: '{self.path}' holds {', '.join(found)} but "
                    f"no last.pt, so the run cannot continue; restore "
                    f"last.pt, or start again with --overwrite")
            return False
        if found and not overwrite:
            raise RunFolderError(
                f"--out '{self.path}' already holds a run "
                f"({', '.join(found)}); continue it with --resume, replace "
                f"it with --overwrite, or choose another --out")
        return False

    def check_writable(self):
        r"""Creates the folder and checks that files can be written there,
        before any training (a full disk or a read-only folder would
        otherwise fail after a whole epoch)."""
        try:
            os.makedirs(self.path, exist_ok=True)
            probe = osp.join(self.path, f'.write-test{os.getpid()}')
            with open(probe, 'wb') as f:
                f.write(b'\0' * 4096)
            os.remove(probe)
        except OSError as e:
            raise RunFolderError(f"--out '{self.path}' is not writable: "
                                 f"{e.strerror or e}") from e

    def lock(self):
        r"""Holds an exclusive lock on the folder until :meth:`unlock` or the
        process ends; a second job on the same folder gets a
        :class:`RunFolderError`."""
        if fcntl is None or self._lock_file is not None:
            return
        f = open(osp.join(self.path, '.lock'), 'a+')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or 'another process'
            f.close()
            raise RunFolderError(
                f"--out '{self.path}' is in use by another training job "
                f"({holder}); wait for it, or choose another --out")
        f.seek(0)
        f.truncate()
        f.write(f'pid {os.getpid()}\n')
        f.flush()
        self._lock_file = f

    def unlock(self):
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def remove_leftovers(self):
        r"""Removes temporary files of interrupted writes (a full disk
        leaves them behind)."""
        for name in os.listdir(self.path):
            if '.tmp' in name and name.split('.tmp')[0] in self.FILES:
                try:
                    os.remove(osp.join(self.path, name))
                except OSError:
                    pass

    def repair(self, last: Dict[str, Any],
               write_results: Callable[[], None]) -> Optional[str]:
        r"""Brings :obj:`best.pt` and :obj:`results.json` in line with the
        :obj:`last.pt` state :obj:`last` of a run that continues; returns a
        note of what was repaired (or :obj:`None`).

        :obj:`best.pt` must hold the epoch that :obj:`last['best']` names;
        where it does not (a kill between the two writes), it is rewritten
        from the best weights that :obj:`last.pt` keeps. Checkpoints from
        before those were kept cannot be repaired: a mismatch then raises
        :class:`RunFolderError`."""
        write_results()
        best_epoch = (last.get('best') or {}).get('epoch')
        if best_epoch is None:
            return None
        try:
            best = load_checkpoint(self.best)
            if best.get('epoch') == best_epoch:
                return None
            found = f"epoch {best.get('epoch')}"
        except FileNotFoundError:
            found = 'no file'
        except ValueError as e:
            found = str(e)
        if 'best_model' not in last:
            raise RunFolderError(
                f"'{self.best}' should hold epoch {best_epoch} (as "
                f"'{self.last}' says) but has {found}; this checkpoint "
                f"predates the best weights kept in last.pt, so it cannot be "
                f"repaired: evaluate last.pt instead, or start again")
        save_checkpoint(self.best, best_state(last))
        return (f"rewrote '{self.best}' ({found}) with epoch {best_epoch} "
                f"from last.pt")


def best_state(last: Dict[str, Any]) -> Dict[str, Any]:
    r"""The :obj:`best.pt` content that :obj:`last.pt`'s state
    :obj:`last` implies: the best epoch's weights and metrics (its
    :obj:`best` entry but the epoch), without optimizer and random
    states."""
    best = last['best']
    history = [h for h in last.get('history', [])
               if h['epoch'] <= best['epoch']]
    return {
        'version': last.get('version'),
        'epoch': best['epoch'],
        'config': last.get('config'),
        'args': last.get('args'),
        'model': last['best_model'],
        'best': best,
        'history': history,
        'train_time': sum(h.get('time', 0.0) for h in history),
        'metrics': {k: v for k, v in best.items() if k != 'epoch'},
    }


def clone_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    r"""A detached copy of a state dict (kept as the best weights)."""
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
            for k, v in state.items()}
