r"""Packed counterparts of the building blocks of the binary models.

Each class mirrors one training-time module (:class:`PackedMLP` a
:class:`~torch_geometric_binary.nn.BiMLP`, :class:`PackedLinear` a
full-precision linear layer, :class:`FrozenBatchNorm` a batch normalization
in inference mode, :class:`PackedGlobalPool` a global (EMA) max pooling), so
that a packed model can be compared with its trained model module by module.
Binary layers are :class:`~torch_geometric_binary.deploy.PackedBiLinear`
with their batch normalization and activation folded in.

Every module here is inference-only: it holds buffers, no parameters, and
behaves the same in training mode.
"""
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
import torch_geometric.nn
from torch_geometric.nn.aggr import MaxAggregation

from torch_geometric_binary.deploy.activations import (convert_act,
                                                       sign_preserving)
from torch_geometric_binary.deploy.chain import (PoolTable, pooled_floats,
                                                 wrong_size)
from torch_geometric_binary.deploy.epilogue import AffineEpilogue
from torch_geometric_binary.deploy.fold import _unwrap_norm
from torch_geometric_binary.deploy.fusion import (Deferred, fuse, grouped,
                                                  pending)
from torch_geometric_binary.deploy.kernels import unpack_bits, xnor_gemm
from torch_geometric_binary.deploy.linear import (PackedBiLinear,
                                                  binarize_floats,
                                                  input_threshold_of)
from torch_geometric_binary.deploy.registry import (AddTensor, PackedConfig,
                                                    register_packed)
from torch_geometric_binary.nn.aggr import (EMAMaxAggregation, check_clouds,
                                            global_ema_max_pool,
                                            global_max_pool)
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.nn.methods import BinaryMethod

FP_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLT_MAX = float(torch.finfo(torch.float32).max)


# --------------------------------------------------------------------------
# Full-precision pieces.

@register_packed
class FrozenBatchNorm(torch.nn.Module):
    r"""A batch normalization in inference mode (always, also in training
    mode), with the same operation as the trained module
    (:func:`torch.nn.functional.batch_norm` with the running statistics)."""
    def __init__(self, running_mean: Tensor, running_var: Tensor,
                 weight: Optional[Tensor], bias: Optional[Tensor],
                 eps: float):
        super().__init__()
        self.num_features = running_mean.numel()
        self.eps = float(eps)
        self.register_buffer('running_mean', running_mean)
        self.register_buffer('running_var', running_var)
        self.register_buffer('weight', weight)
        self.register_buffer('bias', bias)

    @classmethod
    def from_module(cls, norm: torch.nn.Module) -> 'FrozenBatchNorm':
        bn = _unwrap_norm(norm)
        if bn is None:
            raise TypeError(f"Expected a batch normalization (got "
                            f"{type(norm).__name__})")

        def frozen(t):
            return None if t is None else t.detach().clone()
        return cls(frozen(bn.running_mean), frozen(bn.running_var),
                   frozen(bn.weight), frozen(bn.bias), bn.eps)

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'eps': self.eps},
                {k: add(getattr(self, k), 'fp_norms')
                 for k in ('running_mean', 'running_var', 'weight',
                           'bias')}, {})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'FrozenBatchNorm':
        return cls(tensors['running_mean'], tensors['running_var'],
                   tensors['weight'], tensors['bias'], attrs['eps'])

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var,
                            self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


