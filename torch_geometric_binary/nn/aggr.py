from typing import Optional

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation
from torch_geometric.utils import scatter

from torch_geometric_binary.nn.functional import ema_delta
from torch_geometric_binary.utils.script import NotScriptable


def group_sizes(index: Optional[Tensor], ptr: Optional[Tensor],
                dim_size: int, device: torch.device) -> Tensor:
    r"""The number of elements in each of the :obj:`dim_size` groups given
    by :obj:`ptr` (CSR offsets) or :obj:`index` (a group id per element)."""
    if ptr is not None:
        return ptr[1:] - ptr[:-1]
    assert index is not None
    ones = torch.ones(index.numel(), dtype=torch.long, device=device)
    return scatter(ones, index, 0, dim_size, reduce='sum')


class DenseMax(torch.autograd.Function):
    r""":obj:`x.amax(dim)` with a leaner backward pass: the gradient of
    each maximum is split evenly among the elements equal to it (as
    :meth:`torch.amax` and PyG's scatter max do), from one float mask
    written directly by :func:`torch.eq` (summing a boolean mask over
    :obj:`dim` is several times slower)."""
    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:
        out = x.amax(dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, out = ctx.saved_tensors
        is_max = torch.empty_like(x)
        torch.eq(x, out.unsqueeze(ctx.dim), out=is_max)
        share = grad_out.unsqueeze(ctx.dim) / is_max.sum(ctx.dim,
                                                         keepdim=True)
        return is_max.mul_(share), None


def equal_group_size(batch: Optional[Tensor], size: int,
                     num_rows: int) -> Optional[int]:
    r"""The common size of :obj:`size` contiguous, non-empty clouds given by
    :obj:`batch`, or :obj:`None` where they differ (or the batch vector is
    malformed: the unfused path then names the problem)."""
    if size <= 0 or num_rows % size != 0:
        return None
    n = num_rows // size
    if batch is None:
        return n if size == 1 else None
    if batch.numel() != num_rows or n == 0:
        return None
    expected = torch.arange(size, device=batch.device).repeat_interleave(n)
    return n if torch.equal(batch, expected) else None


def segment_max(x: Tensor, index: Tensor, dim_size: int, dim: int,
                count: Optional[Tensor] = None) -> Tensor:
    r"""The per-group max along :obj:`dim`. When the groups are contiguous
    and of equal size (clouds of a fixed number of points in a PyG batch),
    it reshapes and reduces densely: the same values, and a backward pass
    several times faster than that of a scatter max. Ties (frequent: binary
    layers output few distinct values) share the gradient evenly, as in
    the scatter max (:class:`DenseMax`)."""
    n = None
    if count is not None and not torch.compiler.is_compiling():
        n = equal_group_size(index, dim_size, x.size(dim))
    if n is not None:
        shape = x.shape[:dim] + (dim_size, n) + x.shape[dim + 1:]
        return DenseMax.apply(x.reshape(shape), dim + 1)
    return scatter(x, index, dim, dim_size, reduce='max')


def deferred_pool(x: Tensor, batch: Optional[Tensor], size: Optional[int],
                  ema: bool) -> Optional[Tensor]:
    r"""The pooling of a value whose computation is deferred (a packed
    model's :class:`~torch_geometric_binary.deploy.fusion.Pending`, which
    pools inside its fused chain through its :obj:`pooled` method), or
    :obj:`None` for any other tensor (or groups it does not take)."""
    pooled = getattr(x, 'pooled', None)
    if pooled is None or x.dim() != 2:
        return None
    if batch is None:
        batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
    size = int(batch.max()) + 1 if size is None and batch.numel() else size
    return None if size is None else pooled(batch, size, ema)


def global_max_pool(x: Tensor, batch: Optional[Tensor],
                    size: Optional[int] = None) -> Tensor:
    r""":func:`torch_geometric.nn.global_max_pool` with the fast path of
    :func:`segment_max` for clouds of equal size; the full-precision pooling
    of the package's models."""
    deferred = deferred_pool(x, batch, size, ema=False)
    if deferred is not None:
        return deferred
    if batch is None:
        return x.max(dim=-2, keepdim=True)[0]
    size = int(batch.max()) + 1 if size is None else size
    count = group_sizes(batch, None, size, x.device)
    return segment_max(x, batch, size, x.dim() - 2, count)


def ema_max(x: Tensor, index: Optional[Tensor] = None,
            ptr: Optional[Tensor] = None, dim_size: Optional[int] = None,
            dim: int = -2, reduce_fn=None) -> Tensor:
    r"""Entropy-Maximizing max: :math:`\max_{i \in g} \mathbf{x}_i -
    \delta(|g|)` for every group :math:`g`, with
    :math:`\delta(n) = \Phi^{-1}(2^{-1/n})` of that group's own size
    (:func:`~torch_geometric_binary.nn.functional.ema_delta`).

    Empty groups give :obj:`0`, as PyG's max aggregation does.
    :obj:`reduce_fn(x, index, ptr, dim_size, dim)` computes the plain max
    (defaults to :func:`torch_geometric.utils.scatter` / segment max).
    """
    dim = x.dim() + dim if dim < 0 else dim
    if index is None and ptr is None:
        index = torch.zeros(x.size(dim), dtype=torch.long, device=x.device)
    if dim_size is None:
        if ptr is not None:
            dim_size = ptr.numel() - 1
        else:
            dim_size = int(index.max()) + 1 if index.numel() > 0 else 0
    if index is not None and index.numel() != x.size(dim):
        raise ValueError(f"EMA max: got {index.numel()} group indices for "
                         f"{x.size(dim)} elements along dimension {dim}")

    count = group_sizes(index, ptr, dim_size, x.device)
    if reduce_fn is None:
        if index is None:
            index = torch.repeat_interleave(
                torch.arange(dim_size, device=x.device), count)
        out = segment_max(x, index, dim_size, dim, count)
    else:
        out = reduce_fn(x, index, ptr, dim_size, dim)

    delta = ema_delta(count.clamp(min=1)).to(x.dtype)
    delta = torch.where(count > 0, delta, torch.zeros_like(delta))
    out = out - delta.view([-1] + [1] * (out.dim() - dim - 1))

    if not torch.compiler.is_compiling() and not torch.isfinite(out).all():
        raise ValueError("EMA max: non-finite values (NaN or Inf) in the "
                         "features of at least one group would poison the "
                         "pooled result")
    return out


class EMAMaxAggregation(NotScriptable, Aggregation):
    r"""Entropy-Maximizing Aggregation (EMA) from the `"BiPointNet: Binary
    Neural Network for Point Clouds" <https://arxiv.org/abs/2010.05501>`_
    paper: a max aggregation shifted by the offset that maximizes the
    entropy of the binarized result.

    .. math::
        \mathrm{ema\_max}(\mathcal{X}) = \max_{\mathbf{x}_i \in \mathcal{X}}
        \mathbf{x}_i - \delta(|\mathcal{X}|), \qquad
        \delta(n) = \Phi^{-1}\left(2^{-1/n}\right),

    where :math:`\Phi^{-1}` is the standard normal quantile. For
    BatchNorm-normalized features, :math:`\mathrm{sign}` of the result is
    :math:`+1` with probability :math:`1/2` instead of
    :math:`1 - 2^{-n}` for the plain max. :math:`n` is the size of *each*
    group (taken from :obj:`ptr` or :obj:`index`), so groups of different
    sizes in one batch (neighbourhoods, clouds) each get their own offset.
    Empty groups give :obj:`0`, as in
    :class:`~torch_geometric.nn.aggr.MaxAggregation`.
    """
    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None, dim_size: Optional[int] = None,
                dim: int = -2) -> Tensor:
        return ema_max(x, index, ptr, dim_size, dim, reduce_fn=self._max)

    def _max(self, x: Tensor, index: Optional[Tensor], ptr: Optional[Tensor],
             dim_size: Optional[int], dim: int) -> Tensor:
        return self.reduce(x, index, ptr, dim_size, dim, reduce='max')


