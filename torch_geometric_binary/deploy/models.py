r"""Packed binary point-cloud models: :func:`pack` turns a trained binary
:class:`~torch_geometric_binary.nn.models.PointNet` or
:class:`~torch_geometric_binary.nn.models.PointNet2` into a hand-fused
inference module, and every other model (DGCNN, the segmentation networks,
yours) into a :class:`~torch_geometric_binary.deploy.PackedModel` of its
packed parts (the packed set abstractions, edge convolutions and T-Nets
live here).

Each packed model mirrors its trained model one to one (same attribute
names, :class:`~torch_geometric_binary.deploy.modules.PackedMLP` for every
:class:`~torch_geometric_binary.nn.BiMLP`) and has two forward paths with
the same results:

* :meth:`forward` runs the binary layers as
  :class:`~torch_geometric_binary.deploy.BinaryChain` operations: packed
  activations between consecutive binary layers, batch normalization, LSR
  scale and sign folded into integer thresholds, and max pooling that feeds
  a binary layer done as a bitwise OR with group-size-dependent thresholds.
* :meth:`forward_layers` runs the packed modules one at a time in the
  trained model's order, with float outputs where the trained model has
  them (for comparisons module by module).

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

from torch_geometric_binary.deploy.chain import NonFiniteInput, PoolTable
from torch_geometric_binary.deploy.kernels import cat_bits
from torch_geometric_binary.deploy.io import num_bytes
from torch_geometric_binary.deploy.fusion import (Deferred, NotFusable,
                                                  Segment, value_bits,
                                                  bits_layer)
from torch_geometric_binary.deploy.linear import (PackedBiLinear,
                                                  binarize_floats)
from torch_geometric_binary.deploy.modules import (PackedGlobalPool,
                                                   PackedMLP, aggr_is_ema,
                                                   check_method, pack_binary)
from torch_geometric_binary.deploy.activations import convert_act
from torch_geometric_binary.deploy.threads import run_with_policy
from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    converter,
                                                    converter_for,
                                                    is_part_only,
                                                    register_packed,
                                                    run_converter)
from torch_geometric_binary.nn.aggr import EMAMaxAggregation, check_clouds
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.models import PointNet, PointNet2
from torch_geometric_binary.nn.models.common import PointCloudClassifier
from torch_geometric_binary.nn.models.pointnet import apply_transform
from torch_geometric_binary.nn.neighbors import fps, knn_edges, radius_edges
from torch_geometric_binary.utils import check_points


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


def _bits_between(first: PackedMLP, second: PackedMLP):
    r"""Where a binary layer ends :obj:`first` and only the binary first
    layer of :obj:`second` reads it, it outputs packed bits (and keeps no
    float tail); its thresholds fold the second's input threshold."""
    if isinstance(first.lins[-1], PackedBiLinear) and second.is_binary(0):
        first.lins[-1] = bits_layer(first.lins[-1], theta_of(second))


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


