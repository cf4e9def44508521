import ctypes
import os
import sys

import pytest
import torch
import torch_cluster

from torch_geometric_binary.nn import neighbors
from torch_geometric_binary.nn.neighbors import fps, knn_edges, radius_edges

REQUIRE_EXT = os.environ.get('TORCH_GEOMETRIC_BINARY_REQUIRE_EXT') == '1'


def need_cpp():
    r"""Skips without the graph extension, unless CI requires it
    (:obj:`TORCH_GEOMETRIC_BINARY_REQUIRE_EXT=1`), where it fails."""
    if neighbors.cpp_available():
        return
    reason = f"graph extension not built ({neighbors._EXT_ERROR})"
    if REQUIRE_EXT:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(params=['cpp', 'torch_cluster'])
def backend(request, monkeypatch):
    if request.param == 'cpp':
        need_cpp()
    monkeypatch.setenv(neighbors.ENV_BACKEND, request.param)
    return request.param


def clouds(sizes, dim=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), dim, generator=g, dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)),
                                    torch.tensor(sizes))
    return pos, batch


def grid_cloud(n_side=6, copies=2):
    r"""Points on a grid, every point :obj:`copies` times: equal distances
    and duplicate points everywhere."""
    ax = torch.arange(n_side, dtype=torch.float32) / n_side
    g = torch.stack(torch.meshgrid(ax, ax, ax, indexing='ij'), -1)
    return g.reshape(-1, 3).repeat(copies, 1)


def ref_radius(x, y, r, bx, by, max_num):
    row, col = torch_cluster.radius(x, y, r, bx, by,
                                    max_num_neighbors=max_num)
    return torch.stack([col, row], dim=0)


def ref_knn(x, y, k, bx, by):
    row, col = torch_cluster.knn(x, y, k, bx, by)
    return torch.stack([col, row], dim=0)


def assert_same(out, ref):
    assert out.dtype == torch.long
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.equal(out, ref)


def test_extension_built_when_required():
    if REQUIRE_EXT:
        assert neighbors.cpp_available(), neighbors._EXT_ERROR
    need_cpp()
    assert neighbors.backend() == 'cpp'


def test_backend_env(monkeypatch):
    monkeypatch.setenv(neighbors.ENV_BACKEND, 'torch_cluster')
    assert neighbors.backend() == 'torch_cluster'
    monkeypatch.setenv(neighbors.ENV_BACKEND, 'fortran')
    with pytest.raises(ValueError, match='NEIGHBORS'):
        neighbors.backend()


# ---------------------------------------------------------------------------
# fps

@pytest.mark.parametrize('sizes', [[1], [2], [1024], [1, 5, 300, 64, 1000],
                                   [7, 1, 33]])
@pytest.mark.parametrize('ratio', [0.5, 0.25, 0.3, 0.77, 1.0])
def test_fps_matches_torch_cluster(backend, sizes, ratio):
    pos, batch = clouds(sizes)
    ref = torch_cluster.fps(pos, batch, ratio=ratio, random_start=False)
    assert_same(fps(pos, batch, ratio, random_start=False), ref)
    if len(sizes) == 1:
        assert_same(fps(pos, None, ratio, random_start=False), ref)


@pytest.mark.parametrize('dim', [1, 2, 3, 4, 6])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_fps_dims_dtypes(dim, dtype):
    need_cpp()
    pos, batch = clouds([200, 57, 300], dim=dim, dtype=dtype, seed=1)
    for ratio in (0.5, 0.1):
        ref = torch_cluster.fps(pos, batch, ratio=ratio, random_start=False)
        assert_same(fps(pos, batch, ratio, random_start=False), ref)


@pytest.fixture(params=['best', 'avx2', 'scalar'])
def graph_isa(request, monkeypatch):
    r"""The vector kernels of the graph searches (fps, kd-tree leaves,
    Hamming k-NN): the best the CPU has, or at most AVX2 or scalar
    (TORCH_GEOMETRIC_BINARY_GRAPH_ISA)."""
    if request.param != 'best':
        monkeypatch.setenv('TORCH_GEOMETRIC_BINARY_GRAPH_ISA', request.param)
    return request.param