def global_ema_max_pool(x: Tensor, batch: Optional[Tensor],
                        size: Optional[int] = None) -> Tensor:
    r"""Returns batch-wise graph-level outputs by taking the channel-wise
    maximum across the node dimension of each cloud, minus the EMA offset
    :math:`\delta(N_i)` of that cloud's number of points :math:`N_i`:

    .. math::
        \mathbf{r}_i = \max_{n=1}^{N_i} \, \mathbf{x}_n - \delta(N_i).

    The EMA counterpart of :func:`torch_geometric.nn.global_max_pool`.

    Args:
        x (torch.Tensor): Node feature matrix
            :math:`\mathbf{X} \in \mathbb{R}^{(N_1 + \ldots + N_B) \times F}`.
        batch (torch.Tensor, optional): The batch vector
            :math:`\mathbf{b} \in {\{ 0, \ldots, B-1\}}^N`, which assigns
            each node to a specific example (:obj:`None` for one cloud).
        size (int, optional): The number of examples :math:`B`.
            Automatically calculated if not given. (default: :obj:`None`)

    Raises:
        ValueError: for mismatched :obj:`x`/:obj:`batch` lengths, an empty
            input or an empty cloud, and non-finite features.
    """
    deferred = deferred_pool(x, batch, size, ema=True)
    if deferred is not None:
        return deferred
    dim = -1 if x.dim() == 1 else -2
    if batch is None and x.dim() == 3:  # Dense [B, N, F], as PyG's pool.
        if not torch.compiler.is_compiling() and x.size(1) == 0:
            raise ValueError("global_ema_max_pool: got clouds without "
                             "points")
        out = x.max(dim=1)[0] - ema_delta(x.size(1))
        if not torch.compiler.is_compiling() and \
                not torch.isfinite(out).all():
            raise ValueError("global_ema_max_pool: non-finite values (NaN "
                             "or Inf) in the features")
        return out
    if not torch.compiler.is_compiling():
        if x.size(dim) == 0:
            raise ValueError("global_ema_max_pool: got an empty input "
                             "(no points)")
        if batch is not None and batch.numel() != x.size(dim):
            raise ValueError(f"global_ema_max_pool: 'batch' has "
                             f"{batch.numel()} entries but 'x' has "
                             f"{x.size(dim)} points")
    if batch is None:
        out = x.max(dim=dim, keepdim=True)[0] - ema_delta(x.size(dim))
        if not torch.compiler.is_compiling() and not torch.isfinite(
                out).all():
            raise ValueError("global_ema_max_pool: non-finite values (NaN "
                             "or Inf) in the features")
        return out
    size = int(batch.max()) + 1 if size is None else size
    if not torch.compiler.is_compiling():
        check_clouds(batch, size)
    return ema_max(x, batch, None, size, dim)


