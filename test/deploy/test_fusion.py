r"""deploy.fusion: a model packed module by module (PackedModel) runs its own
forward, and consecutive packed MLPs, a max pooling and the activation after
it run as one chain (Pending values); any other use of a pending value
computes it module by module, with the same results."""
import pytest
import torch
import torch.nn.functional as F

from torch_geometric_binary.deploy import PackedModel, pack_modules
from torch_geometric_binary.deploy.fusion import Pending, Segment
from torch_geometric_binary.deploy.modules import PackedMLP
from torch_geometric_binary.nn import BiMLP, global_ema_max_pool
from torch_geometric_binary.nn.models import PointNet


def calibrated(model: torch.nn.Module, n: int = 256) -> torch.nn.Module:
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():  # BatchNorm statistics and LSR scales from data.
        for _ in range(2):
            model(torch.randn(2 * n, 3), torch.arange(2).repeat_interleave(n))
    return model.eval()


def count_calls(monkeypatch, cls, name):
    calls = []
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(cls, name, counted)
    return calls


@pytest.mark.parametrize('method,kwargs', [
    ('bipointnet', {}), ('bnn', {}), ('react+ema', {}),
    ('bipointnet', {'input_transform': True, 'feature_transform': True})],
    ids=['bipointnet', 'bnn', 'react+ema', 'tnets'])
def test_fused_forward_matches_the_layers_and_the_trained_model(method,
                                                                 kwargs):
    model = calibrated(PointNet(10, method=method, **kwargs))
    packed = pack_modules(model)
    assert isinstance(packed, PackedModel)
    torch.manual_seed(1)
    pos = torch.randn(300, 3)
    # Clouds of different sizes, unsorted: the chain groups the rows.
    batch = torch.tensor([1] * 90 + [0] * 130 + [2] * 80)
    for b in (batch, None):
        out = packed(pos, b)
        assert type(out) is torch.Tensor
        assert torch.allclose(out, packed.forward_layers(pos, b),
                              atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            ref = model(pos, b)
        assert torch.equal(out.argmax(-1), ref.argmax(-1))
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_one_chain_and_no_layer_by_layer_work(monkeypatch):
    # A PointNet without T-Nets is one segment: MLPs, pooling, activation
    # and head; no MLP runs its layers one by one.
    packed = pack_modules(calibrated(PointNet(10, method='bipointnet')))
    segments = count_calls(monkeypatch, Segment, '__call__')
    layers = count_calls(monkeypatch, PackedMLP, 'forward_layers')
    pools = count_calls(monkeypatch, PackedMLP, 'pool_layers')
    pos = torch.randn(200, 3)
    packed(pos)
    packed(pos, torch.arange(2).repeat_interleave(100))
    assert len(segments) == 2 and layers == [] and pools == []
    # The reference path runs the layers and no segment.
    packed.forward_layers(pos)
    model = packed.model
    assert len(segments) == 2 and layers == [model.mlp1, model.head]
    assert pools == [model.mlp2]


def test_t_nets_pool_in_their_chains(monkeypatch):
    # Each T-Net's MLP, pooling, activation and head run as one segment
    # (as in the hand-fused PointNet): four in all, with mlp1's rows (the
    # feature transform's input) and the main chain.
    packed = pack_modules(calibrated(PointNet(
        10, method='bipointnet', input_transform=True,
        feature_transform=True)))
    segments = count_calls(monkeypatch, Segment, '__call__')
    layers = count_calls(monkeypatch, PackedMLP, 'forward_layers')
    pools = count_calls(monkeypatch, PackedMLP, 'pool_layers')
    pos, batch = torch.randn(200, 3), torch.arange(2).repeat_interleave(100)
    out = packed._run(pos, batch)
    assert len(segments) == 4 and layers == [] and pools == []
    assert torch.allclose(out, packed.forward_layers(pos, batch), atol=1e-5,
                          rtol=1e-5)


def small_mlps(method='bipointnet'):
    torch.manual_seed(0)
    first = BiMLP([3, 16, 32], method, first_fp=True, norm_last=True)
    head = BiMLP([32, 16, 5], method, last_fp=True)
    pos = torch.randn(120, 3)
    first.train(), head.train()
    with torch.no_grad():
        head(first(pos))
    model = torch.nn.ModuleDict({'first': first, 'head': head}).eval()
    packed = pack_modules(model).model
    return packed['first'], packed['head'], pos


def test_an_mlp_that_ends_the_sequence_runs_in_its_chain(monkeypatch):
    # A per-point classifier (full-precision last layer) on pending rows:
    # one segment from the first MLP's input, no layer-by-layer work.
    first, head, pos = small_mlps()
    segments = count_calls(monkeypatch, Segment, '__call__')
    layers = count_calls(monkeypatch, PackedMLP, 'forward_layers')
    out = head(first(pos))
    assert len(segments) == 1 and layers == []
    ref = head.forward_layers(first.forward_layers(pos))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.argmax(-1), ref.argmax(-1))


