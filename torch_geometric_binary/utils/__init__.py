from .checks import check_points
from .state import batch_statistics

__all__ = ['check_points', 'batch_statistics']