def check_clouds(batch: Tensor, size: int):
    r"""Raises a :class:`ValueError` naming the clouds of :obj:`batch`
    (among :obj:`size`) that have no points: their EMA offset
    :math:`\delta(0)` is undefined (the check of
    :func:`global_ema_max_pool`)."""
    count = group_sizes(batch, None, size, batch.device)
    if bool((count == 0).any()):
        empty = (count == 0).nonzero().view(-1).tolist()[:10]
        raise ValueError(f"global_ema_max_pool: cloud(s) {empty} of {size} "
                         f"have no points")


def ema_aggregation(aggr):
    r"""The aggregation of a binary operator given PyG's :obj:`aggr`
    argument: the string :obj:`"max"` (PyG's default, so that a swapped
    layer keeps its arguments) and :obj:`None` give
    :class:`EMAMaxAggregation`; an :class:`~torch_geometric.nn.aggr.
    Aggregation` instance (*e.g.* :obj:`MaxAggregation()` for a plain max)
    is kept as it is. Other strings are refused: a binary operator's
    features are binary, and only a max shifted by EMA keeps them
    informative."""
    if aggr is None or (isinstance(aggr, str) and aggr.lower() == 'max'):
        return EMAMaxAggregation()
    if isinstance(aggr, Aggregation):
        return aggr
    raise ValueError(f"Binary operators take aggr='max' (EMA max) or an "
                     f"Aggregation instance (got {aggr!r}); pass "
                     f"torch_geometric.nn.aggr.MaxAggregation() for a plain "
                     f"max")
