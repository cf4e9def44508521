import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from torch_geometric_binary.nn.models import PointNet

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'benchmarks' / 'bench_peers.py'
KEYS = {'pointnet_vs_best_peer_b1', 'pointnet_vs_best_peer_b32',
        'pointnet2_vs_fp32_b1', 'dgcnn_vs_fp32_b1'}


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('bench_peers', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrated_pointnet():
    model = PointNet(5, method='fp')
    model.train()
    with torch.no_grad():  # Statistics away from the initial (0, 1).
        model(torch.randn(64, 3) * 3 + 1, torch.arange(2).repeat_interleave(
            32))
    return model.eval()


def test_dense_twin_gives_the_models_logits(bench):
    model = calibrated_pointnet()
    dense = bench.DensePointNet(model).eval()
    pos = torch.randn(3 * 16, 3)
    batch = torch.arange(3).repeat_interleave(16)
    with torch.no_grad():
        ref = model(pos, batch)
        got = dense(pos.view(3, 16, 3))
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_dense_twin_refuses_binary_models(bench):
    with pytest.raises(ValueError, match='FP PointNet'):
        bench.DensePointNet(PointNet(5, method='bipointnet'))


def test_onnx_peers_skipped_without_onnxruntime(bench, monkeypatch,
                                                tmp_path):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    dense = bench.DensePointNet(calibrated_pointnet()).eval()
    fns, note = bench.onnx_sessions(dense, 16, 1, str(tmp_path))
    assert fns == {} and 'skipped' in note and 'onnxruntime' in note


@pytest.mark.slow
def test_quick_mode_prints_the_four_ratios(run_quick):
    summary = json.loads(run_quick('bench_peers')[-1])
    assert set(summary) == KEYS
    assert all(isinstance(v, float) and v > 0 for v in summary.values())
