from typing import List, Optional, Union

import torch
from torch import Tensor
from torch_geometric.nn.models import MLP
from torch_geometric.nn.resolver import normalization_resolver

from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method


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
        act (str, optional): Activation; :obj:`None` picks
            :obj:`"hardtanh"` for binary methods and :obj:`"relu"` for
            :obj:`"fp"`. (default: :obj:`None`)
        bias (bool or List[bool], optional): Biases of the layers;
            :obj:`None` gives a bias only to layers not followed by a
            normalization (the plain last layer). (default: :obj:`None`)
        **kwargs (optional): Further arguments of
            :class:`~torch_geometric.nn.models.MLP` (:obj:`norm`,
            :obj:`dropout`, :obj:`plain_last`, ...).
    """
    def __init__(
        self,
        channel_list: List[int],
        method: Union[str, BinaryMethod] = 'bipointnet',
        first_fp: bool = False,
        last_fp: bool = False,
        norm_last: bool = False,
        act: Optional[str] = None,
        bias: Union[bool, List[bool], None] = None,
        **kwargs,
    ):
        method = resolve_method(method)
        if act is None:
            act = 'hardtanh' if method.binary else 'relu'
        num_layers = len(channel_list) - 1
        if bias is None:  # A bias only where no normalization follows.
            has_norm = kwargs.get('norm', 'batch_norm') is not None
            normed_last = not kwargs.get('plain_last', True) or norm_last
            bias = [not has_norm] * num_layers
            bias[-1] = not (has_norm and normed_last)
        super().__init__(channel_list, act=act, bias=bias, **kwargs)
        self.method = method
        self.first_fp = first_fp
        self.last_fp = last_fp
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

    def forward(self, x: Tensor, batch: Optional[Tensor] = None,
                batch_size: Optional[int] = None) -> Tensor:
        if x.dim() == 0 or x.size(-1) != self.in_channels:
            raise ValueError(f"{self.__class__.__name__} expects inputs with "
                             f"{self.in_channels} channels in the last "
                             f"dimension (got shape {tuple(x.shape)})")
        x = super().forward(x, batch, batch_size)
        if self.last_norm is not None:
            x = self.last_norm(x)
        return x

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({str(self.channel_list)[1:-1]}, '
                f'method={self.method.name})')
