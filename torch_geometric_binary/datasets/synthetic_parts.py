import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_geometric.data import Data

from torch_geometric_binary.datasets.generated import GeneratedDataset
from torch_geometric_binary.datasets.synthetic_shapes import _box, _choice

# A primitive is (area, sampler): `sampler(rng, n)` returns n area-uniform
# points (float64 [n, 3]) on a surface of that area. A part is a list of
# primitives; an object is a list of (global part id, part).
Primitive = Tuple[float, Callable]


def _box_prim(center, half) -> Primitive:
    a, b, c = half
    return 8 * (a * b + b * c + a * c), \
        lambda rng, n: _box(rng, n, tuple(half), tuple(center))


def _tube_prim(center, r, h, axis=2, top=True, bottom=True) -> Primitive:
    r"""A cylinder of radius :obj:`r` and length :obj:`h` along
    :obj:`axis`, with or without its end caps."""
    areas = [2 * math.pi * r * h, math.pi * r * r * top,
             math.pi * r * r * bottom]

    def sample(rng, n):
        part = _choice(rng, n, areas)
        theta = rng.uniform(0, 2 * math.pi, n)
        rad = np.where(part == 0, r, r * np.sqrt(rng.uniform(0, 1, n)))
        z = np.where(part == 0, rng.uniform(-h / 2, h / 2, n),
                     np.where(part == 1, h / 2, -h / 2))
        p = np.stack([rad * np.cos(theta), rad * np.sin(theta), z], 1)
        p = p[:, [[2, 0, 1], [1, 2, 0], [0, 1, 2]][axis]]
        return p + np.asarray(center)

    return sum(areas), sample


def _frustum_prim(z0, h, r1, r2) -> Primitive:
    r"""The side of a truncated cone about the z-axis from radius :obj:`r1`
    at height :obj:`z0` to :obj:`r2` at :obj:`z0 + h` (a cone if
    :obj:`r2 = 0`)."""
    area = math.pi * (r1 + r2) * math.hypot(h, r1 - r2)

    def sample(rng, n):
        theta = rng.uniform(0, 2 * math.pi, n)
        u = rng.uniform(0, 1, n)
        if math.isclose(r1, r2):
            rad, t = np.full(n, r1), u
        else:  # The density grows with the radius: invert its CDF.
            rad = np.sqrt(r1 * r1 + u * (r2 * r2 - r1 * r1))
            t = (rad - r1) / (r2 - r1)
        return np.stack([rad * np.cos(theta), rad * np.sin(theta),
                         z0 + t * h], 1)

    return area, sample


def _half_torus_prim(center, R, r) -> Primitive:
    r"""The half of a torus in the xz-plane that lies at :obj:`x >=
    center[0]` (a mug handle)."""
    def sample(rng, n):
        u = rng.uniform(-math.pi / 2, math.pi / 2, n)
        # Rejection sampling of the tube angle, as in `_torus`:
        v = np.empty(0)
        while v.size < n:
            cand = rng.uniform(0, 2 * math.pi, 2 * n)
            keep = rng.uniform(0, 1, 2 * n) < (R + r * np.cos(cand)) / (R + r)
            v = np.concatenate([v, cand[keep]])
        w = R + r * np.cos(v[:n])
        p = np.stack([w * np.cos(u), r * np.sin(v[:n]), w * np.sin(u)], 1)
        return p + np.asarray(center)

    return 2 * math.pi ** 2 * R * r, sample


def _rotate_z(prim: Primitive, angle: float) -> Primitive:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    area, sample = prim
    return area, lambda rng, n: sample(rng, n) @ rot.T


# Objects in a canonical frame (z up, about one unit large) with random
# proportions. Several categories have parts side by side at the same
# heights (wings and fuselage, fins and rocket body, arms and chair back,
# handle and mug body, shade and lamp stem), so that the part is not a
# function of the height.


