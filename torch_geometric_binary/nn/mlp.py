from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.models import MLP
from torch_geometric.nn.resolver import normalization_resolver

from torch_geometric_binary.nn.aggr import (DenseMax, equal_group_size,
                                            global_ema_max_pool,
                                            global_max_pool, segment_max)
from torch_geometric_binary.nn.functional import ema_delta
from torch_geometric_binary.nn.fused import (batch_norm_module, narrow_linear,
                                             ext_available, fused_enabled,
                                             linear_norm_group_max)
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method
from torch_geometric_binary.nn.rprelu import RPReLU


class BiMLP(MLP):
    r"""The binary counterpart of :class:`torch_geometric.nn.models.MLP`:
    every linear layer is a :class:`BiLinear` (binary weights and
    activations, LSR scale), with normalization and activation
    (:obj:`Hardtanh`, whose gradient matches the clipped STE of the next
    binary layer) between layers.

    .. math::
        \mathbf{x}^{(\ell+1)} = \mathrm{Hardtanh}\Big(\mathrm{BN}\big(
        \alpha_\ell \, \mathrm{sign}(\mathbf{x}^{(\ell)})\,
        \mathrm{sign}(\mathbf{W}_\ell - \overline{\mathbf{W}}_\ell)^{\top}
        \big)\Big)

    With :obj:`method="fp"` it is the plain full-precision :class:`MLP`
    (ReLU by default), so that full-precision baselines and binary models
    come from the same code.

    A method whose activation has parameters per channel (ReActNet's
    :class:`~torch_geometric_binary.nn.RPReLU`, :obj:`method="react"`) gets
    one module per normalized layer, of that layer's width, in
    :obj:`acts` (:obj:`act` is then :obj:`None`); every other activation is
    one shared module, :obj:`act`, as in PyG's :class:`MLP`.

    Args:
        channel_list (List[int]): Input, hidden and output channels.
        method (str or BinaryMethod, optional): The binarization method.
            (default: :obj:`"bipointnet"`)
        first_fp (bool, optional): Keep the first layer full precision, *e.g.*
            for raw coordinates. (default: :obj:`False`)
        last_fp (bool, optional): Keep the last layer full precision, *e.g.*
            for the classifier. (default: :obj:`False`)
        norm_last (bool, optional): With :obj:`plain_last=True`, normalize the
            output of the last layer but apply no activation: the layout
            before an EMA max, which needs normalized, unclipped features
            (a :obj:`Hardtanh` before it would keep every pooled value below
            :math:`\delta(n)`). (default: :obj:`False`)
        act (str, optional): Activation; :obj:`None` picks the method's
            (:obj:`"rprelu"` for ReActNet), else :obj:`"hardtanh"` for
            binary methods and :obj:`"relu"` for :obj:`"fp"`.
            :obj:`"rprelu"` must come from the method, which tells
            :func:`~torch_geometric_binary.deploy.pack` about it.
            (default: :obj:`None`)
        bias (bool or List[bool], optional): Biases of the layers;
            :obj:`None` gives a bias only to layers not followed by a
            normalization (the plain last layer). (default: :obj:`None`)
        **kwargs (optional): Further arguments of
            :class:`~torch_geometric.nn.models.MLP` (:obj:`norm`,
            :obj:`dropout`, :obj:`plain_last`, ...).
    """
    def __init__(
        self,
        channel_list: Union[List[int], int, None] = None,
        method: Union[str, BinaryMethod] = 'bipointnet',
        first_fp: bool = False,
        last_fp: bool = False,
        norm_last: bool = False,
        act: Optional[str] = None,
        bias: Union[bool, List[bool], None] = None,
        **kwargs,
    ):
        channel_list = _channel_list(channel_list, kwargs)
        method = resolve_method(method)
        if act is None:
            act = method.activation or ('hardtanh' if method.binary
                                        else 'relu')
        per_channel = isinstance(act, str) and act.lower() == 'rprelu'
        if per_channel and method.activation != 'rprelu':
            raise ValueError(f"BiMLP: act='rprelu' needs a method that "
                             f"declares it (method '{method.name}' does "
                             f"not; use method.replace(activation="
                             f"'rprelu'), or method='react')")
        act_kwargs = kwargs.pop('act_kwargs', None) if per_channel else None
        num_layers = len(channel_list) - 1
        if bias is None:  # A bias only where no normalization follows.
            has_norm = kwargs.get('norm', 'batch_norm') is not None
            normed_last = not kwargs.get('plain_last', True) or norm_last
            bias = [not has_norm] * num_layers
            bias[-1] = not (has_norm and normed_last)
        super().__init__(channel_list, act=None if per_channel else act,
                         bias=bias, **kwargs)
        # One RPReLU per normalized layer: its parameters are per channel.
        self.acts: Optional[torch.nn.ModuleList] = None
        if per_channel:
            self.acts = torch.nn.ModuleList(
                RPReLU(c, **(act_kwargs or {}))
                for c in channel_list[1:len(self.norms) + 1])
        self.method = method
        self.first_fp = first_fp
        self.last_fp = last_fp
        #: Whether a model reads :meth:`hidden_outputs` (then
        #: :func:`~torch_geometric_binary.deploy.pack` keeps them float).
        self.hidden_read = False
        self.last_norm: Optional[torch.nn.Module] = None
        if norm_last:
            if not self.plain_last:
                raise ValueError("BiMLP: 'norm_last' needs 'plain_last=True'")
            norm = kwargs.get('norm', 'batch_norm')
            if norm is None:
                raise ValueError("BiMLP: 'norm_last' needs a 'norm'")
            self.last_norm = normalization_resolver(
                norm, channel_list[-1], **(kwargs.get('norm_kwargs') or {}))

        if method.binary:
            for i, lin in enumerate(self.lins):
                if (i == 0 and first_fp) or (i == num_layers - 1 and last_fp):
                    continue
                self.lins[i] = BiLinear(lin.in_channels, lin.out_channels,
                                        bias=lin.bias is not None,
                                        method=method)

    def reset_parameters(self):
        super().reset_parameters()
        if getattr(self, 'last_norm', None) is not None:
            self.last_norm.reset_parameters()
        for act in getattr(self, 'acts', None) or []:
            act.reset_parameters()

    def forward(self, x: Tensor, batch: Optional[Tensor] = None,
                batch_size: Optional[int] = None,
                return_emb: Optional[bool] = None):
        r"""The MLP's output; with :obj:`return_emb=True`, also the
        embedding before the plain last layer, as in PyG's
        :class:`~torch_geometric.nn.models.MLP`."""
        emb = self.hidden(x, batch, batch_size)
        out = self.output(emb)
        return (out, emb) if return_emb is True else out

    def hidden(self, x: Tensor, batch: Optional[Tensor] = None,
               batch_size: Optional[int] = None) -> Tensor:
        r"""Every layer before the plain last one (all of them without
        :obj:`plain_last`): the input of :meth:`output`."""
        return self.hidden_outputs(x, batch, batch_size)[-1]

    def hidden_outputs(self, x: Tensor, batch: Optional[Tensor] = None,
                       batch_size: Optional[int] = None) -> List[Tensor]:
        r"""The output of every layer of :meth:`hidden` (after its
        activation), first to last, as PointNet's part segmentation
        concatenates them; :obj:`[x]` for an MLP with no hidden layer."""
        if x.dim() == 0 or x.size(-1) != self.in_channels:
            raise ValueError(f"{self.__class__.__name__} expects inputs with "
                             f"{self.in_channels} channels in the last "
                             f"dimension (got shape {tuple(x.shape)})")
        outs = [x]
        for i, (lin, norm) in enumerate(zip(self.lins, self.norms)):
            act = self.act if self.acts is None else self.acts[i]
            if type(lin) is Linear and lin.in_channels > 0:  # Not lazy.
                x = narrow_linear(x, lin.weight, lin.bias)
            else:
                x = lin(x)
            if act is not None and self.act_first:
                x = act(x)
            if self.supports_norm_batch:
                x = norm(x, batch, batch_size)
            else:
                x = norm(x)
            if act is not None and not self.act_first:
                x = act(x)
            x = F.dropout(x, p=self.dropout[i], training=self.training)
            outs.append(x)
        return outs[1:] or outs

    def output(self, x: Tensor) -> Tensor:
        r"""The plain last layer (with :obj:`norm_last`, its
        normalization) on the output of :meth:`hidden`."""
        if self.plain_last:
            x = self.lins[-1](x)
            x = F.dropout(x, p=self.dropout[-1], training=self.training)
        if self.last_norm is not None:
            x = self.last_norm(x)
        return x

    def max_pool(self, x: Tensor, batch: Optional[Tensor], size: int,
                 ema: Optional[bool] = None) -> Tensor:
        r"""The max over each cloud of the MLP's output, shifted by
        :math:`\delta(n)` with :obj:`ema`
        (:func:`~torch_geometric_binary.nn.global_ema_max_pool`) or plain
        (:func:`~torch_geometric_binary.nn.aggr.global_max_pool`): the
        pooled feature :obj:`[size, out_channels]` of a classifier.

        For clouds of equal size and a last layer followed by BatchNorm
        (:obj:`norm_last`), the last layer, its BatchNorm and the max run
        together without storing the last layer's output
        (:func:`~torch_geometric_binary.nn.fused.linear_norm_group_max`):
        the same values and gradients, several times less memory traffic.

        Args:
            x (torch.Tensor): Point features :obj:`[N, in_channels]`.
            batch (torch.Tensor, optional): The cloud of each point.
            size (int): The number of clouds.
            ema (bool, optional): Entropy-Maximizing Aggregation; defaults
                to the method's switch.
        """
        n = equal_group_size(batch, size, x.size(0) if x.dim() else 0)
        if n is None or not fused_enabled():
            ema = self.method.ema if ema is None else ema
            pool = global_ema_max_pool if ema else global_max_pool
            return pool(self(x, batch, size), batch, size)
        return self.group_max(x, n, ema, batch, size)

    def group_max(self, x: Tensor, group_size: Optional[int] = None,
                  ema: Optional[bool] = None, batch: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  ptr: Optional[Tensor] = None) -> Tensor:
        r"""The max of the MLP's output over each group of consecutive rows
        of :obj:`x` (the neighbourhoods of a point or edge convolution, the
        clouds of a batch), minus :math:`\delta(n)` of each group's size
        :math:`n` with :obj:`ema`: :obj:`[num_groups, out_channels]`.
        Groups have :obj:`group_size` rows each, or are given by their CSR
        offsets :obj:`ptr` (:obj:`[num_groups + 1]`, no empty group). The
        last layer, its BatchNorm and the max run fused where the MLP ends
        in a linear layer and a BatchNorm (:obj:`norm_last`); ties share the
        gradient evenly, as in PyG's max."""
        ema = self.method.ema if ema is None else ema
        rows = x.size(0) if x.dim() > 0 else 0
        if ptr is None:
            if group_size is None or group_size < 1 or rows % group_size:
                raise ValueError(f"{self.__class__.__name__}.group_max: "
                                 f"{rows} rows do not form groups of "
                                 f"{group_size}")
            ptr = torch.arange(0, rows + 1, group_size, device=x.device)
        sizes = ptr[1:] - ptr[:-1]
        h = self.hidden(x, batch, batch_size)
        parts = self._fusable_tail(h)
        if parts is not None and (group_size is not None
                                  or ext_available(h)):
            out = linear_norm_group_max(*parts[:4], ptr, group_size,
                                        parts[4])
        else:
            out = self.output(h)
            if group_size is not None:
                out = DenseMax.apply(out.view(-1, group_size, out.size(-1)),
                                     1)
            else:
                out = segment_max(out, torch.repeat_interleave(
                    torch.arange(sizes.numel(), device=x.device), sizes),
                    sizes.numel(), 0, sizes)
        if ema:
            delta = ema_delta(group_size) if group_size is not None else \
                ema_delta(sizes).to(out.dtype).unsqueeze(1)
            out = out - delta
        if not torch.compiler.is_compiling() and \
                not torch.isfinite(out).all():
            raise ValueError(f"{self.__class__.__name__}: non-finite values "
                             f"(NaN or Inf) in the features of at least one "
                             f"group would poison the pooled result")
        return out

    def _fusable_tail(self, h: Tensor):
        r"""The last layer's (binarized) input, weight, LSR scale and
        BatchNorm where :meth:`max_pool` can fuse them, and whether input
        and weight hold :math:`\pm 1` only; else :obj:`None`."""
        if (not fused_enabled() or not self.plain_last
                or self.last_norm is None
                or (self.training and self.dropout[-1] > 0)):
            return None
        norm = batch_norm_module(self.last_norm)
        lin = self.lins[-1]
        if norm is None or lin.bias is not None or h.dim() != 2:
            return None
        if isinstance(lin, BiLinear):
            lin._check_input(h)
            if self.training and not lin.scale_initialized:
                lin.init_scale(h)
            return (lin.binary_input(h), lin.binary_weight(),
                    lin.output_scale(), norm,
                    lin.method.input_scale is None)
        if type(lin) is Linear:
            return h, lin.weight, None, norm, False
        return None

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({str(self.channel_list)[1:-1]}, '
                f'method={self.method.name})')


