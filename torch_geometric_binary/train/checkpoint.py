import inspect
import os
import os.path as osp
import random
from typing import Any, Dict, List, Tuple, Union, Optional

import numpy as np
import torch

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    r"""Saves :obj:`state` to :obj:`path` atomically (through a temporary
    file), so that an interruption never leaves a truncated checkpoint."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:  # A full disk, a kill: leave no partial file.
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def load_checkpoint(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    r"""Loads a checkpoint written by :func:`save_checkpoint` (with
    :obj:`weights_only=True`: checkpoints hold only tensors and plain Python
    values). Raises a :class:`ValueError` naming the file if it is not such
    a checkpoint."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # Not a (safe) torch file.
        raise ValueError(f"Could not read checkpoint '{path}': {e}") from e
    if not isinstance(state, dict) or 'model' not in state:
        raise ValueError(f"'{path}' is not a training checkpoint (no "
                         f"'model' entry)")
    return state


def strip_checkpoint(src: str, dst: str) -> Dict[str, Any]:
    r"""Writes the checkpoint :obj:`src` to :obj:`dst` without its optimizer,
    scheduler and random states (and the trained weights behind a weight
    average, :obj:`raw_model`): a small file that
    :obj:`examples/modelnet.py --eval` (and :func:`build_model`) still
    loads. Returns the written state."""
    state = load_checkpoint(src)
    for key in ('optimizer', 'scheduler', 'rng', 'raw_model', 'n_averaged'):
        state.pop(key, None)
    save_checkpoint(dst, state)
    return state


def build_model(config: Dict[str, Any]) -> torch.nn.Module:
    r"""Builds the model described by a checkpoint's :obj:`config`
    (:obj:`model`, :obj:`num_classes`, :obj:`method`, :obj:`model_kwargs`):
    a classifier, or a segmentation network where :obj:`config['task']` is
    :obj:`"segmentation"` (:obj:`examples/segmentation.py`)."""
    from torch_geometric_binary.nn.models import MODELS, SEG_MODELS
    models = SEG_MODELS if config.get('task') == 'segmentation' else MODELS
    name = config['model']
    if name not in models:
        raise ValueError(f"Unknown model '{name}' (available: "
                         f"{', '.join(sorted(models))})")
    kwargs = dict(config.get('model_kwargs') or {})
    options = inspect.signature(models[name].__init__).parameters
    unknown = sorted(set(kwargs) - set(options) - {'self'})
    if unknown:
        known = sorted(set(options) - {'self', 'num_classes', 'method'})
        raise ValueError(f"{models[name].__name__} has no option(s) "
                         f"{', '.join(map(repr, unknown))} (its options: "
                         f"{', '.join(known)})")
    try:
        return models[name](num_classes=int(config['num_classes']),
                            method=config['method'], **kwargs)
    except TypeError as e:  # A value of the wrong type.
        raise ValueError(f"{models[name].__name__}({kwargs}): {e}") from e


def model_from_checkpoint(state: Dict[str, Any],
                          device: Union[str, torch.device] = 'cpu'
                          ) -> torch.nn.Module:
    r"""The model of a loaded checkpoint :obj:`state` (its :obj:`config` and
    trained weights), in evaluation mode on :obj:`device`."""
    model = build_model(state['config']).to(device)
    model.load_state_dict(state['model'])
    return model.eval()


def load_matching_weights(model: torch.nn.Module,
                          state_dict: Dict[str, torch.Tensor]
                          ) -> Tuple[List[str], List[str], List[str]]:
    r"""Copies the tensors of :obj:`state_dict` whose name and shape match
    :obj:`model`'s (:obj:`strict=False`), *e.g.* full-precision weights into
    a binary model of the same architecture. Every LSR scale that
    :obj:`state_dict` does not hold (*e.g.* a full-precision source) is then
    marked uninitialized, so that it is set from data on the first training
    batch; scales learned by a binary source are kept (also from a state
    saved with linear scales, see
    :func:`~torch_geometric_binary.nn.linear.upgrade_scale`).

    Returns:
        The names loaded, the model's names left untouched, and the names of
        :obj:`state_dict` that were skipped (unknown or of another shape).
    """
    from torch_geometric_binary.nn.linear import BiLinear, upgrade_scale
    own = model.state_dict()
    state_dict = dict(state_dict)
    for name, m in model.named_modules():
        if isinstance(m, BiLinear) and m.log_scale is not None:
            upgrade_scale(state_dict, f'{name}.' if name else '')
    matching = {  # Tensors only (not modules' extra states).
        k: v
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor)
        and isinstance(own[k], torch.Tensor)
        and tuple(own[k].shape) == tuple(v.shape)
    }
    model.load_state_dict(matching, strict=False)
    for name, m in model.named_modules():
        if (isinstance(m, BiLinear) and m.log_scale is not None
                and f'{name}.log_scale' not in matching):
            with torch.no_grad():
                m.log_scale.zero_()
            m.scale_initialized = False
    loaded = sorted(matching)
    untouched = sorted(k for k in own if k not in matching
                       and isinstance(own[k], torch.Tensor))
    skipped = sorted(k for k in state_dict if k not in matching
                     and isinstance(state_dict[k], torch.Tensor))
    return loaded, untouched, skipped


