import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_geometric_binary.deploy import kernels
from torch_geometric_binary.deploy import (
    num_words,
    pack_bits,
    unpack_bits,
    xnor_gemm,
    xnor_gemm_threshold,
)
from torch_geometric_binary.nn.functional import sign

from .conftest import REQUIRE_EXT, need_cpp

KS = [1, 3, 63, 64, 65, 127, 128, 200, 1024]
MS = [1, 2, 5, 34]
# (M, N): M = 1, odd and even; N around the 16-channel blocks and 64-bit
# output words.
SHAPES = [(1, 1), (1, 65), (2, 16), (5, 17), (34, 64), (3, 130), (4, 3)]
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def ref_pack(b: torch.Tensor) -> torch.Tensor:
    r"""Packs a boolean [M, K] tensor with numpy (little-endian bit order)."""
    b = b.numpy()
    M, K = b.shape
    padded = np.zeros((M, 64 * num_words(K)), dtype=bool)
    padded[:, :K] = b
    by = np.packbits(padded, axis=1, bitorder='little')
    return torch.from_numpy(by.view('<i8').astype(np.int64))


def ref_dot(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (sign(x).double() @ sign(w).double().t()).to(torch.int32)


def special_values(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    flat = x.view(-1)
    values = [0.0, -0.0, float('nan'), float('inf'), -float('inf'), 1e-45]
    for i, v in enumerate(values[:flat.numel()]):
        flat[i * 7 % flat.numel()] = v
    return x


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64,
                                   torch.float16, torch.bfloat16])
def test_pack_bits(kernel_backend, dtype):
    for K in KS:
        for M in MS:
            x = special_values(torch.randn(M, K)).to(dtype)
            bits = pack_bits(x, backend=kernel_backend)
            assert bits.dtype == torch.int64
            assert bits.shape == (M, num_words(K))
            assert torch.equal(bits, ref_pack(x >= 0)), (K, M)
            assert torch.equal(unpack_bits(bits, K), sign(x.float()))


def test_pack_bits_leading_dims_and_views(kernel_backend):
    x = torch.randn(2, 3, 100)
    bits = pack_bits(x, backend=kernel_backend)
    assert bits.shape == (2, 3, 2)
    assert torch.equal(bits.view(6, 2), ref_pack(x.view(6, 100) >= 0))
    xt = torch.randn(100, 7).t()  # Non-contiguous.
    assert torch.equal(pack_bits(xt, backend=kernel_backend),
                       ref_pack(xt >= 0))


@pytest.mark.parametrize('C', [3, 64, 100])
@pytest.mark.parametrize('with_theta', [False, True])
def test_edge_diff_bits(kernel_backend, C, with_theta):
    # EdgeConv's difference signs without the float messages, against the
    # float messages packed (ties at zero, NaN and infinities included).
    from torch_geometric_binary.deploy.kernels import edge_diff_bits
    g = torch.Generator().manual_seed(C)
    N, k = 41, 6
    x = special_values(torch.round(torch.randn(N, C, generator=g) * 2) / 2)
    src = torch.randint(0, N, (N * k, ), generator=g)
    theta = torch.randn(C, generator=g) if with_theta else None
    diff = (x[src] - x.repeat_interleave(k, 0))
    if theta is not None:
        diff = diff - theta
    out = edge_diff_bits(x, src, k, theta, backend=kernel_backend)
    assert torch.equal(out, ref_pack(diff >= 0))
    with pytest.raises(ValueError, match='sources per point'):
        edge_diff_bits(x, src[:-1], k, backend=kernel_backend)


@pytest.mark.parametrize('K', KS)
def test_xnor_gemm(kernel_backend, K):
    for M, N in SHAPES:
        x, w = torch.randn(M, K), torch.randn(N, K)
        a, b = pack_bits(x), pack_bits(w)
        out = xnor_gemm(a, b, K, backend=kernel_backend)
        assert out.dtype == torch.int32 and out.shape == (M, N)
        assert torch.equal(out, ref_dot(x, w)), (M, N)


