r"""The pooled chain runs the layers up to the pooling on each group's
distinct rows only (the pooled bits are an OR over the rows): its bits and
floats equal those of PyTorch's kernels, which pool every row, on every
instruction set, for clouds of repeated and of distinct rows, groups of one
row and empty groups."""
import pytest
import torch

from torch_geometric_binary.deploy import BinaryChain, pack_bits

from .conftest import need_cpp
from .test_pack_chain import make_stack, pack_stack

LAYOUTS = [[1024], [1], [1, 1, 1], [0, 5, 0], [300, 0, 700, 1],
           [64, 65, 63], [1500]]


def chains(widths, seed=0):
    r"""A chain pooled after its last layer (bits), and one with layers
    after the pooling (floats)."""
    act = torch.nn.Hardtanh()
    lins, norms, _ = make_stack(widths, seed=seed)
    layers = pack_stack(lins, norms, act, last_output='float',
                        last_act=False)
    post_lins, post_norms, _ = make_stack([widths[-1], 67, 9], seed=seed + 1)
    post = pack_stack(post_lins, post_norms, act)
    pool = len(layers) - 1
    return [BinaryChain(layers, 'bits', pool=pool, pool_ema=True,
                        pool_act=act),
            BinaryChain(layers + post, 'float', pool=pool, pool_ema=True,
                        pool_act=act)]


def rows(kind, n, K, g):
    if kind == 'distinct':
        return torch.randn(n, K, generator=g)
    if kind == 'repeated':  # 40 distinct rows, in random order.
        points = torch.randn(40, K, generator=g)
        return points[torch.randint(0, 40, (n, ), generator=g)]
    # Rows equal but in one channel, in each 64-bit word in turn.
    x = torch.randn(1, K, generator=g).repeat(n, 1)
    idx = torch.arange(n)
    x[idx, (idx * 61) % K] *= -1
    return x


def check(chain, x, sizes, **kwargs):
    counts = torch.tensor(sizes)
    got = chain(x, counts, **kwargs)
    expected = chain(x, counts, backend='torch', **kwargs)
    assert torch.equal(got, expected), sizes


@pytest.mark.parametrize('kind', ['distinct', 'repeated', 'one_bit_apart'])
@pytest.mark.parametrize('widths', [[64, 64, 128, 300], [130, 70, 65]])
def test_pooling_over_distinct_rows(all_isas, kind, widths):
    g = torch.Generator().manual_seed(0)
    for isa in all_isas:
        torch.ops.torch_geometric_binary.xnor_set_isa(isa)
        for chain in chains(widths):
            for sizes in LAYOUTS:
                x = rows(kind, sum(sizes), widths[0], g)
                check(chain, x, sizes)
                check(chain, pack_bits(x), sizes)  # Packed rows.


def test_pooling_over_distinct_rows_with_input_thresholds(all_isas):
    r"""Float rows binarized by per-channel thresholds: rows that differ
    as floats but not as bits count once."""
    g = torch.Generator().manual_seed(1)
    chain = chains([64, 64, 128, 300])[1]
    thr = torch.stack([torch.where(torch.rand(64, generator=g) < 0.5, -1.0,
                                   1.0), torch.randn(64, generator=g)])
    x = torch.randn(2000, 64, generator=g)
    x[::2] = x[1::2] + 1e-3 * torch.rand(1000, 64, generator=g)
    for isa in all_isas:
        torch.ops.torch_geometric_binary.xnor_set_isa(isa)
        for sizes in ([2000], [1, 999, 0, 1000]):
            check(chain, x, sizes, in_threshold=thr)


def test_same_bits_for_any_thread_count(all_isas):
    g = torch.Generator().manual_seed(2)
    chain = chains([64, 64, 128, 300])[0]
    x = rows('repeated', 3000, 64, g)
    sizes = [1024] * 2 + [1, 0, 951]
    threads = torch.get_num_threads()
    try:
        for isa in all_isas:
            torch.ops.torch_geometric_binary.xnor_set_isa(isa)
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                check(chain, x, sizes)
    finally:
        torch.set_num_threads(threads)


def test_one_group_with_the_first_linear_layer(all_isas):
    r"""PointNet's one-cloud path: the full-precision first layer inside
    the operation, on clouds with repeated points."""
    need_cpp()
    g = torch.Generator().manual_seed(3)
    chain = chains([64, 64, 128, 300])[1]
    w, b = torch.randn(64, 3, generator=g), torch.randn(64, generator=g)
    thr = torch.stack([torch.where(torch.rand(64, generator=g) < 0.5, -1.0,
                                   1.0), torch.randn(64, generator=g)])
    points = torch.randn(100, 3, generator=g)
    for pos in (points[torch.randint(0, 100, (1024, ), generator=g)],
                torch.randn(1024, 3, generator=g), points[:1]):
        expected = chain(torch.nn.functional.linear(pos, w, b), pos.size(0),
                         in_threshold=thr, backend='torch')
        for isa in all_isas:
            torch.ops.torch_geometric_binary.xnor_set_isa(isa)
            args = chain.one_group_args(pos.size(0), thr, first=(w, b))
            assert torch.equal(BinaryChain.run_one_group(pos, args),
                               expected)
