r"""Which part of a weight average changes a checkpoint's accuracy: the
averaged weights or the averaged normalization statistics.

For a checkpoint of ``examples/modelnet.py --weight-avg-decay`` (its
:obj:`model` is the average, :obj:`raw_model` the trained weights), prints
the test overall accuracy of four models: the average, the trained weights,
and each set of weights with the other's running statistics.

    python3 benchmarks/weight_average_parts.py \
        runs/p512_pointnet_bipointnet_kd_restart8_wavg999_e14/last.pt \
        --root ../shared/data/ModelNet40
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from torch_geometric_binary.train import (build_datasets,  # noqa: E402
                                          evaluate, load_checkpoint,
                                          model_from_checkpoint, test_loader)


def is_statistic(key: str) -> bool:
    return 'running_' in key or key.endswith('num_batches_tracked')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--root', required=True)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    if 'raw_model' not in state:
        parser.error(f"'{args.checkpoint}' has no trained weights "
                     f"('raw_model'): not a weight-averaged run's last.pt")
    avg, raw = state['model'], state['raw_model']
    config = state['config']
    data = build_datasets(config['dataset'], args.root,
                          config.get('num_points'), augment=False, log=False)
    loader = test_loader(data.test, config.get('batch_size') or 32)

    def acc(weights, stats):
        sd = {k: (stats[k] if is_statistic(k) else weights[k]) for k in avg}
        model = model_from_checkpoint({**state, 'model': sd})
        metric = evaluate(model, loader, torch.device('cpu'),
                          data.num_classes)
        return round(100 * metric.overall_acc, 2)

    print(json.dumps({
        'averaged': acc(avg, avg),
        'trained': acc(raw, raw),
        'averaged_weights_trained_statistics': acc(avg, raw),
        'trained_weights_averaged_statistics': acc(raw, avg),
    }))


if __name__ == '__main__':
    main()
