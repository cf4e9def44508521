r"""How much of a part-segmentation checkpoint's score comes from the
evaluation's category restriction (issue 21).

Instance mIoU restricts every point's logits to the parts of its shape's
category (PointNet's evaluation), so a network that cannot tell the
categories apart loses nothing by it. For each checkpoint this prints, on
its test split: the point accuracy with the restriction and without it,
and the share of points whose unrestricted prediction is a part of another
category; and, with the restriction, the IoU of every part over all test
points (which parts a network never predicts). One JSON line per
checkpoint::

    python3 benchmarks/seg_category_confusion.py RUN/best.pt [RUN2/best.pt ...]
"""
import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torch_geometric.loader import DataLoader  # noqa: E402

from torch_geometric_binary.train import (build_model,  # noqa: E402
                                          load_checkpoint)
from torch_geometric_binary.train.metrics import (  # noqa: E402
    category_part_mask, mask_to_category)
from torch_geometric_binary.train.segmentation import (  # noqa: E402
    build_seg_datasets, seg_forward)


@torch.no_grad()
def confusion(path: str) -> dict:
    state = load_checkpoint(path)
    config = state['config']
    if config.get('seg_task') != 'part':
        raise ValueError(f"{path}: not a part-segmentation checkpoint")
    splits = build_seg_datasets(
        config['dataset'], config['root'], config['num_points'],
        augment=False,
        synthetic_per_category=config['synthetic_per_category'],
        synthetic_points=config['synthetic_points'] or 1024)
    model = build_model(config)
    model.load_state_dict(state['model'])
    model.eval()
    mask = category_part_mask(config['parts'], config['num_classes'])
    counts = torch.zeros(3, dtype=torch.long)  # restricted, free, outside
    inter = torch.zeros(config['num_classes'], dtype=torch.long)
    union = torch.zeros_like(inter)
    total = 0
    for data in DataLoader(splits.test, batch_size=16):
        out = seg_forward(model, data).float()
        free = out.argmax(-1)
        kept = mask_to_category(out, data.category, config['parts'],
                                data.batch).argmax(-1)
        own = mask[data.category.view(-1)[data.batch]]
        counts += torch.stack([
            (kept == data.y).sum(), (free == data.y).sum(),
            (~own.gather(1, free.view(-1, 1)).view(-1)).sum()])
        total += data.y.numel()
        parts = torch.arange(config['num_classes']).view(-1, 1)
        hit, want = kept.view(1, -1) == parts, data.y.view(1, -1) == parts
        inter += (hit & want).sum(1)
        union += (hit | want).sum(1)
    acc = (counts.double() / total).tolist()
    return {'checkpoint': path, 'method': config['method'],
            'model_kwargs': config['model_kwargs'], 'epoch': state['epoch'],
            'points': total, 'acc_restricted': round(acc[0], 4),
            'acc_unrestricted': round(acc[1], 4),
            'other_category_share': round(acc[2], 4),
            'part_iou': [round(i / u, 4) if u else None for i, u in
                         zip(inter.tolist(), union.tolist())]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoints', nargs='+')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for path in args.checkpoints:
        print(json.dumps(confusion(path)), flush=True)


if __name__ == '__main__':
    main()
