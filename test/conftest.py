import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)


def pytest_configure(config):
    # Two cores: keep intra-op threads predictable across the suite.
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def fused_spy(monkeypatch):
    r"""``fused_spy(*names)`` wraps those functions of the C++ module
    ``_ext.fused`` and returns the list their calls are appended to, by
    name (whether a code path reached the kernels)."""
    from torch_geometric_binary import _ext

    def spy(*names):
        calls = []
        for name in names:
            kernel = getattr(_ext.fused, name)
            monkeypatch.setattr(_ext.fused, name, lambda *a, k=kernel, n=name:
                                calls.append(n) or k(*a))
        return calls
    return spy


@pytest.fixture
def num_threads():
    r"""``num_threads(n)`` sets torch's intra-op threads for the rest of
    the test; the old value comes back afterwards."""
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)
