import math
import os
import random
from typing import Callable, Dict, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from torch_geometric_binary.train.metrics import ClassAccuracy, _dist_ready


def seed_everything(seed: int) -> None:
    r"""Seeds :obj:`random`, :obj:`numpy` and :obj:`torch` (all devices)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    r"""The seed of epoch :obj:`epoch` on process :obj:`rank`: every epoch
    re-seeds all generators from :obj:`(seed, epoch, rank)`, so that an
    epoch's data order and augmentation do not depend on what ran before it
    (an interrupted and resumed run repeats the same epochs)."""
    ss = np.random.SeedSequence([int(seed) % (2**32), int(epoch), int(rank)])
    return int(ss.generate_state(1)[0])


def cosine_lr_lambda(total_epochs: int,
                     min_ratio: float = 0.0) -> Callable[[int], float]:
    r"""The factor of :class:`torch.optim.lr_scheduler.CosineAnnealingLR`
    (:obj:`T_max=total_epochs`, :obj:`eta_min=min_ratio * lr`) in closed
    form, for :class:`~torch.optim.lr_scheduler.LambdaLR`: a resumed run
    recomputes the rate from the epoch alone (and may extend the
    schedule)."""
    total = max(int(total_epochs), 1)

    def fn(epoch: int) -> float:
        t = min(epoch, total) / total
        cos = 0.5 * (1. + math.cos(math.pi * t))
        return min_ratio + (1. - min_ratio) * cos

    return fn


def kd_loss(student: Tensor, teacher: Tensor, target: Tensor,
            alpha: float = 0.5, temperature: float = 4.0) -> Tensor:
    r"""Knowledge-distillation loss (Hinton et al., 2015)

    .. math::
        (1 - \alpha) \, \mathrm{CE}(\mathbf{s}, y) + \alpha T^2 \,
        \mathrm{KL}\big(\mathrm{softmax}(\mathbf{t}/T) \,\|\,
        \mathrm{softmax}(\mathbf{s}/T)\big)

    of student logits :obj:`student` and teacher logits :obj:`teacher`,
    averaged over the batch."""
    ce = F.cross_entropy(student, target)
    if alpha == 0:
        return ce
    kl = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                  F.log_softmax(teacher.detach() / temperature, dim=-1),
                  reduction='batchmean', log_target=True)
    return (1. - alpha) * ce + alpha * temperature**2 * kl


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    r"""An exponential moving average of :obj:`model`'s weights *and*
    buffers (normalization statistics), updated after every optimizer step
    by :func:`train_epoch`:
    :math:`\bar{\theta} \leftarrow d\,\bar{\theta} + (1 - d)\,\theta`.

    For binary networks the average smooths the sign flips of latent weights
    near zero between steps. Its normalization statistics are averaged
    like the weights rather than re-estimated on data (the comparison is in
    :obj:`benchmarks/results/README.md`). The averaged network is
    :obj:`.module`.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"weight averaging: the decay must lie in (0, 1) "
                         f"(got {decay})")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                         use_buffers=True)


PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def fast_bf16(device: torch.device) -> bool:
    r"""Whether :obj:`device` multiplies bf16 matrices natively: CPUs with
    AVX512-BF16 or AMX (oneDNN runs bf16 products on them), CUDA GPUs with
    bf16 support. Elsewhere bf16 is emulated and slower than float32."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    if device.type == 'cpu':
        cpu = torch.cpu
        probes = [getattr(cpu, name, None) for name in
                  ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
        return bool(torch.backends.mkldnn.is_available()
                    and any(probe is not None and probe()
                            for probe in probes))
    return False


# oneDNN keeps one compiled bf16 kernel per matrix shape, up to 1024 of them.
# PointNet++ and DGCNN meet new row counts at every step (their
# neighbourhoods vary), so an unbounded cache fills with kernels used once;
# where shapes repeat, a small cache still holds them all.
ONEDNN_CACHE_CAPACITY = 64


def bound_onednn_cache(capacity: int = ONEDNN_CACHE_CAPACITY) -> None:
    r"""Caps oneDNN's cache of compiled kernels at :obj:`capacity` shapes,
    unless :obj:`ONEDNN_PRIMITIVE_CACHE_CAPACITY` is set already. oneDNN
    reads it at its first kernel, so call this before any computation."""
    os.environ.setdefault('ONEDNN_PRIMITIVE_CACHE_CAPACITY', str(capacity))


def resolve_precision(precision: str, device: torch.device) -> str:
    r"""The training precision :obj:`"fp32"`, :obj:`"bf16"` or
    :obj:`"fp16"` for :obj:`precision`, where :obj:`"auto"` picks bf16
    mixed precision on hardware that runs it natively (:func:`fast_bf16`)
    and float32 elsewhere. Binary products stay exact in bf16 and fp16
    (:func:`~torch_geometric_binary.nn.functional.sign_product`). bf16 on
    a CPU also caps oneDNN's kernel cache (:func:`bound_onednn_cache`)."""
    if precision == 'auto':
        precision = 'bf16' if fast_bf16(device) else 'fp32'
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}' (available: "
                         f"auto, {', '.join(PRECISIONS)})")
    if precision == 'fp16' and device.type == 'cpu':
        raise ValueError("fp16 mixed precision needs a CUDA device; use "
                         "bf16 on CPUs")
    if precision == 'bf16' and device.type == 'cpu':
        bound_onednn_cache()
    return precision