@register_packed
class PackedLinear(torch.nn.Module):
    r"""A full-precision linear layer, stored in :obj:`dtype` (float32,
    float16 or bfloat16) and computed in float32,
    :math:`\mathbf{x} \mathbf{W}^{\top} + \mathbf{b}`. In float32 it is the
    trained layer's operation exactly."""
    #: What it computes in, whatever the storage type.
    input_dtype = torch.float32

    def __init__(self, weight: Tensor, bias: Optional[Tensor] = None):
        super().__init__()
        if weight.dtype not in FP_DTYPES or weight.dim() != 2:
            raise ValueError(f"PackedLinear expects a 2-D weight in one of "
                             f"{FP_DTYPES} (got {weight.dtype})")
        self.in_channels = weight.size(1)
        self.out_channels = weight.size(0)
        self.register_buffer('weight', weight)
        self.register_buffer('bias', None if bias is None else
                             bias.to(weight.dtype))
        self._refresh()

    @classmethod
    def from_linear(cls, lin: torch.nn.Module,
                    dtype: torch.dtype = torch.float32) -> 'PackedLinear':
        weight = getattr(lin, 'weight', None)
        if not isinstance(lin, (torch.nn.Linear,
                                _pyg_linear())) or weight is None \
                or weight.dim() != 2 or weight.is_meta:
            raise TypeError(f"pack: expected a full-precision linear layer "
                            f"(got {type(lin).__name__})")
        if dtype not in FP_DTYPES:
            raise ValueError(f"pack: 'fp_dtype' must be one of {FP_DTYPES} "
                             f"(got {dtype})")
        bias = None if lin.bias is None else lin.bias.detach().to(dtype)
        return cls(weight.detach().to(dtype).clone(),
                   None if bias is None else bias.clone())

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({}, {'weight': add(self.weight, 'fp_weights'),
                     'bias': add(self.bias, 'fp_weights')}, {})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedLinear':
        return cls(tensors['weight'], tensors['bias'])

    def _refresh(self):
        # Float32 copies to compute with (not stored).
        w32 = self.weight if self.weight.dtype == torch.float32 \
            else self.weight.float()
        b32 = None if self.bias is None else self.bias.float()
        self.register_buffer('weight32', w32, persistent=False)
        self.register_buffer('bias32', b32, persistent=False)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._refresh()
        return out

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.float32:
            x = x.float()
        return F.linear(x, self.weight32, self.bias32)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, '
                f'bias={self.bias is not None}, '
                f'dtype={str(self.weight.dtype).split(".")[-1]}')


def _pyg_linear():
    from torch_geometric.nn.dense.linear import Linear
    return Linear


# --------------------------------------------------------------------------
# Binary layers.

def check_method(method: BinaryMethod, where: str):
    r"""Raises, naming the reason, for a method that packed inference cannot
    reproduce exactly (:meth:`BinaryMethod.pack_problem`)."""
    problem = method.pack_problem()
    if problem is not None:
        raise ValueError(f"pack: {where} uses method '{method.name}', which "
                         f"cannot be packed: {problem}")


@torch.no_grad()
def pack_binary(lin: BiLinear, norm: Optional[torch.nn.Module],
                act: Optional[torch.nn.Module], output: str,
                epilogue_dtype: torch.dtype = torch.float32,
                theta: Optional[Tensor] = None) -> PackedBiLinear:
    r"""A :class:`PackedBiLinear` for :obj:`lin` followed by :obj:`norm`
    and :obj:`act`. Layers with :obj:`output="bits"` keep only their
    thresholds (which fold in the next layer's input threshold
    :obj:`theta`); layers with float output keep the epilogue, in the
    compact :class:`AffineEpilogue` form where it is exact."""
    check_method(lin.method, type(lin).__name__)
    layer = PackedBiLinear.from_bilinear(lin, norm, act, output=output,
                                         theta=theta)
    if output == 'bits':
        layer.epilogue = None
    else:
        aff = AffineEpilogue.from_epilogue(layer.epilogue, lin.in_channels,
                                           epilogue_dtype)
        if aff is not None:
            layer.epilogue = aff
    return layer


# --------------------------------------------------------------------------
# MLPs.

