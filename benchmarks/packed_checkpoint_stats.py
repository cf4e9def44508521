r"""Checks a trained binary classifier checkpoint (PointNet, PointNet++,
DGCNN) against its packed model on the test split, and for PointNet counts
the distinct binary rows its pooling sees.

    python3 benchmarks/packed_checkpoint_stats.py \
        benchmarks/results/pointnet_bipointnet.pt --root ../shared/data/ModelNet40

Prints (1) on how many test clouds the packed model gives the binary
model's argmax, with the inputs of ``examples/modelnet.py --eval`` (the
checkpoint's first ``num_points`` points, normalized), and the packed
model's accuracy, and (PointNet) on how many the model packed for clouds
of that size (``pack(..., num_points=n)``) gives the same logits, and on how
many one cloud at a time without a batch vector (the batch-1 path of
deployment) gives the logits of the batched call; (2) (PointNet) the number
of distinct 64-bit codes that the first binary layer receives per test
cloud of 1,024 points (every 100th cloud), which is the number of rows the
packed chain pools.
"""
import argparse
import json
import os
import sys

import torch
import torch_geometric.transforms as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.datasets import PreSampledModelNet  # noqa: E402
from torch_geometric_binary.deploy import pack  # noqa: E402
from torch_geometric_binary.nn.models import PointNet  # noqa: E402
from torch_geometric_binary.train import (load_checkpoint,  # noqa: E402
                                          model_from_checkpoint)
from torch_geometric_binary.train.transforms import (  # noqa: E402
    FirstPoints, NormalizeUnitSphere)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--root', required=True)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--model-kwargs', type=json.loads, default={},
                        help='model options (JSON) that replace the '
                        "checkpoint's")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    config = state['config']
    config['model_kwargs'] = {**(config.get('model_kwargs') or {}),
                              **args.model_kwargs}
    model = model_from_checkpoint(state)
    packed = pack(model)
    n = int(state['config']['num_points'])
    pointnet = isinstance(model, PointNet)
    fixed = pack(model, num_points=n) if pointnet else None
    data = PreSampledModelNet(args.root, train=False, log=False,
                              transform=T.Compose([FirstPoints(n),
                                                   NormalizeUnitSphere()]))
    same = correct = same_fixed = same_single = 0
    for i in range(0, len(data), args.batch_size):
        ds = [data[j] for j in range(i, min(i + args.batch_size, len(data)))]
        pos = torch.cat([d.pos for d in ds])
        batch = torch.arange(len(ds)).repeat_interleave(n)
        with torch.no_grad():
            ref = model(pos, batch).argmax(1)
        logits = packed(pos, batch)
        got = logits.argmax(1)
        same += int((ref == got).sum())
        if fixed is not None:
            same_fixed += int((fixed(pos, batch) == logits).all(1).sum())
        correct += int((got == torch.cat([d.y for d in ds])).sum())
        same_single += sum(int(torch.equal(packed(d.pos)[0], logits[k]))
                           for k, d in enumerate(ds))
    print(f'packed vs binary model: same argmax on {same} of {len(data)} '
          f'test clouds; packed accuracy {correct / len(data):.5f}')
    if fixed is not None:
        print(f'packed for {n}-point clouds vs packed: same logits on '
              f'{same_fixed} of {len(data)} test clouds')
    print(f'one cloud without a batch vector vs batched: same logits on '
          f'{same_single} of {len(data)} test clouds')
    if not pointnet:
        return

    codes = {}
    hook = model.mlp1.lins[1].register_forward_hook(
        lambda mod, inp, out: codes.__setitem__('x', inp[0]))
    raw = PreSampledModelNet(args.root, train=False, log=False)
    counts = []
    for j in range(0, len(raw), 100):
        with torch.no_grad():
            model(raw[j].pos)
        counts.append(torch.unique(codes['x'] >= 0, dim=0).size(0))
    hook.remove()
    print(f'distinct first-layer codes per cloud of {raw[0].pos.size(0)} '
          f'points ({len(counts)} clouds): mean '
          f'{sum(counts) / len(counts):.2f}, min {min(counts)}, '
          f'max {max(counts)}')


if __name__ == '__main__':
    main()
