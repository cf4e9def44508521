import importlib.util
from pathlib import Path

import torch

from torch_geometric_binary.nn import fused, functional, rprelu


ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        'bench_binary_kernels',
        ROOT / 'benchmarks' / 'bench_binary_kernels.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_times_every_case_with_and_without_and_restores_the_hooks():
    bench = _load()
    hooks = (functional.packed_signs, rprelu._use_kernels,
             functional._SHIFTED_ESTIMATORS, fused.NARROW_CHANNELS)
    with bench.without_new_kernels():
        # The PyTorch paths: no packed operands, no RPReLU kernel.
        assert functional.packed_signs(torch.ones(2, 2),
                                       torch.ones(2, 2)) == ()
        assert not rprelu._use_kernels(torch.ones(2))
        assert fused.NARROW_CHANNELS == 0
    assert (functional.packed_signs, rprelu._use_kernels,
            functional._SHIFTED_ESTIMATORS, fused.NARROW_CHANNELS) == hooks
    threads = torch.get_num_threads()
    try:
        result = bench.main(['--batch', '2', '--points', '40', '--reps', '1',
                             '--warmup', '0'])
    finally:
        torch.set_num_threads(threads)
    assert [(r['model'], r['method']) for r in result['rows']] == [
        (c[0], c[1]) for c in bench.CASES]
    assert all(r['with_s'] > 0 and r['without_s'] > 0 and r['points'] == 40
               for r in result['rows'])