def random_thresholds(dot: torch.Tensor, K: int) -> torch.Tensor:
    r"""Thresholds on actual dot values (ties), at the range ends, past
    them, and the constant-channel sentinels."""
    N = dot.size(1)
    picks = dot[torch.randint(dot.size(0), (N, )), torch.arange(N)]
    edge = torch.tensor([-K, K, K + 1, -K - 1, K + 2, INT32_MIN, INT32_MAX,
                         0, 1, -1])
    t = torch.where(torch.rand(N) < 0.6, picks,
                    edge[torch.randint(len(edge), (N, ))])
    return t.to(torch.int32)


@pytest.mark.parametrize('K', KS)
def test_xnor_gemm_threshold(kernel_backend, K):
    for M, N in SHAPES:
        x, w = torch.randn(M, K), torch.randn(N, K)
        a, b = pack_bits(x), pack_bits(w)
        dot = ref_dot(x, w)
        t = random_thresholds(dot, K)
        flip = torch.rand(N) < 0.5
        out = xnor_gemm_threshold(a, b, K, t, flip, backend=kernel_backend)
        assert out.shape == (M, num_words(N))
        expected = ref_pack((dot >= t) ^ flip)  # Padding bits are 0.
        assert torch.equal(out, expected), (M, N)
        # The fused kernel equals the unfused one.
        dot2 = xnor_gemm(a, b, K, backend=kernel_backend)
        assert torch.equal(out, pack_bits(
            torch.where((dot2 >= t) ^ flip, 1.0, -1.0)))


def test_threshold_sentinels_and_dtypes(kernel_backend):
    K, N = 70, 5
    a, b = pack_bits(torch.randn(9, K)), pack_bits(torch.randn(N, K))
    t = torch.tensor([INT32_MIN, INT32_MAX, -K, K + 1, 0])
    flip = torch.tensor([False, False, True, True, False])
    out = unpack_bits(xnor_gemm_threshold(a, b, K, t.int(), flip,
                                          backend=kernel_backend), N)
    assert bool((out[:, 0] == 1).all()) and bool((out[:, 1] == -1).all())
    assert bool((out[:, 2] == -1).all()) and bool((out[:, 3] == 1).all())
    # int64 thresholds and uint8 flips are accepted as well.
    out64 = xnor_gemm_threshold(a, b, K, t, flip.to(torch.uint8),
                                backend=kernel_backend)
    assert torch.equal(unpack_bits(out64, N), out)


def test_large_k_and_empty(kernel_backend):
    # Over 31 words: the AVX2 byte counters are flushed in chunks.
    for K in (1984, 1985, 4000):
        x, w = torch.randn(3, K), torch.randn(18, K)
        assert torch.equal(xnor_gemm(pack_bits(x), pack_bits(w), K,
                                     backend=kernel_backend), ref_dot(x, w))
    a, b = pack_bits(torch.randn(0, 10)), pack_bits(torch.randn(4, 10))
    assert xnor_gemm(a, b, 10, backend=kernel_backend).shape == (0, 4)
    t, f = torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.bool)
    assert xnor_gemm_threshold(a, b, 10, t, f,
                               backend=kernel_backend).shape == (0, 1)


def test_leading_dims(kernel_backend):
    x, w = torch.randn(2, 3, 65), torch.randn(7, 65)
    a, b = pack_bits(x), pack_bits(w)
    out = xnor_gemm(a, b, 65, backend=kernel_backend)
    assert out.shape == (2, 3, 7)
    assert torch.equal(out.view(6, 7), ref_dot(x.view(6, 65), w))
    t, f = torch.zeros(7, dtype=torch.int32), torch.zeros(7, dtype=torch.bool)
    assert xnor_gemm_threshold(a, b, 65, t, f,
                               backend=kernel_backend).shape == (2, 3, 1)


