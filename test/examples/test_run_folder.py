r"""The run folder of examples/modelnet.py: no run overwritten or shared by
accident, and a run killed between its writes continues consistently."""
import fcntl

import torch

from torch_geometric_binary.train import load_checkpoint

from .test_modelnet_example import (FP_RUN, SCRIPT, ok, read_results,
                                    run_script)

RUN = FP_RUN[:FP_RUN.index('--epochs')] + ['--epochs', '3', '--seed', '1',
                                           '--limit-train', '64']

# Runs the script with save_checkpoint replaced by one that exits the
# process (as a kill would) right after its N-th write.
KILL_AFTER_WRITE = f'''
import os, runpy, sys
import torch_geometric_binary.train.trainer as trainer
real, calls, stop = trainer.save_checkpoint, [0], int(sys.argv[1])
sys.argv = sys.argv[2:]
def save(path, state):
    real(path, state)
    calls[0] += 1
    if calls[0] == stop:
        os._exit(9)
trainer.save_checkpoint = save
runpy.run_path({str(SCRIPT)!r}, run_name='__main__')
'''


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / 'run'
    ok(run_script(*RUN, '--epochs', '1', '--out', out))
    before = (out / 'last.pt').read_bytes()
    again = run_script(*RUN, '--epochs', '1', '--out', out)
    assert again.returncode == 2
    assert 'already holds a run' in again.stderr and '--resume' in again.stderr
    assert (out / 'last.pt').read_bytes() == before
    ok(run_script(*RUN, '--epochs', '1', '--out', out, '--overwrite'))
    assert read_results(out)['epochs_done'] == 1


def test_folder_in_use_is_refused(tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    with open(out / '.lock', 'a+') as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write('pid 12345\n')
        f.flush()
        proc = run_script(*RUN, '--out', out)
    assert proc.returncode == 2
    assert 'in use by another training job' in proc.stderr
    assert not (out / 'last.pt').exists()


def test_unwritable_out_is_refused_before_training(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    proc = run_script(*RUN, '--out', blocker / 'run')
    assert proc.returncode == 2
    assert 'is not writable' in proc.stderr
    assert 'Epoch 001' not in proc.stdout


def test_resume_of_damaged_run_is_refused(tmp_path):
    out = tmp_path / 'run'
    ok(run_script(*RUN, '--epochs', '1', '--out', out))
    (out / 'last.pt').unlink()
    proc = run_script(*RUN, '--out', out, '--resume')
    assert proc.returncode == 2 and 'no last.pt' in proc.stderr


def test_kill_between_checkpoint_writes_is_repaired(tmp_path):
    straight = tmp_path / 'straight'
    ok(run_script(*RUN, '--out', straight))
    expected = read_results(straight)
    # Epoch 1 always improves (2 writes), so write 3 is epoch 2's last.pt:
    # a kill right after it leaves best.pt behind when epoch 2 improved, and
    # results.json behind in any case.
    for stop in (1, 3):
        out = tmp_path / f'killed{stop}'
        killed = run_script(*RUN, '--out', out,
                            prefix=('-c', KILL_AFTER_WRITE, str(stop)))
        assert killed.returncode == 9, killed.stderr
        ok(run_script(*RUN, '--out', out, '--resume'))
        res = read_results(out)
        assert res['finished'] and res['epochs_done'] == 3
        assert [h['test_acc'] for h in res['history']] == \
            [h['test_acc'] for h in expected['history']]
        assert res['best'] == expected['best']
        best = load_checkpoint(out / 'best.pt')
        assert best['epoch'] == res['best']['epoch']
        ref = load_checkpoint(straight / 'best.pt')['model']
        for k, v in best['model'].items():
            torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5)


def test_stale_best_checkpoint_is_rewritten_on_resume(tmp_path):
    out = tmp_path / 'run'
    ok(run_script(*RUN, '--out', out, '--stop-after', '2'))
    best_epoch = read_results(out)['best']['epoch']
    (out / 'best.pt').unlink()  # As a kill before best.pt was written.
    proc = ok(run_script(*RUN, '--out', out, '--resume'))
    assert 'rewrote' in proc.stdout and 'best.pt' in proc.stdout
    res = read_results(out)
    best = load_checkpoint(out / 'best.pt')
    assert best['epoch'] == res['best']['epoch']
    if res['best']['epoch'] == best_epoch:  # Not improved in epoch 3.
        assert best['metrics']['overall_acc'] == res['best']['overall_acc']
