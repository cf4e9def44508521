r"""Sampling and neighbour search: :func:`fps`, :func:`radius`, :func:`knn`,
and :func:`knn_hamming_edges` on binary codes.

The one place that builds graphs, for training and for the packed models.
Two interchangeable implementations give the same indices in the same order:

* the C++ kernels of :mod:`torch_geometric_binary._graph`
  (:obj:`torch.ops.torch_geometric_binary.graph_*`; OpenMP across clouds and
  queries), for float32/float64 CPU tensors;
* :mod:`torch_cluster`, our declared dependency (PyG 2.8 routes its own
  :obj:`fps`, :obj:`knn` and :obj:`radius` through pyg-lib), for other devices
  and dtypes, when the extension is not built, or when the environment
  variable :obj:`TORCH_GEOMETRIC_BINARY_NEIGHBORS=torch_cluster` is set.
  It is the reference the kernels are tested against.

How the kernels reproduce torch_cluster's CPU results:

* :func:`fps` computes distances with the arithmetic of torch_cluster's
  tensor expression, takes the first maximum, samples
  :math:`\lceil n \cdot ratio \rceil` points per cloud (in float32, as
  torch_cluster) and, with :obj:`random_start`, draws the start point as
  torch_cluster does, :obj:`rand() % n` from the C library's generator (not
  torch's: :func:`torch.manual_seed` does not fix it, for either), one draw
  per cloud in cloud order. torch_cluster draws inside its parallel loop, so
  with more than one thread its clouds may get each other's draws; with one
  thread, the two agree index for index.
* :func:`radius` and, up to 8 dimensions, :func:`knn` search a replica of the
  nanoflann kd-tree torch_cluster builds, with the same splits and roundings,
  so the same neighbours come out in the same order: :func:`radius` keeps the
  first :obj:`max_num_neighbors` points of the kd-tree's search order (not the
  nearest ones), :func:`knn` sorts by distance, equal distances in search
  order.
* :func:`knn` in more dimensions (DGCNN's features) measures distances by a
  matrix product, re-measures the candidates near the :math:`k`-th with
  nanoflann's arithmetic and sorts them; equal distances are ordered (and
  cut at the :math:`k`-th) by the kd-tree replica's visit order, read from
  the tree's structure without a search, which is how torch_cluster orders
  them (binary models' features repeat values, so such ties are common);
  a query with NaN or overflowing distances searches the kd-tree replica.
  The only possible difference: a point that torch_cluster's kd-tree
  prunes by a rounding error (its bound and the distance within one unit
  in the last place), which a brute-force search keeps.

Speed: :obj:`benchmarks/bench_neighbors.py` (results and their commands
in :obj:`benchmarks/results/`). :func:`radius` and 3-d :func:`knn` must
follow torch_cluster's kd-tree search order to give its neighbours, so
they gain only what flat arrays save; 64-d :func:`knn` bounds the
:math:`k`-th distance of each query by the :math:`k`-th smallest minimum
of blocks of 16 and looks only at the blocks under that bound.

The functions have no fake-tensor implementation, so they run eagerly under
:func:`torch.compile` (a graph break, as for any data-dependent graph
construction) instead of failing the trace.
"""
import os
from typing import Optional

import torch
import torch_cluster
from torch import Tensor

ENV_BACKEND = 'TORCH_GEOMETRIC_BINARY_NEIGHBORS'

try:  # Registers torch.ops.torch_geometric_binary.graph_*.
    from torch_geometric_binary import _graph  # noqa: F401
    _EXT_ERROR: Optional[str] = None
except ImportError as e:  # Not built: torch_cluster takes over.
    _EXT_ERROR = str(e)

_FLOATS = (torch.float32, torch.float64)


def cpp_available() -> bool:
    r"""Whether the graph-construction C++ extension is built and loaded."""
    return _EXT_ERROR is None


