import subprocess
import sys
import textwrap

import pytest

# route_pyg() changes PyG's state for the whole process: run it in its own.
SCRIPT = textwrap.dedent('''
    import warnings
    warnings.filterwarnings('ignore')
    import torch, torch_cluster
    import torch_geometric.nn as pyg
    import torch_geometric.typing
    from torch_geometric.nn import MLP, DynamicEdgeConv
    from torch_geometric_binary.nn.neighbors import route_pyg
    if torch_geometric.typing.WITH_KNN:
        print('pyg-lib installed'); raise SystemExit(0)
    try:
        pyg.fps(torch.rand(8, 3))
        raise SystemExit('fps ran without pyg-lib')
    except ImportError:
        pass
    assert route_pyg() and route_pyg()
    torch.manual_seed(0)
    pos = torch.rand(60, 3)
    b = torch.tensor([0] * 25 + [1] * 35)
    assert torch.equal(pyg.knn(pos, pos, 4, b, b),
                       torch_cluster.knn(pos, pos, 4, b, b))
    assert torch.equal(pyg.radius(pos, pos[:30], 0.3, b, b[:30], 8),
                       torch_cluster.radius(pos, pos[:30], 0.3, b, b[:30],
                                            max_num_neighbors=8))
    for loop in (False, True):
        assert torch.equal(pyg.knn_graph(pos, 4, b, loop=loop),
                           torch_cluster.knn_graph(pos, 4, b, loop=loop))
        assert torch.equal(pyg.radius_graph(pos, 0.3, b, loop=loop),
                           torch_cluster.radius_graph(pos, 0.3, b,
                                                      loop=loop))
    assert torch.equal(pyg.fps(pos, b, 0.5, random_start=False),
                       torch_cluster.fps(pos, b, 0.5, random_start=False))
    conv = DynamicEdgeConv(MLP([6, 16]), 5, 'max')
    assert conv(pos, b).shape == (60, 16)
    print('routed')
''')


@pytest.mark.slow
def test_route_pyg_runs_unchanged_pyg_code():
    proc = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ('routed', 'pyg-lib installed')
