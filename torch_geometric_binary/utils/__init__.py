from .checks import check_points
from .state import batch_statistics
from .script import NotScriptable

__all__ = ['check_points', 'batch_statistics', 'NotScriptable']