def test_pending_values_compute_on_any_other_use():
    first, head, pos = small_mlps()
    x = first(pos)
    assert isinstance(x, Pending)
    # Shape queries do not compute it.
    assert x.shape == (120, 32) and x.size(-1) == 32 and x.dim() == 2
    assert x.dtype == torch.float32 and x._value is None
    ref = first.forward_layers(pos)
    # Any torch function or method does, once.
    assert torch.equal(x + 0, ref)
    assert torch.equal(torch.cat([x, x], dim=-1), torch.cat([ref, ref], -1))
    assert torch.equal(x.sum(0), ref.sum(0))
    assert type(x * 2) is torch.Tensor
    assert 'Pending(shape=(120, 32)' in repr(x)


@pytest.mark.parametrize('act,fused', [
    (torch.nn.Hardtanh(), True), (torch.nn.ReLU(), True),
    (torch.nn.LeakyReLU(0.1), True), (torch.nn.LeakyReLU(-0.5), False),
    (torch.nn.Sigmoid(), False)])
def test_activations_after_a_pending_pooling(monkeypatch, act, fused):
    # A non-decreasing activation joins the chain; any other computes the
    # pooled values first. The results are those of the layers.
    first, head, pos = small_mlps()
    batch = torch.tensor([0] * 50 + [1] * 70)
    segments = count_calls(monkeypatch, Segment, '__call__')
    g = act(global_ema_max_pool(first(pos), batch))
    assert isinstance(g, Pending) == fused
    out = head(g)
    ref = head.forward_layers(act(global_ema_max_pool(
        first.forward_layers(pos), batch)))
    # One segment: the MLPs and the pooling; or the MLPs' dot products
    # (pooled outside the chain, then activated) and the head alone.
    assert [seg.chain.pool is not None for seg in segments] == (
        [True] if fused else [False, False])
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_groups_the_chain_does_not_take_pool_layer_by_layer():
    # An empty group (a batch vector that skips a cloud): the plain max
    # gives zeros there, as the trained pooling does; the EMA max raises,
    # as global_ema_max_pool does (delta(0) is undefined).
    first, head, pos = small_mlps()
    batch = torch.tensor([0] * 60 + [2] * 60)
    pooled = first.max_pool(pos, batch, 3, ema=False)
    assert not isinstance(pooled, Pending)
    assert torch.equal(pooled, first.pool_layers(pos, batch, 3, False))
    assert torch.equal(pooled[1], torch.zeros(32))
    with pytest.raises(ValueError, match=r'cloud\(s\) \[1\] of 3 have no '
                                         r'points'):
        first.max_pool(pos, batch, 3, ema=True)
    # A float index is refused as before.
    with pytest.raises(RuntimeError):
        first.max_pool(pos, batch.float(), 3, ema=False)