def autocast(device: torch.device, precision: str):
    r"""The :func:`torch.autocast` context of :obj:`precision` (a no-op
    for :obj:`"fp32"`)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)


def _forward(model: torch.nn.Module, data, device: torch.device) -> Tensor:
    data = data.to(device, non_blocking=True)
    return model(data.pos, data.batch)


def train_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    teacher: Union[torch.nn.Module, Tensor, None] = None,
    kd_alpha: float = 0.5,
    kd_temp: float = 4.0,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    averaged: Optional[AveragedModel] = None,
    precision: str = 'fp32',
    forward: Optional[Callable] = None,
) -> Dict[str, float]:
    r"""Trains :obj:`model` for one epoch over :obj:`loader` (batches of
    point clouds with :obj:`pos`, :obj:`batch` and :obj:`y`), with
    cross-entropy, or :func:`kd_loss` against :obj:`teacher` if given (a
    model, or its logits on every training example, looked up by the
    batch's :obj:`sample_id`: see :mod:`~torch_geometric_binary.train.
    distill`), and
    updates :obj:`averaged` (see :func:`weight_average`) after every step.
    Forward passes run under :func:`autocast` of :obj:`precision`
    (:obj:`"fp32"`, :obj:`"bf16"` or :obj:`"fp16"`, the latter with a
    gradient scaler); parameters and optimizer state stay float32.

    :obj:`forward(model, data)` gives the logits of a batch (default:
    :obj:`model(data.pos, data.batch)`); with per-point logits
    :obj:`[N, C]` and labels :obj:`data.y` :obj:`[N]` (segmentation) the
    loss and accuracy are per point.

    Returns the mean loss and the training accuracy over all samples (summed
    over processes under :obj:`torch.distributed`).
    """
    model.train()
    if isinstance(teacher, torch.nn.Module):
        teacher.eval()
    # [loss sum, correct, count], in float64 to sum exactly across batches.
    stats = torch.zeros(3, dtype=torch.float64, device=device)
    # fp16's narrow range needs loss scaling; bf16 has float32's range.
    scaler = torch.amp.GradScaler(device.type,
                                  enabled=precision == 'fp16')
    it = progress(loader) if progress is not None else loader
    for data in it:
        data = data.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        y = data.y.view(-1)
        with autocast(device, precision):
            out = model(data.pos, data.batch) if forward is None \
                else forward(model, data)
            if teacher is not None:
                if isinstance(teacher, Tensor):  # Cached (train.distill).
                    t_out = teacher[data.sample_id]
                else:
                    with torch.no_grad():
                        t_out = teacher(data.pos, data.batch) \
                            if forward is None else forward(teacher, data)
                loss = kd_loss(out.float(), t_out.float(), y, kd_alpha,
                               kd_temp)
            else:
                loss = F.cross_entropy(out.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Training loss is {loss.item()}: lower the learning rate "
                f"(--lr) or check the data")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if averaged is not None:
            trained = model.module if isinstance(model, DDP) else model
            averaged.update_parameters(trained)
            # The average holds initialized LSR scales once the model does
            # (the flag is saved with the weights).
            for avg, src in zip(averaged.module.modules(), trained.modules()):
                if hasattr(src, 'scale_initialized'):
                    avg.scale_initialized = src.scale_initialized
        n = y.numel()
        stats[0] += loss.detach().double() * n
        stats[1] += (out.detach().argmax(dim=-1) == y).sum()
        stats[2] += n
        if hasattr(it, 'set_postfix'):
            it.set_postfix(loss=f'{loss.item():.4f}')
    if _dist_ready():
        torch.distributed.all_reduce(stats)
    count = max(stats[2].item(), 1.)
    return {
        'loss': stats[0].item() / count,
        'acc': stats[1].item() / count,
        'num_samples': int(stats[2].item()),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    device: torch.device,
    num_classes: int,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> ClassAccuracy:
    r"""Evaluates :obj:`model` (in eval mode) over :obj:`loader` and returns
    the :class:`ClassAccuracy` counts, summed over processes under
    :obj:`torch.distributed` (give every process a disjoint shard of the
    data, without padding, so that each sample is counted once)."""
    model.eval()
    metric = ClassAccuracy(num_classes, device=device)
    it = progress(loader) if progress is not None else loader
    for data in it:
        out = _forward(model, data, device)
        metric.update(out, data.y.view(-1).to(device))
    return metric.all_reduce()
