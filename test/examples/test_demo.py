r"""Smoke test of the main demo ``examples/demo.py``: the three trainings
(subprocesses of ``examples/modelnet.py``) on a tiny synthetic set, one
epoch each, then the packing and timing part, called in-process."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'examples' / 'demo.py'

TINY = ['--epochs', '1', '--num-points', '64', '--classes', '4',
        '--limit-train', '32', '--limit-test', '16', '--batch-size', '8',
        '--reps', '3']


@pytest.fixture(scope='module')
def demo():
    spec = importlib.util.spec_from_file_location('demo_example', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_tiny(demo, tmp_path, capsys):
    out = tmp_path / 'demo'
    summary = demo.main(TINY + ['--out', str(out)])
    stdout = capsys.readouterr().out
    lines = stdout.strip().splitlines()

    # One table with a row per method.
    header = [i for i, line in enumerate(lines)
              if line.split('|')[0].strip() == 'method']
    assert len(header) == 1, stdout
    rows = [line.split('|') for line in lines[header[0] + 2:header[0] + 5]]
    assert [r[0].strip() for r in rows] == ['fp', 'bipointnet', 'bnn']
    assert all(r[1].strip().endswith('%') for r in rows), stdout

    # The packing part: speed at batch 1 and 32, file sizes.
    assert 'packed into bits' in stdout
    assert 'same prediction as the trained model for 16/16 clouds' in stdout
    assert any(line.strip().startswith('batch  1: FP32') for line in lines)
    assert any(line.strip().startswith('batch 32: FP32') for line in lines)
    assert any(line.strip().startswith('size: FP32') for line in lines)

    # The last line: the numbers of the table as JSON.
    result = json.loads(lines[-1])
    assert result == json.loads(json.dumps(summary))
    assert result['dataset'] == 'synthetic' and result['num_classes'] == 4
    assert set(result['methods']) == {'fp', 'bipointnet', 'bnn'}
    for m in result['methods'].values():
        assert set(m) >= {'test_acc', 'best_acc', 'epochs', 'train_time'}
        assert m['epochs'] == 1 and 0 <= m['test_acc'] <= 1
    packed = result['packed']
    for key in ['batch_1', 'batch_32']:
        assert set(packed[key]) == {'fp32_ms_per_cloud',
                                    'packed_ms_per_cloud', 'speedup'}
        assert packed[key]['speedup'] > 0
    assert packed['same_predictions'] == packed['num_test'] == 16
    assert packed['packed_test_acc'] == result['methods']['bipointnet'][
        'test_acc']
    assert packed['packed_bytes'] < packed['fp32_bytes']
    assert (out / 'bipointnet.tgb').stat().st_size == packed['packed_bytes']
    for method in ['fp', 'bipointnet', 'bnn']:
        assert (out / method / 'results.json').is_file()


@pytest.mark.parametrize('argv,message', [
    (['--dataset', 'modelnet40'], '--dataset modelnet40 needs --root'),
    (['--root', '/nonexistent/ModelNet40'],
     "'/nonexistent/ModelNet40' does not exist"),
    (['--methods', 'fp,xnor'], 'argument --methods: expected distinct'),
    (['--classes', '20'], 'the synthetic shapes have 13 classes'),
    (['--epochs', '0'], '--epochs: must be positive'),
])
def test_bad_arguments(demo, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        demo.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ': error: ' in err[-1] and message in err[-1], err
