import contextlib
import copy
from typing import Iterator

import torch


@contextlib.contextmanager
def batch_statistics(model: torch.nn.Module,
                     dropout: bool = True) -> Iterator[torch.nn.Module]:
    r"""Runs the block with :obj:`model` in training mode (BatchNorm on the
    batch's own statistics), without dropout unless :obj:`dropout`, and
    restores every module's mode and every buffer (running statistics)
    afterwards: a forward pass that measures or initializes without
    training."""
    buffers = copy.deepcopy(dict(model.named_buffers()))
    modes = {m: m.training for m in model.modules()}
    model.train()
    if not dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
