import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)


def pytest_configure(config):
    # Two cores: keep intra-op threads predictable across the suite.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
