r"""deploy.replay: a forward recorded once as a straight-line program with
guards on the Python values it read from tensors, and PackedModel's replay
of it from the second call of a kind of input."""
import copy
import pickle
import threading

import pytest
import torch

from torch_geometric_binary.deploy import pack_modules
from torch_geometric_binary.deploy.generic import MAX_PLANS
from torch_geometric_binary.deploy.replay import (Miss, Unrecordable,
                                                  record, recorded,
                                                  state_tensors)
from torch_geometric_binary.nn import BiMLP
from torch_geometric_binary.nn.models import (DGCNN, PointNet, PointNet2,
                                              PointNetSeg)


#: Not reachable from a model: as the output of an operation that the
#: recording does not see would be.
HIDDEN = torch.ones(3)


def recorded_plan(module, *inputs):
    out, plan = record(module, list(inputs), state_tensors(module), *inputs)
    return out, plan


class Branchy(torch.nn.Module):
    r"""A forward whose path depends on its input's values."""
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x):
        y = self.lin(x)
        if bool(y.sum() > 0):
            return y * 2
        return torch.zeros(int(x.size(0)), 4) + y.mean()


def test_a_plan_gives_the_forward_on_new_inputs_and_misses_another_path():
    torch.manual_seed(0)
    module = Branchy().eval()
    x = torch.randn(5, 3) + 3 * module.lin.weight.sum(0).sign()
    out, plan = recorded_plan(module, x)
    assert torch.equal(out, module(x))
    for _ in range(5):
        x2 = x + 0.1 * torch.randn(5, 3)
        assert bool(module.lin(x2).sum() > 0)
        assert torch.equal(plan(x2), module(x2))
    with pytest.raises(Miss):  # The other branch.
        plan(-x)


def test_constants_are_folded_but_random_values_are_not():
    class M(torch.nn.Module):
        def forward(self, x):
            n = int(torch.ones(3).sum())  # Constants: no guard, no step.
            return x * n + torch.rand(1)

    x = torch.zeros(2)
    _, plan = recorded_plan(M(), x)
    assert 'ones' not in plan.source and plan.num_steps == 3
    assert not torch.equal(plan(x), plan(x))  # rand runs on each call.


def test_a_folded_output_is_a_new_tensor_on_each_call():
    class M(torch.nn.Module):
        def forward(self, x):
            return x + 1, torch.zeros(2)

    x = torch.zeros(2)
    _, plan = recorded_plan(M(), x)
    first, second = plan(x)[1], plan(x)[1]
    first += 1
    assert torch.equal(second, torch.zeros(2))


@pytest.mark.parametrize('forward,reason', [
    (lambda m, x: torch.from_numpy(x.numpy() * 2), 'reads a ndarray'),
    (lambda m, x: m.buf.add_(x), 'writes in place'),
    (lambda m, x: x.mul_(2), 'did not compute'),
    (lambda m, x: torch.zeros(3).expand_as(x).add_(x),
     'memory of a constant'),
    (lambda m, x: x + HIDDEN, 'no recorded operation computed'),
], ids=['numpy', 'in-place to state', 'in-place to an input',
        'in-place to a constant', 'unknown tensor'])
def test_forwards_that_cannot_be_recorded_are_refused(forward, reason):
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer('buf', torch.zeros(3))

        def forward(self, x):
            return forward(self, x)

    with pytest.raises(Unrecordable, match=reason):
        recorded_plan(M(), torch.ones(3))


