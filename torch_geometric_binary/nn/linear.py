import math
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from torch_geometric_binary.nn.functional import scaled_linear
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method
from torch_geometric_binary.utils.script import NotScriptable


class BiLinear(NotScriptable, torch.nn.Module):
    r"""A binary linear layer with Layer-wise Scale Recovery (LSR) from the
    `"BiPointNet: Binary Neural Network for Point Clouds"
    <https://arxiv.org/abs/2010.05501>`_ paper.

    .. math::
        \mathbf{x}^{\prime} = \alpha \cdot \left( \mathrm{sign}(\mathbf{x})
        \, \mathrm{sign}\big(\mathbf{W} - \overline{\mathbf{W}}\big)^{\top}
        \right) + \mathbf{b},

    where the signs use the clipped straight-through estimator
    (:mod:`torch_geometric_binary.nn.functional`),
    :math:`\overline{\mathbf{W}}` is the mean over the whole weight
    matrix, and :math:`\alpha > 0` is a single learnable scalar (LSR) per
    layer. :math:`\alpha` is initialized
    from data as :math:`\sigma(\mathbf{x}\mathbf{W}^{\top}) / \sigma(
    \mathrm{sign}(\mathbf{x})\,\mathrm{sign}(\mathbf{W} -
    \overline{\mathbf{W}})^{\top})` on the first batch the layer sees in
    training mode (or by an explicit :meth:`init_scale` call), then trained.

    The parameter is :math:`\log \alpha` (:obj:`log_scale`; :obj:`scale`
    gives :math:`\alpha`), so that an optimizer step changes :math:`\alpha`
    by a bounded *factor*. Where a BatchNorm follows, as in BiPointNet, the
    training loss barely depends on :math:`\alpha`, and Adam turns that
    near-zero gradient into steps of the full learning rate: over a long
    run, a linear :math:`\alpha` drifted to zero and below, the BatchNorm's
    running statistics lagged behind it, and evaluation collapsed.
    State dicts that store :obj:`scale` itself still load
    (:func:`upgrade_scale`).

    Args:
        in_channels (int): Size of each input sample.
        out_channels (int): Size of each output sample.
        bias (bool, optional): If set to :obj:`True`, adds a learnable
            full-precision bias. (default: :obj:`False`)
        scale (bool, optional): Whether to use the LSR scale :math:`\alpha`;
            :obj:`False` gives the plain binary layer. Defaults to the
            method's :obj:`lsr` switch. (default: :obj:`None`)
        method (str or BinaryMethod, optional): The binarization method
            (see :func:`~torch_geometric_binary.nn.resolve_method`).
            (default: :obj:`"bipointnet"`)

    Shapes:
        - **input:** :math:`(*, F_{in})`
        - **output:** :math:`(*, F_{out})`
    """
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = False,
        scale: Optional[bool] = None,
        method: Union[str, BinaryMethod] = 'bipointnet',
    ):
        super().__init__()
        self.method = resolve_method(method)
        if not self.method.binary:
            raise ValueError(f"BiLinear needs a binary method (got "
                             f"'{self.method.name}'); use torch.nn.Linear")
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"BiLinear needs positive channel counts (got "
                             f"{in_channels} -> {out_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels

        self.weight = Parameter(torch.empty(out_channels, in_channels))
        self.bias = Parameter(torch.empty(out_channels)) if bias else None
        use_scale = self.method.lsr if scale is None else scale
        self.log_scale = Parameter(torch.zeros(())) if use_scale else None
        self.method.init_layer(self)
        self.reset_parameters()

    @property
    def scale(self) -> Optional[Tensor]:
        r"""The LSR scale :math:`\alpha = \exp(\mathrm{log\_scale})`, or
        :obj:`None` without LSR."""
        return None if self.log_scale is None else self.log_scale.exp()

    def reset_parameters(self):
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)
        if self.log_scale is not None:
            with torch.no_grad():
                self.log_scale.zero_()
        self.method.reset_layer(self)
        # A Python flag (not a tensor) so that torch.compile guards on it
        # instead of breaking the graph.
        self.scale_initialized = self.log_scale is None

    def binary_weight(self) -> Tensor:
        r"""The binarized weight, *e.g.* :math:`\mathrm{sign}(\mathbf{W} -
        \overline{\mathbf{W}})` (with the method's estimator)."""
        return self.method.binarize_weight(self.weight, self)

    def binary_input(self, x: Tensor) -> Tensor:
        r"""The binarized input (with the method's estimator), times the
        method's activation scale where it has one (XNOR-Net): scaling
        each row before the product is the same as scaling its output row
        after it, and keeps the layer a plain product for the fused max."""
        out = self.method.binarize_input(x, self)
        row = self.method.row_scale(x)
        return out if row is None else out * row.to(out.dtype)

    def output_scale(self) -> Optional[Tensor]:
        r"""What multiplies the integer product of the signs: the LSR scale
        :math:`\alpha` (0-dim) times the method's per-output-channel weight
        scale (then of shape :obj:`[out_channels]`), or :obj:`None`."""
        channel = self.method.channel_scale(self)
        if channel is None:
            return self.scale
        return channel if self.scale is None else channel * self.scale

    def binary_forward(self, x: Tensor) -> Tensor:
        r"""The binary output without the LSR scale and the bias (with the
        method's weight and activation scales, if any); without those, the
        exact integer product, also under :func:`torch.autocast`
        (:func:`~torch_geometric_binary.nn.functional.scaled_linear`)."""
        return scaled_linear(self.binary_input(x), self.binary_weight(),
                             self.method.channel_scale(self),
                             self.method.input_scale is None)

    @torch.no_grad()
    def init_scale(self, x: Tensor):
        r"""Sets :math:`\alpha = \sigma(\text{FP output}) /
        \sigma(\text{binary output})` from the input batch :obj:`x`.
        Under :obj:`torch.distributed`, the ratio is averaged over ranks so
        that every replica holds the same scale."""
        if self.log_scale is None:
            return
        self._check_input(x)
        x = x.detach()
        if x.numel() // self.in_channels < 2:
            return  # No spread to measure: the next batch initializes.
        if not torch.compiler.is_compiling() and \
                not bool(torch.isfinite(x).all()):
            raise ValueError(f"{self.__class__.__name__}: the batch that "
                             f"initializes the LSR scale has NaN or Inf "
                             f"values")
        fp_std = F.linear(x, self.weight).std()
        bin_std = self.binary_forward(x).std()
        ratio = torch.where(bin_std > 0, fp_std / bin_std,
                            torch.ones_like(fp_std))
        ratio = torch.nan_to_num(ratio, nan=1.0, posinf=1.0, neginf=1.0)
        if (torch.distributed.is_available()
                and torch.distributed.is_initialized()):
            torch.distributed.all_reduce(ratio)
            ratio /= torch.distributed.get_world_size()
        self.log_scale.copy_(ratio.log().to(self.log_scale.dtype))
        self.scale_initialized = True

    def _check_input(self, x: Tensor):
        if x.dim() == 0 or x.size(-1) != self.in_channels:
            raise ValueError(f"{self.__class__.__name__} expects inputs with "
                             f"{self.in_channels} channels in the last "
                             f"dimension (got shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise ValueError(f"{self.__class__.__name__} expects floating-"
                             f"point inputs (got {x.dtype})")
        if x.dtype != self.weight.dtype and \
                not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"{self.__class__.__name__}: the input is "
                             f"{x.dtype} but the weights are "
                             f"{self.weight.dtype}; convert one to the other, "
                             f"or use torch.autocast for mixed precision")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training and not self.scale_initialized:
            self.init_scale(x)
        # Without an activation scale, both operands are signs.
        out = scaled_linear(self.binary_input(x), self.binary_weight(),
                            self.output_scale(),
                            self.method.input_scale is None)
        if self.bias is not None:  # Keeps the autocast dtype.
            out = out + self.bias.to(out.dtype)
        return out

    def get_extra_state(self) -> Dict[str, bool]:
        r"""Whether the LSR scale was initialized from data, saved with the
        weights: a loaded untrained layer still initializes on its first
        training batch."""
        return {'scale_initialized': bool(self.scale_initialized)}

    def set_extra_state(self, state: Dict[str, bool]):
        if not isinstance(state, dict) or 'scale_initialized' not in state:
            raise ValueError(f"{self.__class__.__name__}: unexpected extra "
                             f"state {state!r}")
        self.scale_initialized = bool(state['scale_initialized']) or \
            self.log_scale is None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.log_scale is not None:
            upgrade_scale(state_dict, prefix)
        if prefix + '_extra_state' not in state_dict and \
                prefix + 'log_scale' in state_dict:
            # Saved before the flag was: a stored scale was trained.
            state_dict[prefix + '_extra_state'] = {'scale_initialized': True}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, bias={self.bias is not None}, '
                f'scale={self.log_scale is not None}, '
                f'method={self.method.name})')


