r"""Binary (1-bit) point-cloud networks for PyTorch Geometric."""
import warnings

# PyG 2.8 says it ignores torch-cluster (it wants pyg-lib); we call
# torch-cluster ourselves, so the warning is noise for our users.
warnings.filterwarnings('ignore', message='.*torch[-_]cluster.*',
                        category=DeprecationWarning)

from . import nn  # noqa: E402
from .conversion import BinarizeReport, binarize  # noqa: E402

__version__ = '0.1.0'

__all__ = ['nn', 'binarize', 'BinarizeReport', '__version__']
