import pytest
import torch

from torch_geometric_binary.analysis import (aggregation_entropy,
                                             binary_entropy,
                                             scale_distortion)
from torch_geometric_binary.nn import (global_ema_max_pool, init_lsr_scales,
                                       resolve_method)
from torch_geometric_binary.nn.aggr import global_max_pool
from torch_geometric_binary.nn.models import PointNet


def test_entropy_of_pooled_normal_features():
    torch.manual_seed(0)
    x = torch.randn(400 * 64, 256)  # 400 groups of 64 N(0, 1) features
    batch = torch.arange(400).repeat_interleave(64)
    assert binary_entropy(global_ema_max_pool(x, batch)) > 0.97
    assert binary_entropy(global_max_pool(x, batch)) < 0.01
    assert binary_entropy(torch.ones(10, 3)) == 0.0


def clouds():
    torch.manual_seed(1)
    pos = torch.randn(8 * 128, 3)
    return pos, torch.arange(8).repeat_interleave(128)


def test_model_diagnostics_show_what_ema_and_lsr_fix():
    pos, batch = clouds()
    entropy, ratio = {}, {}
    for method in ['bnn', 'bnn+ema', 'bnn+lsr']:
        model = PointNet(5, method=method)
        init_lsr_scales(model, pos, batch)
        before = {k: v.clone() for k, v in model.state_dict().items()
                  if isinstance(v, torch.Tensor)}
        entropy[method] = aggregation_entropy(model, pos, batch)['pool']
        ratio[method] = scale_distortion(model, pos, batch)
        for k, v in model.state_dict().items():  # nothing changed
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, before[k]), k
    assert entropy['bnn'] < 0.05 and entropy['bnn+ema'] > 0.3
    for name, r in ratio['bnn+lsr'].items():
        assert r['after_lsr'] == pytest.approx(1.0, rel=1e-3), name
        assert r['before_lsr'] > 2.0
    assert all(r['after_lsr'] == r['before_lsr']
               for r in ratio['bnn'].values())


def test_pooled_entropy_is_taken_at_the_learned_threshold():
    # ReActNet's RSign binarizes the pooled feature at a learned threshold:
    # set there at the pooled values' per-channel median, the sign carries
    # a full bit even though the sign at zero of a plain max carries none.
    pos, batch = clouds()
    model = PointNet(5, method='react')
    pooled = {}
    model.act.register_forward_hook(
        lambda m, args, out: pooled.__setitem__('x', out))
    aggregation_entropy(model, pos, batch)
    first = model.head.lins[0]
    assert aggregation_entropy(model, pos, batch)['pool'] < 0.05
    with torch.no_grad():
        first.input_threshold.copy_(pooled['x'].quantile(0.5, dim=0))
    assert aggregation_entropy(model, pos, batch)['pool'] > 0.8


def test_method_switches_compose():
    m = resolve_method('bnn+ema')
    assert (m.name, m.ema, m.lsr) == ('bnn+ema', True, False)
    assert type(m) is type(resolve_method('bnn'))
    m = resolve_method('BNN+lsr+ema')
    assert (m.name, m.ema, m.lsr) == ('bnn+ema+lsr', True, True)
    assert not resolve_method('bnn+ema', ema=False).ema  # explicit wins
    assert PointNet(3, method='bnn+ema').method.ema
    with pytest.raises(ValueError, match=r"Unknown switch '\+foo'"):
        resolve_method('bnn+foo')
    with pytest.raises(ValueError, match='full precision has no'):
        resolve_method('fp+ema')


def test_plot_entropy_writes_a_chart(tmp_path):
    pytest.importorskip('matplotlib')
    from torch_geometric_binary.analysis import plot_entropy
    results = {'bnn': {'entropy': {'pool': 0.0, 'conv.aggr': 0.1}},
               'bipointnet': {'entropy': {'pool': 0.9}}}
    path = tmp_path / 'entropy.png'
    plot_entropy(results, str(path))
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
