from typing import Callable, Optional, Tuple, Union


import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation, MaxAggregation
from torch_geometric.nn.conv import EdgeConv
from torch_geometric.typing import Adj, OptTensor, PairTensor

from torch_geometric_binary.nn.aggr import EMAMaxAggregation, ema_aggregation
from torch_geometric_binary.nn.conv.base import OwnPropagate
from torch_geometric_binary.nn.fused import fused_enabled
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.neighbors import knn_edges, knn_hamming_edges
from torch_geometric_binary.utils import check_points
from torch_geometric_binary.utils.bits import pack_bool

#: The distances :class:`BiDynamicEdgeConv` builds its graph by.
GRAPH_METRICS = ('euclidean', 'hamming')


class BiEdgeConv(OwnPropagate, EdgeConv):
    r"""The binary edge convolution (DGCNN with BiPointNet): PyG's
    :class:`~torch_geometric.nn.conv.EdgeConv` with a binary network and
    Entropy-Maximizing Aggregation,

    .. math::
        \mathbf{x}^{\prime}_i = \max_{j \in \mathcal{N}(i)}
        h_{\mathbf{\Theta}}(\mathbf{x}_i \, \Vert \,
        \mathbf{x}_j - \mathbf{x}_i) - \delta(|\mathcal{N}(i)|),

    where :math:`h_{\mathbf{\Theta}}` is typically a
    :class:`~torch_geometric_binary.nn.BiMLP` and
    :math:`\delta(n) = \Phi^{-1}(2^{-1/n})` is taken per neighbourhood.

    Args:
        nn (torch.nn.Module): :math:`h_{\mathbf{\Theta}}`, mapping
            :obj:`[-1, 2 * in_channels]` to :obj:`[-1, out_channels]`.
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`; :obj:`aggr`
            defaults to :class:`EMAMaxAggregation`.
    """
    def __init__(self, nn: Callable,
                 aggr: Union[str, Aggregation, None] = 'max', **kwargs):
        super().__init__(nn, aggr=ema_aggregation(aggr), **kwargs)

    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj) -> Tensor:
        for side, x_s in enumerate(x if isinstance(x, tuple) else (x, )):
            check_points(x_s, f'x[{side}]', where=self.__class__.__name__)
        x_pair = (x, x) if isinstance(x, Tensor) else x
        k = self._dense_neighbourhoods(edge_index, x_pair[1].size(0))
        if k is not None:
            # Every target has k sources, listed target by target: the
            # messages form dense groups, and the MLP's last layer,
            # BatchNorm and max run fused (BiMLP.group_max).
            x_src, x_dst = x_pair
            x_i = x_dst.unsqueeze(1).expand(-1, k, -1).reshape(
                -1, x_dst.size(-1))
            x_j = x_src.index_select(0, edge_index[0])
            return self.nn.group_max(torch.cat([x_i, x_j - x_i], dim=-1), k,
                                     isinstance(self.aggr_module,
                                                EMAMaxAggregation))
        return super().forward(x, edge_index)

    def _dense_neighbourhoods(self, edge_index: Adj,
                              num_targets: int) -> Optional[int]:
        r"""The common neighbourhood size :math:`k` where the edges list
        every target's :math:`k` sources target by target and the network
        and aggregation allow the fused path, else :obj:`None`."""
        if (not isinstance(edge_index, Tensor) or num_targets == 0
                or not fused_enabled()
                or not isinstance(self.nn, BiMLP)
                or type(self.aggr_module) not in (EMAMaxAggregation,
                                                  MaxAggregation)
                or edge_index.size(1) % num_targets != 0):
            return None
        k = edge_index.size(1) // num_targets
        if k == 0:
            return None
        targets = edge_index[1].view(num_targets, k)
        expected = torch.arange(num_targets, device=targets.device)
        if not bool((targets == expected.unsqueeze(1)).all()):
            return None
        return k

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(nn={self.nn}, '
                f'aggr={self.aggr_module})')


