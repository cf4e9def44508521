r"""Trains an experiment's variant of :class:`PointNetSeg` (the
``seg_*.py`` experiments of issue 21) through ``examples/segmentation.py``:
the variant takes the place of :obj:`"pointnet"` in :obj:`SEG_MODELS` and
every other argument is passed on. Importing this module also puts the
checkout on :obj:`sys.path`, so the experiments run without an install."""
import os
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def train_pointnet_variant(cls: type, argv: Optional[List[str]] = None):
    r"""Runs ``examples/segmentation.py --model pointnet`` with :obj:`argv`
    (default: the command line) and :obj:`cls` as PointNet."""
    from torch_geometric_binary.nn.models import SEG_MODELS
    sys.path.insert(0, os.path.join(ROOT, 'examples'))
    import segmentation  # examples/segmentation.py
    SEG_MODELS['pointnet'] = cls
    return segmentation.main(['--model', 'pointnet'] +
                             (sys.argv[1:] if argv is None else argv))