@register_packed
class PackedMLP(torch.nn.Module):
    r"""A packed :class:`~torch_geometric_binary.nn.BiMLP`: :obj:`lins[i]`
    is a :class:`PackedBiLinear` (binary; its normalization and activation
    folded in, so :obj:`norms[i]` is an :class:`~torch.nn.Identity`) or a
    :class:`PackedLinear` (full precision, followed by :obj:`norms[i]` and
    :obj:`act`). A binary layer followed by a binary layer outputs packed
    bits; the others output floats.

    With :obj:`acts` (activations with parameters per channel, one per
    normalized layer), layer :obj:`i` uses :obj:`acts[i]` instead of
    :obj:`act`.

    With :obj:`pool_size` (:meth:`fix_pool_size`), the MLP only pools:
    groups of exactly that many rows, its last layer giving the pooled
    signs through integer thresholds instead of a float epilogue.

    :meth:`forward` returns what the trained MLP returns (in inference
    mode): with :attr:`fuse` on (:class:`~torch_geometric_binary.deploy.
    PackedModel` sets it), as a :class:`~torch_geometric_binary.deploy.
    fusion.Pending` value that the next packed modules extend into one
    chain where they can, else from the layers one by one
    (:meth:`forward_layers`).
    """
    def __init__(self, channel_list: List[int], lins: List[torch.nn.Module],
                 norms: List[torch.nn.Module],
                 act: Optional[torch.nn.Module], plain_last: bool,
                 last_norm: Optional[torch.nn.Module] = None,
                 acts: Optional[List[torch.nn.Module]] = None,
                 pool_size: Optional[int] = None, pool_ema: bool = False):
        super().__init__()
        self.channel_list = list(channel_list)
        self.lins = torch.nn.ModuleList(lins)
        self.norms = torch.nn.ModuleList(norms)
        self.act = act
        self.plain_last = plain_last
        # A full-precision last layer's output normalization (a binary last
        # layer folds it into its epilogue).
        self.last_norm = last_norm
        self.acts = None if acts is None else torch.nn.ModuleList(acts)
        #: The group size (and EMA switch) its last layer is specialized
        #: to pool (fix_pool_size), or None.
        self.pool_size = pool_size
        self.pool_ema = pool_ema
        # The falling channels of the pooled last layer, by EMA (pool).
        self._flips: Dict[bool, Tensor] = {}
        #: Whether forward and pool fuse with the next packed modules.
        self.fuse = False
        #: Whether its output is the model's (a classifier's logits): a
        #: full-precision last layer then runs inside its fused chain, with
        #: float64 sums (the layer's values up to rounding).
        self.is_output = False
        #: The fused segments that begin with this MLP (deploy.fusion).
        self.fusions: Dict[Any, Any] = {}

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state['fusions'] = {}  # C++ plans, rebuilt on use.
        return state

    def _apply(self, fn, *args, **kwargs):
        self.fusions = {}  # Derived tensors follow the module.
        return super()._apply(fn, *args, **kwargs)

    def act_at(self, i: int) -> Optional[torch.nn.Module]:
        r"""The activation after layer :obj:`i`'s normalization."""
        return self.act if self.acts is None else self.acts[i]

    @classmethod
    def from_bimlp(cls, mlp: torch.nn.Module,
                   fp_dtype: torch.dtype = torch.float32,
                   epilogue_dtype: torch.dtype = torch.float32,
                   where: str = 'BiMLP') -> 'PackedMLP':
        from torch_geometric_binary.nn.mlp import BiMLP
        if not isinstance(mlp, BiMLP):
            raise TypeError(f"pack: {where} is a {type(mlp).__name__}, "
                            f"expected a BiMLP")
        check_method(mlp.method, where)
        if getattr(mlp, 'act_first', False):
            raise ValueError(f"pack: {where} applies its activation before "
                             f"the normalization (act_first=True), which "
                             f"pack does not support")
        trained_acts = getattr(mlp, 'acts', None)
        acts = None if trained_acts is None else [
            convert_act(a, f'{where}.acts.{i}')
            for i, a in enumerate(trained_acts)]
        act = convert_act(mlp.act, f'{where}.act')
        n = len(mlp.lins)
        binary = [isinstance(lin, BiLinear) for lin in mlp.lins]
        lins: List[torch.nn.Module] = []
        norms: List[torch.nn.Module] = []
        for i, lin in enumerate(mlp.lins):
            last = i == n - 1
            normed = not last or not mlp.plain_last
            norm = mlp.norms[i] if normed else None
            if norm is not None and isinstance(norm, torch.nn.Identity):
                norm = None
            if norm is not None and _unwrap_norm_or_none(norm) is None:
                raise TypeError(f"pack: {where}.norms.{i} is a "
                                f"{type(norm).__name__}; pack supports batch "
                                f"normalization only")
            if binary[i]:
                if last and mlp.last_norm is not None:
                    epi_norm, epi_act = mlp.last_norm, None
                else:
                    epi_norm = norm
                    epi_act = (act if acts is None else acts[i]) \
                        if normed else None
                # Hidden outputs read outside the MLP stay floats.
                nxt = not last and binary[i + 1] and not mlp.hidden_read
                theta = input_threshold_of(mlp.lins[i + 1]) if nxt else None
                lins.append(pack_binary(lin, epi_norm, epi_act,
                                        'bits' if nxt else 'float',
                                        epilogue_dtype, theta))
                norms.append(torch.nn.Identity())
            else:
                try:
                    lins.append(PackedLinear.from_linear(lin, fp_dtype))
                except TypeError:
                    raise TypeError(f"pack: {where}.lins.{i} is a "
                                    f"{type(lin).__name__}, which pack does "
                                    f"not know") from None
                norms.append(FrozenBatchNorm.from_module(norm)
                             if norm is not None else torch.nn.Identity())
        last_norm = None
        if mlp.last_norm is not None and not binary[-1]:
            last_norm = FrozenBatchNorm.from_module(mlp.last_norm)
        return cls(mlp.channel_list, lins, norms, act, mlp.plain_last,
                   last_norm, acts)

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'channel_list': self.channel_list,
                 'plain_last': self.plain_last, 'pool_size': self.pool_size,
                 'pool_ema': self.pool_ema},
                {}, {'lins': self.lins, 'norms': self.norms, 'act': self.act,
                     'last_norm': self.last_norm, 'acts': self.acts})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedMLP':
        return cls(attrs['channel_list'], list(children['lins']),
                   list(children['norms']), children['act'],
                   attrs['plain_last'], children['last_norm'],
                   children.get('acts'), attrs.get('pool_size'),
                   attrs.get('pool_ema', False))

    def fix_pool_size(self, n: int, ema: bool,
                      act: Optional[torch.nn.Module] = None,
                      theta: Optional[Tensor] = None,
                      where: str = 'PackedMLP') -> 'PackedMLP':
        r"""Specializes the MLP to be max-pooled (with :obj:`ema`) over
        groups of exactly :obj:`n` rows, the pooled value then passed
        through the non-decreasing :obj:`act` and read by a binary layer
        with input threshold :obj:`theta`: the last layer is replaced by
        its :meth:`PoolTable.fixed_layer` (integer thresholds instead of
        the float epilogue; the same signs after the pooling), and other
        group sizes raise a :class:`ValueError`."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"pack: 'num_points' must be a positive integer "
                             f"(got {n!r})")
        if self.pool_size is not None:
            if (self.pool_size, self.pool_ema) != (n, ema):
                raise ValueError(f"pack: {where} is already specialized to "
                                 f"{self.pool_size} points")
            return self
        layer = self.lins[-1]
        if not isinstance(layer, PackedBiLinear) or layer.epilogue is None:
            raise ValueError(f"pack: num_points needs a binary layer before "
                             f"the pooling ({where} ends with a "
                             f"{type(layer).__name__})")
        self.lins[-1] = PoolTable(layer, ema, act, theta=theta).fixed_layer(n)
        self.pool_size, self.pool_ema = n, ema
        self.fusions = {}
        return self

    @property
    def in_channels(self) -> int:
        return self.channel_list[0]

    @property
    def out_channels(self) -> int:
        return self.channel_list[-1]

    def is_binary(self, i: int) -> bool:
        return isinstance(self.lins[i], PackedBiLinear)

    def fp_tail(self, i: int, x: Tensor, sign_only: bool = False) -> Tensor:
        r"""What follows full-precision layer :obj:`i`'s linear map: its
        normalization and activation (see :meth:`fp_layer`)."""
        last = i == len(self.lins) - 1
        if not last or not self.plain_last:
            x = self.norms[i](x)
            act = self.act_at(i)
            if act is not None and not (sign_only and sign_preserving(act)):
                x = act(x)
        elif self.last_norm is not None:
            x = self.last_norm(x)
        return x

    def fp_layer(self, i: int, x: Tensor, sign_only: bool = False
                 ) -> Tensor:
        r"""Full-precision layer :obj:`i` with its normalization and
        activation; with :obj:`sign_only`, an activation that preserves
        signs is skipped (the result then has the right signs only)."""
        lin = self.lins[i]
        if not x.is_floating_point():
            x = unpack_bits(x, lin.in_channels)
        return self.fp_tail(i, lin(x), sign_only)

    def forward(self, x: Tensor, batch: Optional[Tensor] = None,
                batch_size: Optional[int] = None) -> Tensor:
        r"""The MLP's output (:obj:`batch` and :obj:`batch_size`, the
        trained MLP's arguments for batch-aware normalizations, are not
        needed in inference mode)."""
        if self.fuse or isinstance(x, Deferred):
            self._check_input(x)
            out = fuse(self, x)
            if out is not None:
                return out
        return self.forward_layers(x)

    def forward_layers(self, x: Tensor) -> Tensor:
        r"""The MLP's output, from its layers one by one."""
        if isinstance(x, Deferred):
            x = x.value()
        self._check_input(x)
        for i in range(len(self.lins)):
            x = self.layer(i, x)
        return x

    def layer(self, i: int, x: Tensor) -> Tensor:
        r"""Layer :obj:`i` with its normalization and activation."""
        return self.lins[i](x) if self.is_binary(i) else self.fp_layer(i, x)

    def hidden_outputs(self, x: Tensor, batch: Optional[Tensor] = None,
                       batch_size: Optional[int] = None) -> List[Tensor]:
        r"""What :meth:`BiMLP.hidden_outputs
        <torch_geometric_binary.nn.BiMLP.hidden_outputs>` gives: the float
        output of every layer before the plain last one. The trained MLP
        must say that its hidden outputs are read (:obj:`hidden_read`, as
        :class:`~torch_geometric_binary.nn.models.PointNetSeg` sets it), so
        that its binary layers keep float outputs."""
        if isinstance(x, Deferred):
            x = x.value()
        self._check_input(x)
        n = len(self.lins) - int(self.plain_last)
        outs = [x]
        for i in range(n):
            x = self.layer(i, x)
            if not x.is_floating_point():
                raise TypeError(f"PackedMLP.hidden_outputs: layer {i} outputs "
                                "bits; pack the BiMLP with hidden_read=True")
            outs.append(x)
        return outs[1:] or outs

    def output(self, x: Tensor) -> Tensor:
        r"""The plain last layer on the output of :meth:`hidden_outputs`, as
        :meth:`BiMLP.output <torch_geometric_binary.nn.BiMLP.output>`."""
        return self.layer(len(self.lins) - 1, x) if self.plain_last else x

    def max_pool(self, x: Tensor, batch: Optional[Tensor], size: int,
                 ema: Optional[bool] = None) -> Tensor:
        r"""What :meth:`BiMLP.max_pool
        <torch_geometric_binary.nn.BiMLP.max_pool>` gives: the max of the
        MLP's float output over each cloud, minus :math:`\delta(n)` of the
        cloud's size :math:`n` with :obj:`ema`,
        :obj:`[size, out_channels]` (see :meth:`pool`). A packed MLP does
        not keep its method, so :obj:`ema` must be given."""
        ema = self._ema(ema, 'max_pool')
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        elif ema:  # An empty cloud has no EMA offset: as the trained model.
            check_clouds(batch, size)
        return self.pool(x, batch, size, ema)

    def group_max(self, x: Tensor, group_size: Optional[int] = None,
                  ema: Optional[bool] = None, batch: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  ptr: Optional[Tensor] = None) -> Tensor:
        r"""What :meth:`BiMLP.group_max
        <torch_geometric_binary.nn.BiMLP.group_max>` gives: the max of the
        MLP's float output over each group of consecutive rows (of
        :obj:`group_size` rows, or given by the CSR offsets :obj:`ptr`),
        minus :math:`\delta(n)` of each group's size with :obj:`ema`
        (which must be given)."""
        ema = self._ema(ema, 'group_max')
        rows = x.size(0) if x.dim() > 0 else 0
        if ptr is None:
            if group_size is None or group_size < 1 or rows % group_size:
                raise ValueError(f"PackedMLP.group_max: {rows} rows do not "
                                 f"form groups of {group_size}")
            ptr = torch.arange(0, rows + 1, group_size, device=x.device)
        sizes = ptr[1:] - ptr[:-1]
        index = torch.repeat_interleave(
            torch.arange(sizes.numel(), device=x.device), sizes)
        return self.pool(x, index, sizes.numel(), ema)

    @staticmethod
    def _ema(ema: Optional[bool], where: str) -> bool:
        if ema is None:
            raise ValueError(f"PackedMLP.{where}: pass 'ema' (a packed MLP "
                             f"does not keep its method's EMA switch)")
        return bool(ema)

    def pool(self, x: Tensor, index: Tensor, num_groups: int,
             ema: bool) -> Tensor:
        r"""The max of the MLP's float output over the rows of each group
        (:obj:`index` gives the group of each row of :obj:`x`), minus
        :math:`\delta(n)` of the group's size :math:`n` with :obj:`ema`:
        :obj:`[num_groups, out_channels]`; :math:`0` for empty groups.

        Where the last layer is binary, its output is a monotone function
        of its integer dot product in every channel, so the max is taken
        over the dot products and only the pooled ones are turned into
        floats (:func:`~torch_geometric_binary.deploy.pooled_floats`): the
        same values, without the float output of every row.

        With :attr:`fuse` on, the pooled value is pending where the
        layers fuse (see :meth:`forward`). With :attr:`pool_size`, each
        group must have that many rows, and the pooled values are the
        pooled signs as :math:`\pm` the largest float (see
        :class:`PackedGlobalPool`)."""
        if self.pool_size is not None:
            self._check_pool(ema)
        if self.fuse or isinstance(x, Deferred):
            self._check_input(x)
            out = pending(self, x)
            if out is not None:
                out = out.pooled(index, num_groups, ema)
                if out is not None:
                    return out
        return self.pool_layers(x, index, num_groups, ema)

    def pool_groups(self, x: Tensor, index: Tensor, counts: Tensor,
                    ema: bool) -> Tensor:
        r""":meth:`pool` over consecutive groups of rows, as a set
        abstraction's edges come: :obj:`counts` rows in each group,
        :obj:`index` the group of each row. Fused, it does not read the
        number of rows (:func:`~torch_geometric_binary.deploy.fusion.
        grouped`), so that a recorded forward serves neighbourhoods of
        other sizes; groups without rows go to :meth:`pool`."""
        if self.fuse and self.pool_size is None and \
                not isinstance(x, Deferred) and not bool((counts == 0).any()):
            self._check_input(x)
            out = grouped(self, x, index, counts, ema)
            if out is not None:
                return out
        return self.pool(x, index, counts.numel(), ema)

    def pool_dots(self, dots: Tensor, index: Tensor, num_groups: int,
                  ema: bool) -> Tensor:
        r""":meth:`pool` from the dot products of the binary last layer
        (with float output) on the rows."""
        last = self.lins[-1]
        if ema not in self._flips:  # The channels whose output falls.
            self._flips[ema] = PoolTable(last, ema).flip
        return pooled_floats(last, dots, index, num_groups, ema,
                             self._flips[ema])

    def pool_layers(self, x: Tensor, index: Tensor, num_groups: int,
                    ema: bool) -> Tensor:
        r""":meth:`pool` from the layers one by one."""
        if isinstance(x, Deferred):
            x = x.value()
        if self.pool_size is not None:
            self._check_pool(ema)
            pool = PackedGlobalPool(ema, self.pool_size, self.out_channels)
            return pool(self.forward_layers(x), index, num_groups)
        last = self.lins[-1]
        if isinstance(last, PackedBiLinear) and last.output == 'float' \
                and last.epilogue is not None:
            self._check_input(x)
            for lin_i, lin in enumerate(self.lins[:-1]):
                x = lin(x) if isinstance(lin, PackedBiLinear) \
                    else self.fp_layer(lin_i, x)
            if x.is_floating_point():
                x = binarize_floats(x, last.input_threshold)
            dots = xnor_gemm(x, last.weight, last.in_channels)
            return self.pool_dots(dots, index, num_groups, ema)
        out = self._float(self(x))
        reduce = EMAMaxAggregation() if ema else MaxAggregation()
        return reduce(out, index, dim_size=num_groups)

    def _check_pool(self, ema: bool):
        if ema != self.pool_ema:
            raise ValueError(f"PackedMLP: specialized to pool with "
                             f"ema={self.pool_ema} (got ema={ema})")

    def _check_input(self, x: Tensor):
        if x.is_floating_point() and x.size(-1) != self.in_channels:
            raise ValueError(f"PackedMLP expects inputs with "
                             f"{self.in_channels} channels (got shape "
                             f"{tuple(x.shape)})")

    def _float(self, out: Tensor) -> Tensor:
        if not out.is_floating_point():
            raise ValueError("PackedMLP: pooling needs the MLP's float "
                             "output, but its last layer gives packed bits")
        return out

    def extra_repr(self) -> str:
        out = f'channels={self.channel_list}, plain_last={self.plain_last}'
        if self.pool_size is not None:
            out += f', pool_size={self.pool_size}, pool_ema={self.pool_ema}'
        return out