def backend() -> str:
    r"""The implementation that runs for float CPU tensors: :obj:`"cpp"` if
    the extension is loaded and not overridden by
    :obj:`TORCH_GEOMETRIC_BINARY_NEIGHBORS=torch_cluster`, otherwise
    :obj:`"torch_cluster"`."""
    choice = os.environ.get(ENV_BACKEND, 'auto').strip().lower() or 'auto'
    if choice not in ('auto', 'cpp', 'torch_cluster'):
        raise ValueError(f"{ENV_BACKEND} must be 'auto', 'cpp' or "
                         f"'torch_cluster' (got '{choice}')")
    if choice == 'cpp' and not cpp_available():
        raise RuntimeError(f"The torch_geometric_binary graph extension is "
                           f"not available ({_EXT_ERROR}); reinstall with "
                           f"'pip install --no-build-isolation -e .'")
    if choice == 'torch_cluster' or not cpp_available():
        return 'torch_cluster'
    return 'cpp'


def _use_cpp(*tensors: Tensor, dtypes=_FLOATS) -> bool:
    return backend() == 'cpp' and all(
        t.device.type == 'cpu' and t.dtype in dtypes for t in tensors)


# Checks for the torch_cluster path (the kernels make the same ones in C++).
def _check_points(t: Tensor, op: str, name: str) -> Tensor:
    if t.dim() not in (1, 2):
        raise ValueError(f"{op}: '{name}' must have shape [num_points, "
                         f"num_dims] (got {list(t.shape)})")
    return t.view(-1, 1) if t.dim() == 1 else t


def _check_batch(batch: Optional[Tensor], n: int, op: str, name: str) -> int:
    r"""Checks a batch vector; returns its largest cloud id (-1 if none)."""
    if batch is None:
        return 0 if n > 0 else -1
    if batch.dim() != 1 or batch.dtype != torch.long:
        raise ValueError(f"{op}: '{name}' must be a 1-D int64 tensor (got "
                         f"{list(batch.shape)}, {batch.dtype})")
    if batch.numel() != n:
        raise ValueError(f"{op}: '{name}' has {batch.numel()} entries for "
                         f"{n} points")
    if n == 0:
        return -1
    if int(batch[0]) < 0:
        raise ValueError(f"{op}: '{name}' has negative cloud ids")
    if n > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(f"{op}: '{name}' must be sorted (PyG's convention: "
                         f"each cloud's points contiguous, clouds in order)")
    return int(batch[-1])


def _check_pair(x: Tensor, y: Tensor, batch_x: Optional[Tensor],
                batch_y: Optional[Tensor], op: str):
    x, y = _check_points(x, op, 'x'), _check_points(y, op, 'y')
    if x.dtype != y.dtype:
        raise ValueError(f"{op}: 'x' and 'y' have different dtypes "
                         f"({x.dtype}, {y.dtype})")
    if x.size(1) != y.size(1):
        raise ValueError(f"{op}: 'x' has {x.size(1)} dims, 'y' has "
                         f"{y.size(1)}")
    _check_batches(batch_x, x.size(0), batch_y, y.size(0), op)
    return x, y


def _check_batches(batch_x: Optional[Tensor], nx: int,
                   batch_y: Optional[Tensor], ny: int, op: str) -> int:
    r"""Checks the batch vectors of a search; returns the number of
    clouds."""
    mx = _check_batch(batch_x, nx, op, 'batch_x')
    my = _check_batch(batch_y, ny, op, 'batch_y')
    if (batch_x is None and my > 0) or (batch_y is None and mx > 0):
        raise ValueError(f"{op}: give both 'batch_x' and 'batch_y' for more "
                         f"than one cloud")
    return max(mx, my, 0) + 1


