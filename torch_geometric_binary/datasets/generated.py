from typing import Callable, List, Optional

import numpy as np
from torch_geometric.data import Data, InMemoryDataset


class GeneratedDataset(InMemoryDataset):
    r"""Base of the embedded synthetic data sets, which need no download.

    Example :obj:`i` of group :obj:`g` (a class or a category) is drawn by
    :meth:`sample` from its own :class:`numpy.random.Generator` seeded by
    :obj:`(seed, split, g, i)`: the same arguments always give bit-identical
    data, the training and test sets come from different random streams,
    and no global random state is used or changed. The set is kept in
    memory, or cached in :obj:`root/processed` when :obj:`root` is given.

    A subclass sets its own attributes, then calls :meth:`__init__`, and
    defines :obj:`num_groups`, :obj:`num_per_group`, :meth:`sample` and
    :obj:`processed_file_names`.
    """
    num_groups: int
    num_per_group: int

    def __init__(self, root: Optional[str], train: bool, seed: int,
                 transform: Optional[Callable],
                 pre_transform: Optional[Callable], force_reload: bool,
                 log: bool) -> None:
        if seed < 0:
            raise ValueError(f"'seed' must be non-negative (got {seed})")
        self.train = train
        self.seed = seed
        self._cached = root is not None

        super().__init__(root, transform, pre_transform, log=log,
                         force_reload=force_reload)

        if self._cached:
            self.load(self.processed_paths[0])
        else:
            self.data, self.slices = self.collate(self._generate())

    def sample(self, group: int, rng: np.random.Generator) -> Data:
        r"""One example of :obj:`group`, drawn from :obj:`rng` only."""
        raise NotImplementedError

    @property
    def has_process(self) -> bool:
        return self._cached

    @property
    def raw_file_names(self) -> List[str]:
        return []

    def _generate(self) -> List[Data]:
        split = 0 if self.train else 1
        data_list = []
        for group in range(self.num_groups):
            for i in range(self.num_per_group):
                rng = np.random.default_rng([self.seed, split, group, i])
                data = self.sample(group, rng)
                if self.pre_transform is not None:
                    data = self.pre_transform(data)
                data_list.append(data)
        return data_list

    def process(self) -> None:
        self.save(self._generate(), self.processed_paths[0])

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)})'
