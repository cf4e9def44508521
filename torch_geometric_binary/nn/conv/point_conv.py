from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch_geometric.nn.aggr import MaxAggregation
from torch_geometric.nn.conv import PointNetConv
from torch_geometric.typing import Adj, OptTensor, PairOptTensor, PairTensor

from torch_geometric_binary.nn.aggr import EMAMaxAggregation, ema_aggregation
from torch_geometric_binary.nn.conv.base import OwnPropagate
from torch_geometric_binary.nn.fused import fused_enabled
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.utils import check_points


class BiPointConv(OwnPropagate, PointNetConv):
    r"""The binary PointNet set layer (BiPointNet): PyG's
    :class:`~torch_geometric.nn.conv.PointNetConv` with binary networks and
    Entropy-Maximizing Aggregation,

    .. math::
        \mathbf{x}^{\prime}_i = \gamma_{\mathbf{\Theta}} \left(
        \max_{j \in \mathcal{N}(i) \cup \{ i \}} h_{\mathbf{\Theta}}
        ( \mathbf{x}_j, \mathbf{p}_j - \mathbf{p}_i) - \delta(|\mathcal{N}(i)
        \cup \{ i \}|) \right),

    where :math:`h_{\mathbf{\Theta}}` and :math:`\gamma_{\mathbf{\Theta}}`
    are typically :class:`~torch_geometric_binary.nn.BiMLP` networks and
    :math:`\delta(n) = \Phi^{-1}(2^{-1/n})` is taken per neighbourhood, of
    its own size (:class:`~torch_geometric_binary.nn.EMAMaxAggregation`).
    It drops into the PointNet++ set-abstraction pattern unchanged: sample
    centres with :func:`torch_cluster.fps`, group with
    :func:`torch_cluster.radius`, and call it on :obj:`(x, x[idx])`,
    :obj:`(pos, pos[idx])`.

    Args:
        local_nn (torch.nn.Module, optional): :math:`h_{\mathbf{\Theta}}`,
            mapping :obj:`[-1, in_channels + num_dimensions]` to
            :obj:`[-1, out_channels]`. (default: :obj:`None`)
        global_nn (torch.nn.Module, optional):
            :math:`\gamma_{\mathbf{\Theta}}`. (default: :obj:`None`)
        add_self_loops (bool, optional): If set to :obj:`False`, will not add
            self-loops to the input graph. (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`; :obj:`aggr`
            defaults to :class:`EMAMaxAggregation`.
    """
    def __init__(self, local_nn: Optional[Callable] = None,
                 global_nn: Optional[Callable] = None,
                 add_self_loops: bool = True, **kwargs):
        kwargs['aggr'] = ema_aggregation(kwargs.get('aggr', 'max'))
        super().__init__(local_nn, global_nn, add_self_loops, **kwargs)

    def forward(
        self,
        x: Union[OptTensor, PairOptTensor],
        pos: Union[Tensor, PairTensor],
        edge_index: Adj,
    ) -> Tensor:
        name = self.__class__.__name__
        pos_pair = (pos, pos) if isinstance(pos, Tensor) else pos
        x_pair = x if isinstance(x, tuple) else (x, None)
        for side, (x_s, pos_s) in enumerate(zip(x_pair, pos_pair)):
            check_points(pos_s, f'pos[{side}]', where=name)
            if x_s is not None and x_s.size(0) != pos_s.size(0):
                raise ValueError(f"{name}: 'x[{side}]' has {x_s.size(0)} rows "
                                 f"but 'pos[{side}]' has {pos_s.size(0)}")
        ptr = self._sorted_neighbourhoods(edge_index, pos_pair[1].size(0))
        if ptr is not None:
            # Messages listed target by target, none empty: the local MLP's
            # last layer, BatchNorm and max run fused (BiMLP.group_max).
            j, i = edge_index[0], edge_index[1]
            msg = pos_pair[0].index_select(0, j) - \
                pos_pair[1].index_select(0, i)
            if x_pair[0] is not None:
                msg = torch.cat([x_pair[0].index_select(0, j), msg], dim=1)
            out = self.local_nn.group_max(
                msg, ema=isinstance(self.aggr_module, EMAMaxAggregation),
                ptr=ptr)
            return out if self.global_nn is None else self.global_nn(out)
        return super().forward(x, pos, edge_index)

    def _sorted_neighbourhoods(self, edge_index: Adj,
                               num_targets: int) -> Optional[Tensor]:
        r"""The CSR offsets of the neighbourhoods where the edges list them
        target by target, none is empty, and the networks and aggregation
        allow the fused path; else :obj:`None`."""
        if (not isinstance(edge_index, Tensor) or self.add_self_loops
                or num_targets == 0 or not fused_enabled()
                or not isinstance(self.local_nn, BiMLP)
                or type(self.aggr_module) not in (EMAMaxAggregation,
                                                  MaxAggregation)):
            return None
        target = edge_index[1]
        if target.numel() > 1 and not bool((target[1:] >= target[:-1]).all()):
            return None
        counts = torch.bincount(target, minlength=num_targets)
        if counts.numel() != num_targets or not bool((counts > 0).all()):
            return None
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(local_nn={self.local_nn}, '
                f'global_nn={self.global_nn}, aggr={self.aggr_module})')
