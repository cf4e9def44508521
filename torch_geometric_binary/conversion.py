r"""Drop-in binarization of an existing PyG model: :func:`binarize`."""
import copy
import inspect
import re
from dataclasses import dataclass, field
from typing import List, Tuple, Union

import torch
from torch_geometric.nn import MLP, EdgeConv, PointNetConv
from torch_geometric.nn.aggr import MaxAggregation
from torch_geometric.nn.conv import DynamicEdgeConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from torch_geometric_binary.nn import (BiDynamicEdgeConv, BiEdgeConv,
                                       BiLinear, BiMLP, BiPointConv,
                                       EMAMaxAggregation)
from torch_geometric_binary.nn.methods import BinaryMethod, resolve_method

LINEARS = (torch.nn.Linear, PyGLinear)
# Functional max pooling that module walking cannot see.
_MAX_CALL = re.compile(r'(?<!\w)(global_max_pool|max_pool_x|max_pool|'
                       r'scatter_max)\(')


@dataclass
class BinarizeReport:
    r"""What :func:`binarize` did: :obj:`swapped` (module name, old type ->
    new type), :obj:`kept` (module name and why it stays full precision),
    :obj:`notes` (added layers, dropped options) and :obj:`warnings` (what
    the user must change: functional max pooling in a :obj:`forward`)."""
    swapped: List[Tuple[str, str]] = field(default_factory=list)
    kept: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f'binarize: {len(self.swapped)} module(s) swapped, '
                 f'{len(self.kept)} kept full precision']
        lines += [f'  swapped {name}: {what}' for name, what in self.swapped]
        lines += [f'  kept    {name}: {why}' for name, why in self.kept]
        lines += [f'  note: {note}' for note in self.notes]
        lines += [f'  WARNING: {warning}' for warning in self.warnings]
        return '\n'.join(lines)


def binarize(model: torch.nn.Module,
             method: Union[str, BinaryMethod] = 'bipointnet',
             keep_first: bool = True, keep_last: bool = True,
             inplace: bool = False
             ) -> Tuple[torch.nn.Module, BinarizeReport]:
    r"""Swaps the layers of a PyG point-cloud model for their binary
    counterparts and returns the binary model with a
    :class:`BinarizeReport`:

    * PyG :class:`~torch_geometric.nn.models.MLP` -> :class:`BiMLP`
      (binary layers, Hardtanh between them, or the method's own
      activation such as ReActNet's RPReLU; inside a point or edge
      convolution with :obj:`norm_last`, a BatchNorm before the EMA max);
    * :class:`torch.nn.Linear` and PyG :class:`Linear` -> :class:`BiLinear`;
    * :class:`~torch_geometric.nn.conv.PointNetConv`,
      :class:`~torch_geometric.nn.conv.EdgeConv` and
      :class:`~torch_geometric.nn.conv.DynamicEdgeConv` ->
      :class:`BiPointConv`, :class:`BiEdgeConv`, :class:`BiDynamicEdgeConv`;
    * :class:`~torch_geometric.nn.aggr.MaxAggregation` ->
      :class:`EMAMaxAggregation`.

    Weights, biases and normalization statistics are copied. The first and
    the last linear layer of the model (in registration order: the layer
    reading coordinates, the classifier) stay full precision with
    :obj:`keep_first` and :obj:`keep_last`. A max pooling called as a
    function in a :obj:`forward` (:obj:`global_max_pool`, ...) cannot be
    swapped from outside: the report names its line, to be changed to
    :func:`~torch_geometric_binary.nn.global_ema_max_pool`. LSR scales are
    initialized on the first training batch (or by
    :func:`~torch_geometric_binary.nn.init_lsr_scales`). Binarizing a
    binarized model changes nothing.

    Args:
        model (torch.nn.Module): The full-precision model.
        method (str or BinaryMethod): Any registered binary method.
        keep_first (bool): Keep the first linear layer full precision.
        keep_last (bool): Keep the last linear layer full precision.
        inplace (bool): Change :obj:`model` itself instead of a copy.
    """
    method = resolve_method(method)
    if not method.binary:
        raise ValueError(f"binarize needs a binary method (got "
                         f"'{method.name}')")
    if not inplace:
        model = copy.deepcopy(model)
    report = BinarizeReport()
    linears = [name for name, m in model.named_modules()
               if isinstance(m, LINEARS) and not isinstance(m, BiLinear)]
    keep = {}
    if linears and keep_first:
        keep[linears[0]] = 'the first linear layer (it reads coordinates)'
    if linears and keep_last:
        keep[linears[-1]] = 'the last linear layer (it gives the outputs)'
    if isinstance(model, (MLP,) + LINEARS + (PointNetConv, EdgeConv)):
        raise ValueError("binarize takes a model that contains the layers "
                         "to swap; wrap a single layer in a module")
    _swap_children(model, '', method, keep, report)
    _find_functional_max(model, report)
    return model, report