def _unwrap_norm_or_none(norm):
    try:
        return _unwrap_norm(norm)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# Pooling.

@register_packed
class PackedGlobalPool(torch.nn.Module):
    r"""The global max pooling of a binary model: EMA (max minus
    :math:`\delta(n)`) or plain. :meth:`forward` pools floats as the
    trained model does; the packed models pool bits with
    :class:`~torch_geometric_binary.deploy.BinaryChain`.

    With :obj:`num_points` (a model packed for clouds of exactly that many
    points), the layer before it gives the bits
    :math:`[y_{ic} - \delta(n) \ge 0]` instead of floats, and
    :meth:`forward` takes their maximum over each cloud (a bitwise OR) and
    returns it as :math:`\pm` the largest float: through any
    non-decreasing activation, the next binary layer's sign of them (also
    against a learned threshold :math:`\theta`) is the pooled bit, since
    bit 1 (0) means that the activation reaches (stays below)
    :math:`\theta` somewhere in its range.
    """
    def __init__(self, ema: bool, num_points: Optional[int] = None,
                 channels: Optional[int] = None):
        super().__init__()
        if (num_points is None) != (channels is None):
            raise ValueError("PackedGlobalPool: 'num_points' needs "
                             "'channels' (and vice versa)")
        self.ema = ema
        self.num_points = num_points
        self.channels = channels

    @classmethod
    def from_function(cls, pool, where: str) -> 'PackedGlobalPool':
        if pool is global_ema_max_pool:
            return cls(True)
        # The package's max pooling, or PyG's (the same function).
        if pool in (global_max_pool, torch_geometric.nn.global_max_pool):
            return cls(False)
        name = getattr(pool, '__name__', type(pool).__name__)
        raise TypeError(f"pack: {where} pools with {name}; pack supports "
                        f"global_ema_max_pool and global_max_pool")

    def packed_config(self, add: AddTensor) -> PackedConfig:
        return ({'ema': self.ema, 'num_points': self.num_points,
                 'channels': self.channels}, {}, {})

    @classmethod
    def from_packed_config(cls, attrs: Dict[str, Any],
                           tensors: Dict[str, Optional[Tensor]],
                           children: Dict[str, Any]) -> 'PackedGlobalPool':
        # Files written before fixed cloud sizes have no 'num_points'.
        return cls(attrs['ema'], attrs.get('num_points'),
                   attrs.get('channels'))

    def forward(self, x: Tensor, batch: Optional[Tensor],
                size: Optional[int] = None) -> Tensor:
        if self.num_points is not None:
            return self._pool_bits(x, batch, size)
        if self.ema:
            return global_ema_max_pool(x, batch, size)
        return global_max_pool(x, batch, size)

    def _pool_bits(self, x: Tensor, batch: Optional[Tensor],
                   size: Optional[int]) -> Tensor:
        if x.is_floating_point():
            raise ValueError("PackedGlobalPool: a pooling specialized to "
                             "fixed-size clouds takes packed bits")
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long)
        size = int(batch.max()) + 1 if size is None else size
        counts = torch.bincount(batch, minlength=size)
        bad = (counts != self.num_points).nonzero().view(-1)
        if bad.numel():
            i = int(bad[0])
            raise wrong_size(self.num_points, int(counts[i]), f'cloud {i}')
        bits = (unpack_bits(x, self.channels) > 0).to(torch.uint8)
        out = torch.zeros(size, self.channels, dtype=torch.uint8)
        out.scatter_reduce_(0, batch[:, None].expand_as(bits), bits, 'amax')
        return (out.float() * 2 - 1) * FLT_MAX

    def extra_repr(self) -> str:
        if self.num_points is None:
            return f'ema={self.ema}'
        return (f'ema={self.ema}, num_points={self.num_points}, '
                f'channels={self.channels}')


def aggr_is_ema(aggr: torch.nn.Module, where: str) -> bool:
    r"""Whether a (local) max aggregation is EMA; a :class:`TypeError` for
    other aggregations."""
    if isinstance(aggr, EMAMaxAggregation):
        return True
    if type(aggr) is MaxAggregation:
        return False
    raise TypeError(f"pack: {where} aggregates with "
                    f"{type(aggr).__name__}; pack supports EMAMaxAggregation "
                    f"and MaxAggregation")