@pytest.mark.parametrize('sizes', [[1024], [1, 5, 300, 64, 1000], [7, 33]])
def test_fps_kernels_match_torch_cluster(graph_isa, sizes):
    need_cpp()
    pos, batch = clouds(sizes, seed=4)
    for ratio in (0.5, 0.25):
        ref = torch_cluster.fps(pos, batch, ratio=ratio, random_start=False)
        assert_same(fps(pos, batch, ratio, random_start=False), ref)


def test_fps_ties(graph_isa):
    need_cpp()
    pos = grid_cloud()
    batch = torch.zeros(pos.size(0), dtype=torch.long)
    pos2 = torch.cat([pos, pos * 2, torch.zeros(5, 3)])
    batch2 = torch.cat([batch, batch + 1, torch.full((5, ), 2)])
    for p, b in ((pos, batch), (pos2, batch2)):
        ref = torch_cluster.fps(p, b, ratio=0.5, random_start=False)
        assert_same(fps(p, b, 0.5, random_start=False), ref)


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='needs glibc srand')
def test_fps_random_start_same_draws():
    need_cpp()
    libc = ctypes.CDLL(None)
    pos, batch = clouds([100, 1, 37, 512], seed=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch_cluster draws in its parallel loop.
    try:
        for seed in (0, 1, 12345):
            libc.srand(seed)
            ref = torch_cluster.fps(pos, batch, ratio=0.5, random_start=True)
            libc.srand(seed)
            assert_same(fps(pos, batch, 0.5, random_start=True), ref)
    finally:
        torch.set_num_threads(threads)
    starts = {int(fps(pos, batch, 0.5)[0]) for _ in range(20)}
    assert len(starts) > 1


def test_fps_skipped_cloud_id(backend):
    pos, _ = clouds([10, 20])
    batch = torch.tensor([0] * 10 + [2] * 20)  # Cloud 1 is empty.
    ref = torch_cluster.fps(pos, torch.tensor([0] * 10 + [1] * 20), 0.5,
                            random_start=False)
    assert_same(fps(pos, batch, 0.5, random_start=False), ref)
    assert fps(torch.empty(0, 3), None, 0.5).numel() == 0


# ---------------------------------------------------------------------------
# radius

@pytest.mark.parametrize('sizes', [[1], [300], [512, 1, 200, 77]])
@pytest.mark.parametrize('r', [0.1, 0.2, 0.5])
@pytest.mark.parametrize('max_num', [1, 8, 64, 1000])
def test_radius_matches_torch_cluster(backend, graph_isa, sizes, r,
                                      max_num):
    x, bx = clouds(sizes, seed=3)
    idx = torch_cluster.fps(x, bx, ratio=0.5, random_start=False)
    y, by = x[idx], bx[idx]
    assert_same(radius_edges(x, y, r, bx, by, max_num),
                ref_radius(x, y, r, bx, by, max_num))
    if len(sizes) == 1:
        assert_same(radius_edges(x, y, r, None, None, max_num),
                    ref_radius(x, y, r, None, None, max_num))


def test_radius_ties_dtypes_dims(graph_isa):
    need_cpp()
    g = grid_cloud()
    for x in (g, g.double()):  # Many points exactly on the sphere.
        for r in (1 / 6, 0.3, 0.5):
            for max_num in (5, 32, 10**6):
                assert_same(radius_edges(x, x, r, None, None, max_num),
                            ref_radius(x, x, r, None, None, max_num))
    for dim in (1, 2, 5):  # Also other dims, and different clouds in y.
        x, bx = clouds([100, 50, 80], dim=dim, seed=dim)
        y, by = clouds([30, 0, 20], dim=dim, seed=dim + 10)
        by[by == 1] = 2
        assert_same(radius_edges(x, y, 0.3, bx, by, 16),
                    ref_radius(x, y, 0.3, bx, by, 16))


# ---------------------------------------------------------------------------
# knn

@pytest.mark.parametrize('sizes', [[1], [300], [512, 1, 200, 19]])
@pytest.mark.parametrize('k', [1, 5, 20, 50])
def test_knn_matches_torch_cluster(backend, graph_isa, sizes, k):
    x, bx = clouds(sizes, seed=4)
    assert_same(knn_edges(x, x, k, bx, bx), ref_knn(x, x, k, bx, bx))
    y, by = clouds([5] * len(sizes), seed=5)
    assert_same(knn_edges(x, y, k, bx, by), ref_knn(x, y, k, bx, by))


def test_knn_ties_3d(graph_isa):
    need_cpp()
    g = grid_cloud()
    for x in (g, g.double()):  # Equal distances: kd-tree search order.
        for k in (1, 6, 20, 27):
            assert_same(knn_edges(x, x, k), ref_knn(x, x, k, None, None))


@pytest.mark.parametrize('sizes', [[1024, 7, 2048], [2049, 300]])
def test_knn_3d_large_clouds_nan_inf(graph_isa, sizes):
    # As torch_cluster on clouds of DGCNN's size and larger, with a
    # duplicate point, and with NaN and infinite coordinates.
    need_cpp()
    x, bx = clouds(sizes, seed=14)
    x[5] = x[6]  # A duplicate point.
    for k in (3, 20):
        assert_same(knn_edges(x, x, k, bx, bx), ref_knn(x, x, k, bx, bx))
    x[[10, 1030]] = float('nan')
    x[11, 2] = float('inf')
    y, by = x[::7].contiguous(), bx[::7].contiguous()
    assert_same(knn_edges(x, y, 16, bx, by), ref_knn(x, y, 16, bx, by))


@pytest.mark.parametrize('dim', [2, 8, 9, 64, 128])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_knn_features(dim, dtype):
    need_cpp()
    x, bx = clouds([150, 1, 200, 40], dim=dim, dtype=dtype, seed=dim)
    x = x * 3 + 5  # Away from the origin: the centring matters.
    for k in (1, 20, 60):
        ref = ref_knn(x, x, k, bx, bx)
        assert_same(knn_edges(x, x, k, bx, bx), ref)
        tree = torch.ops.torch_geometric_binary.graph_knn_kdtree(
            x, x, k, bx, bx)
        assert_same(tree, ref)


def test_knn_features_ties():
    need_cpp()
    x, bx = clouds([120, 90], dim=64, seed=7)
    x[10:20] = x[0]  # Duplicates: distance ties, kd-tree fallback.
    x[130:140] = torch.round(x[130:140] * 2) / 2
    x[150:160] = x[140]
    x = torch.round(x * 4) / 4  # Equal distances between other points too.
    for k in (1, 5, 20, 100):
        assert_same(knn_edges(x, x, k, bx, bx), ref_knn(x, x, k, bx, bx))


@pytest.mark.parametrize('order', ['random', 'nearest_first',
                                   'nearest_last'])
def test_knn_features_selection_blocks(order):
    # The k-selection bounds the k-th distance by minima of blocks of
    # n / 2k entries (1 to 16): sizes around those limits, and clouds whose
    # nearest points all sit in the first or the last blocks.
    need_cpp()
    k = 8
    sizes = [k + 1, 2 * k + 1, 32 * k - 1, 32 * k + 3, 600]
    x, bx = clouds(sizes, dim=16, seed=11)
    if order != 'random':
        parts = []
        for part in x.split(sizes):
            d = (part - part[0]).pow(2).sum(1)
            perm = d.argsort(descending=order == 'nearest_last')
            parts.append(part[perm])
        x = torch.cat(parts)
    ref = ref_knn(x, x, k, bx, bx)
    assert_same(knn_edges(x, x, k, bx, bx), ref)


@pytest.mark.parametrize('dim', [9, 64])
def test_knn_features_tie_groups(dim):
    # Few values per channel: groups of equal distances, cut by the k-th
    # neighbour; which of them are kept, and their order, is the kd-tree's
    # visit order (ordered by the tree's structure, without a search).
    need_cpp()
    x, bx = clouds([700, 33, 260], dim=dim, seed=20 + dim)
    x = torch.round(x * 2) / 2
    x[5:40] = x[4]  # Duplicates of one point, also of the queries.
    y, by = clouds([50, 9, 31], dim=dim, seed=30 + dim)
    y = torch.round(y * 2) / 2
    for k in (1, 3, 20, 37):
        assert_same(knn_edges(x, x, k, bx, bx), ref_knn(x, x, k, bx, bx))
        assert_same(knn_edges(x, y, k, bx, by), ref_knn(x, y, k, bx, by))


def test_knn_features_nan_rows():
    # A NaN row is never a neighbour; its own query has none (as the
    # kd-tree): the block minima skip NaNs.
    need_cpp()
    x, bx = clouds([400, 300], dim=64, seed=13)
    x[[3, 17, 450]] = float('nan')
    x[20, 5] = float('nan')
    for k in (1, 20):
        assert_same(knn_edges(x, x, k, bx, bx), ref_knn(x, x, k, bx, bx))


def test_knn_quantized_features():
    # DGCNN's second k-NN graph in a binary model: Hardtanh of pooled binary
    # dot products, a few values per channel, so many distances tie.
    need_cpp()
    x, bx = clouds([300, 257], dim=64, seed=12)
    x = (torch.round(x * 3) / 5).clamp(-1, 1)
    for k in (1, 20):
        assert_same(knn_edges(x, x, k, bx, bx), ref_knn(x, x, k, bx, bx))


def test_knn_under_autocast():
    need_cpp()
    x, bx = clouds([50, 60], dim=64, seed=9)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        edge_index = knn_edges(x, x, 5, bx, bx)
    assert_same(edge_index, ref_knn(x, x, 5, bx, bx))


def test_knn_requires_grad():
    need_cpp()
    x, bx = clouds([50, 60], dim=64, seed=8)
    x.requires_grad_()
    edge_index = knn_edges(x, x, 5, bx, bx)
    assert_same(edge_index, ref_knn(x.detach(), x.detach(), 5, bx, bx))


# ---------------------------------------------------------------------------
# Bad input

def test_bad_input(backend):
    x, bx = clouds([10, 20])
    short = bx[:-1]
    with pytest.raises(ValueError, match='entries'):
        fps(x, short)
    with pytest.raises(ValueError, match='entries'):
        radius_edges(x, x, 0.2, short, bx)
    with pytest.raises(ValueError, match='entries'):
        knn_edges(x, x, 3, bx, short)
    with pytest.raises(ValueError, match='shape'):
        fps(x.view(5, 6, 3))
    with pytest.raises(ValueError, match='shape'):
        knn_edges(x.view(5, 6, 3), x, 3)
    with pytest.raises(ValueError, match='dims'):
        knn_edges(x, x[:, :2], 3, bx, bx)
    with pytest.raises(ValueError, match='dims'):
        radius_edges(x, x[:, :2], 0.2, bx, bx)
    with pytest.raises(ValueError, match='sorted'):
        knn_edges(x, x, 3, bx.flip(0), bx)
    with pytest.raises(ValueError, match='sorted'):
        fps(x, bx.flip(0))
    with pytest.raises(ValueError, match='both'):
        knn_edges(x, x, 3, bx, None)
    with pytest.raises(ValueError, match='dtypes'):
        radius_edges(x, x.double(), 0.2, bx, bx)
    with pytest.raises(ValueError, match='ratio'):
        fps(x, bx, 0.0)
    with pytest.raises(ValueError, match='ratio'):
        fps(x, bx, 1.5)
    with pytest.raises(ValueError, match="'k'"):
        knn_edges(x, x, 0, bx, bx)
    with pytest.raises(ValueError, match="'r'"):
        radius_edges(x, x, -0.1, bx, bx)
    with pytest.raises(ValueError, match='int64'):
        knn_edges(x, x, 3, bx.int(), bx)


def test_empty(backend):
    x, bx = clouds([10])
    empty = torch.empty(0, 3)
    none = torch.empty(0, dtype=torch.long)
    assert knn_edges(x, empty, 3, bx, none).shape == (2, 0)
    assert radius_edges(empty, x, 0.5, none, bx).shape == (2, 0)


# k-NN by Hamming distance on packed binary codes.

def codes(sizes, channels, levels=None, seed=0):
    r"""Packed signs of random features; :obj:`levels` distinct rows at most
    (repeated codes: many equal distances)."""
    from torch_geometric_binary.utils.bits import pack_bool
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    signs = torch.rand(n, channels, generator=g) < 0.5
    if levels is not None:
        signs = signs[torch.randint(0, levels, (n, ), generator=g)]
    batch = torch.repeat_interleave(torch.arange(len(sizes)),
                                    torch.tensor(sizes, dtype=torch.long))
    return pack_bool(signs), signs, batch


def brute_hamming(signs_x, signs_y, k, bx, by):
    r"""The definition, one query at a time: the k smallest (distance,
    index) pairs of the query's cloud."""
    src, dst = [], []
    for q in range(signs_y.size(0)):
        cand = (bx == by[q]).nonzero().view(-1).tolist()
        dist = [int((signs_x[j] != signs_y[q]).sum()) for j in cand]
        for _, j in sorted(zip(dist, cand))[:k]:
            src.append(j)
            dst.append(q)
    return torch.tensor([src, dst], dtype=torch.long).view(2, -1)


@pytest.mark.parametrize('channels', [7, 64, 130, 250])
@pytest.mark.parametrize('sizes,k', [([40], 8), ([25, 3, 31], 5),
                                     ([12, 9], 20)])
def test_knn_hamming_matches_definition(backend, graph_isa, channels, sizes,
                                        k):
    bits, signs, batch = codes(sizes, channels, levels=6)
    out = neighbors.knn_hamming_edges(bits, bits, k, batch, batch)
    assert_same(out, brute_hamming(signs, signs, k, batch, batch))


def test_knn_hamming_kernel_matches_reference(graph_isa):
    # The byte kernel (AVX2, up to 3 words) and the histogram kernel.
    need_cpp()
    for seed, (sizes, channels, levels) in enumerate([
            ([300, 517], 64, None), ([200, 1, 150], 128, 40),
            ([257], 192, 3), ([100, 64], 256, 5), ([33], 64, 1)]):
        bits, _, batch = codes(sizes, channels, levels, seed)
        out = neighbors.knn_hamming_edges(bits, bits, 20, batch, batch)
        ref = neighbors._knn_hamming_torch(bits, bits, 20, batch, batch,
                                           len(sizes))
        assert_same(out, ref)


def test_knn_hamming_bipartite(backend, graph_isa):
    bx_bits, sx, bx = codes([10, 20], 64, seed=1)
    by_bits, sy, by = codes([4, 6], 64, seed=2)
    out = neighbors.knn_hamming_edges(bx_bits, by_bits, 3, bx, by)
    assert_same(out, brute_hamming(sx, sy, 3, bx, by))


def test_knn_hamming_is_knn_on_signs():
    # The same neighbours as the Euclidean k-NN of the +-1 rows wherever the
    # k-th distance is not tied.
    bits, signs, batch = codes([200], 64, seed=3)
    k = 10
    out = neighbors.knn_hamming_edges(bits, bits, k, batch, batch)
    pm = signs.float() * 2 - 1
    dist = torch.cdist(pm, pm).pow(2).round()
    kth = dist.sort(dim=1).values
    untied = kth[:, k - 1] < kth[:, k]
    ref = dist.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    got = out[0].view(-1, k).sort(dim=1).values
    assert untied.sum() > 10
    assert torch.equal(got[untied], ref[untied])


def test_knn_hamming_bad_input(backend):
    bits, signs, batch = codes([10], 64)
    with pytest.raises(ValueError, match='packed int64 words'):
        neighbors.knn_hamming_edges(signs.float(), bits, 3)
    with pytest.raises(ValueError, match="'k' must be >= 1"):
        neighbors.knn_hamming_edges(bits, bits, 0)
    with pytest.raises(ValueError, match='words per code'):
        neighbors.knn_hamming_edges(bits, bits[:, :0], 3)
    with pytest.raises(ValueError, match='must be sorted'):
        neighbors.knn_hamming_edges(bits, bits, 3, batch.flip(0) * 0 +
                                    torch.arange(10).flip(0),
                                    torch.arange(10).flip(0))
    assert neighbors.knn_hamming_edges(bits[:0], bits[:0], 3).shape == (2, 0)
