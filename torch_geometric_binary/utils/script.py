class NotScriptable:
    r"""A mixin for modules that TorchScript cannot compile (straight-through
    autograd functions, C++ kernels behind Python checks): a clear error
    from :func:`torch.jit.script` (which PyTorch deprecates) instead of a
    compiler error deep inside it."""
    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"torch.jit.script: {type(self).__name__} does not support "
            f"TorchScript (deprecated by PyTorch); use torch.compile, "
            f"torch.export, or torch_geometric_binary.deploy.pack for "
            f"packed inference")