class _PackedClassifier(torch.nn.Module):
    r"""The packed twin of
    :class:`~torch_geometric_binary.nn.models.common.PointCloudClassifier`:
    the per-point feature modules named in :attr:`PARTS`, a max over each
    cloud (:obj:`pool`), the activation (:obj:`act`) and the classifier
    (:obj:`head`); chains built lazily, input checks.

    A subclass names its :attr:`PARTS`, packs them from the trained model
    (:meth:`pack_parts`), and runs them as chains (:meth:`_forward`) and
    module by module (:meth:`point_features`)."""
    PARTS: Tuple[str, ...] = ()

    def __init__(self, num_classes: int, in_channels: int,
                 pool: PackedGlobalPool, act: torch.nn.Module,
                 head: PackedMLP, **parts: Optional[torch.nn.Module]):
        super().__init__()
        if set(parts) != set(self.PARTS):
            raise TypeError(f"{self.__class__.__name__} takes the parts "
                            f"{self.PARTS} (got {tuple(parts)})")
        self.num_classes = num_classes
        self.in_channels = in_channels
        for name in self.PARTS:
            setattr(self, name, parts[name])
        self.pool = pool
        self.act = act
        self.head = head
        self._segments = None

    @classmethod
    def child_names(cls) -> Tuple[str, ...]:
        return cls.PARTS + ('pool', 'act', 'head')

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'num_classes': self.num_classes,
                 'in_channels': self.in_channels}, {},
                {k: getattr(self, k) for k in self.child_names()})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]):
        # Parts added later (place_acts) are absent from older files.
        return cls(attrs['num_classes'], attrs['in_channels'],
                   **{k: children.get(k) for k in cls.child_names()})

    @classmethod
    def from_model(cls, model: torch.nn.Module,
                   fp_dtype: torch.dtype = torch.float32,
                   epilogue_dtype: torch.dtype = torch.float32):
        where = type(model).__name__
        check_method(model.method, where)
        _check_children(model, cls.child_names())
        args = (fp_dtype, epilogue_dtype)
        return cls(model.num_classes, model.in_channels,
                   PackedGlobalPool.from_function(model.pool, f'{where}.pool'),
                   _act(model.act, f'{where}.act'),
                   _mlp(model.head, f'{where}.head', *args, classifier=True),
                   **cls.pack_parts(model, where, *args))

    @classmethod
    def pack_parts(cls, model: torch.nn.Module, where: str,
                   fp_dtype: torch.dtype, epilogue_dtype: torch.dtype
                   ) -> Dict[str, Optional[torch.nn.Module]]:
        r"""The packed :attr:`PARTS` of the trained :obj:`model`."""
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        self._segments = None  # Derived tensors follow the module.
        return super()._apply(fn, *args, **kwargs)

    def segments(self):
        r"""The chains of :meth:`forward` (built on first use), or
        :obj:`False` where the layers cannot be chained (then
        :meth:`forward` runs :meth:`forward_layers`)."""
        if self._segments is None:
            try:
                self._segments = self._build_segments()
            except NotFusable:
                self._segments = False
        return self._segments

    def _build_segments(self):
        raise NotImplementedError

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                x: Optional[Tensor] = None) -> Tensor:
        r"""Logits of each cloud, :obj:`[num_clouds, num_classes]`."""
        if torch.is_grad_enabled():  # Cheaper than a decorator at batch 1.
            with torch.no_grad():
                return self.forward(pos, batch, x)
        seg = self.segments()
        if seg is False:
            return self.forward_layers(pos, batch, x)
        self._check_fast(pos, batch, x)
        try:
            # Small inputs on one thread (see deploy.threads).
            return run_with_policy(lambda: self._forward(seg, pos, batch, x),
                                   pos.size(0))
        except NonFiniteInput:
            # Non-finite coordinates: the error of the trained model.
            check_points(pos, 'pos', batch, where=self.__class__.__name__)
            raise

    def _forward(self, seg, pos: Tensor, batch: Optional[Tensor],
                 x: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    #: The trained model's :obj:`point_features` with the packed modules:
    #: per-point features and their batch vector. The packed modules mirror
    #: the trained ones (names, calls), so subclasses take the trained
    #: model's own :obj:`point_inputs` and :obj:`POINT_MLP`.
    point_features = PointCloudClassifier.point_features

    @torch.no_grad()
    def forward_layers(self, pos: Tensor, batch: Optional[Tensor] = None,
                       x: Optional[Tensor] = None) -> Tensor:
        r"""The trained model's forward with the packed modules, one at a
        time (float outputs where the trained model has them, for
        comparisons module by module)."""
        batch, size = self._check(pos, batch, x)
        h, batch = self.point_features(pos, batch, x, size)
        return self.head(self.act(self.pool(h, batch, size)))

    def _check(self, pos: Tensor, batch: Optional[Tensor],
               x: Optional[Tensor]) -> Tuple[Tensor, int]:
        name = self.__class__.__name__
        check_points(pos, 'pos', batch, where=name)
        if pos.size(1) != 3:
            raise ValueError(f"{name}: 'pos' must be a [num_points, 3] "
                             f"matrix (got shape {tuple(pos.shape)})")
        if x is not None and (x.dim() != 2 or x.size(0) != pos.size(0)):
            raise ValueError(f"{name}: 'x' must be a [{pos.size(0)}, "
                             f"{self.in_channels}] matrix (got shape "
                             f"{tuple(x.shape)})")
        if (x.size(-1) if x is not None else 0) != self.in_channels:
            raise ValueError(f"{name} was packed for {self.in_channels} "
                             f"point features besides the coordinates")
        if batch is None:
            batch = torch.zeros(pos.size(0), dtype=torch.long,
                                device=pos.device)
        return batch, int(batch.max()) + 1

    def _check_fast(self, pos: Tensor, batch: Optional[Tensor],
                    x: Optional[Tensor]):
        # Shapes only: non-finite values surface as NonFiniteInput in the
        # first chain (whose float thresholds need finite values), and
        # forward() then reports them as check_points does.
        if pos.dim() != 2 or pos.size(0) == 0 or pos.size(1) != 3 or not \
                pos.is_floating_point() or (
                    batch is not None and batch.numel() != pos.size(0)) \
                or x is not None or self.in_channels:
            self._check(pos, batch, x)

    def num_bytes(self) -> int:
        r"""The bytes :func:`~torch_geometric_binary.deploy.save` stores
        for the model's tensors."""
        return num_bytes(self)


def fix_pool_size(mlp: PackedMLP, pool: PackedGlobalPool,
                  act: Optional[torch.nn.Module], n: int,
                  where: str, head: PackedMLP) -> PackedGlobalPool:
    r"""Specializes a global pooling of :obj:`mlp`'s binary last layer
    (followed by :obj:`act` and :obj:`head`) to groups of :obj:`n` points:
    replaces the layer by its :meth:`PoolTable.fixed_layer` (in place) and
    returns the pooling of its bits."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"pack: 'num_points' must be a positive integer "
                         f"(got {n!r})")
    if pool.num_points is not None:
        if pool.num_points != n:
            raise ValueError(f"pack: {where} is already specialized to "
                             f"{pool.num_points} points")
        return pool
    layer = mlp.lins[-1]
    if not isinstance(layer, PackedBiLinear) or layer.epilogue is None:
        raise ValueError(f"pack: num_points needs a binary layer before the "
                         f"pooling ({where} ends with a "
                         f"{type(layer).__name__})")
    mlp.lins[-1] = PoolTable(layer, pool.ema, act,
                             theta=theta_of(head)).fixed_layer(n)
    return PackedGlobalPool(pool.ema, n, layer.out_channels)


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

    def segment(self) -> Segment:
        return Segment([self.point_mlp], [self.head], True, self.pool.ema,
                       self.act, pool_size=self.pool.num_points)

    def fix_num_points(self, n: int):
        r"""Specializes the pooling to clouds of :obj:`n` points (see
        :func:`fix_pool_size`)."""
        self.pool = fix_pool_size(self.point_mlp, self.pool, self.act, n,
                                  'PackedTNet.point_mlp', self.head)

    def forward(self, x: Tensor, batch: Tensor, size: int) -> Tensor:
        out = self.act(self.pool(self.point_mlp(x), batch, size))
        return self.head(out).view(-1, self.k, self.k)


@register_packed
class PackedPointNet(_PackedClassifier):
    r"""A packed binary :class:`~torch_geometric_binary.nn.models.PointNet`
    (with or without T-Nets). Build it with :func:`pack`."""
    PARTS = ('input_tnet', 'mlp1', 'feature_tnet', 'mlp2')

    @classmethod
    def pack_parts(cls, model, where, fp_dtype, epilogue_dtype):
        args = (fp_dtype, epilogue_dtype)

        def tnet(name):
            t = getattr(model, name)
            return None if t is None else PackedTNet.from_tnet(
                t, f'{where}.{name}', *args)
        mlp1 = _mlp(model.mlp1, f'{where}.mlp1', *args)
        mlp2 = _mlp(model.mlp2, f'{where}.mlp2', *args)
        if model.feature_tnet is None:
            _bits_between(mlp1, mlp2)
        return dict(input_tnet=tnet('input_tnet'), mlp1=mlp1,
                    feature_tnet=tnet('feature_tnet'), mlp2=mlp2)

    def _build_segments(self):
        seg = {}
        if self.input_tnet is not None:
            seg['input_tnet'] = self.input_tnet.segment()
        if self.feature_tnet is None:
            seg['main'] = Segment([self.mlp1, self.mlp2], [self.head], True,
                                  self.pool.ema, self.act, fuse_last=True,
                                  pool_size=self.pool.num_points)
        else:
            seg['mlp1'] = Segment([self.mlp1], out='float')
            seg['feature_tnet'] = self.feature_tnet.segment()
            seg['main'] = Segment([self.mlp2], [self.head], True,
                                  self.pool.ema, self.act, fuse_last=True,
                                  pool_size=self.pool.num_points)
        return seg

    @property
    def num_points(self) -> Optional[int]:
        r"""The cloud size the model was specialized to
        (:obj:`pack(..., num_points=n)`), or :obj:`None` (any size)."""
        return self.pool.num_points

    def fix_num_points(self, n: int) -> 'PackedPointNet':
        r"""Specializes every pooling (T-Nets included) to clouds of exactly
        :obj:`n` points: the pooled layers store integer thresholds instead
        of their float epilogues (smaller files), and clouds of other sizes
        raise a :class:`ValueError`. The outputs stay exact."""
        for tnet in (self.input_tnet, self.feature_tnet):
            if tnet is not None:
                tnet.fix_num_points(n)
        self.pool = fix_pool_size(self.mlp2, self.pool, self.act, n,
                                  'PackedPointNet.mlp2', self.head)
        self._segments = None
        return self

    def _forward(self, seg, pos: Tensor, batch: Optional[Tensor],
                 x: Optional[Tensor]) -> Tensor:
        if batch is None:  # One cloud.
            counts = pos.size(0)
            if self.input_tnet is not None or self.feature_tnet is not None:
                batch = torch.zeros(pos.size(0), dtype=torch.long)
        else:
            size = int(batch.max()) + 1
            perm, counts = _sorted_groups(batch, size)
            if bool((counts == 0).any()):
                empty = (counts == 0).nonzero().view(-1).tolist()[:10]
                raise ValueError(f"PackedPointNet: cloud(s) {empty} of "
                                 f"{size} have no points")
            if perm is not None:  # Points are independent up to the pool.
                pos, batch = pos[perm], batch[perm]
                x = None if x is None else x[perm]
        if self.input_tnet is not None:
            transform = seg['input_tnet'](pos, counts).view(-1, 3, 3)
            pos = apply_transform(pos, transform, batch)
        h = pos if x is None else torch.cat([pos, x], dim=-1)
        if self.feature_tnet is not None:
            h = seg['mlp1'](h)
            k = self.feature_tnet.k
            transform = seg['feature_tnet'](h, counts).view(-1, k, k)
            h = apply_transform(h, transform, batch)
        return seg['main'](h, counts)

    POINT_MLP = PointNet.POINT_MLP
    point_inputs = PointNet.point_inputs


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

    def graph(self, pos: Tensor, batch: Tensor):
        r"""Centres (sampled from the first point, as in evaluation) and
        edges :obj:`(j, i)` sorted by centre :math:`i`."""
        idx = fps(pos, batch, self.ratio, random_start=False)
        edge_index = radius_edges(pos, pos[idx], self.r, batch, batch[idx],
                                  self.max_num_neighbors)
        return idx, edge_index

    def edge_inputs(self, x: Optional[Tensor], pos: Tensor, batch: Tensor
                    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""What :obj:`local_nn` reads on the edges :math:`(j, i)` (sorted
        by centre :math:`i`): :obj:`[x_j, pos_j - pos_i]`, as packed signs
        where :obj:`x` is packed or its first layer is binary and :obj:`x`
        is a pending value of the packed layers before (then straight from
        their chain), else as floats; the centre of each edge, the group
        sizes, and the centres' positions and batch vector."""
        idx, edge_index = self.graph(pos, batch)
        pos_dst = pos[idx]
        perm, counts = _sorted_groups(edge_index[1], idx.numel())
        if perm is not None:
            edge_index = edge_index[:, perm]
        j, i = edge_index[0], edge_index[1]
        msg = pos[j] - pos_dst[i]  # As PointNetConv.message.
        if x is not None:
            nn = self.conv.local_nn
            C = nn.in_channels - pos.size(1)
            if isinstance(x, Deferred) and nn.is_binary(0):
                x = value_bits(nn, 0, x, theta_of(nn, 0, C))
            if x.is_floating_point():
                msg = torch.cat([x[j], msg], dim=1)
            else:  # Packed features: concatenate the sign bits.
                msg = cat_bits([(x[j], C),
                                (_binarize(msg, nn, C), msg.size(1))])
        return msg, i, counts, pos_dst, batch[idx]

    def forward(self, x: Optional[Tensor], pos: Tensor,
                batch: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r"""PointNetConv's result on the sampled centres: the (EMA) max
        over each centre :math:`i`'s neighbours :math:`j` of
        :obj:`local_nn([x_j, pos_j - pos_i])` (pooled by
        :meth:`PackedMLP.pool`), then :obj:`global_nn`."""
        msg, i, counts, pos, batch = self.edge_inputs(x, pos, batch)
        conv = self.conv
        out = conv.local_nn.pool(msg, i, counts.numel(), conv.ema)
        return conv.global_nn(out), pos, batch


@register_packed
class PackedPointNet2(_PackedClassifier):
    r"""A packed binary
    :class:`~torch_geometric_binary.nn.models.PointNet2`. Build it with
    :func:`pack`."""
    PARTS = ('sa1', 'sa2', 'global_mlp')

    @classmethod
    def pack_parts(cls, model, where, fp_dtype, epilogue_dtype):
        args = (fp_dtype, epilogue_dtype)

        def sa(name):
            m = getattr(model, name)
            _check_children(m, ('conv', ))
            return PackedSetAbstraction(
                m.ratio, m.r, m.max_num_neighbors,
                PackedPointConv.from_conv(m.conv, f'{where}.{name}.conv',
                                          *args))
        return dict(sa1=sa('sa1'), sa2=sa('sa2'),
                    global_mlp=_mlp(model.global_mlp, f'{where}.global_mlp',
                                    *args))

    def _build_segments(self):
        c1, c2 = self.sa1.conv, self.sa2.conv
        return {
            'sa1': Segment([c1.local_nn], [], True, c1.ema, c1.global_nn,
                           pool_theta=theta_of(
                               c2.local_nn, 0, c1.local_nn.out_channels)),
            'sa2': Segment([c2.local_nn], [], True, c2.ema, c2.global_nn,
                           pool_theta=theta_of(
                               self.global_mlp, 0,
                               c2.local_nn.out_channels)),
            'global': Segment([self.global_mlp], [self.head], True,
                              self.pool.ema, self.act, fuse_last=True),
        }

    @staticmethod
    def _level(sa: PackedSetAbstraction, seg: Segment, x: Optional[Tensor],
               pos: Tensor, batch: Tensor):
        msg, _, counts, pos, batch = sa.edge_inputs(x, pos, batch)
        return seg(msg, counts), pos, batch

    def _forward(self, seg, pos: Tensor, batch: Optional[Tensor],
                 x: Optional[Tensor]) -> Tensor:
        batch, size = self._check(pos, batch, x)
        if self.pool.ema:  # As the trained model's global pooling.
            check_clouds(batch, size)
        x, pos, batch = self._level(self.sa1, seg['sa1'], x, pos, batch)
        x, pos, batch = self._level(self.sa2, seg['sa2'], x, pos, batch)
        C = self.sa2.conv.local_nn.out_channels
        h = cat_bits([(x, C), (_binarize(pos, self.global_mlp, C),
                               pos.size(1))])
        counts = torch.bincount(batch, minlength=size)
        return seg['global'](h, counts)

    POINT_MLP = PointNet2.POINT_MLP
    point_inputs = PointNet2.point_inputs


# --------------------------------------------------------------------------
# DGCNN.

@register_packed
class PackedEdgeConv(EdgeConv):
    r"""A packed :class:`~torch_geometric_binary.nn.BiDynamicEdgeConv`:
    PyG's :class:`~torch_geometric.nn.conv.EdgeConv` with a packed MLP on
    the :math:`k`-NN graph of its input."""
    def __init__(self, nn: PackedMLP, k: int, ema: bool,
                 num_workers: int = 1):
        super().__init__(nn, aggr=EMAMaxAggregation() if ema else 'max')
        self.k = k
        self.ema = ema
        self.num_workers = num_workers

    @classmethod
    def from_conv(cls, conv, where, fp_dtype, epilogue_dtype):
        from torch_geometric_binary.nn.conv import BiDynamicEdgeConv
        if not isinstance(conv, BiDynamicEdgeConv):
            raise TypeError(f"pack: {where} is a {type(conv).__name__}; "
                            f"expected a BiDynamicEdgeConv")
        return cls(_mlp(conv.nn, f'{where}.nn', fp_dtype, epilogue_dtype),
                   conv.k, aggr_is_ema(conv.aggr_module, f'{where}.aggr'),
                   conv.num_workers)

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'k': self.k, 'ema': self.ema,
                 'num_workers': self.num_workers}, {}, {'nn': self.nn})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedEdgeConv':
        return cls(children['nn'], attrs['k'], attrs['ema'],
                   attrs['num_workers'])

    def graph(self, x: Tensor, batch: Tensor
              ) -> Tuple[Tensor, Tensor, Tensor, bool]:
        r"""The :math:`k`-NN edges :math:`(j, i)` on :obj:`x`, sorted by
        target :math:`i`, the group sizes, and whether every point has
        exactly :math:`k` neighbours (then the edges of point :math:`i` are
        rows :math:`ik, \ldots, ik + k - 1`)."""
        edge_index = knn_edges(x, x, self.k, batch, batch, self.num_workers)
        perm, counts = _sorted_groups(edge_index[1], x.size(0))
        if perm is not None:
            edge_index = edge_index[:, perm]
        uniform = edge_index.size(1) == self.k * x.size(0)
        return edge_index[0], edge_index[1], counts, uniform

    @staticmethod
    def messages(x: Tensor, j: Tensor, i: Tensor, uniform: bool) -> Tensor:
        r"""EdgeConv's messages :math:`[\mathbf{x}_i, \mathbf{x}_j -
        \mathbf{x}_i]` (the float inputs of a full-precision first
        layer)."""
        if not uniform:
            x_i = x[i]
            return torch.cat([x_i, x[j] - x_i], dim=-1)
        n, C = x.shape
        x_i = x.unsqueeze(1).expand(n, j.numel() // n, C)
        return torch.cat([x_i, x[j].view_as(x_i) - x_i],
                         dim=-1).view(j.numel(), 2 * C)

    def edge_bits(self, x: Tensor, j: Tensor, i: Tensor,
                  uniform: bool) -> Tensor:
        r"""The packed signs of the messages that the binary first layer of
        :obj:`nn` reads, without the float messages: the signs of
        :math:`\mathbf{x}_i` once per point, the differences (the same
        float subtraction as :class:`~torch_geometric.nn.conv.EdgeConv`)
        binarized as they are formed."""
        n, C = x.shape
        if uniform:
            diff = x[j].view(n, -1, C) - x.unsqueeze(1)
        else:
            diff = x[j] - x[i]
        return cat_bits([(_binarize(x, self.nn)[i], C),
                         (_binarize(diff.view(-1, C), self.nn, C), C)])

    def edge_inputs(self, x: Tensor, batch: Tensor
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        r"""What :obj:`nn` reads on the :math:`k`-NN graph of :obj:`x`
        (packed signs where its first layer is binary, else the float
        messages), the target of each edge and the group sizes."""
        j, i, counts, uniform = self.graph(x, batch)
        if self.nn.is_binary(0):
            return self.edge_bits(x, j, i, uniform), i, counts
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
        return (f'{self.__class__.__name__}(nn={self.nn}, k={self.k}, '
                f'ema={self.ema})')


# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# Converters (what pack() calls for each trained class).

def _any_size(model: torch.nn.Module, num_points: Optional[int]):
    if num_points is not None:
        raise ValueError(f"pack: 'num_points' (a fixed cloud size) is "
                         f"supported for PointNet only (got a "
                         f"{type(model).__name__})")


@converter(PointNet)
def _pack_pointnet(model, fp_dtype, epilogue_dtype, num_points):
    packed = PackedPointNet.from_model(model, fp_dtype, epilogue_dtype)
    return packed if num_points is None else \
        packed.fix_num_points(num_points)


@converter(PointNet2)
def _pack_pointnet2(model, fp_dtype, epilogue_dtype, num_points):
    _any_size(model, num_points)
    return PackedPointNet2.from_model(model, fp_dtype, epilogue_dtype)


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

    Two ways, by the model's class:

    * **fused** (the fast path): a class with a converter of its own
      (:func:`~torch_geometric_binary.deploy.converter`) becomes its packed
      twin. :class:`~torch_geometric_binary.nn.models.PointNet` (with or
      without T-Nets) and
      :class:`~torch_geometric_binary.nn.models.PointNet2` run their binary
      layers as fused C++ chains; a single
      :class:`~torch_geometric_binary.nn.BiMLP` becomes a
      :class:`~torch_geometric_binary.deploy.PackedMLP`, a
      :class:`~torch_geometric_binary.nn.BiLinear` a
      :class:`~torch_geometric_binary.deploy.PackedBiLinear` with float
      output.
    * **module by module** (every other model:
      :class:`~torch_geometric_binary.nn.models.DGCNN`, as fast this way
      as its former twin, the segmentation networks
      :class:`~torch_geometric_binary.nn.models.PointNetSeg`,
      :class:`~torch_geometric_binary.nn.models.PointNet2Seg`,
      :class:`~torch_geometric_binary.nn.models.DGCNNSeg`, your own
      models): a :class:`~torch_geometric_binary.deploy.PackedModel`, a copy
      of the model whose trained submodules with a converter are replaced by
      their packed forms and whose own :meth:`forward` runs unchanged (see
      :mod:`~torch_geometric_binary.deploy.generic`). A submodule with
      parameters or buffers that no converter packs raises a
      :class:`TypeError` naming its path. Models of the package save and
      load; :obj:`fp_dtype` applies to the model's classifier
      (:obj:`head`), other full-precision layers stay float32, and
      :obj:`num_points` is for PointNet.

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
    'PackedPointNet',
    'PackedTNet',
    'PackedPointNet2',
    'PackedSetAbstraction',
    'PackedPointConv',
    'PackedEdgeConv',
    'Segment',
    'cat_bits',
]