def test_writes_to_computed_values_replay():
    class M(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            y[0] = 5.
            return y.add_(1)

    x = torch.randn(4)
    _, plan = recorded_plan(M(), x)
    x2 = torch.randn(4)
    assert torch.equal(plan(x2), M()(x2)) and plan(x2)[0] == 6.


def test_a_buffer_the_forward_fills_is_made_anew_on_each_call():
    class M(torch.nn.Module):
        def forward(self, x, index):
            out = torch.zeros(3)  # Folded, then filled: a value again.
            before = out + 1  # Reads it before the write.
            out.scatter_add_(0, index, x)
            return out, before

    x, index = torch.ones(4), torch.tensor([0, 0, 2, 1])
    _, plan = recorded_plan(M(), x, index)
    for i in range(3):
        x2 = torch.randn(4)
        out, before = plan(x2, index)
        assert torch.equal(out, M()(x2, index)[0])
        assert torch.equal(before, torch.ones(3))


def test_a_recorded_function_is_one_step():
    calls = []

    @recorded
    def opaque(x):
        calls.append(1)
        return (x * 2).sum(0, keepdim=True) + 1

    class M(torch.nn.Module):
        def forward(self, x):
            return opaque(x + 1) - 1

    x = torch.randn(4, 2)
    out, plan = recorded_plan(M(), x)
    assert plan.num_steps == 3  # add, opaque, sub
    x2 = torch.randn(4, 2)
    assert torch.equal(plan(x2), M()(x2)) and len(calls) == 3


def pointnet(method='bipointnet', **kwargs):
    torch.manual_seed(0)
    model = PointNet(10, method=method, **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(256, 3), torch.arange(2).repeat_interleave(128))
    return model.eval()


@pytest.mark.parametrize('kwargs', [
    {}, {'input_transform': True, 'feature_transform': True}],
    ids=['pointnet', 'tnets'])
def test_packed_model_replays_its_forward(kwargs):
    packed = pack_modules(pointnet(**kwargs))
    torch.manual_seed(1)
    batch = torch.tensor([0] * 100 + [1] * 60)
    for b in (None, batch):
        for i in range(4):
            pos = torch.randn(160, 3)
            out = packed(pos, b)
            assert torch.equal(out, packed._run(pos, b))
    plans = [e.plans for e in packed._plans.values()]
    assert [len(p) for p in plans] == [1, 1]
    # For one PointNet cloud: the input check and one chain.
    assert plans[0][0].num_steps <= 5 if not kwargs else True


@pytest.mark.parametrize('cls', [PointNet2, DGCNN])
def test_graph_models_replay_where_shapes_do_not_depend_on_values(cls):
    # DGCNN's k-NN graphs have k edges a point, and PointNet++'s radius
    # neighbourhoods, whose size changes with the points, are formed and
    # pooled inside recorded steps: one recording serves every cloud.
    torch.manual_seed(0)
    model = cls(10, method='bipointnet')
    model.train()
    with torch.no_grad():
        model(torch.randn(256, 3), torch.arange(2).repeat_interleave(128))
    packed = pack_modules(model.eval())
    batch = torch.arange(2).repeat_interleave(64)
    for _ in range(MAX_PLANS + 3):
        pos = torch.randn(128, 3)
        assert torch.equal(packed(pos, batch), packed._run(pos, batch))
    (entry, ) = packed._plans.values()
    assert len(entry.plans) == 1 and entry.tries == 1


def test_value_dependent_shapes_run_as_written():
    # Rows picked by value: each new input misses the guard on their
    # number, and after MAX_PLANS recordings the forward runs as written.
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = BiMLP([3, 16, 4], method='bnn')

        def forward(self, pos):
            return self.mlp(pos[pos[:, 0] > 0]).sum(0)

    torch.manual_seed(0)
    packed = pack_modules(Masked().eval())
    for i in range(MAX_PLANS + 3):
        pos = torch.randn(40, 3).abs()
        pos[:30 - i, 0] *= -1  # 10 + i rows kept.
        assert torch.equal(packed(pos), packed._run(pos))
    (entry, ) = packed._plans.values()
    assert entry.plans == [] and entry.tries == MAX_PLANS


def test_packed_model_replay_misses_other_groupings_and_bad_inputs():
    packed = pack_modules(pointnet())
    pos = torch.randn(160, 3)
    groupings = [torch.tensor([0] * 100 + [1] * 60),
                 torch.tensor([0] * 60 + [1] * 100),
                 torch.tensor([0] * 80 + [1] * 80)]
    for _ in range(2):
        for batch in groupings:
            assert torch.equal(packed(pos, batch), packed._run(pos, batch))
    bad = pos.clone()
    bad[7, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        packed(bad, groupings[0])
    with pytest.raises(ValueError, match='no points'):
        packed(torch.zeros(0, 3))


def test_segmentation_replays_with_a_category():
    torch.manual_seed(0)
    model = PointNetSeg(6, method='bipointnet', num_categories=3)
    model.train()
    with torch.no_grad():
        model(torch.randn(256, 3), torch.arange(2).repeat_interleave(128),
              category=torch.tensor([0, 2]))
    packed = pack_modules(model.eval())
    batch = torch.arange(2).repeat_interleave(64)
    for i in range(4):
        pos, category = torch.randn(128, 3), torch.tensor([i % 3, 1])
        out = packed(pos, batch, category=category)
        assert torch.equal(out, packed._run(pos, batch, category=category))
    assert sum(len(e.plans) for e in packed._plans.values()) == 1


def test_copies_and_moves_drop_the_recordings():
    packed = pack_modules(pointnet())
    pos = torch.randn(64, 3)
    for _ in range(3):
        packed(pos)
    assert packed._plans
    for other in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
        assert not other._plans
        assert torch.equal(other(pos), packed(pos))
    packed.to(torch.float32)
    assert not packed._plans


def test_threads_record_and_replay_their_own_calls():
    packed = pack_modules(pointnet())
    torch.manual_seed(2)
    inputs = [(torch.randn(96, 3), b) for b in (
        None, torch.tensor([0] * 40 + [1] * 56))]
    expected = [packed._run(pos, b) for pos, b in inputs]
    errors = []

    def work(k):
        try:
            for _ in range(6):
                pos, b = inputs[k]
                assert torch.equal(packed(pos, b), expected[k])
        except BaseException as e:  # Reported by the main thread.
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k % 2, ))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Each kind recorded (two threads may record the same path at once).
    assert all(e.plans for e in packed._plans.values())


def test_autocast_and_input_types_are_part_of_the_kind():
    packed = pack_modules(pointnet())
    pos = torch.randn(64, 3)
    for _ in range(3):
        packed(pos)
    # bfloat16 points: the trained model's check asks for float32 outside
    # autocast, also after a recording under autocast.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for _ in range(3):
            packed(pos.bfloat16())
    with pytest.raises(ValueError, match='torch.autocast'):
        packed(pos.bfloat16())
