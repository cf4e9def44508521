r"""Diagnoses the evaluation collapse of long binary runs: prints each
checkpoint's LSR scales and, on 64 test clouds in evaluation mode, the
accuracy and the mean/std of every BatchNorm's input and output (a pooled
layer's normalized output far from std 1 makes EMA's -delta(n) shift
homogenize the pooled signs).

    python3 benchmarks/lsr_scale_drift.py runs/A/last.pt runs/B/last.pt \
        --root ../shared/data/ModelNet40
"""
import argparse
import os
import sys

import torch
import torch_geometric.transforms as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.datasets import PreSampledModelNet  # noqa: E402
from torch_geometric_binary.nn import BiLinear  # noqa: E402
from torch_geometric_binary.train import (load_checkpoint,  # noqa: E402
                                          model_from_checkpoint)
from torch_geometric_binary.train.transforms import (  # noqa: E402
    FirstPoints, NormalizeUnitSphere)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoints', nargs='+')
    parser.add_argument('--root', required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.checkpoints:
        state = load_checkpoint(path)
        n = int(state['config']['num_points'])
        data = PreSampledModelNet(args.root, train=False, log=False,
                                  transform=T.Compose([FirstPoints(n),
                                                       NormalizeUnitSphere()]))
        ds = [data[i * 37] for i in range(64)]
        pos = torch.cat([d.pos for d in ds])
        batch = torch.arange(64).repeat_interleave(n)
        y = torch.cat([d.y for d in ds])
        model = model_from_checkpoint(state)
        # From the model, not the file: files before log_scale store 'scale'.
        scales = {name: round(m.scale.item(), 4)
                  for name, m in model.named_modules()
                  if isinstance(m, BiLinear) and m.scale is not None}
        stats = {}
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.register_forward_hook(
                    lambda m, i, o, name=name: stats.__setitem__(
                        name, (i[0], o)))
        with torch.no_grad():
            acc = (model(pos, batch).argmax(1) == y).float().mean().item()
        print(f'{path}: eval accuracy on 64 test clouds {acc:.4f}')
        print(f'  LSR scales: {scales}')
        for name, (i, o) in stats.items():
            print(f'  {name}: in mean/std {i.mean():.4f} / {i.std():.4f}, '
                  f'out mean/std {o.mean():.3f} / {o.std():.3f}')


if __name__ == '__main__':
    main()
