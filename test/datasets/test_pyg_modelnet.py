r"""PyG's own mesh dataset :class:`torch_geometric.datasets.ModelNet` works
offline on a local ``raw/`` tree: it only downloads when one of its
``raw_file_names`` (the ten ModelNet10 class folders) is missing."""
import torch
import torch_geometric.transforms as T
from torch_geometric.datasets import ModelNet

CLASSES = [
    'bathtub', 'bed', 'chair', 'desk', 'dresser', 'monitor', 'night_stand',
    'sofa', 'table', 'toilet'
]

TETRAHEDRON = """OFF
4 4 0
0 0 0
{s} 0 0
0 {s} 0
0 0 {s}
3 0 1 2
3 0 1 3
3 0 2 3
3 1 2 3
"""


def test_pyg_modelnet_offline(tmp_path):
    for i, c in enumerate(CLASSES):
        for split, num in (('train', 2), ('test', 1)):
            folder = tmp_path / 'raw' / c / split
            folder.mkdir(parents=True)
            for j in range(num):
                path = folder / f'{c}_{j + 1 + 2 * (split == "test"):04d}.off'
                path.write_text(TETRAHEDRON.format(s=1 + i + j))

    train = ModelNet(str(tmp_path), name='10', train=True,
                     transform=T.SamplePoints(64))
    test = ModelNet(str(tmp_path), name='10', train=False)
    assert str(train) == 'ModelNet10(20)' and len(test) == 10
    assert sorted(train._data.y.tolist()) == sorted(list(range(10)) * 2)
    assert test[0].face.shape == (3, 4) and test[0].pos.shape == (4, 3)

    data = train[0]
    assert data.pos.shape == (64, 3) and data.pos.dtype == torch.float32
    assert 'face' not in data
    assert data.y.shape == (1, )
    # Samples lie on the tetrahedron (all coordinates >= 0, inside x+y+z=s):
    s = 1 + int(data.y) + 0.0
    assert (data.pos >= -1e-6).all()
    assert (data.pos.sum(1) <= s + 1 + 1e-4).all()
