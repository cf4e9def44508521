import math
from typing import Callable, List, Optional

import numpy as np
import torch

from torch_geometric.data import Data

from torch_geometric_binary.datasets.generated import GeneratedDataset

# Samplers of (roughly area-uniform) points on parametric surfaces in a
# canonical frame with z up and a size of about one. Each takes a numpy
# `Generator` and a number of points and returns a float64 [n, 3] array.


def _choice(rng: np.random.Generator, n: int, weights: List[float]):
    w = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(w), size=n, p=w / w.sum())


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _sphere(rng, n):
    return _unit_vectors(rng, n)


def _box(rng, n, half=(1.0, 1.0, 1.0), center=(0.0, 0.0, 0.0)):
    a, b, c = half
    areas = [b * c, b * c, a * c, a * c, a * b, a * b]  # +-x, +-y, +-z
    face = _choice(rng, n, areas)
    p = rng.uniform(-1.0, 1.0, (n, 3))
    axis = face // 2
    p[np.arange(n), axis] = np.where(face % 2 == 0, 1.0, -1.0)
    return p * np.asarray(half) + np.asarray(center)


def _cube(rng, n):
    return _box(rng, n)


def _cylinder(rng, n, r=0.5, h=1.6):
    part = _choice(rng, n, [2 * math.pi * r * h, math.pi * r * r,
                            math.pi * r * r])
    theta = rng.uniform(0, 2 * math.pi, n)
    rad = np.where(part == 0, r, r * np.sqrt(rng.uniform(0, 1, n)))
    z = np.where(part == 0, rng.uniform(-h / 2, h / 2, n),
                 np.where(part == 1, h / 2, -h / 2))
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)


def _cone(rng, n, r=0.7, h=1.4):
    slant = math.sqrt(r * r + h * h)
    part = _choice(rng, n, [math.pi * r * slant, math.pi * r * r])
    theta = rng.uniform(0, 2 * math.pi, n)
    t = np.sqrt(rng.uniform(0, 1, n))  # Distance from apex (area-uniform).
    rad = t * r
    z = np.where(part == 0, h / 2 - t * h, -h / 2)
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)


def _torus(rng, n, R=0.7, r=0.25):
    u = rng.uniform(0, 2 * math.pi, n)
    # Rejection sampling of the tube angle for an area-uniform density:
    v = np.empty(0)
    while v.size < n:
        cand = rng.uniform(0, 2 * math.pi, 2 * n)
        keep = rng.uniform(0, 1, 2 * n) < (R + r * np.cos(cand)) / (R + r)
        v = np.concatenate([v, cand[keep]])
    v = v[:n]
    w = R + r * np.cos(v)
    return np.stack([w * np.cos(u), w * np.sin(u), r * np.sin(v)], axis=1)