@torch.compiler.disable
def fps(pos: Tensor, batch: Optional[Tensor] = None, ratio: float = 0.5,
        random_start: bool = True) -> Tensor:
    r"""Farthest point sampling of a :obj:`ratio` of each cloud's points
    (:math:`\lceil n \cdot ratio \rceil` of a cloud of :math:`n`); returns
    their indices, cloud by cloud, in sampling order. The first point of each
    cloud is its first point, or a random one with :obj:`random_start`."""
    ratio = float(ratio)
    # Up to 4 dims the kernel sums squares in torch's order (torch_cluster
    # sums with torch); beyond, torch reduces in an order not reproduced.
    if _use_cpp(pos) and (pos.dim() != 2 or pos.size(1) <= 4):
        return torch.ops.torch_geometric_binary.graph_fps(
            pos, batch, ratio, random_start)
    pos = _check_points(pos, 'fps', 'pos')
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"fps: 'ratio' must be in (0, 1] (got {ratio})")
    _check_batch(batch, pos.size(0), 'fps', 'batch')
    if pos.size(0) == 0:  # torch_cluster would index an empty cloud.
        return torch.empty(0, dtype=torch.long, device=pos.device)
    if batch is not None:  # Nor can it sample a skipped cloud id.
        batch = torch.unique_consecutive(batch, return_inverse=True)[1]
    return torch_cluster.fps(pos, batch, ratio=ratio,
                             random_start=random_start)


@torch.compiler.disable
def radius_edges(x: Tensor, y: Tensor, r: float,
                 batch_x: Optional[Tensor] = None,
                 batch_y: Optional[Tensor] = None,
                 max_num_neighbors: int = 32) -> Tensor:
    r"""For each point of :obj:`y`, the points of :obj:`x` of its cloud within
    distance :obj:`r` (at most :obj:`max_num_neighbors`: the first ones
    torch_cluster's kd-tree finds, not the nearest), as edges :obj:`[2, E]`
    from :obj:`x` (row 0) to :obj:`y` (row 1), grouped by :obj:`y` point:
    PyG's :obj:`edge_index` for message passing from :obj:`x` to :obj:`y`.
    (:func:`torch_cluster.radius` returns the reverse, :obj:`row` indexing
    :obj:`y`; hence the name.)"""
    if _use_cpp(x, y):
        return torch.ops.torch_geometric_binary.graph_radius(
            x, y, float(r), batch_x, batch_y, int(max_num_neighbors))
    x, y = _check_pair(x, y, batch_x, batch_y, 'radius')
    if r < 0 or max_num_neighbors < 0:
        raise ValueError(f"radius: 'r' and 'max_num_neighbors' must be >= 0 "
                         f"(got {r}, {max_num_neighbors})")
    row, col = torch_cluster.radius(x, y, r, batch_x, batch_y,
                                    max_num_neighbors=max_num_neighbors)
    return torch.stack([col, row], dim=0)


@torch.compiler.disable
def knn_edges(x: Tensor, y: Tensor, k: int,
              batch_x: Optional[Tensor] = None,
              batch_y: Optional[Tensor] = None,
              num_workers: int = 1) -> Tensor:
    r"""For each point of :obj:`y`, its :obj:`k` nearest points of :obj:`x`
    in its cloud (all of them in a smaller cloud; the point itself included
    when :obj:`x` is :obj:`y`), nearest first, as edges :obj:`[2, E]` from
    :obj:`x` (row 0) to :obj:`y` (row 1), the reverse of
    :func:`torch_cluster.knn` (see :func:`radius_edges`). :obj:`num_workers`
    is passed to torch_cluster; the kernels use
    :func:`torch.get_num_threads` threads."""
    if _use_cpp(x, y):
        return torch.ops.torch_geometric_binary.graph_knn(
            x, y, int(k), batch_x, batch_y)
    x, y = _check_pair(x, y, batch_x, batch_y, 'knn')
    if k < 1:
        raise ValueError(f"knn: 'k' must be >= 1 (got {k})")
    row, col = torch_cluster.knn(x, y, k, batch_x, batch_y,
                                 num_workers=num_workers)
    return torch.stack([col, row], dim=0)


