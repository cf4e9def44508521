import importlib.util
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from torch_geometric_binary.train import build_model, load_checkpoint
from torch_geometric_binary.train.segmentation import (build_seg_datasets,
                                                       seg_forward)

ROOT = Path(__file__).resolve().parents[2]


def load(name: str, folder: str):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / folder / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_match_a_direct_count(tmp_path):
    example = load('segmentation', 'examples')
    threads = torch.get_num_threads()
    out = tmp_path / 'run'
    example.main(['--synthetic-per-category', '4', '--synthetic-points',
                  '64', '--batch-size', '8', '--threads', '1', '--quiet',
                  '--precision', 'fp32', '--model', 'pointnet', '--method',
                  'bnn', '--epochs', '1', '--out', str(out)])
    torch.set_num_threads(threads)
    result = load('seg_category_confusion', 'benchmarks').confusion(
        str(out / 'best.pt'))

    state = load_checkpoint(str(out / 'best.pt'))
    config = state['config']
    model = build_model(config)
    model.load_state_dict(state['model'])
    model.eval()
    test = build_seg_datasets('synthetic', num_points=None, augment=False,
                              synthetic_per_category=4,
                              synthetic_points=64).test
    right = free = outside = total = 0
    parts = list(config['parts'].values())
    with torch.no_grad():
        for data in DataLoader(test, batch_size=5):
            logits = seg_forward(model, data)
            for i in range(data.num_graphs):
                own = parts[int(data.category.view(-1)[i])]
                rows = logits[data.batch == i]
                y = data.y[data.batch == i]
                kept = torch.tensor(own)[rows[:, own].argmax(-1)]
                right += int((kept == y).sum())
                free += int((rows.argmax(-1) == y).sum())
                outside += sum(int(p) not in own
                               for p in rows.argmax(-1).tolist())
                total += y.numel()
    assert result['points'] == total > 0
    assert result['acc_restricted'] == round(right / total, 4)
    assert result['acc_unrestricted'] == round(free / total, 4)
    assert result['other_category_share'] == round(outside / total, 4)
    ious = [i for i in result['part_iou'] if i is not None]
    assert len(result['part_iou']) == config['num_classes']
    assert ious and all(0.0 <= i <= 1.0 for i in ious)
