from .checks import check_points

__all__ = ['check_points']
