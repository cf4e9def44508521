import os

import pytest

from torch_geometric_binary.deploy import kernels

REQUIRE_EXT = os.environ.get('TORCH_GEOMETRIC_BINARY_REQUIRE_EXT') == '1'


def need_cpp():
    r"""Skips the calling test without the C++ extension, unless CI requires
    it (:obj:`TORCH_GEOMETRIC_BINARY_REQUIRE_EXT=1`), where it fails."""
    if kernels.cpp_available():
        return
    reason = f"C++ extension not built ({kernels._EXT_ERROR})"
    if REQUIRE_EXT:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(params=['torch', 'cpp'])
def kernel_backend(request) -> str:
    if request.param == 'cpp':
        need_cpp()
    return request.param


@pytest.fixture
def all_isas():
    r"""The instruction sets to run the C++ kernels on; restores the
    default afterwards."""
    need_cpp()
    yield kernels.supported_isas()
    kernels.set_isa('auto')