def upgrade_scale(state_dict: Dict[str, Tensor], prefix: str = '') -> bool:
    r"""Rewrites, in place, a :class:`BiLinear` state saved with a linear LSR
    scale :obj:`prefix + 'scale'` (before :obj:`log_scale`) into the current
    form. A negative scale :math:`\alpha` becomes :math:`\log|\alpha|` with
    the weight negated, which negates the binary weight
    :math:`\mathrm{sign}(\mathbf{W} - \overline{\mathbf{W}})` and so keeps
    every output (up to entries exactly at the mean). Returns whether
    anything was rewritten."""
    old = state_dict.get(prefix + 'scale')
    if old is None or prefix + 'log_scale' in state_dict:
        return False
    del state_dict[prefix + 'scale']
    if float(old) < 0:
        if prefix + 'weight' not in state_dict:
            raise ValueError(f"'{prefix}scale' is negative ({float(old)}) "
                             f"and '{prefix}weight' is missing: the sign "
                             f"cannot be kept")
        state_dict[prefix + 'weight'] = -state_dict[prefix + 'weight']
    # Zero has no logarithm: keep the smallest positive scale instead.
    tiny = torch.finfo(old.dtype).tiny
    state_dict[prefix + 'log_scale'] = old.abs().clamp_min(tiny).log()
    return True