def _triangles(rng, n, tris):
    tris = np.asarray(tris, dtype=np.float64)  # [T, 3, 3]
    areas = 0.5 * np.linalg.norm(
        np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    idx = _choice(rng, n, areas)
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    flip = a + b > 1
    a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
    t = tris[idx]
    return t[:, 0] + a[:, None] * (t[:, 1] - t[:, 0]) + b[:, None] * (
        t[:, 2] - t[:, 0])


def _pyramid(rng, n, h=1.3):
    c = [(-1, -1, -h / 2), (1, -1, -h / 2), (1, 1, -h / 2), (-1, 1, -h / 2)]
    apex = (0, 0, h / 2)
    tris = [(c[i], c[(i + 1) % 4], apex) for i in range(4)]
    tris += [(c[0], c[1], c[2]), (c[0], c[2], c[3])]
    return _triangles(rng, n, tris)


def _octahedron(rng, n):
    tris = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                tris.append(((sx, 0, 0), (0, sy, 0), (0, 0, sz)))
    return _triangles(rng, n, tris)


def _capsule(rng, n, r=0.4, length=1.2):
    part = _choice(rng, n, [2 * math.pi * r * length, 4 * math.pi * r * r])
    theta = rng.uniform(0, 2 * math.pi, n)
    side = np.stack([r * np.cos(theta), r * np.sin(theta),
                     rng.uniform(-length / 2, length / 2, n)], axis=1)
    cap = r * _unit_vectors(rng, n)
    cap[:, 2] += np.sign(cap[:, 2]) * length / 2
    return np.where((part == 0)[:, None], side, cap)


def _helix(rng, n, R=0.6, tube=0.1, turns=3.0, h=1.6):
    t = rng.uniform(0, 1, n)
    phi = 2 * math.pi * turns * t
    center = np.stack([R * np.cos(phi), R * np.sin(phi), h * (t - 0.5)], 1)
    tangent = np.stack([
        -R * np.sin(phi) * 2 * math.pi * turns,
        R * np.cos(phi) * 2 * math.pi * turns,
        np.full(n, h),
    ], axis=1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    binormal = np.cross(tangent, normal)
    psi = rng.uniform(0, 2 * math.pi, n)[:, None]
    return center + tube * (np.cos(psi) * normal + np.sin(psi) * binormal)


def _disc(rng, n, r=1.0, thickness=0.05):
    theta = rng.uniform(0, 2 * math.pi, n)
    rad = r * np.sqrt(rng.uniform(0, 1, n))
    z = rng.choice([-thickness / 2, thickness / 2], size=n)
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)


def _dumbbell(rng, n, r=0.45, d=0.9, bar=0.12):
    bar_len = 2 * (d - r)
    part = _choice(rng, n, [4 * math.pi * r * r, 4 * math.pi * r * r,
                            2 * math.pi * bar * bar_len])
    s = r * _unit_vectors(rng, n)
    s[:, 0] += np.where(part == 0, d, -d)
    theta = rng.uniform(0, 2 * math.pi, n)
    b = np.stack([rng.uniform(-bar_len / 2, bar_len / 2, n),
                  bar * np.cos(theta), bar * np.sin(theta)], axis=1)
    return np.where((part == 2)[:, None], b, s)


def _cross(rng, n, long=1.0, thin=0.2):
    halves = [(long, thin, thin), (thin, long, thin), (thin, thin, long)]
    areas = [4 * (a * b + b * c + a * c) for a, b, c in halves]
    part = _choice(rng, n, areas)
    out = np.empty((n, 3))
    for i, half in enumerate(halves):
        mask = part == i
        out[mask] = _box(rng, int(mask.sum()), half)
    return out


def _bowl(rng, n):
    p = _unit_vectors(rng, n)
    p[:, 2] = -np.abs(p[:, 2])
    return p


SHAPES = {
    'sphere': _sphere,
    'cube': _cube,
    'cylinder': _cylinder,
    'cone': _cone,
    'torus': _torus,
    'pyramid': _pyramid,
    'capsule': _capsule,
    'helix': _helix,
    'disc': _disc,
    'dumbbell': _dumbbell,
    'cross': _cross,
    'bowl': _bowl,
    'octahedron': _octahedron,
}


def sample_shape(
    label: int,
    num_points: int,
    rng: np.random.Generator,
    scale_range: tuple = (0.8, 1.25),
    noise_range: tuple = (0.0, 0.03),
    cut_prob: float = 0.2,
    cut_range: tuple = (0.1, 0.35),
) -> np.ndarray:
    r"""Samples one augmented point cloud (float32 :obj:`[num_points, 3]`)
    of the shape :obj:`list(SHAPES)[label]`: random anisotropic scale, a
    random cut-away part (with probability :obj:`cut_prob`), a random
    rotation about the z-axis, Gaussian noise, then centering and scaling
    into the unit sphere."""
    fn = list(SHAPES.values())[label]
    m = 2 * num_points
    pos = fn(rng, m)
    pos = pos * rng.uniform(*scale_range, size=3)

    if rng.uniform() < cut_prob:  # Cut away a part by a random plane.
        direction = _unit_vectors(rng, 1)[0]
        proj = pos @ direction
        keep = proj <= np.quantile(proj, 1.0 - rng.uniform(*cut_range))
        pos = pos[keep]
    pos = pos[rng.permutation(pos.shape[0])[:num_points]]

    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pos = pos @ rot.T

    scale = np.linalg.norm(pos - pos.mean(0), axis=1).max()
    pos = pos + rng.normal(0, rng.uniform(*noise_range), pos.shape) * scale

    pos = pos - pos.mean(0)
    pos = pos / np.linalg.norm(pos, axis=1).max()
    return pos.astype(np.float32)


class SyntheticShapes(GeneratedDataset):
    r"""A deterministic synthetic point-cloud classification dataset of
    parametric shapes that needs no download, for quick experiments and
    tests.

    Classes (in this order, the first :obj:`num_classes` are used):
    :obj:`sphere`, :obj:`cube`, :obj:`cylinder`, :obj:`cone`, :obj:`torus`,
    :obj:`pyramid`, :obj:`capsule`, :obj:`helix`, :obj:`disc`,
    :obj:`dumbbell`, :obj:`cross`, :obj:`bowl`, :obj:`octahedron`.
    Each example is sampled from its surface (at twice
    :obj:`num_points`), scaled anisotropically by a random factor in
    :obj:`[0.8, 1.25]` per axis, with probability :obj:`0.2` cut by a
    random plane (removing 10-35% of the surface), subsampled to
    :obj:`num_points`, rotated randomly about the up (z) axis, perturbed by
    Gaussian noise (standard deviation up to 3% of its radius), and finally
    centered and scaled so that its farthest point has radius one (like
    pre-sampled ModelNet).

    Every example :obj:`i` of class :obj:`c` is drawn from its own
    :class:`numpy.random.Generator` seeded by :obj:`(seed, split, c, i)`, so
    the same arguments always give bit-identical data, the training and
    test sets come from different random streams, and no global random state
    is used or changed.

    Each :class:`~torch_geometric.data.Data` object holds :obj:`pos`
    (float32 :obj:`[num_points, 3]`), :obj:`y` (long :obj:`[1]`) and
    :obj:`x=None`.

    Args:
        root (str, optional): If given, the processed dataset is cached in
            :obj:`root/processed`; if :obj:`None`, it is generated in memory
            and nothing is written to disk. (default: :obj:`None`)
        train (bool, optional): If :obj:`True`, loads the training set,
            otherwise the test set. (default: :obj:`True`)
        num_classes (int, optional): The number of classes (at most
            :obj:`len(SyntheticShapes.SHAPES)`). (default: :obj:`10`)
        num_per_class (int, optional): The number of examples per class.
            (default: :obj:`80` for training, :obj:`20` for test)
        num_points (int, optional): The number of points per example.
            (default: :obj:`512`)
        seed (int, optional): The random seed. (default: :obj:`0`)
        transform (callable, optional): A function/transform applied on every
            access. (default: :obj:`None`)
        pre_transform (callable, optional): A function/transform applied
            before the data is stored. (default: :obj:`None`)
        force_reload (bool, optional): Whether to re-generate a cached
            dataset. (default: :obj:`False`)
        log (bool, optional): Whether to print console output while
            generating into :obj:`root`. (default: :obj:`True`)
    """

    SHAPES = list(SHAPES)

    def __init__(
        self,
        root: Optional[str] = None,
        train: bool = True,
        num_classes: int = 10,
        num_per_class: Optional[int] = None,
        num_points: int = 512,
        seed: int = 0,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        if not 1 <= num_classes <= len(SHAPES):
            raise ValueError(f"'num_classes' must be in [1, {len(SHAPES)}] "
                             f"(got {num_classes})")
        if num_per_class is None:
            num_per_class = 80 if train else 20
        if num_per_class < 1 or num_points < 1:
            raise ValueError("'num_per_class' and 'num_points' must be "
                             "positive")
        self._num_classes = num_classes
        self.num_per_class = num_per_class
        self.num_points = num_points
        self.classes: List[str] = list(SHAPES)[:num_classes]
        super().__init__(root, train, seed, transform, pre_transform,
                         force_reload, log)

    @property
    def num_groups(self) -> int:
        return self._num_classes

    @property
    def num_per_group(self) -> int:
        return self.num_per_class

    @property
    def processed_file_names(self) -> List[str]:
        split = 'train' if self.train else 'test'
        return [
            f'{split}_c{self._num_classes}_n{self.num_per_class}_'
            f'p{self.num_points}_s{self.seed}.pt'
        ]

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def sample(self, group: int, rng: np.random.Generator) -> Data:
        pos = sample_shape(group, self.num_points, rng)
        return Data(pos=torch.from_numpy(pos),
                    y=torch.tensor([group], dtype=torch.long))
