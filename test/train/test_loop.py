import os

import pytest
import torch

from torch_geometric_binary.train import resolve_precision
from torch_geometric_binary.train.loop import (ONEDNN_CACHE_CAPACITY,
                                               bound_onednn_cache)

ENV = 'ONEDNN_PRIMITIVE_CACHE_CAPACITY'


def test_bf16_on_cpu_caps_the_onednn_kernel_cache(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_precision('fp32', torch.device('cpu')) == 'fp32'
    assert ENV not in os.environ
    assert resolve_precision('bf16', torch.device('cpu')) == 'bf16'
    assert os.environ[ENV] == str(ONEDNN_CACHE_CAPACITY)
    monkeypatch.setenv(ENV, '7')  # A user's own setting wins.
    bound_onednn_cache()
    assert os.environ[ENV] == '7'


def test_unknown_precision():
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        resolve_precision('fp8', torch.device('cpu'))
    with pytest.raises(ValueError, match='fp16 mixed precision needs a CUDA'):
        resolve_precision('fp16', torch.device('cpu'))
