r"""The registry of packed module types that
:func:`~torch_geometric_binary.deploy.save` and
:func:`~torch_geometric_binary.deploy.load` know.

Each packed module class converts itself, in the style of Keras'
:obj:`get_config` / :obj:`from_config`;
:mod:`~torch_geometric_binary.deploy.io` only walks the module tree. A class
decorated with :func:`register_packed` is stored under its class name (the
:obj:`"type"` of its node in a file) and implements

* :obj:`packed_config(self, add) -> (attrs, tensors, children)`:
  :obj:`attrs` is JSON-serializable plain data; :obj:`tensors` maps names
  to the index :obj:`add(tensor, kind)` returns (:obj:`kind` one of
  :obj:`io.KINDS`: :obj:`"binary_weights"`, :obj:`"thresholds"`,
  :obj:`"epilogues"`, :obj:`"fp_weights"`, :obj:`"fp_norms"`;
  :obj:`add(None, kind)` returns :obj:`None`); :obj:`children` maps names
  to child modules (or :obj:`None`, or a :class:`torch.nn.ModuleList`),
  exported after the tensors, in their order;
* the classmethod :obj:`from_packed_config(cls, attrs, tensors, children)`,
  which rebuilds the module from the same :obj:`attrs`, the tensors by name
  (a :class:`~torch.Tensor` or :obj:`None`) and the children already
  rebuilt.

The names, attributes, tensor names and the order of the :obj:`add` calls
*are* the file format: changing them breaks files already written. The
package's classes register when :mod:`torch_geometric_binary.deploy` is
imported (which importing any of its modules does first).

Activations (stateless) are stored as a name and their arguments (see
:mod:`~torch_geometric_binary.deploy.activations`).
"""
import inspect
from typing import Any, Callable, Dict, Optional, Set, Tuple

import torch
from torch import Tensor

#: The packed module classes by name.
PACKED_TYPES: Dict[str, type] = {}

#: :obj:`add(tensor_or_None, kind)`: stores a tensor, returns its index.
AddTensor = Callable[[Optional[Tensor], str], Optional[int]]
#: What :obj:`packed_config` returns: :obj:`(attrs, tensors, children)`.
PackedConfig = Tuple[Dict[str, Any], Dict[str, Optional[int]],
                     Dict[str, Optional[torch.nn.Module]]]

#: The tensor types a file may hold, by name (as :func:`dtype_name`).
DTYPES: Dict[str, torch.dtype] = {str(t).split('.')[-1]: t for t in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
    torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}


def dtype_name(dtype: torch.dtype) -> str:
    r"""The name a file stores for :obj:`dtype` (:obj:`"float32"`)."""
    return str(dtype).split('.')[-1]


def register_packed(cls: type) -> type:
    r"""Class decorator: registers a packed module class (see the module
    documentation) under its class name."""
    name = cls.__name__
    if name in PACKED_TYPES:
        raise ValueError(f"register_packed: a packed type named '{name}' "
                         f"is already registered "
                         f"({PACKED_TYPES[name].__module__}.{name})")
    for method in ('packed_config', 'from_packed_config'):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"register_packed: {name} has no '{method}'")
    PACKED_TYPES[name] = cls
    return cls


def is_packed(module: Any) -> bool:
    r"""Whether :obj:`module` is an instance of a registered class itself
    (a subclass converts only if it is registered too)."""
    return PACKED_TYPES.get(type(module).__name__) is type(module)


# --------------------------------------------------------------------------
# Converters: trained module class -> function that packs an instance.

#: :obj:`convert(module, fp_dtype, epilogue_dtype, num_points)` by the
#: trained class it packs (see :func:`converter`).
Converter = Callable[..., torch.nn.Module]
CONVERTERS: Dict[type, Converter] = {}
#: The classes whose converters pack them only as parts of a model
#: (full-precision layers, normalizations): :func:`pack` refuses them alone.
PART_ONLY: Set[type] = set()
_TAKES_WHERE: Dict[Converter, bool] = {}


def converter(*trained: type, part_only: bool = False
              ) -> Callable[[Converter], Converter]:
    r"""Decorator: registers a function as the converter that
    :func:`~torch_geometric_binary.deploy.pack` calls for instances of the
    :obj:`trained` classes (and their subclasses, unless they have their
    own), as :obj:`convert(module, fp_dtype, epilogue_dtype, num_points)`,
    with :obj:`where=` the module's path in the model (for error messages)
    if the function takes a :obj:`where` argument.

    :func:`pack` calls it for a whole model of that class, and for every
    submodule of that class when it packs a model without a converter of its
    own module by module (see :mod:`~torch_geometric_binary.deploy.generic`);
    with :obj:`part_only`, only for submodules (a full-precision layer alone
    is no binary model).
    """
    def register(fn: Converter) -> Converter:
        for cls in trained:
            if cls in CONVERTERS:
                raise ValueError(f"converter: {cls.__qualname__} already has "
                                 f"a converter ({CONVERTERS[cls].__name__})")
            CONVERTERS[cls] = fn
            if part_only:
                PART_ONLY.add(cls)
        return fn
    return register


def converter_for(module: torch.nn.Module) -> Optional[Converter]:
    r"""The converter of the nearest class of :obj:`module` that has one,
    or :obj:`None`."""
    for cls in type(module).__mro__:
        fn = CONVERTERS.get(cls)
        if fn is not None:
            return fn
    return None


def is_part_only(module: torch.nn.Module) -> bool:
    r"""Whether the nearest class of :obj:`module` with a converter was
    registered with :obj:`part_only`."""
    for cls in type(module).__mro__:
        if cls in CONVERTERS:
            return cls in PART_ONLY
    return False


def run_converter(fn: Converter, module: torch.nn.Module,
                  fp_dtype: torch.dtype, epilogue_dtype: torch.dtype,
                  num_points: Optional[int], where: str) -> torch.nn.Module:
    r"""Calls the converter :obj:`fn` (with :obj:`where=` if it takes it)."""
    takes = _TAKES_WHERE.get(fn)
    if takes is None:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        takes = _TAKES_WHERE[fn] = 'where' in params
    if takes:
        return fn(module, fp_dtype, epilogue_dtype, num_points, where=where)
    return fn(module, fp_dtype, epilogue_dtype, num_points)