@pytest.mark.parametrize('ema', [False, True])
def test_pool_groups_of_consecutive_rows(ema):
    # Rows grouped as a set abstraction's edges come: pending, and the
    # values of pool() (pooled, into the next MLP, and as its bits).
    first, head, pos = small_mlps()
    counts = torch.tensor([1, 30, 9, 80])
    index = torch.arange(4).repeat_interleave(counts)
    pooled = first.pool_groups(pos, index, counts, ema)
    assert isinstance(pooled, Pending) and pooled.shape == (4, 32)
    ref = first.pool_layers(pos, index, 4, ema)
    assert torch.allclose(pooled + 0, ref, atol=1e-6)
    again = first.pool_groups(pos, index, counts, ema)
    assert torch.allclose(head(again), head.forward_layers(ref),
                          atol=1e-5, rtol=1e-5)
    # A group without rows: pool()'s answer (zeros there).
    counts = torch.tensor([40, 0, 80])
    index = torch.tensor([0] * 40 + [2] * 80)
    out = first.pool_groups(pos, index, counts, ema)
    assert torch.equal(out, first.pool_layers(pos, index, 3, ema))
    assert torch.equal(out[1], torch.zeros(32))


def test_fusion_is_off_outside_packed_models():
    # A packed MLP on its own (as in the fused classifiers) runs its
    # layers; only PackedModel turns fusion on.
    first, head, pos = small_mlps()
    first.fuse = False
    assert type(first(pos)) is torch.Tensor
    assert isinstance(head(F.hardtanh(first.max_pool(
        pos, None, 1, ema=True))), torch.Tensor)


