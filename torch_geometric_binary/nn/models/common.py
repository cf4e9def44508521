r"""The pieces a model takes from its method, and the classifier skeleton
the models share, in one place."""
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation, MaxAggregation

from torch_geometric_binary.nn.aggr import (EMAMaxAggregation,
                                            global_ema_max_pool,
                                            global_max_pool)
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method
from torch_geometric_binary.nn.mlp import BiMLP
from torch_geometric_binary.nn.rprelu import RPReLU
from torch_geometric_binary.utils import check_points


def max_aggregation(method: BinaryMethod) -> Aggregation:
    r"""EMA max for methods with the EMA switch on, plain max otherwise."""
    return EMAMaxAggregation() if method.ema else MaxAggregation()


def global_pool(method: BinaryMethod) -> Callable[..., Tensor]:
    return global_ema_max_pool if method.ema else global_max_pool


def activation(method: BinaryMethod, channels: int) -> torch.nn.Module:
    r"""The activation after a pooled (normalized) feature of
    :obj:`channels` channels: the method's own where it declares one
    (ReActNet's :class:`~torch_geometric_binary.nn.RPReLU`, with parameters
    per channel), else ReLU in full precision (it commutes with max, so
    BN -> max -> ReLU is PointNet's BN -> ReLU -> max) and Hardtanh for
    binary methods (it keeps the sign the next layer takes and matches the
    clipped STE)."""
    if method.activation == 'rprelu':
        return RPReLU(channels)
    return torch.nn.Hardtanh() if method.binary else torch.nn.ReLU()


def place_activations(method: BinaryMethod, channels: Sequence[int]
                      ) -> Optional[torch.nn.ModuleList]:
    r"""One activation per place of a model whose places have
    :obj:`channels` channels, where the method's activation has parameters
    per channel (RPReLU); :obj:`None` otherwise, where the places share the
    model's parameter-free :obj:`act`."""
    if method.activation != 'rprelu':
        return None
    return torch.nn.ModuleList(activation(method, c) for c in channels)


def place_activation(model: torch.nn.Module, i: int) -> torch.nn.Module:
    r"""The activation of place :obj:`i` of :obj:`model`: its own from
    :obj:`model.place_acts` (:func:`place_activations`), else the shared
    :obj:`model.act`."""
    acts = model.place_acts
    return model.act if acts is None else acts[i]


def graph_repr_args(k: int, feature_conv: torch.nn.Module) -> str:
    r"""The :obj:`__repr__` arguments of a DGCNN: :math:`k`, and the metric
    of its graphs on the features where it is not the Euclidean one."""
    metric = feature_conv.metric
    return f', k={k}' + ('' if metric == 'euclidean' else
                         f', graph_metric={metric!r}')


def batch_or_zeros(pos: Tensor, batch: Optional[Tensor]) -> Tensor:
    if batch is None:
        return torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
    return batch


def check_dropout(name: str, dropout: Sequence[float]):
    r"""Raises a :class:`ValueError` unless every entry of :obj:`dropout`
    is a number in :math:`[0, 1)`."""
    for p in dropout:
        if isinstance(p, bool) or not isinstance(p, (int, float)) \
                or not 0.0 <= p < 1.0:
            raise ValueError(f"{name}: 'dropout' must be a number in [0, 1) "
                             f"(got {p!r})")


def input_dtype(head: torch.nn.Module) -> torch.dtype:
    r"""The floating-point type a model takes: its classifier's weights',
    or what a packed classifier computes in (:obj:`input_dtype`; it may
    store its weights in another)."""
    lin = head.lins[-1]
    return getattr(lin, 'input_dtype', None) or lin.weight.dtype


def check_inputs(name: str, pos: Tensor, batch: Optional[Tensor],
                 x: Optional[Tensor], dtype: torch.dtype, in_channels: int):
    r"""The input checks of the models' :meth:`forward`: finite
    coordinates :obj:`pos` :obj:`[N, 3]` of the parameters' :obj:`dtype`
    (outside :func:`torch.autocast`), :obj:`N` entries in :obj:`batch`, and
    point features :obj:`x` :obj:`[N, in_channels]` where the model takes
    them."""
    check_points(pos, 'pos', batch, where=name)
    if pos.size(1) != 3:
        raise ValueError(f"{name}: 'pos' must be a [num_points, 3] matrix "
                         f"(got shape {tuple(pos.shape)})")
    if pos.dtype != dtype and not torch.is_autocast_enabled(
            pos.device.type):
        raise ValueError(f"{name}: 'pos' is {pos.dtype} but the model's "
                         f"parameters are {dtype}; convert one to the "
                         f"other (e.g. 'pos.to({dtype})'), or use "
                         f"torch.autocast for mixed precision")
    if x is not None:
        check_points(x, 'x', where=name)
        if x.size(0) != pos.size(0):
            raise ValueError(f"{name}: 'x' has {x.size(0)} rows but 'pos' "
                             f"has {pos.size(0)}")
        if x.size(1) != in_channels:
            raise ValueError(f"{name}: 'x' has {x.size(1)} features per "
                             f"point but the model was built with "
                             f"in_channels={in_channels}")
    elif in_channels:
        raise ValueError(f"{name}: the model was built with "
                         f"in_channels={in_channels} but got no 'x'")


