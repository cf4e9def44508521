r"""The C++ chain plan (torch.classes.torch_geometric_binary.ChainPlan):
built once per chain and input stage, its own checks of what it is given,
copies of chains that hold plans, and the one-group fast path of packed
models, which surfaces errors instead of hiding them."""
import copy
import pickle

import pytest
import torch

from torch_geometric_binary.deploy import BinaryChain, pack
from torch_geometric_binary.deploy.chain import NonFiniteInput
from torch_geometric_binary.nn.models import PointNet

from .conftest import need_cpp
from .test_pack_chain import pointnet_like_chain
from .test_pack_models import batch_of


def ops():
    return torch.ops.torch_geometric_binary


def test_plan_is_built_once_per_input_stage():
    need_cpp()
    chain = pointnet_like_chain()
    assert chain.plan() is chain.plan()
    s, u = torch.ones(64), torch.zeros(64)
    thr = torch.stack([s, u])
    assert chain.plan(thr) is chain.plan(thr)
    assert chain.plan(thr) is not chain.plan()
    # Other values in another tensor: another plan, other bits.
    x = torch.randn(300, 64)
    shifted = torch.stack([s, u + 0.5])
    assert not torch.equal(chain(x, in_threshold=thr),
                           chain(x, in_threshold=shifted))
    assert torch.equal(chain(x, in_threshold=shifted),
                       chain(x, in_threshold=shifted, backend='torch'))


def test_copies_of_a_chain_build_their_own_plans():
    need_cpp()
    chain = pointnet_like_chain()
    x, counts = torch.randn(700, 64), torch.tensor([400, 300])
    expected = chain(x, counts)  # Builds and keeps a plan.
    for other in (copy.deepcopy(chain), pickle.loads(pickle.dumps(chain))):
        assert torch.equal(other(x, counts), expected)


def test_plan_checks_what_it_is_given():
    need_cpp()
    chain = pointnet_like_chain()
    Plan = torch.classes.torch_geometric_binary.ChainPlan
    w, t = chain.weights, chain.thresholds
    with pytest.raises(RuntimeError, match='weights of layer 1 must be'):
        Plan([w[0], w[2]], 64, [t[0], t[2]], -1, 0)
    with pytest.raises(RuntimeError, match='is pooled'):
        Plan(w, 64, t[:-1] + [torch.zeros(300, dtype=torch.int64)],
             len(w) - 1, 0)
    with pytest.raises(RuntimeError, match='a pooled last layer'):
        Plan(w, 64, t, len(w) - 1, 1)
    plan = chain.plan()
    x = torch.randn(10, 64)
    table = chain.pool_table.rows([10])
    one = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(RuntimeError, match='pooling needs'):
        ops().xnor_chain_run(plan, x)
    with pytest.raises(RuntimeError, match='groups hold 9 rows but the '
                       'input has 10'):
        ops().xnor_chain_run(plan, x, torch.tensor([9]), table, one)
    with pytest.raises(RuntimeError, match='the input has 3 channels'):
        ops().xnor_chain_run(plan, x[:, :3], torch.tensor([10]), table, one)
    with pytest.raises(RuntimeError, match='selects threshold row 1 of 1'):
        ops().xnor_chain_run(plan, x, torch.tensor([10]), table, one + 1)
    with pytest.raises(RuntimeError, match='needs float outputs'):
        plan.set_final(torch.zeros(5, 300), None)
    flat = Plan(w[:1], 64, t[:1], -1, 0)
    with pytest.raises(RuntimeError, match='groups given to a chain without '
                       'pooling'):
        ops().xnor_chain_run(flat, x, torch.tensor([10]), None, None)
    thr = torch.zeros(2, 64)
    with pytest.raises(RuntimeError, match=r"the first layer's bias must be "
                       r"a float32 \[64\] tensor"):
        flat.set_input(thr, torch.zeros(64, 3), torch.zeros(63))
    with pytest.raises(RuntimeError, match='bias needs its weight'):
        flat.set_input(thr, None, torch.zeros(64))
    floats = Plan(w, 64, t[:-1] + [torch.empty(0, dtype=torch.int64)], -1, 2)
    with pytest.raises(RuntimeError, match=r'the final bias must be a '
                       r'float32 \[5\] tensor'):
        floats.set_final(torch.zeros(5, w[-1].size(0)),
                         torch.zeros(5, dtype=torch.float64))


def test_one_group_fast_path_surfaces_errors(monkeypatch):
    r"""A packed PointNet runs one cloud straight through the C++
    operation, with the general path's results; inputs it does not take
    as they are go the general way, bad ones raise there; an error of the
    operation itself surfaces."""
    need_cpp()
    torch.manual_seed(0)
    packed = pack(PointNet(5, method='bipointnet').eval())
    pos, _ = batch_of([40])
    packed(pos)
    seg, = [s for s in packed.fused_segments() if s.chain.pool is not None]
    for x in (pos, pos * 1e30):  # The latter past the rounding bound.
        assert torch.equal(seg(x, 40), seg(x, torch.tensor([40])))
    bad = pos.clone()
    bad[7, 1] = float('nan')
    with pytest.raises(NonFiniteInput):
        seg(bad, 40)
    with pytest.raises(ValueError, match='groups hold 39 rows but the '
                       'input has 40'):
        seg(pos, 39)
    # float64: not the operation's input; the general path takes it.
    assert torch.equal(seg(pos.double(), 40),
                       seg(pos.double(), torch.tensor([40])))

    def broken(x, args):
        raise RuntimeError('broken operation')

    monkeypatch.setattr(BinaryChain, 'run_one_group', staticmethod(broken))
    with pytest.raises(RuntimeError, match='broken operation'):
        seg(pos, 40)
