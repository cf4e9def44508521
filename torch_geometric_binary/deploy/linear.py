from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from torch_geometric_binary.deploy.fold import BinaryEpilogue, fold_epilogue
from torch_geometric_binary.deploy.kernels import (
    _pack_bool,
    _unpack_bool,
    num_words,
    pack_bits,
    xnor_gemm,
    xnor_gemm_threshold,
)
from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    register_packed)
from torch_geometric_binary.nn.linear import BiLinear

OUTPUTS = ('bits', 'float')


def _int_range(K: int) -> torch.dtype:
    for dtype in (torch.int8, torch.int16):
        if K + 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int32


def _compact_thresholds(t: Tensor, K: int) -> Tensor:
    # A threshold <= -K always holds and one > K never does: [-K-1, K+1]
    # keeps every decision, in the smallest integer type.
    return t.to(torch.int64).clamp(-K - 1, K + 1).to(_int_range(K))


def _pack_flags(b: Tensor) -> Tensor:
    return _pack_bool(b.reshape(1, -1).bool()).view(-1)


def _unpack_flags(words: Tensor, n: int) -> Tensor:
    return _unpack_bool(words.view(1, -1), n).view(-1)


def input_threshold_of(linear: BiLinear) -> Optional[Tensor]:
    r"""A frozen copy of the learned input threshold
    :math:`\boldsymbol{\theta}` of :obj:`linear` (ReActNet's RSign), or
    :obj:`None`."""
    theta = getattr(linear, 'input_threshold', None)
    return None if theta is None else theta.detach().clone()


def binarize_floats(x: Tensor, theta: Optional[Tensor] = None) -> Tensor:
    r"""The packed signs :math:`\mathrm{sign}(\mathbf{x} -
    \boldsymbol{\theta})` (:math:`\boldsymbol{\theta} = 0` if :obj:`None`),
    with the subtraction the binary layer performs."""
    if theta is not None:
        x = x - theta.to(x.dtype)
    return pack_bits(x)