class PointCloudClassifier(torch.nn.Module):
    r"""The skeleton of the package's classifiers: per-point features
    (:meth:`point_features`, normalized and unclipped), a max over each cloud
    (EMA max with the cloud's own number of points when the method has EMA),
    the activation, and the head 1024-512-256-:obj:`num_classes` whose last
    layer stays full precision.

    Args:
        num_classes (int): Number of classes.
        method (str or BinaryMethod): :obj:`"fp"` or a binary method.
        in_channels (int): Point features besides the coordinates.
        dropout (List[float]): Dropout after each hidden head layer.
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
    """
    def __init__(self, num_classes: int, method: Union[str, BinaryMethod],
                 in_channels: int, dropout: Tuple[float, float],
                 ema: Optional[bool], lsr: Optional[bool]):
        super().__init__()
        check_dropout(self.__class__.__name__, dropout)
        self.method = resolve_method(method, ema=ema, lsr=lsr)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.pool = global_pool(self.method)
        self.act = activation(self.method, 1024)
        self.head = BiMLP([1024, 512, 256, num_classes], self.method,
                          last_fp=True, dropout=[*dropout, 0.0])

    def reset_parameters(self):
        for module in self.children():
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    #: The attribute name of the last per-point MLP (it ends in a
    #: normalization, with :obj:`norm_last`), whose output is pooled.
    POINT_MLP: str = ''

    def point_inputs(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                     size: int) -> Tuple[Tensor, Tensor]:
        r"""Returns the input of the last per-point MLP and its batch
        vector."""
        raise NotImplementedError

    def point_features(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                       size: int) -> Tuple[Tensor, Tensor]:
        r"""Returns normalized per-point features and their batch vector."""
        h, batch = self.point_inputs(pos, batch, x, size)
        return getattr(self, self.POINT_MLP)(h), batch

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                x: Optional[Tensor] = None) -> Tensor:
        r"""Returns the logits :obj:`[num_clouds, num_classes]` of the clouds
        given by coordinates :obj:`pos`, optional point features :obj:`x`
        and the batch vector :obj:`batch` (:obj:`None` for one cloud)."""
        check_inputs(self.__class__.__name__, pos, batch, x,
                     input_dtype(self.head), self.in_channels)
        batch = batch_or_zeros(pos, batch)
        size = int(batch.max()) + 1
        h, batch = self.point_inputs(pos, batch, x, size)
        # The MLP pools its own output: its last layer, BatchNorm and the
        # max run fused for clouds of equal size (BiMLP.max_pool).
        pooled = getattr(self, self.POINT_MLP).max_pool(h, batch, size,
                                                        self.method.ema)
        return self.head(self.act(pooled))

    def extra_repr_args(self) -> str:
        return ''

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'method={self.method.name}, ema={self.method.ema}, '
                f'lsr={self.method.lsr}{self.extra_repr_args()})')


def category_code(category: Tensor, num_categories: int,
                  binary: bool) -> Tensor:
    r"""The one-hot code :obj:`[B, num_categories]` of the object categories
    :obj:`[B]` that part segmentation concatenates to the global feature:
    :math:`\{0, 1\}` in full precision, as in PointNet; :math:`\{-1, +1\}`
    for binary methods, whose next layer takes the sign (:math:`0` and
    :math:`1` would both binarize to :math:`+1`)."""
    code = torch.nn.functional.one_hot(category, num_categories).float()
    return 2. * code - 1. if binary else code