@pytest.mark.parametrize('pool', ['global_max_pool', 'global_ema_max_pool'])
def test_the_package_poolings_defer_to_pending_values(pool):
    from torch_geometric_binary.nn import aggr
    first, head, pos = small_mlps()
    batch = torch.tensor([0] * 70 + [1] * 50)
    fn = getattr(aggr, pool)
    pooled = fn(first(pos), batch)
    assert isinstance(pooled, Pending) and pooled.shape == (2, 32)
    ref = fn(first.forward_layers(pos), batch)
    assert torch.allclose(pooled + 0, ref, atol=1e-6)
    assert torch.allclose(head(pooled), head.forward_layers(ref),
                          atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------
# Joined: a pooled value concatenated back to its groups' rows.

def joined_mlps(method='bipointnet', groups=(0, 1)):
    first, _, pos = small_mlps(method)
    torch.manual_seed(2)
    # Reads [rows (32) | the group's pooled feature (32) | a code (3)].
    head = BiMLP([32 + 32 + 3, 24, 16, 5], method, last_fp=True)
    batch = torch.tensor(groups).repeat_interleave(60)
    code = torch.randn(len(groups), 3)
    head.train()
    with torch.no_grad():
        h = first.forward_layers(pos)
        g = global_ema_max_pool(h, batch)
        head(torch.cat([h, torch.cat([g, code], -1)[batch]], -1))
    head = pack_modules(torch.nn.ModuleDict({'head': head.eval()})
                        ).model['head']
    return first, head, pos, batch, code


def joined_forward(first, head, pos, batch, code):
    h = first(pos)
    g = F.hardtanh(global_ema_max_pool(h, batch))
    return head(torch.cat([h, torch.cat([g, code], dim=-1)[batch]
                           .to(torch.float32)], dim=-1))


@pytest.mark.parametrize('method', ['bipointnet', 'bnn', 'react+ema'])
def test_joined_rows_run_without_being_built(monkeypatch, method):
    # torch.cat([h, g[batch]]) stays joined; the head's first layer takes
    # the pooled part once per group, from the chain's pooled bits. The
    # result is that of the layers, exactly.
    from torch_geometric_binary.deploy.fusion import Joined
    first, head, pos, batch, code = joined_mlps(method)
    built = count_calls(monkeypatch, Joined, 'value')
    layers = count_calls(monkeypatch, PackedMLP, 'forward_layers')
    pools = count_calls(monkeypatch, PackedMLP, 'pool_layers')
    out = joined_forward(first, head, pos, batch, code)
    assert built == [] and pools == [] and layers == []
    h = first.forward_layers(pos)
    g = F.hardtanh(first.pool_layers(pos, batch, 2, True))
    ref = head.forward_layers(torch.cat([h, torch.cat([g, code], -1)[batch]],
                                        -1))
    assert torch.equal(out, ref)


def test_joined_values_build_their_rows_on_any_other_use():
    from torch_geometric_binary.deploy.fusion import Joined
    first, head, pos, batch, code = joined_mlps()
    h = first(pos)
    g = global_ema_max_pool(h, batch)
    x = torch.cat([h, g[batch]], dim=-1)
    assert isinstance(x, Joined) and x.shape == (120, 64)
    assert 'gathered' in repr(x) and x._value is None
    ref_h = first.forward_layers(pos)
    ref = torch.cat([ref_h, global_ema_max_pool(ref_h, batch)[batch]], -1)
    assert torch.allclose(x * 1, ref, atol=1e-6)
    assert type(x.sum()) is torch.Tensor


def test_joined_rows_of_unsorted_groups():
    # Rows not grouped by cloud: the rows are built, with the same result.
    first, head, pos, batch, code = joined_mlps(groups=(1, 0))
    out = joined_forward(first, head, pos, batch, code)
    h = first.forward_layers(pos)
    g = F.hardtanh(first.pool_layers(pos, batch, 2, True))
    ref = head.forward_layers(torch.cat([h, torch.cat([g, code], -1)[batch]],
                                        -1))
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize('name', ['PointNetSeg', 'PointNet2Seg', 'DGCNNSeg'])
def test_segmentation_heads_read_joined_global_features(monkeypatch, name):
    from torch_geometric_binary.deploy import fusion
    from torch_geometric_binary.nn import models
    torch.manual_seed(0)
    model = getattr(models, name)(6, method='bipointnet', num_categories=2)
    # PointNet++'s global level gets an eighth of the points: 64 a cloud.
    pos = torch.randn(2 * 512, 3)
    batch = torch.arange(2).repeat_interleave(512)
    category = torch.tensor([1, 0])
    model.train()
    with torch.no_grad():
        model(pos, batch, None, category)
    model.eval()
    packed = pack_modules(model)
    used = count_calls(monkeypatch, fusion._JoinedPlan, 'run_rest')
    pools = count_calls(monkeypatch, PackedMLP, 'pool_layers')
    out = packed(pos, batch, None, category)
    assert len(used) == 1
    assert pools == []  # Skip connections included.
    assert torch.equal(out, packed.forward_layers(pos, batch, None,
                                                  category))
    with torch.no_grad():
        assert torch.equal(out.argmax(-1),
                           model(pos, batch, None, category).argmax(-1))


@pytest.mark.parametrize('name', ['PointNet2', 'DGCNN'])
def test_graph_models_pass_bits_between_levels(monkeypatch, name):
    # PointNet++'s pooled set-abstraction features reach the next level's
    # edges as bits (gathered once per centre, no float values); DGCNN's,
    # which its k-NN graphs need as floats, come from the chain's dot
    # products. No MLP pools layer by layer; the results are those of the
    # layers and of the trained model.
    from torch_geometric_binary.nn import models
    model = calibrated(getattr(models, name)(10, method='bipointnet'))
    packed = pack_modules(model)
    pools = count_calls(monkeypatch, PackedMLP, 'pool_layers')
    torch.manual_seed(1)
    pos = torch.randn(2 * 256, 3)
    batch = torch.arange(2).repeat_interleave(256)
    out = packed(pos, batch)
    assert pools == []
    assert torch.allclose(out, packed.forward_layers(pos, batch),
                          atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert torch.equal(out.argmax(-1), model(pos, batch).argmax(-1))
