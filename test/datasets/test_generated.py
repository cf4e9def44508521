import pytest
import torch
from torch_geometric.data import Data

from torch_geometric_binary.datasets.generated import GeneratedDataset


class Toy(GeneratedDataset):
    num_groups = 3
    num_per_group = 4

    def __init__(self, root=None, train=True, seed=0, pre_transform=None):
        super().__init__(root, train, seed, None, pre_transform, False,
                         False)

    @property
    def processed_file_names(self):
        return [f"toy_{'train' if self.train else 'test'}_{self.seed}.pt"]

    def sample(self, group, rng):
        return Data(pos=torch.from_numpy(rng.normal(size=(5, 3))),
                    y=torch.tensor([group]))


def test_deterministic_and_split_streams(tmp_path):
    a, b = Toy(), Toy()
    assert len(a) == 12 and a.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(a._data.pos, b._data.pos)
    assert not torch.equal(a._data.pos, Toy(train=False)._data.pos)
    assert not torch.equal(a._data.pos, Toy(seed=1)._data.pos)
    cached = Toy(root=str(tmp_path))
    assert (tmp_path / 'processed' / 'toy_train_0.pt').exists()
    assert torch.equal(cached._data.pos, a._data.pos)


def test_pre_transform_and_bad_seed():
    def shift(data):
        data.pos = data.pos + 1
        return data

    assert torch.allclose(Toy(pre_transform=shift)._data.pos,
                          Toy()._data.pos + 1)
    with pytest.raises(ValueError, match="'seed' must be non-negative"):
        Toy(seed=-1)
