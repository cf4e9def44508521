import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'benchmarks' / 'bench_fusion.py'


@pytest.mark.slow
def test_quick_mode_compares_fused_and_module_by_module():
    out = subprocess.run([sys.executable, str(SCRIPT), '--quick'],
                         capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    rows = [json.loads(line) for line in lines[:-1]]
    assert {r['model'] for r in rows} == {
        'PointNet', 'PointNet, T-Nets', 'PointNetSeg', 'PointNet2Seg',
        'DGCNNSeg'}
    # The fused forward gives the module-by-module predictions.
    assert all(r['same_argmax'] and r['max_abs_diff'] < 1e-4 for r in rows)
    summary = json.loads(lines[-1])
    assert set(summary) == {'pointnet_layers_over_fused_b1',
                            'pointnet_layers_over_fused_b4'}
    assert all(v > 0 for v in summary.values())
