r"""Diagnostics of what BiPointNet fixes, measured on a model and a batch.

* :func:`aggregation_entropy`: the information entropy of the binarized
  features after each max aggregation. For :math:`n` normalized features,
  the sign of a plain max is :math:`+1` with probability :math:`1 -
  2^{-n}` (entropy near 0 bits: every channel says the same), that of an
  EMA max with probability :math:`1/2` (1 bit).
* :func:`scale_distortion`: for each binary layer, the standard deviation of
  its binary output against that of the full-precision product it
  replaces, before and after the LSR scale.

``python -m torch_geometric_binary.analysis`` prints both for fresh BNN,
BNN+EMA and BiPointNet PointNets on the synthetic shapes (or a checkpoint).
"""
import argparse
import contextlib
import math
import os
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.aggr import MaxAggregation

from torch_geometric_binary.nn.aggr import EMAMaxAggregation
from torch_geometric_binary.nn.functional import sign
from torch_geometric_binary.nn.fused import use_fused
from torch_geometric_binary.nn.linear import BiLinear
from torch_geometric_binary.utils import batch_statistics


def binary_entropy(x: Tensor) -> float:
    r"""The mean over channels (last dimension) of the entropy, in bits, of
    :math:`\mathrm{sign}(x)` across the rows of :obj:`x`."""
    p = (sign(x.detach().reshape(-1, x.size(-1))) > 0).double().mean(0)
    h = (torch.special.entr(p) + torch.special.entr(1 - p)) / math.log(2)
    return float(h.mean())


def _first_binary_layer(module: Optional[torch.nn.Module]
                        ) -> Optional[BiLinear]:
    for m in module.modules() if module is not None else ():
        if isinstance(m, BiLinear):
            return m
    return None


