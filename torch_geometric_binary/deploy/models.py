r"""The packed parts of point-cloud models, and :func:`pack`.

:func:`pack` turns a trained binary model (PointNet, PointNet++, DGCNN, the
segmentation networks, yours) into a
:class:`~torch_geometric_binary.deploy.PackedModel`: a copy of it whose
trained modules are replaced by their packed forms (the T-Nets, set
abstractions and edge convolutions live here, the MLPs, poolings and
normalizations in :mod:`~torch_geometric_binary.deploy.modules`), run by
the model's own forward. The packed modules mirror the trained ones (same
attribute names and calls); their binary layers run as fused
:class:`~torch_geometric_binary.deploy.BinaryChain` operations
(:mod:`~torch_geometric_binary.deploy.fusion`): packed activations between
consecutive binary layers, batch normalization, LSR scale and sign folded
into integer thresholds, and max pooling that feeds a binary layer done as
a bitwise OR with group-size-dependent thresholds.

Where the math needs float values they stay floats: the full-precision
first and last layers; sampling, grouping and neighbour search (on the
float coordinates); the edge features :math:`\mathbf{x}_j - \mathbf{x}_i`
of an edge convolution, whose signs are not a function of the signs of
:math:`\mathbf{x}` (binarized as they are formed,
:meth:`PackedEdgeConv.edge_bits`); and hence the pooled features a
:math:`k`-NN graph is built on (computed exactly from integer dot products,
see :func:`~torch_geometric_binary.deploy.chain.pooled_floats`).
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.nn.conv import EdgeConv, PointNetConv

from torch_geometric_binary.deploy.kernels import cat_bits, edge_diff_bits
from torch_geometric_binary.deploy.fusion import (Deferred, Segment,
                                                  value_bits)
from torch_geometric_binary.deploy.linear import binarize_floats
from torch_geometric_binary.deploy.modules import (PackedGlobalPool,
                                                   PackedMLP, aggr_is_ema,
                                                   check_method, pack_binary)
from torch_geometric_binary.deploy.activations import convert_act
from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    converter,
                                                    converter_for,
                                                    is_part_only,
                                                    register_packed,
                                                    run_converter)
from torch_geometric_binary.nn.aggr import EMAMaxAggregation
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.neighbors import (fps, knn_edges,
                                                 knn_hamming_edges,
                                                 radius_edges)
from torch_geometric_binary.utils.recording import recorded


def _check_children(model: torch.nn.Module, known: Sequence[str]):
    for name, child in model.named_children():
        if name not in known and child is not None:
            raise TypeError(f"pack: {type(model).__name__}.{name} is a "
                            f"{type(child).__name__}, which pack does not "
                            f"know")


def _mlp(module, where: str, fp_dtype, epilogue_dtype,
         classifier: bool = False) -> PackedMLP:
    r"""Packs a BiMLP of a model. :obj:`fp_dtype` applies to the
    classifier only: a full-precision layer whose output is binarized later
    (a first layer, a T-Net transform) stays float32, as rounding its
    weights would move the signs after it."""
    return PackedMLP.from_bimlp(module,
                                fp_dtype if classifier else torch.float32,
                                epilogue_dtype, where)


def _act(module, where: str) -> torch.nn.Module:
    return convert_act(module, where)


def theta_of(mlp: PackedMLP, start: int = 0,
             stop: Optional[int] = None) -> Optional[Tensor]:
    r"""The learned input threshold of :obj:`mlp`'s first layer (RSign)
    for its input channels :obj:`start` to :obj:`stop`, or :obj:`None`."""
    theta = getattr(mlp.lins[0], 'input_threshold', None)
    return None if theta is None else theta[start:stop]


def _binarize(x: Tensor, mlp: PackedMLP, start: int = 0) -> Tensor:
    r"""Packed signs of float features that :obj:`mlp`'s first layer reads
    as its input channels :obj:`start`, ... (against its learned
    thresholds, if any)."""
    return binarize_floats(x, theta_of(mlp, start, start + x.size(-1)))


def _sorted_groups(index: Tensor, num_groups: int
                   ) -> Tuple[Optional[Tensor], Tensor]:
    r"""A permutation that makes :obj:`index` non-decreasing (:obj:`None`
    if it already is), and the group sizes."""
    counts = torch.bincount(index, minlength=num_groups)
    if index.numel() > 1 and bool((index[1:] < index[:-1]).any()):
        return torch.argsort(index, stable=True), counts
    return None, counts


# --------------------------------------------------------------------------
# PointNet.

@register_packed
class PackedTNet(torch.nn.Module):
    r"""A packed PointNet transform network."""
    def __init__(self, k: int, point_mlp: PackedMLP, pool: PackedGlobalPool,
                 act: torch.nn.Module, head: PackedMLP):
        super().__init__()
        self.k = k
        self.point_mlp = point_mlp
        self.pool = pool
        self.act = act
        self.head = head

    @classmethod
    def from_tnet(cls, tnet, where, fp_dtype, epilogue_dtype):
        _check_children(tnet, ('point_mlp', 'pool', 'act', 'head'))
        return cls(tnet.k,
                   _mlp(tnet.point_mlp, f'{where}.point_mlp', fp_dtype,
                        epilogue_dtype),
                   PackedGlobalPool.from_function(tnet.pool, f'{where}.pool'),
                   _act(tnet.act, f'{where}.act'),
                   _mlp(tnet.head, f'{where}.head', fp_dtype, epilogue_dtype))

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return {'k': self.k}, {}, {k: getattr(self, k) for k in
                                   ('point_mlp', 'pool', 'act', 'head')}

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedTNet':
        return cls(attrs['k'], **children)

    def fix_num_points(self, n: int) -> 'PackedTNet':
        r"""Specializes the pooling to clouds of exactly :obj:`n` points
        (see :meth:`PackedMLP.fix_pool_size`)."""
        self.point_mlp.fix_pool_size(n, self.pool.ema, self.act,
                                     theta_of(self.head),
                                     'PackedTNet.point_mlp')
        return self

    def forward(self, x: Tensor, batch: Tensor, size: int) -> Tensor:
        out = self.act(self.point_mlp.max_pool(x, batch, size,
                                               self.pool.ema))
        return self.head(out).view(-1, self.k, self.k)


# --------------------------------------------------------------------------
# PointNet++.

@register_packed
class PackedPointConv(PointNetConv):
    r"""A packed :class:`~torch_geometric_binary.nn.BiPointConv`: PyG's
    :class:`~torch_geometric.nn.conv.PointNetConv` with a packed local MLP
    (its float path, for :meth:`forward`)."""
    def __init__(self, local_nn: PackedMLP, global_nn: torch.nn.Module,
                 ema: bool):
        aggr = EMAMaxAggregation() if ema else 'max'
        super().__init__(local_nn, global_nn, add_self_loops=False,
                         aggr=aggr)
        self.ema = ema

    @classmethod
    def from_conv(cls, conv, where, fp_dtype, epilogue_dtype):
        if not isinstance(conv, PointNetConv) or conv.add_self_loops:
            raise TypeError(f"pack: {where} is a {type(conv).__name__}; "
                            f"expected a BiPointConv without self-loops")
        ema = aggr_is_ema(conv.aggr_module, f'{where}.aggr')
        return cls(_mlp(conv.local_nn, f'{where}.local_nn', fp_dtype,
                        epilogue_dtype),
                   _act(conv.global_nn, f'{where}.global_nn'), ema)

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'ema': self.ema}, {},
                {'local_nn': self.local_nn, 'global_nn': self.global_nn})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedPointConv':
        return cls(children['local_nn'], children['global_nn'],
                   attrs['ema'])


@register_packed
class PackedSetAbstraction(torch.nn.Module):
    r"""A packed PointNet++ set abstraction level."""
    def __init__(self, ratio: float, r: float, max_num_neighbors: int,
                 conv: PackedPointConv):
        super().__init__()
        self.ratio = ratio
        self.r = r
        self.max_num_neighbors = max_num_neighbors
        self.conv = conv

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'ratio': self.ratio, 'r': self.r,
                 'max_num_neighbors': self.max_num_neighbors}, {},
                {'conv': self.conv})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]
                           ) -> 'PackedSetAbstraction':
        return cls(attrs['ratio'], attrs['r'], attrs['max_num_neighbors'],
                   children['conv'])

    def edge_inputs(self, x: Optional[Tensor], pos: Tensor, batch: Tensor
                    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""What :obj:`local_nn` reads on the edges :math:`(j, i)` (sorted
        by centre :math:`i`, :func:`grouped_edges`): :obj:`[x_j, pos_j -
        pos_i]`, as packed signs where :obj:`x` is packed or its first
        layer is binary and :obj:`x` is a pending value of the packed layers
        before (then straight from their chain), else as floats; the centre
        of each edge, the group sizes, and the centres' positions and batch
        vector."""
        j, i, counts, pos_dst, batch_dst = grouped_edges(
            pos, batch, self.ratio, self.r, self.max_num_neighbors)
        C, theta = 0, None
        if x is not None:
            nn = self.conv.local_nn
            C = nn.in_channels - pos.size(1)
            if isinstance(x, Deferred) and nn.is_binary(0):
                x = value_bits(nn, 0, x, theta_of(nn, 0, C))
            theta = theta_of(nn, C, nn.in_channels)
        msg = edge_messages(x, C, pos, pos_dst, j, i, theta)
        return msg, i, counts, pos_dst, batch_dst

    def forward(self, x: Optional[Tensor], pos: Tensor,
                batch: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r"""PointNetConv's result on the sampled centres: the (EMA) max
        over each centre :math:`i`'s neighbours :math:`j` of
        :obj:`local_nn([x_j, pos_j - pos_i])` (pooled by
        :meth:`PackedMLP.pool_groups`), then :obj:`global_nn`."""
        msg, i, counts, pos, batch = self.edge_inputs(x, pos, batch)
        conv = self.conv
        out = conv.local_nn.pool_groups(msg, i, counts, conv.ema)
        return conv.global_nn(out), pos, batch


@recorded
def grouped_edges(pos: Tensor, batch: Tensor, ratio: float, r: float,
                  max_num_neighbors: int
                  ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""A set abstraction's groups: the edges :obj:`(j, i)` from the points
    within :obj:`r` of each centre (farthest point sampling from the first
    point, as in evaluation), sorted by centre :math:`i`, the edges of each
    centre, :obj:`counts`, and the centres' positions and batch vector. One
    step of a recorded forward (the number of edges depends on the
    points)."""
    idx = fps(pos, batch, ratio, random_start=False)
    # index_select: ATen's advanced indexing costs twice as much on these
    # small tensors, and batch-1 inference is made of them.
    pos_dst, batch_dst = pos.index_select(0, idx), batch.index_select(0, idx)
    edge_index = radius_edges(pos, pos_dst, r, batch, batch_dst,
                              max_num_neighbors)
    perm, counts = _sorted_groups(edge_index[1], idx.numel())
    if perm is not None:
        edge_index = edge_index.index_select(1, perm)
    return edge_index[0], edge_index[1], counts, pos_dst, batch_dst


@recorded
def edge_messages(x: Optional[Tensor], channels: int, pos: Tensor,
                  pos_dst: Tensor, j: Tensor, i: Tensor,
                  theta: Optional[Tensor]) -> Tensor:
    r"""The rows :obj:`[x_j, pos_j - pos_i]` of the edges :obj:`(j, i)`
    (as :obj:`PointNetConv.message`): floats, or packed signs where
    :obj:`x` holds the packed signs of :obj:`channels` channels (the
    offsets' signs then against :obj:`theta`). One step of a recorded
    forward."""
    msg = pos.index_select(0, j) - pos_dst.index_select(0, i)
    if x is None:
        return msg
    x_j = x.index_select(0, j)
    if x.is_floating_point():
        return torch.cat([x_j, msg], dim=1)
    return cat_bits([(x_j, channels),
                     (binarize_floats(msg, theta), msg.size(1))])


# --------------------------------------------------------------------------
# DGCNN.

@register_packed
class PackedEdgeConv(EdgeConv):
    r"""A packed :class:`~torch_geometric_binary.nn.BiDynamicEdgeConv`:
    PyG's :class:`~torch_geometric.nn.conv.EdgeConv` with a packed MLP on
    the :math:`k`-NN graph of its input, by Euclidean distance or, with
    :obj:`metric="hamming"`, by XOR and popcount on the packed signs its
    first layer reads."""
    def __init__(self, nn: PackedMLP, k: int, ema: bool,
                 num_workers: int = 1, metric: str = 'euclidean'):
        super().__init__(nn, aggr=EMAMaxAggregation() if ema else 'max')
        self.k = k
        self.ema = ema
        self.num_workers = num_workers
        self.metric = metric

    @classmethod
    def from_conv(cls, conv, where, fp_dtype, epilogue_dtype):
        from torch_geometric_binary.nn.conv import BiDynamicEdgeConv
        if not isinstance(conv, BiDynamicEdgeConv):
            raise TypeError(f"pack: {where} is a {type(conv).__name__}; "
                            f"expected a BiDynamicEdgeConv")
        return cls(_mlp(conv.nn, f'{where}.nn', fp_dtype, epilogue_dtype),
                   conv.k, aggr_is_ema(conv.aggr_module, f'{where}.aggr'),
                   conv.num_workers, conv.metric)

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'k': self.k, 'ema': self.ema,
                 'num_workers': self.num_workers, 'metric': self.metric}, {},
                {'nn': self.nn})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedEdgeConv':
        # Files written before the Hamming graph have no 'metric'.
        return cls(children['nn'], attrs['k'], attrs['ema'],
                   attrs['num_workers'], attrs.get('metric', 'euclidean'))

    def codes(self, x: Tensor) -> Tensor:
        r"""The packed signs the first (binary) layer of :obj:`nn` takes of
        :obj:`x` as :math:`\mathbf{x}_i`."""
        return _binarize(x, self.nn)

    def graph(self, x: Tensor, batch: Tensor, codes: Optional[Tensor] = None
              ) -> Tuple[Tensor, Tensor, Tensor, bool]:
        r"""The :math:`k`-NN edges :math:`(j, i)` on :obj:`x` (on its
        :meth:`codes`, given or computed, for :obj:`metric="hamming"`),
        sorted by target :math:`i`, the group sizes, and whether every point
        has exactly :math:`k` neighbours (then the edges of point :math:`i`
        are rows :math:`ik, \ldots, ik + k - 1`)."""
        if self.metric == 'hamming':
            codes = self.codes(x) if codes is None else codes
            edge_index = knn_hamming_edges(codes, codes, self.k, batch,
                                           batch)
        else:
            edge_index = knn_edges(x, x, self.k, batch, batch,
                                   self.num_workers)
        perm, counts = _sorted_groups(edge_index[1], x.size(0))
        if perm is not None:
            edge_index = edge_index.index_select(1, perm)
        uniform = edge_index.size(1) == self.k * x.size(0)
        return edge_index[0], edge_index[1], counts, uniform

    @staticmethod
    def messages(x: Tensor, j: Tensor, i: Tensor, uniform: bool) -> Tensor:
        r"""EdgeConv's messages :math:`[\mathbf{x}_i, \mathbf{x}_j -
        \mathbf{x}_i]` (the float inputs of a full-precision first
        layer)."""
        x_j = x.index_select(0, j)
        if not uniform:
            x_i = x.index_select(0, i)
            return torch.cat([x_i, x_j - x_i], dim=-1)
        n, C = x.shape
        x_i = x.unsqueeze(1).expand(n, j.numel() // n, C)
        return torch.cat([x_i, x_j.view_as(x_i) - x_i],
                         dim=-1).view(j.numel(), 2 * C)

    def edge_bits(self, x: Tensor, j: Tensor, i: Tensor, uniform: bool,
                  codes: Optional[Tensor] = None) -> Tensor:
        r"""The packed signs of the messages that the binary first layer of
        :obj:`nn` reads, without the float messages: the signs of
        :math:`\mathbf{x}_i` once per point, the differences (the same
        float subtraction as :class:`~torch_geometric.nn.conv.EdgeConv`)
        binarized as they are formed."""
        n, C = x.shape
        if uniform:
            diff_bits = edge_diff_bits(x, j, j.numel() // n,
                                       theta_of(self.nn, C, 2 * C))
        else:
            diff_bits = _binarize(x.index_select(0, j) - x.index_select(0, i),
                                  self.nn, C)
        codes = self.codes(x) if codes is None else codes
        return cat_bits([(codes.index_select(0, i), C), (diff_bits, C)])

    def edge_inputs(self, x: Tensor, batch: Tensor
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        r"""What :obj:`nn` reads on the :math:`k`-NN graph of :obj:`x`
        (packed signs where its first layer is binary, else the float
        messages), the target of each edge and the group sizes."""
        codes = self.codes(x) if self.nn.is_binary(0) else None
        j, i, counts, uniform = self.graph(x, batch, codes)
        if codes is not None:
            return self.edge_bits(x, j, i, uniform, codes), i, counts
        return self.messages(x, j, i, uniform), i, counts

    def forward(self, x: Tensor, batch: Tensor) -> Tensor:  # type: ignore
        r"""EdgeConv's result on the :math:`k`-NN graph of :obj:`x`: the
        (EMA) max over each point's neighbours :math:`j` of
        :obj:`nn([x_i, x_j - x_i])`, pooled by :meth:`PackedMLP.pool`."""
        if isinstance(x, Deferred):
            x = x.value()
        msg, i, _ = self.edge_inputs(x, batch)
        return self.nn.pool(msg, i, x.size(0), self.ema)

    def __repr__(self) -> str:
        metric = '' if self.metric == 'euclidean' else \
            f', metric={self.metric!r}'
        return (f'{self.__class__.__name__}(nn={self.nn}, k={self.k}, '
                f'ema={self.ema}{metric})')


# --------------------------------------------------------------------------
# Converters (what pack() calls for each trained class).

def _any_size(model: torch.nn.Module, num_points: Optional[int]):
    if num_points is not None:
        raise ValueError(f"pack: 'num_points' (a fixed cloud size) is "
                         f"supported for PointNet only (got a "
                         f"{type(model).__name__})")


@converter(BiMLP)
def _pack_bimlp(model, fp_dtype, epilogue_dtype, num_points,
                where='BiMLP'):
    _any_size(model, num_points)
    return PackedMLP.from_bimlp(model, fp_dtype, epilogue_dtype, where)


@converter(BiLinear)
def _pack_bilinear(model, fp_dtype, epilogue_dtype, num_points,
                   where='BiLinear'):
    _any_size(model, num_points)
    check_method(model.method, where)
    return pack_binary(model, None, None, 'float', epilogue_dtype)


def pack(model: torch.nn.Module, fp_dtype: torch.dtype = torch.float32,
         epilogue_dtype: torch.dtype = torch.float32,
         num_points: Optional[int] = None) -> torch.nn.Module:
    r"""Packs a trained binary model for bit-packed inference.

    Binary weights are stored as bits (:obj:`int64` words along the input
    channels); batch normalization, LSR scale and the sign are folded into
    integer thresholds wherever the next layer is binary; the
    full-precision first and last layers are kept (stored in
    :obj:`fp_dtype`, computed in float32). The result gives the same
    outputs as :obj:`model` in inference mode (float32 storage; exactly for
    PointNet, up to float rounding in the logits otherwise).

    A model becomes a :class:`~torch_geometric_binary.deploy.PackedModel`
    (:func:`~torch_geometric_binary.deploy.pack_modules`): a copy of it
    whose trained submodules with a converter
    (:func:`~torch_geometric_binary.deploy.converter`) are replaced by
    their packed forms and whose own :meth:`forward` runs unchanged, its
    packed MLPs fused into chains (see
    :mod:`~torch_geometric_binary.deploy.generic`). A submodule with
    parameters or buffers that no converter packs raises a
    :class:`TypeError` naming its path. Models of the package save and
    load; :obj:`fp_dtype` applies to the model's classifier (:obj:`head`),
    other full-precision layers stay float32, and :obj:`num_points` is for
    PointNet. A single :class:`~torch_geometric_binary.nn.BiMLP` becomes a
    :class:`~torch_geometric_binary.deploy.PackedMLP`, a
    :class:`~torch_geometric_binary.nn.BiLinear` a
    :class:`~torch_geometric_binary.deploy.PackedBiLinear` with float
    output.

    Args:
        model (torch.nn.Module): A trained binary model (see above), in
            any mode (the packed model always runs in inference mode).
        fp_dtype (torch.dtype, optional): Storage type of the
            full-precision classifier (the last layer, computed in float32;
            :obj:`torch.float16` halves it, its logits then differ
            slightly). Full-precision layers whose outputs are binarized
            later (first layers, T-Net transforms) stay float32: rounding
            their weights would flip signs. For a single
            :class:`~torch_geometric_binary.nn.BiMLP`, it applies to all
            its full-precision layers. (default: :obj:`torch.float32`)
        epilogue_dtype (torch.dtype, optional): Storage type of the
            per-channel float tails that stay float (before a pooling or a
            full-precision layer); :obj:`torch.float16` is approximate.
            (default: :obj:`torch.float32`)
        num_points (int, optional): For a PointNet deployed on clouds of
            one size: specializes every pooling to clouds of exactly this
            many points. The layers before the poolings then store integer
            thresholds (which fold in :math:`\delta(n)`) instead of float
            tails, so the file is smaller and the outputs stay exact; other
            cloud sizes raise a :class:`ValueError`. (default: :obj:`None`:
            any size)

    Raises:
        TypeError: for a model, layer, normalization, activation or pooling
            that :func:`pack` does not know (naming its path and class), and
            for a model without binary layers.
        ValueError: for full-precision models (method :obj:`"fp"`) and
            methods whose input binarizer is not the sign.
    """
    for t in (fp_dtype, epilogue_dtype):
        if t not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"pack: storage dtypes must be float32, float16 "
                             f"or bfloat16 (got {t})")
    convert = converter_for(model)
    cls = type(model)
    if convert is not None and not is_part_only(model):
        return run_converter(convert, model, fp_dtype, epilogue_dtype,
                             num_points, cls.__name__)
    if convert is not None:
        raise TypeError(f"pack: cannot pack a {cls.__module__}."
                        f"{cls.__qualname__} alone: it is full precision "
                        f"(pack keeps such layers inside binary models)")
    from torch_geometric_binary.deploy.generic import pack_modules
    return pack_modules(model, fp_dtype, epilogue_dtype, num_points)


__all__ = [
    'pack',
    'PackedTNet',
    'PackedSetAbstraction',
    'PackedPointConv',
    'PackedEdgeConv',
    'Segment',
    'cat_bits',
]