class PointCloudSegmenter(torch.nn.Module):
    r"""The skeleton of the package's segmentation models: per-point logits
    from per-point (local) features and the global feature of each cloud
    concatenated back to its points. The global feature is the max over
    the cloud of normalized features (an EMA max with the size of the
    group it pools when the method has EMA), the activation, and, for part
    segmentation (:obj:`num_categories > 0`), the one-hot object category
    (:func:`category_code`), as in PointNet's part-segmentation network.

    Subclasses build a :obj:`head` whose last layer stays full precision
    and implement :meth:`segment`.

    Args:
        num_classes (int): Number of point classes (parts or semantic
            classes).
        method (str or BinaryMethod): :obj:`"fp"` or a binary method.
        num_categories (int): Number of object categories given to
            :meth:`forward` (:obj:`0`: none, semantic segmentation).
        in_channels (int): Point features besides the coordinates.
        dropout (List[float]): Dropout rates to check.
        ema (bool, optional): Override the method's EMA switch.
        lsr (bool, optional): Override the method's LSR switch.
    """
    def __init__(self, num_classes: int, method: Union[str, BinaryMethod],
                 num_categories: int, in_channels: int,
                 dropout: Sequence[float], ema: Optional[bool],
                 lsr: Optional[bool]):
        super().__init__()
        name = self.__class__.__name__
        for arg, value, least in (('num_classes', num_classes, 1),
                                  ('num_categories', num_categories, 0),
                                  ('in_channels', in_channels, 0)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < least:
                raise ValueError(f"{name}: '{arg}' must be an integer >= "
                                 f"{least} (got {value!r})")
        check_dropout(name, dropout)
        self.method = resolve_method(method, ema=ema, lsr=lsr)
        self.num_classes = num_classes
        self.num_categories = num_categories
        self.in_channels = in_channels
        # The global features of the package's segmenters have 1024
        # channels.
        self.act = activation(self.method, 1024)

    def reset_parameters(self):
        for module in self.children():
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def global_feature(self, mlp: BiMLP, h: Tensor, batch: Tensor,
                       size: int, code: Optional[Tensor]) -> Tensor:
        r"""The global feature :obj:`[size, C]` of every cloud: the max of
        :obj:`mlp(h)` over the cloud's rows (:meth:`BiMLP.max_pool`, minus
        :math:`\delta(n)` of that cloud's number of rows when the method
        has EMA), the activation, and the category :obj:`code` if given."""
        return self.pooled_feature(
            mlp.max_pool(h, batch, size, self.method.ema), code)

    def pooled_feature(self, pooled: Tensor,
                       code: Optional[Tensor]) -> Tensor:
        r"""The global feature from the clouds' (EMA) max :obj:`pooled`:
        the activation, and the category :obj:`code` if given."""
        g = self.act(pooled)
        if code is None:
            return g
        return torch.cat([g, code.to(g.dtype)], dim=-1)

    def segment(self, pos: Tensor, batch: Tensor, x: Optional[Tensor],
                size: int, code: Optional[Tensor]) -> Tensor:
        r"""Returns the logits :obj:`[N, num_classes]` (arguments as in
        :meth:`forward`, with the category :obj:`code`)."""
        raise NotImplementedError

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                x: Optional[Tensor] = None,
                category: Optional[Tensor] = None) -> Tensor:
        r"""Returns the per-point logits :obj:`[N, num_classes]` of the
        clouds given by coordinates :obj:`pos`, optional point features
        :obj:`x`, the batch vector :obj:`batch` (:obj:`None` for one cloud)
        and, for part segmentation, the category of every cloud
        :obj:`category` :obj:`[num_clouds]`."""
        name = self.__class__.__name__
        check_inputs(name, pos, batch, x, input_dtype(self.head),
                     self.in_channels)
        batch = batch_or_zeros(pos, batch)
        size = int(batch.max()) + 1
        code = None
        if self.num_categories:
            if category is None:
                raise ValueError(f"{name}: part segmentation "
                                 f"(num_categories={self.num_categories}) "
                                 f"needs the 'category' of every cloud")
            category = category.view(-1)
            if category.numel() != size or category.is_floating_point():
                raise ValueError(f"{name}: 'category' must hold one integer "
                                 f"per cloud ({size}; got "
                                 f"{tuple(category.shape)} "
                                 f"{category.dtype})")
            if bool((category < 0).any()) or \
                    bool((category >= self.num_categories).any()):
                raise ValueError(f"{name}: 'category' must lie in [0, "
                                 f"{self.num_categories}) (got "
                                 f"{category.tolist()[:10]})")
            code = category_code(category.long(), self.num_categories,
                                 self.method.binary)
        elif category is not None:
            raise ValueError(f"{name}: the model was built without "
                             f"categories (num_categories=0); pass "
                             f"category=None, or build it with "
                             f"num_categories")
        return self.segment(pos, batch, x, size, code)

    def extra_repr_args(self) -> str:
        return ''

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'method={self.method.name}, ema={self.method.ema}, '
                f'lsr={self.method.lsr}, '
                f'num_categories={self.num_categories}'
                f'{self.extra_repr_args()})')
