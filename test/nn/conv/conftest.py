import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader


@pytest.fixture
def cloud_batch():
    r"""A real PyG mini-batch of clouds of different sizes."""
    sizes = [40, 17, 64, 9]
    data_list = [Data(pos=torch.rand(n, 3), x=torch.randn(n, 4),
                      y=torch.tensor([i])) for i, n in enumerate(sizes)]
    return next(iter(DataLoader(data_list, batch_size=len(sizes))))