def test_input_checks():
    a = pack_bits(torch.randn(3, 65))
    with pytest.raises(ValueError, match='words per row'):
        xnor_gemm(a, a, 64)
    with pytest.raises(TypeError, match='int64'):
        xnor_gemm(a.int(), a, 65)
    with pytest.raises(TypeError, match='floating-point'):
        pack_bits(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match='threshold'):
        xnor_gemm_threshold(a, a, 65, torch.zeros(3), torch.zeros(3).bool())
    with pytest.raises(ValueError, match='backend'):
        pack_bits(torch.randn(3), backend='numpy')


def test_cpp_isas_agree_with_torch(all_isas):
    M, K, N = 77, 200, 130
    x, w = torch.randn(M, K), torch.randn(N, K)
    a, b = pack_bits(x, backend='torch'), pack_bits(w, backend='torch')
    dot = xnor_gemm(a, b, K, backend='torch')
    t = random_thresholds(dot, K)
    flip = torch.rand(N) < 0.5
    bits = xnor_gemm_threshold(a, b, K, t, flip, backend='torch')
    assert 'generic' in all_isas
    for name in all_isas:
        kernels.set_isa(name)
        assert kernels.isa() == name
        assert torch.equal(pack_bits(x, backend='cpp'), a)
        assert torch.equal(xnor_gemm(a, b, K, backend='cpp'), dot), name
        assert torch.equal(
            xnor_gemm_threshold(a, b, K, t, flip, backend='cpp'), bits), name


def test_dispatch_never_picks_unsupported_isa(all_isas):
    # The AVX-512 kernels are compiled in but only run where the CPU has
    # AVX-512F and VPOPCNTDQ.
    kernels.set_isa('auto')
    assert kernels.isa() == all_isas[0]
    if 'avx512_vpopcntdq' not in all_isas:
        with pytest.raises(RuntimeError, match='does not support'):
            kernels.set_isa('avx512_vpopcntdq')
    with pytest.raises(RuntimeError, match='unknown'):
        kernels.set_isa('sse9')


def test_backend_selection(monkeypatch):
    monkeypatch.setenv(kernels.ENV_BACKEND, 'torch')
    assert kernels.backend() == 'torch'
    monkeypatch.setenv(kernels.ENV_BACKEND, 'auto')
    assert kernels.backend() == ('cpp' if kernels.cpp_available() else 'torch')
    monkeypatch.setenv(kernels.ENV_BACKEND, 'fortran')
    with pytest.raises(ValueError):
        kernels.backend()


def test_extension_built_when_required():
    if REQUIRE_EXT:
        assert kernels.cpp_available(), kernels._EXT_ERROR
    else:
        need_cpp()
    assert kernels.isa() in kernels.supported_isas()


@pytest.mark.skipif(sys.platform == 'win32' or shutil.which('bash') is None,
                    reason='scripts/check_arm.sh needs bash')
def test_standalone_kernel_driver():
    # The torch-free driver (deploy/csrc/test_xnor_kernels.cpp) checks
    # every instruction set of a native build against a direct reference;
    # check_arm.sh also runs the AArch64 NEON build under qemu-aarch64 where
    # the cross tools are installed (and skips it otherwise).
    if shutil.which(os.environ.get('CXX', 'g++')) is None:
        pytest.skip('no C++ compiler for the standalone kernel driver')
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ['bash', str(root / 'scripts' / 'check_arm.sh'), '--quick'],
        cwd=root, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert 'MISMATCH' not in out
    assert '\nOK: ' in out, out
    if kernels.cpp_available():
        # The native run (the first) checked every kernel the extension
        # can run here.
        checking = next(line for line in out.splitlines()
                        if line.startswith('test_xnor_kernels: '))
        for name in kernels.supported_isas():
            assert name in checking, (name, checking)