def _table(rng):
    L, W = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.9)
    H, t = rng.uniform(0.5, 1.1), rng.uniform(0.02, 0.06)
    s = rng.uniform(0.03, 0.07)
    inset = rng.uniform(0.0, 0.2) * min(L, W)
    hl = (H - 2 * t) / 2
    legs = [_box_prim((sx * (L - inset - s), sy * (W - inset - s), hl),
                      (s, s, hl)) for sx in (-1, 1) for sy in (-1, 1)]
    return [(0, [_box_prim((0, 0, H - t), (L, W, t))]), (1, legs)]


def _chair(rng):
    w, d = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
    sh, st = rng.uniform(0.35, 0.6), rng.uniform(0.02, 0.06)
    bh, bt = rng.uniform(0.5, 1.0), rng.uniform(0.02, 0.06)
    s, a = rng.uniform(0.02, 0.05), rng.uniform(0.03, 0.07)
    za = sh + st + rng.uniform(0.2, 0.6) * bh  # Armrest height.
    legs = [_box_prim((sx * (w - s), sy * (d - s), (sh - st) / 2),
                      (s, s, (sh - st) / 2))
            for sx in (-1, 1) for sy in (-1, 1)]
    arms = []
    for sx in (-1, 1):
        x = sx * (w - a)
        arms.append(_box_prim((x, bt, za), (a, d - bt, a)))
        hs = (za - sh - st) / 2  # A front support down to the seat.
        arms.append(_box_prim((x, d - a, sh + st + hs), (a, a, hs)))
    return [
        (2, [_box_prim((0, 0, sh), (w, d, st))]),
        (3, [_box_prim((0, -d + bt, sh + st + bh / 2), (w, bt, bh / 2))]),
        (4, legs),
        (5, arms),
    ]


def _lamp(rng):
    rb, hb = rng.uniform(0.25, 0.5), rng.uniform(0.03, 0.1)
    top, rs = rng.uniform(0.8, 1.5), rng.uniform(0.02, 0.05)
    hs = rng.uniform(0.3, 0.8) * top  # The shade hides much of the stem.
    r1 = rng.uniform(0.3, 0.6)
    r2 = rng.uniform(0.3, 0.8) * r1
    z0 = top - hs + rng.uniform(0.0, 0.1)
    return [
        (6, [_frustum_prim(z0, hs, r1, r2)]),
        (7, [_tube_prim((0, 0, (hb + top) / 2), rs, top - hb,
                        bottom=False)]),
        (8, [_tube_prim((0, 0, hb / 2), rb, hb)]),
    ]


def _mug(rng):
    r, h = rng.uniform(0.3, 0.5), rng.uniform(0.6, 1.2)
    R, rt = rng.uniform(0.2, 0.4) * h, rng.uniform(0.03, 0.07)
    zc = rng.uniform(R + 0.05 * h, h - R - 0.05 * h)
    lt = rng.uniform(0.01, 0.04)
    return [
        (9, [_tube_prim((0, 0, h / 2), r, h, top=False)]),
        (10, [_half_torus_prim((r, 0, zc), R, rt)]),
        (11, [_tube_prim((0, 0, h + lt / 2), r * 1.05, lt)]),
    ]


def _airplane(rng):
    lf, rf = rng.uniform(1.6, 2.4), rng.uniform(0.1, 0.2)
    chord, span = rng.uniform(0.12, 0.3), rng.uniform(0.7, 1.3)
    th = rng.uniform(0.01, 0.025)
    # Low, mid or high wing: the wings share the fuselage's heights.
    xw, zw = rng.uniform(-0.15, 0.15) * lf, rng.uniform(-0.7, 0.7) * rf
    c, fh = rng.uniform(0.08, 0.18), rng.uniform(0.15, 0.35)
    xt = -lf / 2 + c
    zs = rng.uniform(-0.5, 1.0) * rf
    tail = [_box_prim((xt, 0, rf + fh / 2 - 0.02), (c, th, fh / 2)),
            _box_prim((xt, 0, zs), (c, rng.uniform(0.2, 0.45), th))]
    return [
        (12, [_tube_prim((0, 0, 0), rf, lf, axis=0)]),
        (13, [_box_prim((xw, 0, zw), (chord, span, th))]),
        (14, tail),
    ]