def _swap_children(module: torch.nn.Module, prefix: str,
                   method: BinaryMethod, keep, report: BinarizeReport,
                   before_max: bool = False):
    for name, child in list(module.named_children()):
        full = f'{prefix}{name}'
        new = _convert(child, full, method, keep, report, before_max)
        if new is not child:
            setattr(module, name, new)
        elif not isinstance(child, (BiMLP, BiLinear, BiPointConv,
                                    BiEdgeConv)):
            _swap_children(child, f'{full}.', method, keep, report)


def _convert(child, name, method, keep, report, before_max):
    if isinstance(child, (BiMLP, BiLinear, BiPointConv, BiEdgeConv,
                          EMAMaxAggregation)):
        return child  # Already binary.
    if isinstance(child, MLP):
        return _convert_mlp(child, name, method, keep, report, before_max)
    if isinstance(child, LINEARS):
        if name in keep:
            report.kept.append((name, keep[name]))
            return child
        lin = BiLinear(child.in_channels if isinstance(child, PyGLinear)
                       else child.in_features,
                       child.out_channels if isinstance(child, PyGLinear)
                       else child.out_features,
                       bias=child.bias is not None, method=method)
        _copy_linear(child, lin)
        report.swapped.append((name, f'{type(child).__name__} -> BiLinear'))
        return lin
    if isinstance(child, PointNetConv):
        local_nn = _inner(child.local_nn, f'{name}.local_nn', method, keep,
                          report, before_max=True)
        global_nn = _inner(child.global_nn, f'{name}.global_nn', method,
                           keep, report)
        conv = BiPointConv(local_nn, global_nn,
                           add_self_loops=child.add_self_loops,
                           aggr=_aggr(child.aggr_module, f'{name}.aggr',
                                      report))
        report.swapped.append((name, 'PointNetConv -> BiPointConv'))
        return conv
    if isinstance(child, DynamicEdgeConv):
        nn = _inner(child.nn, f'{name}.nn', method, keep, report,
                    before_max=True)
        conv = BiDynamicEdgeConv(nn, child.k,
                                 _aggr(child.aggr_module, f'{name}.aggr',
                                       report),
                                 num_workers=child.num_workers)
        report.swapped.append((name,
                               'DynamicEdgeConv -> BiDynamicEdgeConv'))
        return conv
    if isinstance(child, EdgeConv):
        nn = _inner(child.nn, f'{name}.nn', method, keep, report,
                    before_max=True)
        conv = BiEdgeConv(nn, _aggr(child.aggr_module, f'{name}.aggr',
                                    report))
        report.swapped.append((name, 'EdgeConv -> BiEdgeConv'))
        return conv
    if type(child) is MaxAggregation:
        report.swapped.append((name, 'MaxAggregation -> EMAMaxAggregation'))
        return EMAMaxAggregation()
    return child


def _inner(child, name, method, keep, report, before_max=False):
    if child is None:
        return None
    new = _convert(child, name, method, keep, report, before_max)
    if new is child:
        _swap_children(child, f'{name}.', method, keep, report, before_max)
    return new