@torch.compiler.disable
def knn_hamming_edges(x: Tensor, y: Tensor, k: int,
                      batch_x: Optional[Tensor] = None,
                      batch_y: Optional[Tensor] = None) -> Tensor:
    r"""For each binary code of :obj:`y`, its :obj:`k` nearest codes of
    :obj:`x` in its cloud by Hamming distance (the number of differing
    bits), as :func:`knn_edges` gives them for float points: edges
    :obj:`[2, E]` from :obj:`x` (row 0) to :obj:`y` (row 1), nearest first,
    all of a smaller cloud. Equal distances are taken in index order, which
    makes the graph deterministic (Hamming distances tie often).

    For :math:`\pm 1` codes of :math:`C` bits, the Hamming distance is
    :math:`(C - \mathbf{s}_i \cdot \mathbf{s}_j) / 2`: the same neighbours
    as the Euclidean distance between the signs.

    Args:
        x (torch.Tensor): Packed codes :obj:`[N, W]`, :obj:`int64` words in
            the layout of :mod:`torch_geometric_binary.utils.bits` (padding
            bits :math:`0`), e.g. :obj:`pack_bool(features >= 0)`.
        y (torch.Tensor): The query codes, the same layout.
        k (int): The number of neighbours.
        batch_x, batch_y (torch.Tensor, optional): Sorted cloud ids.
    """
    op = 'knn_hamming'
    for name, t in (('x', x), ('y', y)):
        if t.dtype != torch.long or t.dim() != 2:
            raise ValueError(f"{op}: '{name}' must be packed int64 words of "
                             f"shape [num_points, num_words] (got "
                             f"{list(t.shape)}, {t.dtype})")
    if _use_cpp(x, y, dtypes=(torch.long, )):
        return torch.ops.torch_geometric_binary.graph_knn_hamming(
            x, y, int(k), batch_x, batch_y)
    if k < 1:
        raise ValueError(f"{op}: 'k' must be >= 1 (got {k})")
    if x.size(1) != y.size(1):
        raise ValueError(f"{op}: 'x' has {x.size(1)} words per code, 'y' "
                         f"has {y.size(1)}")
    num_clouds = _check_batches(batch_x, x.size(0), batch_y, y.size(0), op)
    return _knn_hamming_torch(x, y, k, batch_x, batch_y, num_clouds)


def _knn_hamming_torch(x: Tensor, y: Tensor, k: int,
                       batch_x: Optional[Tensor], batch_y: Optional[Tensor],
                       num_clouds: int) -> Tensor:
    r"""The reference of the C++ kernel: distances from a product of
    :math:`\pm 1` rows, ties broken by a key :obj:`distance * n + j`."""
    from torch_geometric_binary.utils.bits import unpack_bool
    bits = 64 * x.size(1)

    def ptr(batch, n):
        if batch is None:
            return [0, n] + [n] * (num_clouds - 1)
        counts = torch.bincount(batch, minlength=num_clouds)
        return [0] + counts.cumsum(0).tolist()
    px, py = ptr(batch_x, x.size(0)), ptr(batch_y, y.size(0))
    src, dst = [], []
    for b in range(num_clouds):
        xs, ys = x[px[b]:px[b + 1]], y[py[b]:py[b + 1]]
        n, kk = xs.size(0), min(k, xs.size(0))
        if kk == 0 or ys.size(0) == 0:
            continue
        sx = unpack_bool(xs, bits).double() * 2 - 1
        sy = unpack_bool(ys, bits).double() * 2 - 1
        dist = ((bits - sy @ sx.t()) / 2).round().long()
        key = dist * n + torch.arange(n, device=x.device)
        j = key.topk(kk, dim=1, largest=False, sorted=True).indices
        src.append(j.reshape(-1) + px[b])
        dst.append((torch.arange(ys.size(0), device=x.device) + py[b])
                   .repeat_interleave(kk))
    if not src:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return torch.stack([torch.cat(src), torch.cat(dst)], dim=0)


