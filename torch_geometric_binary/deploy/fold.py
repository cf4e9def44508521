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

When the next layer binarizes its input against a learned threshold per
input channel (ReActNet's RSign, :math:`\mathrm{sign}(x - \theta)`), the sign
point moves from :math:`0` to :math:`\theta_n`: the bits are
:math:`[y_n(D_n) - \theta_n \ge 0]`, computed with the same float
subtraction, so the same derivation covers it. :func:`dot_thresholds` is
that derivation, shared by the folded layers, the pooled layers
(:class:`~torch_geometric_binary.deploy.PoolTable`) and the exactness check
of :class:`~torch_geometric_binary.deploy.AffineEpilogue`.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from torch_geometric_binary.deploy.activations import (act_spec, freeze_act,
                                                       make_act)
from torch_geometric_binary.deploy.registry import is_packed
from torch_geometric_binary.deploy.registry import (DTYPES, AddTensor,
                                                    PackedConfig, dtype_name,
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
        self.act = freeze_act(act)

    _TENSORS = ('scale', 'bias', 'running_mean', 'running_var',
                'norm_weight', 'norm_bias')

    def packed_config(self, add: AddTensor) -> PackedConfig:
        # A stateless activation is a spec; one with tensors, a child.
        packed = is_packed(self.act)
        spec = None if self.act is None or packed else \
            list(act_spec(self.act, 'save'))
        return ({'channels': self.channels, 'eps': self.eps,
                 'dtype': dtype_name(self.dtype), 'act': spec},
                {k: add(getattr(self, k), 'epilogues')
                 for k in self._TENSORS},
                {'act_module': self.act} if packed else {})

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
        ep.act = children.get('act_module') if attrs['act'] is None else \
            make_act(tuple(attrs['act']))
        return ep

    def extra_repr(self) -> str:
        return (f'{self.channels}, scale={self.scale is not None}, '
                f'bias={self.bias is not None}, '
                f'norm={self.running_mean is not None}')

    def forward(self, dot: Tensor) -> Tensor:
        out = scale_then_bias(dot.to(self.dtype), self.scale, self.bias)
        if self.running_mean is not None:  # As BatchNorm1d in eval mode.
            out = F.batch_norm(out, self.running_mean, self.running_var,
                               self.norm_weight, self.norm_bias, False, 0.0,
                               self.eps)
        if self.act is not None:
            out = self.act(out)
        return out


def scale_then_bias(x: Tensor, scale: Optional[Tensor],
                    bias: Optional[Tensor], zero_bias: bool = False
                    ) -> Tensor:
    r""":math:`x \alpha + b` in the order of
    :meth:`BiLinear.forward <torch_geometric_binary.nn.BiLinear.forward>`
    (a scale, then a bias; either may be absent). With :obj:`zero_bias`, a
    missing bias is a zero added, as the C++ epilogue does (it turns
    :math:`-0` into :math:`+0`)."""
    if scale is not None:
        x = x * scale
    if bias is not None:
        x = x + bias
    elif zero_bias:
        x = x + 0.0
    return x


def _frozen(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().clone()


def dot_grid(K: int, N: int = 1) -> Tensor:
    r"""The :math:`K + 1` reachable dot products :math:`-K, -K + 2, \dots,
    K` of :math:`K` binary inputs, as float32 rows :obj:`[K + 1, N]`."""
    if K < 1 or K >= 2**24:  # float32 holds every dot product exactly.
        raise ValueError(f"Cannot fold a layer with K={K} input channels")
    grid = torch.arange(-K, K + 1, 2, dtype=torch.float32)
    return grid[:, None].expand(-1, N).contiguous()


@torch.no_grad()
def on_dots(f: Callable[[Tensor], Tensor], K: int, N: int) -> Tensor:
    r"""The per-channel function :obj:`f` (:obj:`[B, N]` dot products to
    :obj:`[B, N]` outputs) on every reachable dot product: :obj:`[K + 1,
    N]`, rows by increasing dot product (evaluated in bounded chunks)."""
    grid = dot_grid(K, N)
    step = max(1, (1 << 22) // max(N, 1))
    out = torch.cat([f(grid[i:i + step]) for i in range(0, K + 1, step)])
    if out.shape != (K + 1, N):
        raise ValueError(f"The epilogue returned shape {tuple(out.shape)} "
                         f"for {(K + 1, N)} dot products")
    return out


def sign_bits(y: Tensor, theta: Optional[Tensor] = None) -> Tensor:
    r"""The bits :math:`[y - \theta \ge 0]` that the next binary layer
    takes from :obj:`y` (:math:`\theta` its learned input threshold per
    channel, or :math:`0`), with the float subtraction it performs."""
    if theta is None:
        return y >= 0
    return (y - theta.to(y.dtype)) >= 0


def dot_thresholds(bits: Tensor, K: int,
                   what: str = 'sign') -> Tuple[Tensor, Tensor]:
    r"""The integer thresholds of a table of bits :obj:`[K + 1, N]` over the
    dot products :math:`D = -K, -K + 2, \dots, K` (rows in that order):
    :obj:`(t, f)` with :math:`\mathrm{bit}(D) = [D \ge t] \oplus f`.

    A rising channel gets :math:`f = 0`, a falling one :math:`f = 1`; a
    channel whose bit does not depend on :math:`D` gets
    :math:`t = -2^{31}` (always :math:`1`) or :math:`t = 2^{31} - 1`
    (always :math:`0`) with :math:`f = 0`. A channel that is neither
    rising nor falling has no threshold: a :class:`ValueError` names it
    (and :obj:`what`)."""
    if bits.dim() != 2 or bits.size(0) != K + 1:
        raise ValueError(f"Expected [{K + 1}, N] bits (got shape "
                         f"{tuple(bits.shape)})")
    rising = (bits[1:] >= bits[:-1]).all(dim=0)
    falling = (bits[1:] <= bits[:-1]).all(dim=0)
    if not bool((rising | falling).all()):
        bad = (~(rising | falling)).nonzero().flatten().tolist()
        raise ValueError(f"The {what} of channels {bad[:8]} is not monotone "
                         f"in the dot product, so it has no threshold")
    dots = torch.arange(-K, K + 1, 2)
    ones = bits.sum(dim=0)  # How many dot values give bit 1.
    constant = (ones == 0) | (ones == K + 1)
    flip = falling & ~constant
    # Rising: bit = [d >= d_(K+1-ones)]. Falling: bit = not [d >= d_(ones)].
    index = torch.where(flip, ones, K + 1 - ones).clamp(max=K)
    threshold = dots[index]
    threshold = torch.where(ones == 0, INT32_MAX, threshold)
    threshold = torch.where(ones == K + 1, INT32_MIN, threshold)
    return threshold.to(torch.int32), flip


@torch.no_grad()
def fold_threshold(
    linear: BiLinear,
    norm: Optional[torch.nn.Module] = None,
    act: Optional[Callable[[Tensor], Tensor]] = None,
    theta: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Folds :obj:`linear` (its scale and bias), an optional batch
    normalization :obj:`norm` (used in inference mode), an optional
    activation :obj:`act` and the next layer's sign into integer
    thresholds: for every input,

    .. math::
        \left[\mathrm{act}\big(\mathrm{BN}(\alpha D_n + b_n)\big)
        - \theta_n \ge 0 \right] = \left[ D_n \ge t_n \right] \oplus f_n,

    with :math:`D_n` the binary dot product of output channel :math:`n`
    (see :func:`~torch_geometric_binary.deploy.xnor_gemm_threshold`).

    The bits are computed exactly as the trained modules compute them: the
    layer's floating-point tail (:class:`BinaryEpilogue`) is evaluated on all
    :math:`K + 1` reachable values :math:`D_n \in \{-K, -K+2, \dots, K\}`
    (see :func:`dot_thresholds` for constant and decreasing channels).

    Args:
        linear (BiLinear): The trained binary layer.
        norm (torch.nn.Module, optional): Its batch normalization.
        act (callable, optional): A monotone activation after the
            normalization (*e.g.* :class:`torch.nn.Hardtanh`); it may be
            omitted when it preserves signs and :obj:`theta` is :obj:`None`.
        theta (torch.Tensor, optional): The next layer's learned input
            threshold per channel (:math:`0` without one).

    Returns:
        :obj:`(threshold, flip)`: :obj:`int32` and :obj:`bool` tensors of
        shape :obj:`[out_channels]`.
    """
    return fold_epilogue(BinaryEpilogue(linear, norm, act),
                         linear.in_channels, theta)


@torch.no_grad()
def fold_epilogue(epilogue: BinaryEpilogue, K: int,
                  theta: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    r"""Folds :obj:`epilogue` (a map from :math:`[B, N]` dot products to
    outputs, like :class:`BinaryEpilogue`) followed by the next layer's
    sign :math:`[\cdot - \theta \ge 0]` into :obj:`(threshold, flip)` for
    :math:`K` input channels; see :func:`fold_threshold`."""
    y = on_dots(epilogue, K, epilogue.channels)
    return dot_thresholds(sign_bits(y, theta), K)