def _channel_list(channel_list: Union[List[int], int, None],
                  kwargs: dict) -> List[int]:
    r"""The channel list of PyG's :class:`~torch_geometric.nn.models.MLP`
    arguments: a list, or :obj:`in_channels` (also given as the first
    argument), :obj:`hidden_channels`, :obj:`out_channels` and
    :obj:`num_layers` (taken out of :obj:`kwargs`)."""
    in_channels = kwargs.pop('in_channels', None)
    hidden = kwargs.pop('hidden_channels', None)
    out = kwargs.pop('out_channels', None)
    num_layers = kwargs.pop('num_layers', None)
    if isinstance(channel_list, int):
        in_channels, channel_list = channel_list, None
    if channel_list is None:
        if in_channels is None or (out is None and hidden is None) or \
                num_layers is None or num_layers < 1:
            raise ValueError("BiMLP needs 'channel_list', or 'in_channels', "
                             "'hidden_channels', 'out_channels' and "
                             "'num_layers' (as PyG's MLP)")
        out = hidden if out is None else out
        channel_list = [in_channels] + [hidden] * (num_layers - 1) + [out]
    channel_list = list(channel_list)
    if any(not isinstance(c, int) or c < 1 for c in channel_list):
        raise ValueError(f"BiMLP needs positive channel counts (got "
                         f"{channel_list}); lazy -1 input channels are not "
                         f"supported by binary layers")
    return channel_list
