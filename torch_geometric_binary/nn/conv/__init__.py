from .point_conv import BiPointConv
from .edge_conv import BiEdgeConv, BiDynamicEdgeConv

__all__ = ['BiPointConv', 'BiEdgeConv', 'BiDynamicEdgeConv']
