from torch_geometric.nn.conv import MessagePassing


class OwnPropagate:
    r"""A mixin for subclasses of PyG's message-passing layers: gives every
    subclass its own :meth:`propagate` slot.

    PyG compiles :meth:`propagate` per class on first instantiation and
    stores it on that class, keeping the class's previous
    :obj:`propagate` as the one explanations run. A subclass instantiated
    after its PyG parent inherits the parent's compiled version and would
    keep *that* as its "original", so :class:`torch_geometric.explain`
    masks got no gradient ("Could not compute gradients for edges") once
    an :class:`EdgeConv` or :class:`PointNetConv` had been built in the
    process."""
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if 'propagate' not in cls.__dict__:
            cls.propagate = MessagePassing.propagate
