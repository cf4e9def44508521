r"""Binarize an existing PyG model with one call, then fine-tune it.

The models are defined as in PyG's own examples
(:obj:`examples/pointnet2_classification.py` and
:obj:`examples/dgcnn_classification.py`): PyG's :obj:`MLP`,
:obj:`PointNetConv`, :obj:`EdgeConv` and :obj:`global_max_pool`. Two lines
differ, and the comments say why:

* neighbours come from :mod:`torch_geometric_binary.nn.neighbors` (PyG 2.8
  routes its :obj:`fps`, :obj:`radius`, :obj:`knn` through pyg-lib, which
  may be missing; ours give torch-cluster's results);
* DGCNN's :obj:`DynamicEdgeConv` is written as :obj:`EdgeConv` on the
  :math:`k`-NN graph of its input (the same computation; PyG's class needs
  pyg-lib to be built, and :func:`binarize` converts it too where it is).

The program trains the full-precision model, converts a copy with
:func:`torch_geometric_binary.binarize`, prints the report (what was
swapped, kept, added, and the functional max pooling it cannot change),
fine-tunes the binary model from the full-precision weights and prints both
accuracies. ``--ema-pool`` applies the change the report asks for
(:obj:`global_ema_max_pool` in the model's :obj:`forward`). The last line is
a JSON object. Usage::

    python examples/binarize_pyg.py --model pointnet2 --ema-pool
    python examples/binarize_pyg.py --model dgcnn --dataset modelnet40 \
        --root ../shared/data/ModelNet40 --epochs 20
"""
import argparse
import importlib.util
import json
import os.path as osp
import sys
import time

if importlib.util.find_spec('torch_geometric_binary') is None:
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from torch_geometric.nn import (MLP, EdgeConv, PointNetConv,  # noqa: E402
                                global_max_pool)

from torch_geometric_binary import binarize  # noqa: E402
from torch_geometric_binary.nn import global_ema_max_pool  # noqa: E402
from torch_geometric_binary.nn.neighbors import fps, knn_edges, radius_edges  # noqa
from torch_geometric_binary.train import (build_datasets,  # noqa: E402
                                          evaluate, test_loader,
                                          train_epoch, train_loader)


# PyG's pointnet2_classification.py ###########################################

class SAModule(torch.nn.Module):
    def __init__(self, ratio, r, nn):
        super().__init__()
        self.ratio = ratio
        self.r = r
        self.conv = PointNetConv(nn, add_self_loops=False)

    def forward(self, x, pos, batch):
        idx = fps(pos, batch, ratio=self.ratio)
        # Ours returns [source, target] edges (PyG's example stacks
        # torch_cluster's [row, col] as [col, row]).
        edge_index = radius_edges(pos, pos[idx], self.r, batch, batch[idx],
                            max_num_neighbors=64)
        x_dst = None if x is None else x[idx]
        x = self.conv((x, x_dst), (pos, pos[idx]), edge_index)
        pos, batch = pos[idx], batch[idx]
        return x, pos, batch


class GlobalSAModule(torch.nn.Module):
    def __init__(self, nn):
        super().__init__()
        self.nn = nn

    def forward(self, x, pos, batch):
        x = self.nn(torch.cat([x, pos], dim=1))
        x = global_max_pool(x, batch)
        return x


class GlobalSAModuleEMA(GlobalSAModule):
    r"""The change binarize's report asks for: the EMA max."""
    def forward(self, x, pos, batch):
        x = self.nn(torch.cat([x, pos], dim=1))
        return global_ema_max_pool(x, batch)


class PointNet2(torch.nn.Module):
    def __init__(self, num_classes, ema_pool=False):
        super().__init__()
        self.sa1_module = SAModule(0.5, 0.2, MLP([3, 64, 64, 128]))
        self.sa2_module = SAModule(0.25, 0.4, MLP([128 + 3, 128, 128, 256]))
        global_sa = GlobalSAModuleEMA if ema_pool else GlobalSAModule
        self.sa3_module = global_sa(MLP([256 + 3, 256, 512, 1024]))
        self.mlp = MLP([1024, 512, 256, num_classes], dropout=0.5,
                       norm=None)

    def forward(self, pos, batch):
        x, pos, batch = self.sa1_module(None, pos, batch)
        x, pos, batch = self.sa2_module(x, pos, batch)
        return self.mlp(self.sa3_module(x, pos, batch))