def _rocket(rng):
    r, h = rng.uniform(0.12, 0.22), rng.uniform(1.2, 2.0)
    hn = rng.uniform(0.25, 0.6)
    nf = int(rng.integers(3, 5))
    fh, fl = rng.uniform(0.2, 0.45) * h, rng.uniform(0.12, 0.3)
    zf, th = rng.uniform(0.0, 0.15) * h + fh / 2, rng.uniform(0.01, 0.02)
    phase = rng.uniform(0, 2 * math.pi)
    fins = [_rotate_z(_box_prim((r + fl / 2, 0, zf), (fl / 2, th, fh / 2)),
                      phase + 2 * math.pi * k / nf) for k in range(nf)]
    return [
        (15, [_tube_prim((0, 0, h / 2), r, h, top=False)]),
        (16, fins),
        (17, [_frustum_prim(h, hn, r, 0.0)]),
    ]


OBJECTS = {
    'table': _table,
    'chair': _chair,
    'lamp': _lamp,
    'mug': _mug,
    'airplane': _airplane,
    'rocket': _rocket,
}

PART_NAMES = [
    'table_top', 'table_legs', 'chair_seat', 'chair_back', 'chair_legs',
    'chair_arms', 'lamp_shade', 'lamp_stem', 'lamp_base', 'mug_body',
    'mug_handle', 'mug_lid', 'airplane_fuselage', 'airplane_wings',
    'airplane_tail', 'rocket_body', 'rocket_fins', 'rocket_nose'
]


def _allocate(areas: List[float], n: int) -> np.ndarray:
    r"""Splits :obj:`n` points over parts in proportion to their areas
    (largest remainders), at least one per part."""
    q = np.asarray(areas, dtype=np.float64)
    q = q / q.sum() * n
    k = np.floor(q).astype(np.int64)
    k[np.argsort(k - q, kind='stable')[:n - int(k.sum())]] += 1
    for i in np.flatnonzero(k == 0):  # Tiny parts still appear.
        k[np.argmax(k)] -= 1
        k[i] = 1
    return k


def sample_object(
    category: int,
    num_points: int,
    rng: np.random.Generator,
    noise_range: tuple = (0.0, 0.01),
) -> Tuple[np.ndarray, np.ndarray]:
    r"""Samples one object of :obj:`list(OBJECTS)[category]` and returns its
    points (float32 :obj:`[num_points, 3]`, in random order) and their
    global part ids (int64 :obj:`[num_points]`): random proportions,
    area-uniform points (the number per part in proportion to the part's
    area), a random rotation about the z-axis, Gaussian noise, then
    centering and scaling into the unit sphere."""
    parts = list(OBJECTS.values())[category](rng)
    areas = [sum(a for a, _ in prims) for _, prims in parts]
    pos, y = [], []
    for (pid, prims), k in zip(parts, _allocate(areas, num_points)):
        counts = rng.multinomial(k, np.array([a for a, _ in prims]) /
                                 sum(a for a, _ in prims))
        pos += [fn(rng, int(m)) for (_, fn), m in zip(prims, counts)]
        y.append(np.full(k, pid, dtype=np.int64))
    pos, y = np.concatenate(pos), np.concatenate(y)
    perm = rng.permutation(num_points)  # The order tells nothing.
    pos, y = pos[perm], y[perm]

    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    pos = pos @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T

    scale = np.linalg.norm(pos - pos.mean(0), axis=1).max()
    pos = pos + rng.normal(0, rng.uniform(*noise_range), pos.shape) * scale
    pos = pos - pos.mean(0)
    pos = pos / np.linalg.norm(pos, axis=1).max()
    return pos.astype(np.float32), y


