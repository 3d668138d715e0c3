"""Shipped tunable kernels and their registry.

>>> from perfpred.collect.kernels import KERNELS, get_kernel   # doctest: +SKIP
>>> get_kernel("sgemm").space()                                 # doctest: +SKIP

CPU (C, compiled with gcc and run through Kernel Tuner's C backend): ``sgemm`` (blocked
SGEMM: tile sizes, loop order, unroll, SSE2/AVX2 and threads) and ``jacobi2d`` (a
memory-bound 5-point stencil: tile sizes, unroll, ISA, threads). GPU: ``matmul_cuda`` (a
CUDA kernel through Kernel Tuner) and ``matmul_triton`` (a Triton matmul); both need a
CUDA GPU and their optional packages.
"""

from perfpred.collect.kernels._registry import (
    CPU_KERNELS,
    JACOBI2D,
    KERNEL_DIR,
    KERNELS,
    LANGS,
    MATMUL_CUDA,
    MATMUL_TRITON,
    SGEMM,
    KernelSpec,
    eval_rule,
    get_kernel,
    problem_label,
    space_size,
    tolerance_check,
)

__all__ = [
    "CPU_KERNELS",
    "JACOBI2D",
    "KERNELS",
    "KERNEL_DIR",
    "LANGS",
    "MATMUL_CUDA",
    "MATMUL_TRITON",
    "SGEMM",
    "KernelSpec",
    "eval_rule",
    "get_kernel",
    "problem_label",
    "space_size",
    "tolerance_check",
]