# PyG's dgcnn_classification.py ###############################################

class DynamicGraphConv(torch.nn.Module):
    r""":obj:`DynamicEdgeConv(nn, k, 'max')` as :obj:`EdgeConv` on the
    :math:`k`-NN graph of its input."""
    def __init__(self, nn, k):
        super().__init__()
        self.k = k
        self.conv = EdgeConv(nn, aggr='max')

    def forward(self, x, batch):
        edge_index = knn_edges(x.float(), x.float(), self.k, batch, batch)
        return self.conv(x, edge_index)


class DGCNN(torch.nn.Module):
    def __init__(self, num_classes, k=20):
        super().__init__()
        self.conv1 = DynamicGraphConv(MLP([2 * 3, 64, 64, 64]), k)
        self.conv2 = DynamicGraphConv(MLP([2 * 64, 128]), k)
        self.lin1 = torch.nn.Linear(128 + 64, 1024)
        self.mlp = MLP([1024, 512, 256, num_classes], dropout=0.5,
                       norm=None)

    def forward(self, pos, batch):
        x1 = self.conv1(pos, batch)
        x2 = self.conv2(x1, batch)
        out = self.lin1(torch.cat([x1, x2], dim=1))
        out = global_max_pool(out, batch)
        return self.mlp(out)


class DGCNNEMA(DGCNN):
    r"""The change binarize's report asks for: the EMA max."""
    def forward(self, pos, batch):
        x1 = self.conv1(pos, batch)
        x2 = self.conv2(x1, batch)
        out = self.lin1(torch.cat([x1, x2], dim=1))
        return self.mlp(global_ema_max_pool(out, batch))


###############################################################################

def fit(model, data, epochs, lr, batch_size, log):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    loader, _ = train_loader(data.train, batch_size)
    device = torch.device('cpu')
    acc = None
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        train = train_epoch(model, loader, opt, device)
        sched.step()
        acc = evaluate(model, test_loader(data.test, batch_size), device,
                       data.num_classes).overall_acc
        log(f"  epoch {epoch:03d} | loss {train['loss']:.4f} | test "
            f"{100 * acc:.2f}% | {time.perf_counter() - t:.1f}s")
    return acc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='pointnet2',
                   choices=['pointnet2', 'dgcnn'])
    p.add_argument('--method', default='bipointnet')
    p.add_argument('--dataset', default='synthetic',
                   choices=['synthetic', 'modelnet40', 'modelnet10'])
    p.add_argument('--root', default=None)
    p.add_argument('--num-points', type=int, default=256)
    p.add_argument('--epochs', type=int, default=5,
                   help='epochs of the FP model and of the fine-tuning')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--lr', type=float, default=0.001)
    p.add_argument('--limit-train', type=int, default=None)
    p.add_argument('--limit-test', type=int, default=None)
    p.add_argument('--ema-pool', action='store_true',
                   help="use global_ema_max_pool in the model's forward")
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dataset != 'synthetic' and args.root is None:
        p.error(f"--dataset {args.dataset} needs --root")
    torch.manual_seed(args.seed)
    data = build_datasets(args.dataset, args.root, args.num_points,
                          limit_train=args.limit_train,
                          limit_test=args.limit_test,
                          synthetic_points=args.num_points)
    if args.model == 'pointnet2':
        model = PointNet2(data.num_classes, ema_pool=args.ema_pool)
    else:
        model = (DGCNNEMA if args.ema_pool else DGCNN)(data.num_classes)

    print(f"Full-precision {args.model} ({args.dataset}):", flush=True)
    fp_acc = fit(model, data, args.epochs, args.lr, args.batch_size,
                 lambda s: print(s, flush=True))

    binary, report = binarize(model, method=args.method)
    print(report, flush=True)
    print(f"Binary {args.model} ({args.method}), fine-tuned from the "
          f"full-precision weights:", flush=True)
    bin_acc = fit(binary, data, args.epochs, args.lr, args.batch_size,
                  lambda s: print(s, flush=True))
    result = {'model': args.model, 'method': args.method,
              'dataset': args.dataset, 'epochs': args.epochs,
              'fp_acc': fp_acc, 'binary_acc': bin_acc,
              'swapped': len(report.swapped), 'kept': len(report.kept),
              'warnings': report.warnings}
    print(f"test accuracy: full precision {100 * fp_acc:.2f}%, binary "
          f"{100 * bin_acc:.2f}%")
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
