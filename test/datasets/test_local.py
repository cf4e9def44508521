import os.path as osp

import numpy as np
import pytest

from torch_geometric_binary.datasets.local import (LocalDataset, load_npy,
                                                   natural_key, read_lines)


class Toy(LocalDataset):
    NAME = 'Toy'
    LAYOUTS = {'a': "'a.txt'", 'b': "'b.txt'"}

    @staticmethod
    def match_layout(folder):
        for layout in ('a', 'b'):
            if osp.isfile(osp.join(folder, f'{layout}.txt')):
                return layout
        return None


def test_detect_layout_in_root_then_sub_folders(tmp_path):
    (tmp_path / 'z').mkdir()
    (tmp_path / 'z' / 'a.txt').write_text('')
    (tmp_path / 'y').mkdir()
    (tmp_path / 'y' / 'b.txt').write_text('')
    (tmp_path / '.hidden').mkdir()
    (tmp_path / '.hidden' / 'a.txt').write_text('')
    # Sub-folders by name: 'y' before 'z'; hidden ones are skipped.
    assert Toy.detect_layout(str(tmp_path)) == ('b', str(tmp_path / 'y'))
    (tmp_path / 'a.txt').write_text('')
    assert Toy.detect_layout(str(tmp_path)) == ('a', str(tmp_path))


def test_detect_layout_errors_name_the_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="Toy root folder .* does "
                       "not exist .*'a.txt'"):
        Toy.detect_layout(str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match="Could not find Toy data "
                       "in .*a: 'a.txt'; b: 'b.txt'"):
        Toy.detect_layout(str(tmp_path))


def test_helpers(tmp_path):
    assert sorted(['s10', 's2', 's1'], key=natural_key) == ['s1', 's2', 's10']
    (tmp_path / 'l.txt').write_text(' x \n\n y\n')
    assert read_lines(str(tmp_path / 'l.txt')) == ['x', 'y']
    np.save(tmp_path / 'p.npy', np.ones((2, 3)))
    assert load_npy(str(tmp_path / 'p.npy')).shape == (2, 3)
    (tmp_path / 'e.npy').write_bytes(b'')
    with pytest.raises(ValueError, match=r"e\.npy' is empty"):
        load_npy(str(tmp_path / 'e.npy'))
