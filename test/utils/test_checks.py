r"""utils.check_points: the input checks of the models."""
import pytest
import torch

from torch_geometric_binary.utils import check_points


def test_finite_points_pass_even_where_their_sum_overflows():
    check_points(torch.randn(100, 3))
    huge = torch.full((4, 3), 3e38)  # Finite; the sum is inf.
    assert not bool(huge.sum().isfinite())
    check_points(huge)
    check_points(torch.full((4, 3), 60000., dtype=torch.float16))


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_points_are_named(bad):
    pos = torch.randn(50, 3)
    pos[17, 2] = bad
    pos[30, 0] = bad
    with pytest.raises(ValueError, match=r"'pos' has 2 point\(s\) with NaN "
                                         r"or Inf coordinates \(first at row "
                                         r"17\)"):
        check_points(pos, where='M')
    # A NaN and an infinity that would cancel to a finite sum cannot: the
    # sum is NaN.
    pos = torch.zeros(4, 3)
    pos[0, 0], pos[1, 0] = float('inf'), -float('inf')
    with pytest.raises(ValueError, match='NaN or Inf'):
        check_points(pos)


def test_shapes_and_batch_are_checked():
    with pytest.raises(ValueError, match='holds no points'):
        check_points(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r'\[num_points, dims\]'):
        check_points(torch.zeros(3))
    with pytest.raises(ValueError, match="'batch' has 2 entries"):
        check_points(torch.zeros(3, 3), batch=torch.zeros(2, dtype=torch.long))