def rng_state() -> Dict[str, Any]:
    r"""The states of the :obj:`random`, :obj:`numpy` and :obj:`torch`
    (CPU and CUDA) generators, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (np_state[0], torch.from_numpy(np_state[1].copy()),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    r"""Restores what :func:`rng_state` returned."""
    if 'python' in state:
        version, internal, gauss = state['python']
        random.setstate((version, tuple(internal), gauss))
    if 'numpy' in state:
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos,
                             has_gauss, cached))
    if 'torch' in state:
        torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state['cuda'])
        except Exception:  # Another number of devices.
            pass


def check_classes(config: Dict[str, Any], classes: Optional[List[str]],
                  what: str):
    r"""Raises a :class:`ValueError` where a checkpoint's class names (its
    :obj:`config['classes']`) differ from the dataset's :obj:`classes`;
    the same count with other names or another order would silently mix
    labels."""
    saved = config.get('classes')
    if saved is None or classes is None or list(saved) == list(classes):
        return
    if len(saved) != len(classes):
        raise ValueError(f"{what} has {len(saved)} classes, the dataset "
                         f"{len(classes)}")
    diff = [(i, a, b) for i, (a, b) in enumerate(zip(saved, classes))
            if a != b]
    i, a, b = diff[0]
    raise ValueError(f"{what} was trained on other classes than the dataset "
                     f"has ({len(diff)} differ; class {i} is '{a}' there, "
                     f"'{b}' here)")


def load_teacher(path: str, num_classes: int,
                 device: Union[str, torch.device] = 'cpu',
                 classes: Optional[List[str]] = None,
                 task: Optional[str] = None,
                 ) -> Tuple[torch.nn.Module, str]:
    r"""The model of checkpoint :obj:`path`, frozen in evaluation mode, as
    a distillation teacher for a dataset of :obj:`num_classes` classes
    and a student of :obj:`task` (:obj:`None` for classification,
    :obj:`"segmentation"`). Returns the model and its method name
    (:obj:`"fp"` for the usual full-precision teacher)."""
    ckpt = load_checkpoint(path)
    config = ckpt['config']
    if config.get('task') != task:
        kinds = [t or 'classification' for t in (config.get('task'), task)]
        raise ValueError(f"'{path}' is a {kinds[0]} model, the student a "
                         f"{kinds[1]} model")
    if int(config['num_classes']) != num_classes:
        raise ValueError(f"'{path}' has {config['num_classes']} classes, "
                         f"the dataset {num_classes}")
    check_classes(config, classes, f"'{path}'")
    teacher = model_from_checkpoint(ckpt, device).requires_grad_(False)
    return teacher, config['method']


def init_from_checkpoint(model: torch.nn.Module, path: str, model_name: str
                         ) -> Tuple[List[str], List[str], List[str]]:
    r""":func:`load_matching_weights` from the checkpoint :obj:`path`,
    which must hold a :obj:`model_name` model with at least one matching
    tensor (a :class:`ValueError` otherwise)."""
    src = load_checkpoint(path)
    if src['config']['model'] != model_name:
        raise ValueError(f"'{path}' is a {src['config']['model']} model, "
                         f"not {model_name}")
    loaded, untouched, skipped = load_matching_weights(model, src['model'])
    if not loaded:
        raise ValueError(f"no tensor of '{path}' matches the {model_name} "
                         f"model")
    return loaded, untouched, skipped