def _pooled_outputs(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    r"""The modules whose outputs are max aggregations (message passing)
    or whose inputs are pooled features (a classifier's activation after its
    global max)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (EMAMaxAggregation, MaxAggregation)):
            found[name] = module
    return found


@contextlib.contextmanager
def _hooks(handles: List) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def aggregation_entropy(model: torch.nn.Module, *inputs,
                        **kwargs) -> Dict[str, float]:
    r"""The entropy (bits, mean over channels) of the sign of every max
    aggregation's output in one forward pass of :obj:`model` on
    :obj:`inputs`, keyed by module name; a classifier's global pooling is
    keyed :obj:`"<name>.pool"`: the sign its head's first binary layer
    takes of it, after the activation and any learned threshold (ReActNet's
    RSign moves the sign point as EMA's :math:`\delta(n)` does), or the
    pooled feature's own sign when the head is full precision. Runs unfused (so
    that every aggregation is a module call) with BatchNorm on the batch's
    statistics, without dropout; the model is left as it was."""
    out: Dict[str, float] = {}
    handles = []
    for name, module in _pooled_outputs(model).items():
        handles.append(module.register_forward_hook(
            lambda m, args, result, name=name: out.__setitem__(
                name, binary_entropy(result))))
    for name, module in model.named_modules():
        pool = getattr(module, 'pool', None)
        act = getattr(module, 'act', None)
        if callable(pool) and isinstance(act, torch.nn.Module) and \
                not isinstance(pool, torch.nn.Module):
            key = f'{name}.pool' if name else 'pool'
            consumer = _first_binary_layer(getattr(module, 'head', None))
            handles.append(act.register_forward_hook(
                lambda m, args, result, key=key, consumer=consumer:
                out.__setitem__(key, binary_entropy(
                    args[0] if consumer is None else
                    consumer.method.binarize_input(result, consumer)))))
    _run(model, handles, inputs, kwargs)
    return out


def _run(model: torch.nn.Module, handles: List, inputs, kwargs):
    r"""One forward pass, unfused, with BatchNorm on the batch's own
    statistics (the features a max sees in training are normalized), no
    dropout; the model is left as it was."""
    with _hooks(handles), use_fused(False), \
            batch_statistics(model, dropout=False):
        model(*inputs, **kwargs)


@torch.no_grad()
def scale_distortion(model: torch.nn.Module, *inputs,
                     **kwargs) -> Dict[str, Dict[str, float]]:
    r"""For every :class:`BiLinear` reached by one forward pass: the ratio
    of the standard deviation of its binary output to that of the
    full-precision product :math:`\mathbf{x}\mathbf{W}^{\top}` on the same
    input, without (:obj:`"before_lsr"`) and with (:obj:`"after_lsr"`) its
    LSR scale (1 is no distortion)."""
    out: Dict[str, Dict[str, float]] = {}

    def hook(module: BiLinear, args, name: str):
        x = args[0].detach().float()
        fp = F.linear(x, module.weight.float()).std()
        binary = module.binary_forward(x).float().std()
        scale = 1.0 if module.scale is None else float(module.scale)
        ratio = float(binary / fp) if fp > 0 else float('nan')
        out[name] = {'before_lsr': ratio, 'after_lsr': ratio * scale}

    handles = [m.register_forward_pre_hook(
        lambda m, args, name=name: hook(m, args, name))
        for name, m in model.named_modules() if isinstance(m, BiLinear)]
    _run(model, handles, inputs, kwargs)
    return out


def plot_entropy(results: Dict[str, Dict[str, Dict]], path: str):
    r"""Writes a bar chart of :func:`aggregation_entropy` per layer (x) and
    model (bars) to :obj:`path`; needs matplotlib
    (:obj:`pip install torch_geometric_binary[plot]`)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("plot_entropy needs matplotlib: pip install "
                           "matplotlib") from e
    layers = list(dict.fromkeys(
        key for r in results.values() for key in r['entropy']))
    width = 0.8 / max(len(results), 1)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(layers)) + 2.5, 3.2))
    for i, (name, r) in enumerate(results.items()):
        ax.bar([j + i * width for j in range(len(layers))],
               [r['entropy'].get(key, float('nan')) for key in layers],
               width, label=name)
    ax.set_xticks([j + width * (len(results) - 1) / 2
                   for j in range(len(layers))], layers, rotation=20,
                  ha='right')
    ax.set_ylabel('entropy of the sign (bits)')
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None):
    from torch_geometric.loader import DataLoader

    from torch_geometric_binary.nn.lsr import init_lsr_scales
    from torch_geometric_binary.nn.models import PointNet
    from torch_geometric_binary.train import (build_datasets, load_checkpoint,
                                              model_from_checkpoint)

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--methods', nargs='+',
                   default=['bnn', 'bnn+ema', 'bnn+lsr', 'bipointnet'])
    p.add_argument('--checkpoint', nargs='+', default=None,
                   help='measure these trained models instead')
    p.add_argument('--plot', default=None, metavar='PNG',
                   help='also write a chart of the entropies (matplotlib)')
    p.add_argument('--dataset', default='synthetic',
                   help="where the batch comes from: 'synthetic' or "
                   "'modelnet40' (with --root)")
    p.add_argument('--root', default=None,
                   help='the data folder of --dataset modelnet40')
    p.add_argument('--points', type=int, default=512)
    p.add_argument('--batch', type=int, default=16)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    data = build_datasets(args.dataset, args.root, args.points,
                          augment=False, synthetic_points=args.points)
    # A fixed, class-mixed batch of test clouds.
    picks = torch.randperm(len(data.test))[:args.batch].tolist()
    batch = next(iter(DataLoader(data.test[picks], batch_size=args.batch)))
    if args.checkpoint:
        # A run's best.pt/last.pt is named by its run folder.
        models = {(os.path.basename(os.path.dirname(os.path.abspath(path)))
                   if os.path.basename(path) in ('best.pt', 'last.pt')
                   else path): model_from_checkpoint(load_checkpoint(path))
                  for path in args.checkpoint}
    else:
        models = {}
        for method in args.methods:
            model = PointNet(data.num_classes, method=method)
            init_lsr_scales(model, batch.pos, batch.batch)
            models[method] = model
    results = {}
    for name, model in models.items():
        results[name] = {
            'entropy': aggregation_entropy(model, batch.pos, batch.batch),
            'scale': scale_distortion(model, batch.pos, batch.batch)}
        print(f"{name}:")
        for key, h in results[name]['entropy'].items():
            print(f"  entropy after {key:28s} {h:.3f} bits")
        for key, r in results[name]['scale'].items():
            print(f"  std ratio {key:32s} {r['before_lsr']:8.3f} -> "
                  f"{r['after_lsr']:.3f} with LSR")
    if args.plot:
        plot_entropy(results, args.plot)
    return results


if __name__ == '__main__':
    main()
