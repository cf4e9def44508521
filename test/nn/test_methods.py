import pytest
import torch

from torch_geometric_binary.nn import (METHODS, BinaryMethod, BiLinear,
                                       method_names,
                                       register_method, resolve_method)


def test_registry_names_and_switches():
    assert {'fp', 'bipointnet', 'bnn'} <= set(method_names())
    bi = resolve_method('BiPointNet')
    assert bi.binary and bi.ema and bi.lsr
    bnn = resolve_method('bnn')
    assert bnn.binary and not bnn.ema and not bnn.lsr
    assert not resolve_method(None).binary
    no_ema = resolve_method('bipointnet', ema=False)
    assert not no_ema.ema and no_ema.lsr and bi.ema  # a copy, not a mutation


def test_unknown_method_names_available_ones():
    with pytest.raises(ValueError, match="Unknown binarization method 'xnr'"
                       ".*bipointnet"):
        resolve_method('xnr')
    with pytest.raises(TypeError):
        resolve_method(3)


def test_register_custom_method_used_by_layers():
    class Shifted(BinaryMethod):
        def binarize_input(self, x):
            return super().binarize_input(x - 10.0)

    register_method(Shifted('test-shifted', lsr=False))
    try:
        with pytest.raises(ValueError, match='already registered'):
            register_method(Shifted('test-shifted'))
        lin = BiLinear(4, 3, method='test-shifted')
    finally:
        METHODS.pop('test-shifted')
    assert lin.scale is None
    x = torch.rand(5, 4)  # all < 10: the shifted binarizer gives all -1
    expected = -lin.binary_weight().sum(dim=1).expand(5, 3)
    assert torch.equal(lin(x), expected)


def test_bnn_does_not_center_weights():
    lin = BiLinear(2, 1, method='bnn')
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, 0.2]]))
    assert lin.binary_weight().tolist() == [[1.0, 1.0]]
    lin_bi = BiLinear(2, 1, method='bipointnet')
    with torch.no_grad():
        lin_bi.weight.copy_(torch.tensor([[0.1, 0.2]]))
    assert lin_bi.binary_weight().tolist() == [[-1.0, 1.0]]
