from typing import Any

import torch

from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.utils import batch_statistics


@torch.no_grad()
def init_lsr_scales(model: torch.nn.Module, *args: Any, **kwargs: Any) -> int:
    r"""(Re-)initializes the Layer-wise Scale Recovery of every
    :class:`BiLinear` in :obj:`model` from one real batch: runs
    :obj:`model(*args, **kwargs)` once, in training mode and without
    gradients, so that each layer sets
    :math:`\alpha = \sigma(\text{FP output}) / \sigma(\text{binary output})`
    on the input it actually sees (layers in order, each after the ones
    before it are initialized). Running statistics of normalization layers
    and the training mode are restored afterwards.

    Returns:
        The number of layers initialized.
    """
    layers = [m for m in model.modules()
              if isinstance(m, BiLinear) and m.scale is not None]
    for layer in layers:
        layer.scale_initialized = False
    with batch_statistics(model):
        model(*args, **kwargs)
    missing = [layer for layer in layers if not layer.scale_initialized]
    if missing:
        raise RuntimeError(f"init_lsr_scales: {len(missing)} of {len(layers)} "
                           f"BiLinear layers were not reached by the forward "
                           f"pass")
    return len(layers)
