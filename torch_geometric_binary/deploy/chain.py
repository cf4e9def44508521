r"""Consecutive packed binary layers, with an optional max pooling, run as
one operation.

Between two binary layers only the signs travel, so a run of binary layers
is a chain of :func:`~torch_geometric_binary.deploy.xnor_gemm_threshold`
calls on packed rows. :class:`BinaryChain` folds each channel's inversion
into its weight row and threshold, hands the layers once to a C++ plan
(:obj:`torch.classes.torch_geometric_binary.ChainPlan`, which owns the
kernels' weight layouts) and runs the whole chain in one call of the C++
operator :obj:`torch.ops.torch_geometric_binary.xnor_chain_run` (or its
pure-PyTorch equivalent), which keeps the activations of a block of rows in
cache from layer to layer.

A chain may pool the output of one layer over groups of rows (points of a
cloud, edges of a neighbourhood). The pooled feature of a binary model is
:math:`\mathrm{act}(\max_i y_i - \delta(n))` with :math:`y_i =
\mathrm{BN}(\alpha D_i)` a monotone function of the integer dot product
:math:`D_i` and :math:`\delta(n)` the EMA offset of the group's size
:math:`n` (:math:`0` without EMA). When the next layer is binary it only
needs the sign, and for a non-decreasing activation

.. math::
    \big[\mathrm{act}(\max_i y_i - \delta(n)) \ge 0\big]
    = \bigvee_i \big[\mathrm{act}(y_i - \delta(n)) \ge 0\big]
    = \bigvee_i \big[D_i \ge t(n)\big],

a bitwise OR over the group of per-point threshold bits, with a threshold
that depends on the group size. The thresholds are computed from the
layer's own float operations on every reachable :math:`D` (as in
:func:`~torch_geometric_binary.deploy.fold_threshold`), once per size, so
the pooled bits equal the trained model's exactly.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from torch_geometric_binary.deploy import kernels
from torch_geometric_binary.deploy.epilogue import AffineEpilogue
from torch_geometric_binary.deploy.fold import (INT32_MIN, dot_thresholds,
                                                on_dots, sign_bits)
from torch_geometric_binary.deploy.kernels import (_pack_bool, num_words,
                                                   pack_bits, xnor_gemm,
                                                   xnor_gemm_threshold)
from torch_geometric_binary.deploy.linear import PackedBiLinear
from torch_geometric_binary.deploy.replay import recorded
from torch_geometric_binary.nn.functional import _ema_delta64

OUTS = ('bits', 'float', 'dots')


def valid_mask(K: int) -> Tensor:
    r"""The :obj:`int64` words with the :math:`K` valid bits of a packed row
    set."""
    words = torch.full((num_words(K), ), -1, dtype=torch.int64)
    if K % 64:
        words[-1] = (1 << (K % 64)) - 1
    return words


def group_delta(sizes: Tensor) -> Tensor:
    r"""The EMA offsets :math:`\delta(n)` in float32, as
    :func:`~torch_geometric_binary.nn.aggr.ema_max` uses them."""
    return _ema_delta64(sizes.clamp(min=1)).to(torch.float32)


def flip_folded(threshold: Tensor, flip: Tensor) -> Tensor:
    r"""Moves inversions between thresholds and weight rows:
    :math:`[D \ge t] \oplus 1 = [-D \ge 1 - t]`, so a layer's
    :math:`(t, f)` becomes thresholds on the negated rows' dot products,
    and back (int64)."""
    t = threshold.to(torch.int64)
    return torch.where(flip, 1 - t, t)


def wrong_size(size: int, n: int, which: str = 'one') -> ValueError:
    r"""The error for a group of :obj:`n` elements given to a layer
    specialized to groups of :obj:`size`."""
    return ValueError(f"This packed model was specialized for clouds "
                      f"(groups) of exactly {size} points (pack(..., "
                      f"num_points={size})); got {which} of {n}")


class PoolTable:
    r"""The per-group-size thresholds of a pooled binary layer.

    Args:
        layer (PackedBiLinear): The layer whose float output
            :math:`y = \mathrm{epilogue}(D)` (before the pooling) is pooled;
            it needs its epilogue. With :obj:`size`: a layer from
            :meth:`fixed_layer` (bits, no epilogue).
        ema (bool): Whether the pooling subtracts :math:`\delta(n)`.
        act (torch.nn.Module, optional): The non-decreasing activation
            after the pooling.
        size (int, optional): The one group size that :obj:`layer`'s
            thresholds hold for; other sizes raise a :class:`ValueError`.
        theta (torch.Tensor, optional): The learned input threshold per
            channel of the binary layer that takes the pooled signs:
            the bits are :math:`[\mathrm{act}(\max_i y_i - \delta(n)) -
            \theta \ge 0]`.
    """
    def __init__(self, layer: PackedBiLinear, ema: bool,
                 act: Optional[torch.nn.Module] = None,
                 size: Optional[int] = None,
                 theta: Optional[Tensor] = None):
        K, N = layer.in_channels, layer.out_channels
        self.K, self.N, self.ema, self.act = K, N, ema, act
        self.theta = theta
        self.layer, self.size = layer, size
        self._rows: Dict[int, Tensor] = {}
        self._sets: Dict[Tuple[int, ...], Tensor] = {}
        if size is not None:  # The layer's own bits: [D >= t] ^ f.
            self.flip = layer.flip.clone()
            self._rows[size] = flip_folded(layer.threshold, self.flip)
            return
        if layer.epilogue is None:
            raise ValueError("A pooled binary layer needs its epilogue")
        y = on_dots(layer.epilogue, K, N)
        rising = (y[1:] >= y[:-1]).all(dim=0)
        falling = (y[1:] <= y[:-1]).all(dim=0)
        if not bool((rising | falling).all()):
            bad = (~(rising | falling)).nonzero().flatten().tolist()
            raise ValueError(f"The output of channels {bad[:8]} is not "
                             f"monotone in the dot product (NaN in the "
                             f"normalization?), so it cannot be max-pooled "
                             f"on dot products")
        #: Channels whose output falls with the dot product: their weights
        #: are negated so that every pooled bit rises with its dot product.
        self.flip = falling & ~rising
        # The table in the negated orientation: D' = -D reverses the grid.
        self.table = torch.where(self.flip, y.flip(0), y)

    def fixed_layer(self, size: int) -> PackedBiLinear:
        r"""The layer with bit output whose thresholds and flips give the
        pooled bits of groups of :obj:`size` elements, without the
        epilogue: :math:`[\max_{i} y(D_i) - \delta(n) \ge 0]` is
        :math:`\max_i\,[D_i \ge t] \oplus f` (its table:
        :obj:`PoolTable(layer, ema, act, size)`)."""
        if size < 1:
            raise ValueError(f"The group size must be positive (got {size})")
        K = self.K
        # Clamped to [-K - 1, K + 1] (the same bits), so that 1 - t fits
        # in int32.
        threshold = flip_folded(self.row(size).clamp(-K - 1, K + 1),
                                self.flip)
        return PackedBiLinear(self.layer.weight, K, threshold, self.flip,
                              None, 'bits', self.layer.input_threshold)

    def row(self, n: int) -> Tensor:
        r"""The thresholds :obj:`[N]` (int64) for groups of :math:`n`
        elements, in the flip-folded orientation."""
        if self.size is not None and n != self.size:
            raise wrong_size(self.size, n)
        t = self._rows.get(n)
        if t is None:
            v = self.table
            if self.ema:
                v = v - group_delta(torch.tensor([max(n, 1)]))
            if self.act is not None:
                v = self.act(v)
            t, flip = dot_thresholds(sign_bits(v, self.theta), self.K,
                                     'pooled sign')
            if bool(flip.any()):  # Oriented to rise: falling is an error.
                bad = flip.nonzero().flatten().tolist()
                raise ValueError(f"The pooled sign of channels {bad[:8]} "
                                 f"falls with the dot product (the "
                                 f"activation after the pooling is not "
                                 f"non-decreasing?)")
            t = t.to(torch.int64)
            if len(self._rows) < 4096:
                self._rows[n] = t
        return t

    def rows(self, sizes: Sequence[int]) -> Tensor:
        key = tuple(sizes)
        table = self._sets.get(key)
        if table is None:
            table = torch.stack([self.row(n) for n in sizes])
            if len(self._sets) < 256:
                self._sets[key] = table
        return table


_ONE_SET = torch.zeros(1, dtype=torch.int64)


def group_sizes(counts: Tensor) -> Tuple[List[int], Tensor]:
    r"""Returns :obj:`(sizes, group_set)` of groups with :obj:`counts`
    elements each: the distinct sizes and the index of each group's size
    in them."""
    if counts.numel() == 1:
        return [int(counts)], _ONE_SET
    sizes, inverse = torch.unique(counts, return_inverse=True)
    return sizes.tolist(), inverse


FLT_MAX = float(torch.finfo(torch.float32).max)


def _float_key(x: Tensor) -> Tensor:
    r"""Maps float32 values to int64 keys in the same order (:math:`-0 <
    +0`)."""
    b = x.view(torch.int32).to(torch.int64)
    mag = b & 0x7FFFFFFF
    return torch.where(b < 0, 2**31 - 1 - mag, 2**31 + mag)


def _key_float(k: Tensor) -> Tensor:
    neg = k < 2**31
    mag = torch.where(neg, 2**31 - 1 - k, k - 2**31)
    b = torch.where(neg, mag | -2**31, mag)
    return b.to(torch.int32).view(torch.float32)


@torch.no_grad()
def sign_thresholds(f, channels: int) -> Tensor:
    r"""Per-channel float thresholds for the sign of a monotone per-channel
    function :obj:`f` of float32 inputs (*e.g.* a batch normalization and
    activation): returns :obj:`[2, C]` float32 :obj:`(s, u)` such that
    :math:`[f(z)_c \ge 0] = [z \cdot s_c \ge u_c]` for every finite
    :math:`z` (and NaN gives :math:`0` on both sides). Found by a binary
    search over all float32 values, evaluating :obj:`f` itself, so it is
    exact for the operations :obj:`f` performs."""
    C = channels

    def bit(keys: Tensor) -> Tensor:
        return f(_key_float(keys).view(1, C)).view(C) >= 0

    lo = _float_key(torch.full((C, ), -FLT_MAX))
    hi = _float_key(torch.full((C, ), FLT_MAX))
    b_lo, b_hi = bit(lo), bit(hi)
    rising = ~b_lo & b_hi
    falling = b_lo & ~b_hi
    # Rising: the smallest key with bit 1; falling: the largest.
    left, right = lo.clone(), hi.clone()
    while bool((right - left > 1).any()):
        mid = (left + right) // 2
        b = bit(mid)
        one = torch.where(rising, b, ~b)  # On the 1-side of a rising bit.
        right = torch.where(one, mid, right)
        left = torch.where(one, left, mid)
    edge = torch.where(rising, right, left)  # Rising: first 1; falling:
    t = _key_float(edge)                     # last 1.
    sgn = torch.where(falling, -1.0, 1.0)
    u = sgn * t
    u = torch.where(~rising & ~falling & b_lo, -float('inf'), u)  # Always.
    u = torch.where(~rising & ~falling & ~b_lo, float('nan'), u)  # Never.
    out = torch.stack([sgn, u]).float().contiguous()
    # The search assumes monotony: check it on the edge and around it.
    near = [_key_float(torch.maximum(torch.minimum(edge + d, hi), lo))
            for d in (-1, 0, 1)]
    probe = torch.stack(near + [torch.zeros(C), torch.full((C, ), -1.0),
                                torch.full((C, ), 1.0)])
    expected = f(probe) >= 0
    got = probe * out[0] >= out[1]
    if not torch.equal(expected, got):
        bad = (expected != got).any(0).nonzero().flatten().tolist()
        raise ValueError(f"The sign of channels {bad[:8]} is not monotone "
                         f"in the input")
    return out


class NonFiniteInput(ValueError):
    r"""A float input with NaN or infinite values where the chain compares
    it with thresholds (exact for finite values only)."""


class BinaryChain:
    r"""Runs consecutive packed binary layers as one operation.

    Layer :math:`l` feeds layer :math:`l + 1` through its output signs; the
    last layer gives packed bits (:obj:`out="bits"`), its float output
    :math:`\mathrm{epilogue}(D)` (:obj:`"float"`) or its integer dot
    products (:obj:`"dots"`). Optionally the output bits of layer
    :obj:`pool` are max-pooled over groups of rows (see the module
    documentation); the layers after it run on one row per group.

    A plain object, not a module: it caches derived tensors of the layers
    (build it again after changing them).

    Args:
        layers (List[PackedBiLinear]): The layers, each taking the previous
            one's output channels.
        out (str, optional): :obj:`"bits"`, :obj:`"float"` or :obj:`"dots"`.
            (default: :obj:`"bits"`)
        pool (int, optional): The layer whose output is pooled.
        pool_ema (bool, optional): EMA offsets in the pooling.
        pool_act (torch.nn.Module, optional): The activation after the
            pooling (non-decreasing).
        pool_size (int, optional): The pooled layer was specialized to
            groups of this size (:meth:`PoolTable.fixed_layer`); other
            sizes raise a :class:`ValueError`.
        pool_theta (torch.Tensor, optional): When the pooled layer is the
            last one, the learned input threshold of the binary layer that
            takes its bits (otherwise the next layer's own is used).
    """
    def __init__(self, layers: Sequence[PackedBiLinear], out: str = 'bits',
                 pool: Optional[int] = None, pool_ema: bool = False,
                 pool_act: Optional[torch.nn.Module] = None,
                 pool_size: Optional[int] = None,
                 pool_theta: Optional[Tensor] = None):
        layers = list(layers)
        if not layers:
            raise ValueError("BinaryChain needs at least one layer")
        if out not in OUTS:
            raise ValueError(f"'out' must be one of {OUTS} (got '{out}')")
        for i, layer in enumerate(layers):
            if not isinstance(layer, PackedBiLinear):
                raise TypeError(f"BinaryChain: layer {i} is a "
                                f"{type(layer).__name__}, not a "
                                f"PackedBiLinear")
            if i and layer.in_channels != layers[i - 1].out_channels:
                raise ValueError(f"BinaryChain: layer {i} takes "
                                 f"{layer.in_channels} channels, layer "
                                 f"{i - 1} gives {layers[i - 1].out_channels}")
        L = len(layers)
        if pool is not None and not 0 <= pool < L:
            raise ValueError(f"BinaryChain: no layer {pool} to pool")
        if pool == L - 1 and out != 'bits':
            raise ValueError("BinaryChain: a pooled last layer gives bits")
        self.layers = layers
        self.out = out
        self.pool = pool
        if pool is not None and pool < L - 1:
            pool_theta = layers[pool + 1].input_threshold
        self.pool_table = None if pool is None else PoolTable(
            layers[pool], pool_ema, pool_act, pool_size, pool_theta)
        last = layers[-1]
        if out == 'float' and last.epilogue is None:
            raise ValueError("BinaryChain: out='float' needs the last "
                             "layer's epilogue")

        self.weights: List[Tensor] = []     # flip-folded, [N, W]
        self.thresholds: List[Tensor] = []  # flip-folded, int64 [N]
        for i, layer in enumerate(layers):
            w = layer.weight
            if i == L - 1 and out != 'bits':  # Dots in their own sign.
                flip = torch.zeros(layer.out_channels, dtype=torch.bool)
                t = torch.empty(0, dtype=torch.int64)
            elif i == pool:
                flip = self.pool_table.flip
                t = torch.empty(0, dtype=torch.int64)
            else:
                flip = layer.flip  # Negate the weight row.
                t = flip_folded(layer.threshold, flip)
            mask = valid_mask(layer.in_channels)
            w = torch.where(flip[:, None], w ^ mask, w)
            self.weights.append(w.contiguous())
            self.thresholds.append(t)
        self.zero_flips = [torch.zeros(layer.out_channels, dtype=torch.bool)
                           for layer in layers]
        # (inputs, ChainPlan, its bound run method): a bound method call
        # costs a few microseconds less than the operator's.
        self._plans: List[Tuple[tuple, Any, Any]] = []
        self._counts: Dict[int, Tensor] = {}
        self._epilogue_args = None
        if out == 'float' and isinstance(last.epilogue, AffineEpilogue):
            self._epilogue_args = last.epilogue.kernel_args()

    def __getstate__(self) -> Dict[str, Any]:
        # The C++ plans are derived from the layers (and cannot be
        # pickled): a copy builds its own on first use.
        state = self.__dict__.copy()
        state['_plans'] = []
        return state

    @property
    def in_channels(self) -> int:
        return self.layers[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.layers[-1].out_channels

    @property
    def out_mode(self) -> int:
        r"""The C++ operation's output: :obj:`0` bits, :obj:`1` int32 dots
        (also for :obj:`out="float"` with an epilogue that only PyTorch
        runs, applied after the operation), :obj:`2` floats."""
        if self.out == 'bits':
            return 0
        return 2 if self._epilogue_args is not None else 1

    def one_op(self, final: Optional[tuple] = None) -> bool:
        r"""Whether the C++ operation alone gives the chain's output (and
        that of the :obj:`final` layer, if any)."""
        if self.out == 'float':
            return self.out_mode == 2
        return final is None

    def plan(self, in_threshold: Optional[Tensor] = None,
             final: Optional[tuple] = None,
             first: Optional[tuple] = None):
        r"""The C++ plan of the chain
        (:obj:`torch.classes.torch_geometric_binary.ChainPlan`) for these
        inputs (see :meth:`__call__` and :meth:`one_group_args`): built
        once from the layers' packed weights and thresholds (the plan lays
        the weights out for its kernels), then kept for the same tensors."""
        return self._plan_entry(in_threshold, final, first)[1]

    def _plan_entry(self, in_threshold: Optional[Tensor],
                    final: Optional[tuple], first: Optional[tuple]) -> tuple:
        key = (in_threshold, ) + tuple(final or (None, None)) + \
            tuple(first or (None, None))
        for entry in self._plans:
            if all(a is b for a, b in zip(entry[0], key)):
                return entry
        kernels._require_cpp()
        if first is not None and in_threshold is None:
            raise ValueError("BinaryChain: a first linear layer needs "
                             "'in_threshold'")
        plan = torch.classes.torch_geometric_binary.ChainPlan(
            self.weights, self.in_channels, self.thresholds,
            -1 if self.pool is None else self.pool, self.out_mode)
        if self.out_mode == 2:
            plan.set_epilogue(*self._epilogue_args)
        if in_threshold is not None:
            plan.set_input(in_threshold, *(first or (None, None)))
        if final is not None and self.out_mode == 2:
            plan.set_final(*final)
        if len(self._plans) >= 8:
            self._plans.pop(0)
        self._plans.append((key, plan, plan.run))
        return self._plans[-1]

    def __call__(self, x: Tensor, counts: Union[Tensor, int, None] = None,
                 backend: Optional[str] = None,
                 in_threshold: Optional[Tensor] = None,
                 final: Optional[Tuple[Tensor, Optional[Tensor]]] = None
                 ) -> Tensor:
        r"""Runs the chain.

        Args:
            x (torch.Tensor): Packed rows :obj:`[M, W]` (:obj:`int64`) or
                float rows :obj:`[M, K]`, binarized by their sign.
            counts (torch.Tensor or int, optional): With pooling, the
                number of rows of each group (:obj:`int64 [G]`, or an
                :obj:`int` for one group; default: one group of all rows);
                the rows of a group are consecutive.
            backend (str, optional): :obj:`"cpp"` or :obj:`"torch"`.
            in_threshold (torch.Tensor, optional): For float inputs,
                :obj:`[2, K]` float32 :math:`(s, u)`: the input bits are
                :math:`[x_k s_k \ge u_k]` instead of the signs (see
                :func:`sign_thresholds`); raises :class:`NonFiniteInput`
                for inputs with NaN or infinite values. (The C++ plan keeps
                a copy per tensor: pass a new tensor for new values.)
            final (tuple, optional): With :obj:`out="float"`, a
                full-precision linear layer :obj:`(weight, bias)` (float32)
                applied to the output (the classifier).

        Returns:
            :obj:`[R, ceil(N / 64)]` bits, :obj:`[R, N]` floats or
            :obj:`[R, N]` int32 dots, with :math:`R = M` rows, or :math:`G`
            with pooling.
        """
        K = self.in_channels
        if x.is_floating_point():
            if x.dim() != 2 or x.size(1) != K:
                raise ValueError(f"BinaryChain expects [M, {K}] inputs (got "
                                 f"shape {tuple(x.shape)})")
        elif x.dtype != torch.int64 or x.dim() != 2 \
                or x.size(1) != num_words(K):
            raise ValueError(f"BinaryChain expects [M, {num_words(K)}] "
                             f"packed int64 inputs (got {x.dtype} of shape "
                             f"{tuple(x.shape)})")
        gset = table = None
        if self.pool is not None:
            if counts is None or isinstance(counts, int):  # One group.
                n = x.size(0) if counts is None else counts
                counts, sizes, gset = self._one_count(n), [n], _ONE_SET
                total = n
            else:
                counts = counts.to(torch.int64)
                sizes, gset = group_sizes(counts)
                total = int(counts.sum())
            if total != x.size(0):
                raise ValueError(f"BinaryChain: the groups hold {total} "
                                 f"rows but the input has {x.size(0)}")
            table = self.pool_table.rows(sizes)
        if final is not None and self.out != 'float':
            raise ValueError("BinaryChain: 'final' needs out='float'")
        if kernels._use_cpp(backend, x):
            return self._run_cpp(x, counts, gset, table, in_threshold, final)
        if in_threshold is not None:
            if not bool(torch.isfinite(x).all()):
                raise NonFiniteInput("BinaryChain: non-finite value in the "
                                     "float input")
            x = _pack_bool(x * in_threshold[0] >= in_threshold[1])
        out = self._run_torch(x, counts, gset, table)
        if final is not None:
            out = torch.nn.functional.linear(out, final[0], final[1])
        return out

    def _one_count(self, n: int) -> Tensor:
        # The counts of one group of n rows, kept for a few sizes.
        counts = self._counts.get(n)
        if counts is None:
            counts = torch.tensor([n])
            if len(self._counts) < 64:
                self._counts[n] = counts
        return counts

    def one_group_args(self, n: int, in_threshold: Optional[Tensor] = None,
                       final: Optional[tuple] = None,
                       first: Optional[tuple] = None) -> Optional[tuple]:
        r"""For a pooling chain, the arguments of :meth:`run_one_group` for
        one group of :obj:`n` rows (float32 input with
        :obj:`in_threshold`, or packed rows): the plan and the group's
        counts and thresholds; :obj:`None` where the operation alone does
        not give the output (see :meth:`one_op`) or the chain does not pool.
        Raises like :meth:`__call__` for a group size the pooling does not
        take.

        With :obj:`first` (float32 :obj:`(weight, bias)`, and
        :obj:`in_threshold`), the input is that of a full-precision linear
        layer before the chain, whose output :obj:`in_threshold` binarizes:
        the operation gives the bits of :func:`torch.nn.functional.linear`'s
        output without computing it where a rounding bound decides them,
        and calls it otherwise."""
        if self.pool is None or not self.one_op(final):
            return None
        table = self.pool_table.rows([n])
        run = self._plan_entry(in_threshold, final, first)[2]
        return (run, self._one_count(n), table, _ONE_SET)

    @staticmethod
    def run_one_group(x: Tensor, args: tuple) -> Tensor:
        r"""Runs the chain on one group with :meth:`one_group_args` (C++
        kernels; the operation checks the input: a bad one raises a
        :class:`RuntimeError`, a non-finite one :class:`NonFiniteInput`)."""
        return BinaryChain._run_plan(x, *args)

    @staticmethod
    @recorded
    def _run_plan(x: Tensor, run, counts: Optional[Tensor],
                  table: Optional[Tensor], gset: Optional[Tensor]) -> Tensor:
        # run: ChainPlan.run, as torch.ops.torch_geometric_binary.
        # xnor_chain_run(plan, ...) runs it.
        try:
            return run(x, counts, table, gset)
        except ValueError as e:  # The operation's one ValueError.
            raise NonFiniteInput(str(e)) from None

    def _run_cpp(self, x: Tensor, counts: Optional[Tensor],
                 gset: Optional[Tensor], table: Optional[Tensor],
                 in_threshold: Optional[Tensor] = None,
                 final: Optional[tuple] = None) -> Tensor:
        if x.is_floating_point() and x.dtype != torch.float32:
            x = x.float()
        run = self._plan_entry(in_threshold, final, None)[2]
        out = self._run_plan(x, run, counts, table, gset)
        if self.out == 'float' and self.out_mode == 1:
            out = self.layers[-1].epilogue(out)
            if final is not None:
                out = torch.nn.functional.linear(out, final[0], final[1])
        return out

    def _run_torch(self, x: Tensor, counts: Optional[Tensor],
                   gset: Optional[Tensor],
                   table: Optional[Tensor]) -> Tensor:
        a = x if not x.is_floating_point() else pack_bits(x,
                                                          backend='torch')
        L = len(self.layers)
        for i, layer in enumerate(self.layers):
            K, N = layer.in_channels, layer.out_channels
            w = self.weights[i]
            if i == self.pool:
                group = torch.repeat_interleave(
                    torch.arange(counts.numel()), counts)
                G = counts.numel()
                # An empty group pools to 0: sign +1, all bits set.
                out = torch.ones(G, N, dtype=torch.uint8)
                out[counts > 0] = 0
                step = max(1, (1 << 22) // N)  # Bounded temporaries.
                for r in range(0, a.size(0), step):
                    g = group[r:r + step]
                    dot = xnor_gemm(a[r:r + step], w, K, backend='torch')
                    bit = (dot >= table[gset[g]]).to(torch.uint8)
                    out.scatter_reduce_(0, g[:, None].expand(-1, N), bit,
                                        'amax')
                a = kernels._pack_bool(out.bool())
            elif i == L - 1 and self.out != 'bits':
                dot = xnor_gemm(a, w, K, backend='torch')
                return dot if self.out == 'dots' else layer.epilogue(dot)
            else:
                a = xnor_gemm_threshold(a, w, K, self.thresholds[i],
                                        self.zero_flips[i], backend='torch')
        return a


def _consecutive(index: Tensor, num_groups: int, size: int) -> bool:
    r"""Whether row :math:`r` is in group :math:`\lfloor r / size
    \rfloor` for every row (all groups of :obj:`size` consecutive rows)."""
    view = index.view(num_groups, size)
    return bool((view == torch.arange(num_groups)[:, None]).all())


def pooled_floats(layer: PackedBiLinear, dots: Tensor, index: Tensor,
                  num_groups: int, ema: bool,
                  flip: Optional[Tensor] = None) -> Tensor:
    r"""The exact float max pooling of a binary layer's output from its dot
    products: :math:`\max_{i \in g} y(D_i) - \delta(|g|)` equals
    :math:`y(\max_{i \in g} D_i) - \delta(|g|)` (:math:`\min` for channels
    whose output falls with :math:`D`), as :math:`y` is monotone. Empty
    groups give :math:`0`.

    Args:
        layer (PackedBiLinear): The layer (with its epilogue).
        dots (torch.Tensor): int32 dot products :obj:`[M, N]`.
        index (torch.Tensor): The group of each row, :obj:`[M]`.
        num_groups (int): The number of groups.
        ema (bool): Subtract :math:`\delta(n)`.
        flip (torch.Tensor, optional): The falling channels (from
            :class:`PoolTable`).
    """
    N = layer.out_channels
    if flip is None:
        flip = PoolTable(layer, ema).flip
    M = dots.size(0)
    if num_groups > 0 and M % num_groups == 0 and M == index.numel() and \
            _consecutive(index, num_groups, M // num_groups):
        # Groups of equal size in consecutive rows (k-NN neighbourhoods): a
        # max (a min on the falling channels) over each block of rows,
        # without a scatter; the same integers, hence the same floats.
        d = dots.reshape(num_groups, -1, N)
        y = layer.epilogue(torch.where(flip, d.amin(1), d.amax(1)))
        if ema:
            y = y - group_delta(torch.tensor([M // num_groups]))
        return y
    sgn = torch.where(flip, -1, 1).to(torch.int32)
    signed = dots * sgn
    best = torch.full((num_groups, N), INT32_MIN, dtype=torch.int32)
    best.scatter_reduce_(0, index[:, None].expand(-1, N), signed, 'amax')
    count = torch.bincount(index, minlength=num_groups)
    empty = count == 0
    best[empty] = 0
    y = layer.epilogue(best * sgn)
    if ema:
        y = y - group_delta(count)[:, None]
    return torch.where(empty[:, None], torch.zeros_like(y), y)