@register_packed
class PackedBiLinear(torch.nn.Module):
    r"""A trained :class:`~torch_geometric_binary.nn.BiLinear` layer (with
    its following batch normalization and activation) for bit-packed
    inference.

    The weights :math:`\mathrm{sign}(\mathbf{W} - \overline{\mathbf{W}})` are
    stored as packed :obj:`int64` words (1 bit per weight), and the layer
    computes the integer dot products
    :math:`\mathbf{D} = \mathrm{sign}(\mathbf{x})\,\mathrm{sign}(\mathbf{W} -
    \overline{\mathbf{W}})^{\top}` with XNOR-popcount kernels. Then either

    * :obj:`output="bits"`: the packed signs of the layer's output for the
      next binary layer, :math:`[\mathbf{D}_n \ge t_n] \oplus f_n`, with the
      scale, bias, normalization and activation folded into the integer
      thresholds (see :func:`~torch_geometric_binary.deploy.fold_threshold`),
      or
    * :obj:`output="float"`: the full-precision output
      :math:`\mathrm{act}(\mathrm{BN}(\alpha \mathbf{D} + \mathbf{b}))` for a
      full-precision consumer (a classifier, a max pooling).

    Both equal the trained modules' results exactly (in inference mode).
    Build it with :meth:`from_bilinear`.

    Args:
        weight (torch.Tensor): Packed binary weights of shape
            :math:`(F_{out}, \lceil F_{in} / 64 \rceil)`.
        in_channels (int): :math:`F_{in}`.
        threshold (torch.Tensor): :obj:`int32` thresholds :math:`t` of shape
            :math:`(F_{out},)`.
        flip (torch.Tensor): :obj:`bool` inversions :math:`f` of shape
            :math:`(F_{out},)`.
        epilogue (BinaryEpilogue, optional): The full-precision tail, needed
            for :obj:`output="float"`.
        output (str, optional): :obj:`"bits"` or :obj:`"float"`.
            (default: :obj:`"bits"`)
        input_threshold (torch.Tensor, optional): The learned threshold
            :math:`\boldsymbol{\theta}` per input channel of methods that
            binarize :math:`\mathrm{sign}(\mathbf{x} - \boldsymbol{\theta})`
            (ReActNet's RSign), applied to float inputs. (The layer before
            folds it into its own thresholds.)

    Shapes:
        - **input:** packed :math:`(*, \lceil F_{in} / 64 \rceil)`
          (:obj:`int64`), or floating-point :math:`(*, F_{in})`, binarized
          by its sign
        - **output:** packed :math:`(*, \lceil F_{out} / 64 \rceil)`
          (:obj:`int64`) or floating-point :math:`(*, F_{out})`
    """
    def __init__(
        self,
        weight: Tensor,
        in_channels: int,
        threshold: Tensor,
        flip: Tensor,
        epilogue: Optional[BinaryEpilogue] = None,
        output: str = 'bits',
        input_threshold: Optional[Tensor] = None,
    ):
        super().__init__()
        if weight.dtype != torch.int64 or weight.dim() != 2 \
                or weight.size(1) != num_words(in_channels):
            raise ValueError(f"Expected packed int64 weights of shape "
                             f"(out_channels, {num_words(in_channels)}) "
                             f"(got {weight.dtype} {tuple(weight.shape)})")
        if output not in OUTPUTS:
            raise ValueError(f"'output' must be one of {OUTPUTS} (got "
                             f"'{output}')")
        if output == 'float' and epilogue is None:
            raise ValueError("output='float' needs the epilogue")
        if input_threshold is not None and (
                input_threshold.shape != (in_channels, )
                or not input_threshold.is_floating_point()):
            raise ValueError(f"'input_threshold' must be a float tensor of "
                             f"shape ({in_channels},) (got "
                             f"{input_threshold.dtype} "
                             f"{tuple(input_threshold.shape)})")
        self.in_channels = in_channels
        self.out_channels = weight.size(0)
        self.output = output
        self.register_buffer('weight', weight)
        self.register_buffer('threshold', threshold.to(torch.int32))
        self.register_buffer('flip', flip.to(torch.bool))
        self.register_buffer('input_threshold', input_threshold)
        self.epilogue = epilogue

    @classmethod
    @torch.no_grad()
    def from_bilinear(
        cls,
        linear: BiLinear,
        norm: Optional[torch.nn.Module] = None,
        act: Optional[Callable[[Tensor], Tensor]] = None,
        output: str = 'bits',
        theta: Optional[Tensor] = None,
    ) -> 'PackedBiLinear':
        r"""Packs a trained :obj:`linear` layer, followed by an optional
        batch normalization :obj:`norm` (used with its running statistics)
        and an optional activation :obj:`act` (*e.g.*
        :class:`torch.nn.Hardtanh`); :obj:`theta` is the next binary
        layer's learned input threshold, folded into the thresholds of
        :obj:`output="bits"` (see
        :func:`~torch_geometric_binary.deploy.fold_threshold`)."""
        if not isinstance(linear, BiLinear):
            raise TypeError(f"Expected a BiLinear layer (got "
                            f"{type(linear).__name__})")
        problem = linear.method.pack_problem()
        if problem is not None:
            raise ValueError(f"Cannot pack method '{linear.method.name}': "
                             f"{problem}")
        weight = linear.binary_weight().detach()
        if not bool((weight.abs() == 1).all()):
            raise ValueError("The binarized weight is not in {-1, +1}")
        epilogue = BinaryEpilogue(linear, norm, act)
        threshold, flip = fold_epilogue(epilogue, linear.in_channels, theta)
        return cls(pack_bits(weight), linear.in_channels, threshold, flip,
                   epilogue, output, input_threshold_of(linear))

    def packed_config(self, add: AddTensor) -> PackedConfig:
        K = self.in_channels
        tensors = {'weight': add(self.weight, 'binary_weights')}
        keep = self.epilogue is None
        if not keep:  # Derivable from the epilogue? Then it is not stored.
            t, f = fold_epilogue(self.epilogue, K)
            keep = not (torch.equal(t, self.threshold)
                        and torch.equal(f, self.flip))
        if keep:  # (They fold the next layer's input threshold, if any.)
            tensors['threshold'] = add(_compact_thresholds(self.threshold, K),
                                       'thresholds')
            tensors['flip'] = add(_pack_flags(self.flip), 'thresholds')
        if self.input_threshold is not None:  # Absent from older files.
            tensors['input_threshold'] = add(self.input_threshold,
                                             'thresholds')
        return ({'in_channels': K, 'out_channels': self.out_channels,
                 'output': self.output}, tensors,
                {'epilogue': self.epilogue})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedBiLinear':
        K, N = attrs['in_channels'], attrs['out_channels']
        epilogue = children['epilogue']
        if tensors.get('threshold') is not None:
            threshold = tensors['threshold'].to(torch.int32)
            flip = _unpack_flags(tensors['flip'], N)
        else:
            threshold, flip = fold_epilogue(epilogue, K)
        return cls(tensors['weight'], K, threshold, flip, epilogue,
                   attrs['output'], tensors.get('input_threshold'))

    def forward(self, x: Tensor, output: Optional[str] = None) -> Tensor:
        r"""Applies the layer; :obj:`output` overrides :obj:`self.output`."""
        output = self.output if output is None else output
        if output not in OUTPUTS:
            raise ValueError(f"'output' must be one of {OUTPUTS} (got "
                             f"'{output}')")
        if x.is_floating_point():
            if x.size(-1) != self.in_channels:
                raise ValueError(f"Expected {self.in_channels} input "
                                 f"channels (got shape {tuple(x.shape)})")
            x = binarize_floats(x, self.input_threshold)
        K = self.in_channels
        if output == 'bits':
            return xnor_gemm_threshold(x, self.weight, K, self.threshold,
                                       self.flip)
        if self.epilogue is None:
            raise RuntimeError("This packed layer has no epilogue for "
                               "output='float'")
        dot = xnor_gemm(x, self.weight, K)
        # Batch normalization wants (B, C): flatten leading dimensions.
        out = self.epilogue(dot.reshape(-1, self.out_channels))
        return out.view(*dot.shape[:-1], self.out_channels)

    def num_bytes(self, output: Optional[str] = None) -> int:
        r"""The bytes of the tensors the layer needs for :obj:`output`
        (default: :obj:`self.output`): packed weights plus thresholds and
        flips, or plus the full-precision epilogue."""
        output = self.output if output is None else output
        size = self.weight.numel() * self.weight.element_size()
        if self.input_threshold is not None:
            size += self.input_threshold.numel() * \
                self.input_threshold.element_size()
        if output == 'bits':
            for t in (self.threshold, self.flip):
                size += t.numel() * t.element_size()
        elif self.epilogue is not None:
            size += sum(b.numel() * b.element_size()
                        for b in self.epilogue.buffers())
        return size

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, '
                f'output={self.output}')