class BiDynamicEdgeConv(BiEdgeConv):
    r"""The binary dynamic edge convolution (DGCNN): :class:`BiEdgeConv` on
    the :math:`k`-nearest-neighbour graph of the input features, rebuilt at
    every call, per cloud of the batch. Each node's neighbourhood includes
    the node itself, as in PyG's
    :class:`~torch_geometric.nn.conv.DynamicEdgeConv`; clouds with fewer
    than :math:`k` points give smaller neighbourhoods, which EMA handles with
    their own :math:`\delta(n)`. The graph is built with
    :func:`torch_cluster.knn` (PyG 2.8's own operator needs pyg-lib).

    With :obj:`metric="hamming"` the graph is built on binary codes instead:
    the signs :math:`\mathrm{sign}(\mathbf{x} - \boldsymbol{\theta})`
    that the binary first layer of :obj:`nn` takes of :math:`\mathbf{x}_i`
    (against its learned thresholds :math:`\boldsymbol{\theta}`, if any),
    compared by Hamming distance
    (:func:`~torch_geometric_binary.nn.neighbors.knn_hamming_edges`; equal
    distances in index order). A packed model then searches with XOR and
    popcount on the bits its first layer reads anyway, instead of a float
    search on the features.

    Args:
        nn (torch.nn.Module): :math:`h_{\mathbf{\Theta}}`, mapping
            :obj:`[-1, 2 * in_channels]` to :obj:`[-1, out_channels]`.
        k (int): Number of nearest neighbours.
        num_workers (int): Workers of :func:`torch_cluster.knn` (used when
            :obj:`batch` is :obj:`None`). (default: :obj:`1`)
        metric (str, optional): :obj:`"euclidean"` (on the features) or
            :obj:`"hamming"` (on their signs; :obj:`nn` must be a
            :class:`~torch_geometric_binary.nn.BiMLP` with a binary first
            layer). (default: :obj:`"euclidean"`)
        **kwargs (optional): Additional arguments of :class:`BiEdgeConv`.
    """
    def __init__(self, nn: Callable, k: int,
                 aggr: Union[str, Aggregation, None] = 'max',
                 num_workers: int = 1, metric: str = 'euclidean', **kwargs):
        if isinstance(aggr, int) and not isinstance(aggr, bool):
            raise TypeError("BiDynamicEdgeConv(nn, k, aggr, num_workers): "
                            "the third argument is the aggregation, as in "
                            "PyG's DynamicEdgeConv (pass num_workers by "
                            "keyword)")
        if k < 1:
            raise ValueError(f"BiDynamicEdgeConv needs k >= 1 (got {k})")
        if metric not in GRAPH_METRICS:
            raise ValueError(f"BiDynamicEdgeConv: unknown metric {metric!r} "
                             f"(available: {', '.join(GRAPH_METRICS)})")
        if metric == 'hamming' and not (isinstance(nn, BiMLP) and isinstance(
                nn.lins[0], BiLinear)):
            raise ValueError("BiDynamicEdgeConv: metric='hamming' builds the "
                             "graph on the signs that the first layer of "
                             "'nn' takes, so 'nn' must be a BiMLP whose first "
                             "layer is binary (a binary method, first_fp="
                             "False)")
        super().__init__(nn, aggr, **kwargs)
        self.k = k
        self.num_workers = num_workers
        self.metric = metric

    def forward(  # type: ignore[override]
        self,
        x: Union[Tensor, PairTensor],
        batch: Union[OptTensor, Optional[PairTensor]] = None,
    ) -> Tensor:
        x_pair = (x, x) if isinstance(x, Tensor) else x
        b_pair = batch if isinstance(batch, tuple) else (batch, batch)
        for side in range(2):
            check_points(x_pair[side], f'x[{side}]', b_pair[side],
                         where=self.__class__.__name__)
        edge_index = self.knn_graph(x_pair, b_pair)
        return super().forward(x_pair, edge_index)

    def knn_graph(self, x: PairTensor,
                  batch: Tuple[OptTensor, OptTensor]) -> Tensor:
        r"""The :obj:`[2, E]` edges (source in :obj:`x[0]`, target in
        :obj:`x[1]`) from each target to its :math:`k` nearest sources."""
        if self.metric == 'hamming':
            src, dst = (self.codes(t) for t in x)
            return knn_hamming_edges(src, dst, self.k, batch[0], batch[1])
        # Features in a 16-bit autocast dtype: the search runs in float32.
        src, dst = (t.float() if t.element_size() < 4 else t for t in x)
        return knn_edges(src, dst, self.k, batch[0], batch[1],
                         self.num_workers)

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        r"""The packed signs that the first layer of :obj:`nn` takes of
        :obj:`x` as :math:`\mathbf{x}_i` (:obj:`metric="hamming"`)."""
        theta = self.nn.lins[0].input_threshold
        if theta is not None:
            x = x - theta[:x.size(-1)].to(x.dtype)
        return pack_bool(x >= 0)

    def __repr__(self) -> str:
        metric = '' if self.metric == 'euclidean' else \
            f', metric={self.metric!r}'
        return (f'{self.__class__.__name__}(nn={self.nn}, k={self.k}, '
                f'aggr={self.aggr_module}{metric})')
