r"""deploy.threads: small inputs run on the calling thread alone, larger
ones on torch's threads; the thread count is restored, also on errors."""
import pytest
import torch

from torch_geometric_binary import deploy
from torch_geometric_binary.deploy import threads
from torch_geometric_binary.nn.models import PointNet


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
    threads.set_single_thread_points(None)


@pytest.fixture(scope='module')
def packed():
    torch.manual_seed(0)
    return deploy.pack(PointNet(5, method='bipointnet').eval())


def threads_inside(model, pos, batch=None):
    r"""The thread count the model's chained forward runs with."""
    seen = []
    forward = model._forward

    def spy(*args):
        seen.append(torch.get_num_threads())
        return forward(*args)
    model._forward = spy
    try:
        model(pos, batch)
    finally:
        del model._forward
    assert len(seen) == 1
    return seen[0]


def test_small_inputs_run_on_one_thread(two_threads, packed, monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    n = threads.DEFAULT_SINGLE_THREAD_POINTS
    assert threads_inside(packed, torch.randn(64, 3)) == 1
    assert threads_inside(packed, torch.randn(n, 3)) == 1
    assert torch.get_num_threads() == 2  # Restored.
    pos = torch.randn(n + 2, 3)
    batch = torch.arange(2).repeat_interleave((n + 2) // 2)
    assert threads_inside(packed, pos, batch) == 2


def test_limit_from_environment_and_setter(two_threads, packed,
                                           monkeypatch):
    monkeypatch.setenv(threads.ENV, '0')  # Off.
    assert threads_inside(packed, torch.randn(64, 3)) == 2
    monkeypatch.setenv(threads.ENV, '100')
    assert threads.single_thread_points() == 100
    assert threads_inside(packed, torch.randn(100, 3)) == 1
    assert threads_inside(packed, torch.randn(101, 3)) == 2
    deploy.set_single_thread_points(1000)  # Overrides the environment.
    assert threads_inside(packed, torch.randn(101, 3)) == 1
    deploy.set_single_thread_points(None)
    assert threads.single_thread_points() == 100


def test_same_logits_either_way(two_threads, packed):
    pos = torch.randn(300, 3)
    deploy.set_single_thread_points(0)
    ref = packed(pos)
    deploy.set_single_thread_points(1000)
    assert torch.equal(packed(pos), ref)


def test_restored_after_an_error(two_threads, packed):
    pos = torch.randn(50, 3)
    pos[3, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        packed(pos)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize('value', ['-1', 'many', '1.5'])
def test_bad_limits(monkeypatch, value):
    monkeypatch.setenv(threads.ENV, value)
    with pytest.raises(ValueError, match=threads.ENV):
        threads.single_thread_points()
    for bad in (-1, 2.0, True, '10'):
        with pytest.raises(ValueError, match='non-negative integer'):
            deploy.set_single_thread_points(bad)
