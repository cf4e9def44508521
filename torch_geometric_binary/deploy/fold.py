r"""Folding the full-precision tail of a binary layer into integer thresholds.

A :class:`~torch_geometric_binary.nn.BiLinear` layer followed by batch
normalization (in inference mode) and a sign-preserving activation feeds the
next binary layer only through the sign

.. math::
    \mathrm{bit}_n = \left[ \gamma_n \frac{\alpha D_n + b_n - \mu_n}
    {\sqrt{\sigma^2_n + \epsilon}} + \beta_n \ge 0 \right],

a monotone function of the integer dot product
:math:`D_n \in \{-K, -K + 2, \dots, K\}`. It is thus a per-channel threshold
test :math:`[D_n \ge t_n] \oplus f_n`, inverted (:math:`f_n = 1`) where
:math:`\gamma_n \alpha < 0`, and constant where :math:`\gamma_n \alpha = 0`.

Rather than solving for :math:`t_n` in real arithmetic (where a tie
:math:`D_n = t_n` may round either way), :func:`fold_threshold` evaluates the
layer's own floating-point operations on every reachable :math:`D_n`, so the
folded bits equal the signs of the trained modules' outputs bit for bit,
including ties, :obj:`-0.0` (:math:`+1`) and :obj:`NaN` (:math:`-1`).
"""
import copy
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from torch_geometric_binary.deploy.registry import (DTYPES, AddTensor,
                                                    PackedConfig, act_spec,
                                                    dtype_name, make_act,
                                                    register_packed)
from torch_geometric_binary.nn.linear import BiLinear

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1


def _unwrap_norm(norm: Optional[torch.nn.Module]) -> Optional[_BatchNorm]:
    if norm is None or isinstance(norm, torch.nn.Identity):
        return None
    # PyG's BatchNorm wraps a torch BatchNorm1d as `.module`.
    inner = getattr(norm, 'module', None)
    if not isinstance(norm, _BatchNorm) and isinstance(inner, _BatchNorm):
        norm = inner
    if not isinstance(norm, _BatchNorm):
        raise TypeError(f"Can only fold batch normalization (got "
                        f"{type(norm).__name__})")
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("Cannot fold a batch normalization without running "
                         "statistics (track_running_stats=False)")
    return norm


@register_packed
class BinaryEpilogue(torch.nn.Module):
    r"""The full-precision tail of a binary layer as a function of its
    integer dot products :math:`\mathbf{D}`,

    .. math::
        \mathbf{y} = \mathrm{act}\big(\mathrm{BN}(\alpha \mathbf{D} +
        \mathbf{b})\big),

    with batch normalization in inference mode. It performs the same
    floating-point operations, in the same order and dtype, as
    :class:`~torch_geometric_binary.nn.BiLinear` followed by the
    normalization and activation modules, so its results are identical to
    theirs. It holds frozen copies of their parameters.

    Args:
        linear (BiLinear): The trained binary layer.
        norm (torch.nn.Module, optional): A batch normalization
            (:class:`torch.nn.BatchNorm1d` or PyG's :class:`BatchNorm`).
        act (torch.nn.Module, optional): An activation applied after it.
    """
    def __init__(self, linear: BiLinear,
                 norm: Optional[torch.nn.Module] = None,
                 act: Optional[Callable[[Tensor], Tensor]] = None):
        super().__init__()
        self.dtype = linear.weight.dtype
        self.channels = linear.out_channels
        # The LSR scale times the method's weight scale: 0-dim or [N].
        self.register_buffer('scale', _frozen(linear.output_scale()))
        self.register_buffer('bias', _frozen(linear.bias))
        bn = _unwrap_norm(norm)
        if bn is not None and bn.num_features != linear.out_channels:
            raise ValueError(f"The normalization has {bn.num_features} "
                             f"channels, the layer {linear.out_channels}")
        for name, attr in (('running_mean', 'running_mean'),
                           ('running_var', 'running_var'),
                           ('norm_weight', 'weight'), ('norm_bias', 'bias')):
            value = getattr(bn, attr) if bn is not None else None
            self.register_buffer(name, _frozen(value))
        self.eps = float(bn.eps) if bn is not None else 0.0
        self.act = copy.deepcopy(act)

    _TENSORS = ('scale', 'bias', 'running_mean', 'running_var',
                'norm_weight', 'norm_bias')

    def packed_config(self, add: AddTensor) -> PackedConfig:
        spec = None if self.act is None else list(act_spec(self.act, 'save'))
        return ({'channels': self.channels, 'eps': self.eps,
                 'dtype': dtype_name(self.dtype), 'act': spec},
                {k: add(getattr(self, k), 'epilogues')
                 for k in self._TENSORS}, {})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'BinaryEpilogue':
        # The constructor takes the trained modules: set the state directly.
        ep = cls.__new__(cls)
        torch.nn.Module.__init__(ep)
        ep.dtype = DTYPES[attrs['dtype']]
        ep.channels = attrs['channels']
        ep.eps = attrs['eps']
        for k in cls._TENSORS:
            ep.register_buffer(k, tensors[k])
        ep.act = None if attrs['act'] is None else \
            make_act(tuple(attrs['act']))
        return ep

    def extra_repr(self) -> str:
        return (f'{self.channels}, scale={self.scale is not None}, '
                f'bias={self.bias is not None}, '
                f'norm={self.running_mean is not None}')

    def forward(self, dot: Tensor) -> Tensor:
        out = dot.to(self.dtype)
        # As in BiLinear.forward: scale first, then bias.
        if self.scale is not None:
            out = out * self.scale
        if self.bias is not None:
            out = out + self.bias
        if self.running_mean is not None:  # As BatchNorm1d in eval mode.
            out = F.batch_norm(out, self.running_mean, self.running_var,
                               self.norm_weight, self.norm_bias, False, 0.0,
                               self.eps)
        if self.act is not None:
            out = self.act(out)
        return out


