import os
import sys

from setuptools import find_packages, setup


__version__ = '0.1.0'

install_requires = [
    'torch>=2.4',
    'torch-geometric>=2.6',
    'torch-cluster>=1.6',
    'numpy',
    'tqdm',
    'h5py',
]

extras_require = {
    'scatter': ['torch-scatter'],
    'plot': ['matplotlib'],
    'test': ['pytest'],
}



def extension_build():
    r"""The C++ extensions, XNOR-popcount kernels (``torch_geometric_binary.
    deploy._xnor``), graph construction (``torch_geometric_binary._graph``)
    and training kernels (``torch_geometric_binary._fused``),
    built when ``import torch`` works here (install with
    ``--no-build-isolation``) unless ``TORCH_GEOMETRIC_BINARY_NO_EXT`` is set.
    Without them the package uses its pure-PyTorch kernels and
    torch_cluster."""
    if os.environ.get('TORCH_GEOMETRIC_BINARY_NO_EXT'):
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}

    if sys.platform == 'win32':
        cflags, lflags = ['/O2', '/openmp'], []
    elif sys.platform == 'darwin':  # Apple clang has no -fopenmp.
        cflags, lflags = ['-O3'], []
    else:
        cflags, lflags = ['-O3', '-g0', '-fopenmp'], ['-fopenmp']
    csrc = 'torch_geometric_binary/deploy/csrc'
    ext = CppExtension(
        'torch_geometric_binary.deploy._xnor',
        [f'{csrc}/xnor_{f}.cpp' for f in
         ('pack', 'gemm', 'chain', 'register')],
        depends=[f'{csrc}/{f}' for f in
                 ('xnor.h', 'xnor_ops.h', 'xnor_chain.h', 'xnor_kernels.h',
                  'xnor_driver.inc', 'xnor_scalar.inc',
                  'xnor_kernels_x86.inc', 'xnor_kernels_neon.inc')],
        extra_compile_args=cflags,
        extra_link_args=lflags,
    )
    # Graph construction (fps, radius, knn; torch_geometric_binary._graph).
    # No fused multiply-add: its results must round as torch_cluster's do.
    no_fma_cflags = cflags if sys.platform == 'win32' else \
        cflags + ['-ffp-contract=off']
    graph = CppExtension(
        'torch_geometric_binary._graph',
        ['torch_geometric_binary/csrc/graph.cpp'],
        extra_compile_args=no_fma_cflags,
        extra_link_args=lflags,
    )
    # Training kernels (sign, STE, fused layer-BatchNorm-max, RPReLU;
    # torch_geometric_binary._fused). No fused multiply-add either: its
    # elementwise kernels must give the bits of the PyTorch forms. Without
    # trapping math, GCC vectorizes their selects between two products.
    fused_cflags = no_fma_cflags if sys.platform == 'win32' else \
        no_fma_cflags + ['-fno-trapping-math']
    fused = CppExtension(
        'torch_geometric_binary._fused',
        ['torch_geometric_binary/csrc/fused.cpp'],
        extra_compile_args=fused_cflags,
        extra_link_args=lflags,
    )
    return [ext, graph, fused], {
        'build_ext': BuildExtension.with_options(use_ninja=False)
    }


ext_modules, cmdclass = extension_build()

setup(
    name='torch_geometric_binary',
    version=__version__,
    description='Binary (1-bit) point-cloud networks for PyTorch Geometric '
    '(BiPointNet: EMA and LSR), with bit-packed inference',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    install_requires=install_requires,
    extras_require=extras_require,
    packages=find_packages(include=['torch_geometric_binary',
                                    'torch_geometric_binary.*']),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
