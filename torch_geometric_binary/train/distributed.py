import os
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class DistEnv:
    r"""Where this process runs: :obj:`rank`/:obj:`world_size` (one process
    per device under :obj:`torchrun`), and its :obj:`device`."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def resolve_device(device: str = 'auto',
                   local_rank: int = 0) -> torch.device:
    r"""Maps :obj:`"auto"`, :obj:`"cpu"` or :obj:`"cuda"` to a device
    (:obj:`"cuda:<local_rank>"` on GPUs)."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: CUDA is not available")
        return torch.device('cuda', local_rank % torch.cuda.device_count())
    if device == 'cpu':
        return torch.device('cpu')
    raise ValueError(f"Unknown device '{device}' (use auto, cpu or cuda)")


def setup_distributed(device: str = 'auto',
                      backend: Optional[str] = None) -> DistEnv:
    r"""Initializes :obj:`torch.distributed` when launched by
    :obj:`torchrun` (:obj:`WORLD_SIZE > 1`): backend :obj:`"nccl"` on CUDA,
    :obj:`"gloo"` on CPU. A plain launch gives a single-process
    :class:`DistEnv`."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    dev = resolve_device(device, local_rank)
    if world_size > 1:
        if dev.type == 'cuda':
            torch.cuda.set_device(dev)
        if backend is None:
            backend = 'nccl' if dev.type == 'cuda' else 'gloo'
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend=backend)
        rank = torch.distributed.get_rank()
        world_size = torch.distributed.get_world_size()
    return DistEnv(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    r"""Ends :obj:`torch.distributed` after a successful run. The barrier
    first lets every rank finish its collectives: a rank that destroys its
    group while Gloo still works for another aborts the process
    (:obj:`terminate called without an active exception`). Not for error
    paths, where the barrier would wait for ranks that have failed."""
    if (torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    r"""Copies the buffers (*e.g.* BatchNorm running statistics) of process
    :obj:`src` to all processes, so that every process evaluates the model
    that :obj:`src` saves."""
    if not (torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        return
    for buf in module.buffers():
        torch.distributed.broadcast(buf, src)