def _aggr(aggr, name, report):
    if type(aggr) is MaxAggregation:
        report.swapped.append((name, 'MaxAggregation -> EMAMaxAggregation'))
        return EMAMaxAggregation()
    if isinstance(aggr, EMAMaxAggregation):
        return aggr
    report.kept.append((name, f'{type(aggr).__name__} is not a max'))
    return aggr


def _convert_mlp(mlp: MLP, name, method, keep, report, before_max):
    channels = list(mlp.channel_list)
    n = len(mlp.lins)
    first_fp = f'{name}.lins.0' in keep
    last_fp = f'{name}.lins.{n - 1}' in keep
    has_norm = any(not isinstance(norm, torch.nn.Identity)
                   for norm in mlp.norms)
    norm_last = before_max and mlp.plain_last and has_norm
    new = BiMLP(channels, method, first_fp=first_fp, last_fp=last_fp,
                norm_last=norm_last, dropout=list(mlp.dropout),
                plain_last=mlp.plain_last,
                norm='batch_norm' if has_norm else None,
                bias=[lin.bias is not None for lin in mlp.lins])
    for src, dst in zip(mlp.lins, new.lins):
        _copy_linear(src, dst)
    for src, dst in zip(mlp.norms, new.norms):
        if not isinstance(src, torch.nn.Identity):
            missing = dst.load_state_dict(src.state_dict(), strict=False)
            if missing.missing_keys or missing.unexpected_keys:
                report.notes.append(f"{name}: normalization "
                                    f"{type(src).__name__} not copied")
    for i, kept in ((0, first_fp), (n - 1, last_fp)):
        if kept:
            report.kept.append((f'{name}.lins.{i}', keep[f'{name}.lins.{i}']))
    if norm_last:
        report.notes.append(f"{name}: added a BatchNorm after the last layer "
                            f"(features before an EMA max must be "
                            f"normalized)")
    new_act = new.act if new.acts is None else new.acts[0]
    if mlp.act is not None and not isinstance(mlp.act, torch.nn.ReLU):
        report.notes.append(f"{name}: activation {type(mlp.act).__name__} "
                            f"replaced by {type(new_act).__name__}")
    report.swapped.append((name, 'MLP -> BiMLP'))
    new.train(mlp.training)
    return new


@torch.no_grad()
def _copy_linear(src: torch.nn.Module, dst: torch.nn.Module):
    if isinstance(src, PyGLinear) and not src.weight.numel():
        return  # Lazy: nothing to copy yet.
    dst.weight.copy_(src.weight)
    if getattr(dst, 'bias', None) is not None and src.bias is not None:
        dst.bias.copy_(src.bias)
    if isinstance(dst, BiLinear):  # E.g. XNOR-Net++'s scale from |W|.
        dst.method.reset_layer(dst)


def _find_functional_max(model: torch.nn.Module, report: BinarizeReport):
    r"""Names every call of a functional max pooling in the methods that the
    classes of :obj:`model` and its submodules use (those defined outside
    torch, PyG and this package, whose modules the walk converts; an
    overridden method counts once, as resolved)."""
    seen = set()
    for module in model.modules():
        for name, fn in inspect.getmembers(type(module), inspect.isfunction):
            owner = getattr(fn, '__module__', '') or ''
            if fn in seen or owner.startswith(('torch', 'torch_geometric')):
                continue
            seen.add(fn)
            try:
                lines, start = inspect.getsourcelines(fn)
                path = inspect.getsourcefile(fn)
            except (OSError, TypeError):
                continue
            for offset, line in enumerate(lines):
                for call in _MAX_CALL.findall(line.split('#')[0]):
                    report.warnings.append(
                        f"{path}:{start + offset}: {fn.__qualname__} calls "
                        f"{call}(): a plain max homogenizes binary "
                        f"features; call torch_geometric_binary.nn."
                        f"global_ema_max_pool there instead")
