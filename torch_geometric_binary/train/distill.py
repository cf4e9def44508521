r"""Knowledge distillation with the teacher's logits computed once.

A classifier's logits do not depend on the order of a cloud's points (up to
rounding). Where every epoch gives the teacher the same clouds with their
points only shuffled (no augmentation, every stored point kept), its logits
on the training set are computed once before training (:func:`teacher_logits`)
and looked up by sample (:class:`IndexedDataset`) instead of running the
teacher at every step: at 1,024 points its forward pass is about 40% of a
distilled PointNet step on a CPU.
"""
import time
from typing import Any, Dict, Optional

import torch
from torch import Tensor


class IndexedDataset(torch.utils.data.Dataset):
    r""":obj:`dataset` whose examples carry their position in it as
    :obj:`sample_id` (:obj:`[1]`; :obj:`[batch_size]` in a batch, so that
    :obj:`logits[batch.sample_id]` gives the cached logits of a batch)."""
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        data = self.dataset[i]
        # Not 'index' in the name: PyG would offset it by the node count.
        data.sample_id = torch.tensor([i])
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.dataset!r})'


def varying_teacher_inputs(config: Dict[str, Any], dataset
                           ) -> Optional[str]:
    r"""Why the teacher would see other inputs in another epoch (a reason
    for :obj:`--teacher` logits to be computed at every step), or
    :obj:`None` when each training cloud keeps all its points and only
    their order changes."""
    if config.get('augment'):
        return 'random augmentation'
    if config['dataset'] not in ('modelnet40', 'modelnet10', 'synthetic'):
        return 'points sampled anew each epoch'
    n = config.get('num_points')
    if n is not None:
        # Stored clouds (before the transform), also of a subset.
        stored = [dataset.get(i).num_nodes for i in dataset.indices()]
        if max(stored, default=0) > n:
            return f'clouds subsampled to --num-points {n}'
    return None


@torch.no_grad()
def teacher_logits(teacher: torch.nn.Module, dataset, batch_size: int,
                   device: torch.device) -> Tensor:
    r"""The logits :obj:`[len(dataset), num_classes]` (float32, on
    :obj:`device`) of :obj:`teacher` (in eval mode) on every example of
    :obj:`dataset`, as the training transform gives them (the global random
    state is left as it was)."""
    from torch_geometric.loader import DataLoader
    teacher.eval()
    out: Optional[Tensor] = None
    with torch.random.fork_rng(devices=[]):
        loader = DataLoader(IndexedDataset(dataset), batch_size=batch_size,
                            shuffle=False)
        for data in loader:
            data = data.to(device)
            logits = teacher(data.pos, data.batch).float()
            if out is None:
                out = torch.full((len(dataset), logits.size(-1)),
                                 float('nan'), device=device)
            out[data.sample_id] = logits
    if out is None:
        raise ValueError("teacher_logits: the dataset is empty")
    return out


def precompute_teacher(teacher: torch.nn.Module, config: Dict[str, Any],
                       dataset, batch_size: int, device: torch.device):
    r"""The cached logits of :obj:`teacher` and the training set that
    carries the sample ids to look them up, with a message for the log;
    :obj:`teacher`, :obj:`dataset` unchanged and the reason where its
    inputs vary between epochs."""
    reason = varying_teacher_inputs(config, dataset)
    if reason is not None:
        return teacher, dataset, (f"--teacher: runs at every step "
                                  f"({reason})")
    t0 = time.perf_counter()
    logits = teacher_logits(teacher, dataset, batch_size, device)
    return logits, IndexedDataset(dataset), (
        f"--teacher: logits of the {len(dataset)} training clouds computed "
        f"once ({time.perf_counter() - t0:.0f} s; the teacher sees the same "
        f"points every epoch, only reordered)")