def _frozen(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().clone()


@torch.no_grad()
def fold_threshold(
    linear: BiLinear,
    norm: Optional[torch.nn.Module] = None,
    act: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Folds :obj:`linear` (its LSR scale and bias), an optional batch
    normalization :obj:`norm` (used in inference mode) and an optional
    activation :obj:`act` followed by the sign into integer thresholds:
    for every input,

    .. math::
        \left[\mathrm{act}\big(\mathrm{BN}(\alpha D_n + b_n)\big) \ge 0
        \right] = \left[ D_n \ge t_n \right] \oplus f_n,

    with :math:`D_n` the binary dot product of output channel :math:`n`
    (see :func:`~torch_geometric_binary.deploy.xnor_gemm_threshold`).

    The bits are computed exactly as the trained modules compute them: the
    layer's floating-point tail (:class:`BinaryEpilogue`) is evaluated on all
    :math:`K + 1` reachable values :math:`D_n \in \{-K, -K+2, \dots, K\}`.
    A channel whose bit does not depend on :math:`D_n` gets
    :math:`t_n = -2^{31}` (always :math:`1`) or :math:`t_n = 2^{31} - 1`
    (always :math:`0`) with :math:`f_n = 0`; a decreasing channel gets
    :math:`f_n = 1`.

    Args:
        linear (BiLinear): The trained binary layer.
        norm (torch.nn.Module, optional): Its batch normalization.
        act (callable, optional): A monotone activation after the
            normalization (*e.g.* :class:`torch.nn.Hardtanh`); it may be
            omitted when it preserves signs.

    Returns:
        :obj:`(threshold, flip)`: :obj:`int32` and :obj:`bool` tensors of
        shape :obj:`[out_channels]`.
    """
    return fold_epilogue(BinaryEpilogue(linear, norm, act), linear.in_channels)


@torch.no_grad()
def fold_epilogue(epilogue: Callable[[Tensor], Tensor],
                  K: int) -> Tuple[Tensor, Tensor]:
    r"""Folds :obj:`epilogue` (a map from :math:`[B, N]` dot products to
    outputs, like :class:`BinaryEpilogue`) followed by :math:`[\cdot \ge 0]`
    into :obj:`(threshold, flip)` for :math:`K` input channels; see
    :func:`fold_threshold`."""
    if K < 1 or K >= 2**24:  # float32 holds every dot product exactly.
        raise ValueError(f"Cannot fold a layer with K={K} input channels")
    dots = torch.arange(-K, K + 1, 2)  # All K + 1 reachable values.
    N = getattr(epilogue, 'channels', None)
    chunks = []
    step = max(1, (1 << 22) // max(N or 1, 1))
    for i in range(0, K + 1, step):
        d = dots[i:i + step, None].to(torch.float32)
        if N is not None:
            d = d.expand(-1, N).contiguous()
        chunks.append(epilogue(d) >= 0)
    bits = torch.cat(chunks, dim=0)  # [K + 1, N], rows by increasing dot.
    if bits.dim() != 2 or bits.size(0) != K + 1:
        raise ValueError(f"The epilogue returned shape {tuple(bits.shape)}")

    rising = (bits[1:] >= bits[:-1]).all(dim=0)
    falling = (bits[1:] <= bits[:-1]).all(dim=0)
    if not bool((rising | falling).all()):
        bad = (~(rising | falling)).nonzero().flatten().tolist()
        raise ValueError(f"The sign of channels {bad[:8]} is not monotone in "
                         f"the dot product, so it has no threshold")
    ones = bits.sum(dim=0)  # How many dot values give bit 1.
    constant = (ones == 0) | (ones == K + 1)
    flip = falling & ~constant
    # Rising: bit = [d >= d_(K+1-ones)]. Falling: bit = not [d >= d_(ones)].
    index = torch.where(flip, ones, K + 1 - ones).clamp(max=K)
    threshold = dots[index]
    threshold = torch.where(ones == 0, INT32_MAX, threshold)
    threshold = torch.where(ones == K + 1, INT32_MIN, threshold)
    return threshold.to(torch.int32), flip