# PyG's own functions, through these kernels ##################################

_PYG_LIB = None  # The torch.library that defines pyg::fps/knn/radius here.


def _batch(ptr: Optional[Tensor], n: int) -> Optional[Tensor]:
    if ptr is None:
        return None
    return torch.repeat_interleave(
        torch.arange(ptr.numel() - 1, device=ptr.device), ptr.diff(), 0,
        output_size=n)


def _op_fps(src: Tensor, ptr: Tensor, ratio: float,
            random_start: bool) -> Tensor:
    return fps(src, _batch(ptr, src.size(0)), ratio, random_start)


def _op_knn(x: Tensor, y: Tensor, ptr_x: Optional[Tensor],
            ptr_y: Optional[Tensor], k: int, cosine: bool,
            num_workers: int) -> Tensor:
    if cosine:
        raise NotImplementedError("knn(..., cosine=True) needs pyg-lib")
    # pyg-lib's rows: [y index, x index].
    return knn_edges(x, y, k, _batch(ptr_x, x.size(0)),
                     _batch(ptr_y, y.size(0))).flip([0])


def _op_radius(x: Tensor, y: Tensor, ptr_x: Optional[Tensor],
               ptr_y: Optional[Tensor], r: float, max_num_neighbors: int,
               num_workers: int, ignore_same_index: bool) -> Tensor:
    edges = radius_edges(x, y, r, _batch(ptr_x, x.size(0)),
                         _batch(ptr_y, y.size(0)),
                         max_num_neighbors + int(ignore_same_index)).flip([0])
    if ignore_same_index:  # As torch_cluster's radius_graph.
        edges = edges[:, edges[0] != edges[1]]
    return edges


def route_pyg() -> bool:
    r"""Lets unchanged PyG code search neighbours without pyg-lib: PyG 2.8
    runs :obj:`fps`, :obj:`knn`, :obj:`radius`, :obj:`knn_graph`,
    :obj:`radius_graph` and :class:`~torch_geometric.nn.conv.DynamicEdgeConv`
    on pyg-lib's operators only (an :obj:`ImportError` without it). Where
    pyg-lib is missing, this defines those operators (:obj:`pyg::fps`,
    :obj:`pyg::knn`, :obj:`pyg::radius`) with this module's kernels, which
    give torch-cluster's results, and tells PyG they exist. An opt-in, as it
    changes PyG's state for the process; :obj:`cosine=True` still needs
    pyg-lib. Returns whether it routed anything (not where pyg-lib is
    installed)."""
    global _PYG_LIB
    import torch_geometric.typing as pyg_typing
    flags = ('WITH_FPS', 'WITH_KNN', 'WITH_RADIUS')
    if _PYG_LIB is None:
        if hasattr(torch.ops.pyg, 'knn') or all(
                getattr(pyg_typing, f, False) for f in flags):
            return False  # pyg-lib is there.
        lib = torch.library.Library('pyg', 'FRAGMENT')
        for schema, fn in [
            ('fps(Tensor src, Tensor ptr, float ratio, bool random_start) '
             '-> Tensor', _op_fps),
            ('knn(Tensor x, Tensor y, Tensor? ptr_x, Tensor? ptr_y, int k, '
             'bool cosine, int num_workers) -> Tensor', _op_knn),
            ('radius(Tensor x, Tensor y, Tensor? ptr_x, Tensor? ptr_y, '
             'float r, int max_num_neighbors, int num_workers, '
             'bool ignore_same_index) -> Tensor', _op_radius),
        ]:
            lib.define(schema)
            lib.impl(schema.split('(')[0], fn, 'CompositeExplicitAutograd')
        _PYG_LIB = lib
    for f in flags:
        setattr(pyg_typing, f, True)
    return True