class SyntheticParts(GeneratedDataset):
    r"""A deterministic synthetic part-segmentation dataset of parametric
    objects assembled from labelled parts, which needs no download: the
    embedded counterpart of ShapeNet part (see :class:`ShapeNetPart`) for
    quick experiments and tests.

    Categories and their parts (global part ids, like ShapeNet part's 50):
    :obj:`table` (top 0, legs 1), :obj:`chair` (seat 2, back 3, legs 4,
    arms 5), :obj:`lamp` (shade 6, stem 7, base 8), :obj:`mug` (body 9,
    handle 10, lid 11), :obj:`airplane` (fuselage 12, wings 13, tail 14) and
    :obj:`rocket` (body 15, fins 16, nose 17); see :obj:`PARTS` and
    :obj:`PART_NAMES`.
    Every object has random proportions (sizes, thicknesses, and the
    heights of wings, armrests, handles, fins and shades), and its points are
    sampled area-uniformly on its parts' surfaces (the number of points of
    a part in proportion to its area, at least one, exactly
    :obj:`num_points` in all), in random order. It is then rotated randomly
    about the up (z) axis, perturbed by Gaussian noise (standard deviation
    up to 1% of its radius), centered and scaled so that its farthest point
    has radius one.
    Parts are not separable by height alone: wings and fuselage, fins and
    rocket body, armrests and chair back, handle and mug body, shade and
    lamp stem lie at the same heights (the best height-only classifier per
    category labels about 80% of the points correctly, see the tests).

    Every example :obj:`i` of category :obj:`c` is drawn from its own
    :class:`numpy.random.Generator` seeded by :obj:`(seed, split, c, i)`,
    so the same arguments always give bit-identical data, the training and
    test sets come from different random streams, and no global random
    state is used or changed.

    Each :class:`~torch_geometric.data.Data` object holds :obj:`pos`
    (float32 :obj:`[num_points, 3]`), :obj:`y` (long :obj:`[num_points]`,
    the global part id of each point), :obj:`category` (long :obj:`[1]`)
    and :obj:`x=None`.

    Args:
        root (str, optional): If given, the processed dataset is cached in
            :obj:`root/processed`; if :obj:`None`, it is generated in memory
            and nothing is written to disk. (default: :obj:`None`)
        train (bool, optional): If :obj:`True`, loads the training set,
            otherwise the test set. (default: :obj:`True`)
        num_per_category (int, optional): The number of objects per
            category. (default: :obj:`80` for training, :obj:`20` for test)
        num_points (int, optional): The number of points per object (at
            least the largest number of parts of a category).
            (default: :obj:`1024`)
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

    CATEGORIES: List[str] = list(OBJECTS)
    PARTS: Dict[str, List[int]] = {
        'table': [0, 1],
        'chair': [2, 3, 4, 5],
        'lamp': [6, 7, 8],
        'mug': [9, 10, 11],
        'airplane': [12, 13, 14],
        'rocket': [15, 16, 17],
    }
    PART_NAMES: List[str] = PART_NAMES
    num_parts: int = len(PART_NAMES)

    def __init__(
        self,
        root: Optional[str] = None,
        train: bool = True,
        num_per_category: Optional[int] = None,
        num_points: int = 1024,
        seed: int = 0,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        if num_per_category is None:
            num_per_category = 80 if train else 20
        if num_per_category < 1:
            raise ValueError(f"'num_per_category' must be positive (got "
                             f"{num_per_category})")
        most = max(len(p) for p in self.PARTS.values())
        if num_points < most:
            raise ValueError(f"'num_points' must be at least {most} (one "
                             f"point per part; got {num_points})")
        self.num_per_category = num_per_category
        self.num_points = num_points
        super().__init__(root, train, seed, transform, pre_transform,
                         force_reload, log)

    @property
    def num_groups(self) -> int:
        return len(self.CATEGORIES)

    @property
    def num_per_group(self) -> int:
        return self.num_per_category

    @property
    def processed_file_names(self) -> List[str]:
        split = 'train' if self.train else 'test'
        return [f'parts_{split}_n{self.num_per_category}_'
                f'p{self.num_points}_s{self.seed}.pt']

    @property
    def num_classes(self) -> int:
        r"""The number of part labels."""
        return self.num_parts

    def sample(self, group: int, rng: np.random.Generator) -> Data:
        pos, y = sample_object(group, self.num_points, rng)
        return Data(pos=torch.from_numpy(pos), y=torch.from_numpy(y),
                    category=torch.tensor([group], dtype=torch.long))
