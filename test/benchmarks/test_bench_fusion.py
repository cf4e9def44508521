import json

import pytest


@pytest.mark.slow
def test_quick_mode_compares_fused_and_module_by_module(run_quick):
    lines = run_quick('bench_fusion')
    rows = [json.loads(line) for line in lines[:-1]]
    assert {r['model'] for r in rows} == {
        'PointNet', 'PointNet, T-Nets', 'PointNet2', 'DGCNN', 'PointNetSeg',
        'PointNet2Seg', 'DGCNNSeg'}
    # The fused forward gives the module-by-module predictions.
    assert all(r['same_argmax'] and r['max_abs_diff'] < 1e-4 for r in rows)
    # Timed also as written (not replayed).
    assert all(r['written'] > 0 and r['written_over_fused'] > 0
               for r in rows)
    summary = json.loads(lines[-1])
    # And how the fused classifiers compare with FP32.
    assert set(summary) == {'pointnet_layers_over_fused_b1',
                            'pointnet_layers_over_fused_b4',
                            'pointnet_fp32_over_fused_b1',
                            'pointnet_fp32_over_fused_b4',
                            'pointnet2_fp32_over_fused_b2',
                            'dgcnn_fp32_over_fused_b2'}
    assert all(v > 0 for v in summary.values())
