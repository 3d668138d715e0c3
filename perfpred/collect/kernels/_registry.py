"""What a tunable kernel is: source, tune parameters, restrictions, problem sizes, reference.

A :class:`KernelSpec` holds everything needed to compile, check and time one kernel for
any configuration of its parameters, in the vocabulary of Kernel Tuner: ``tune_params``
(parameter -> domain), ``restrictions`` (strings of the parameter names), an argument list
of numpy arrays and scalars, and an ``answer`` list (the numpy reference; ``None`` for
arguments that are not checked). Tune parameters reach the source as ``#define``s, the way
Kernel Tuner injects them, so every shipped kernel also runs unchanged under
``kernel_tuner.tune_kernel`` (see :meth:`KernelSpec.kernel_tuner_args`).

Restrictions are plain expressions such as ``"block_m * block_k <= 65536"``: the same string
works in Kernel Tuner, here (Python ``eval`` over the parameter values, with no builtins),
and in pandas ``DataFrame.eval`` (perfpred's tuner rewrites ``and/or/not`` to ``&, |, ~``).
Problem-size rules (``"n % 8 == 0"``) are expressions of the problem-size names.

Every callable a spec holds is a module-level function, so a spec pickles by reference
and can be sent to the child process that compiles and runs the kernel.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from perfpred.datasets._schema import python_scalar
from perfpred.errors import DeviceNotFoundError, InvalidInputError, MissingDependencyError

KERNEL_DIR = Path(__file__).resolve().parent
LANGS = ("C", "CUDA", "triton")
# Functions a restriction or problem rule may call (Kernel Tuner's restriction strings allow them too).
_RULE_FUNCTIONS: dict[str, Any] = {"min": min, "max": max, "abs": abs}

Problem = Mapping[str, int]
Arguments = list[Any]


def _rule_names(expr: str) -> set[str]:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise InvalidInputError(f"rule {expr!r} is not a valid Python expression: {exc.msg}") from None
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} - set(_RULE_FUNCTIONS)


@lru_cache(maxsize=512)
def _compiled_rule(expr: str) -> Any:
    return compile(expr, "<rule>", "eval")


def eval_rule(expr: str, values: Mapping[str, Any]) -> bool:
    """Evaluate a restriction / problem rule over ``values`` with no builtins but min/max/abs."""
    return bool(eval(_compiled_rule(expr), {"__builtins__": {}, **_RULE_FUNCTIONS}, dict(values)))


@lru_cache(maxsize=64)
def _read_source(file_name: str) -> str:
    return (KERNEL_DIR / file_name).read_text(encoding="utf-8")


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """One tunable kernel.

    Attributes:
        name: registry name; also the ``kernel_name`` recorded in each Measurement.
        function: the kernel's function name in the source.
        lang: "C" (compiled with ``compiler``, timed on the CPU), "CUDA" (through Kernel
            Tuner's CUDA backend) or "triton".
        tune_params: parameter -> tuple of allowed values (Kernel Tuner's ``tune_params``).
        restrictions: expressions of the parameter names that a valid config satisfies.
        problem_keys: names of the problem-size dimensions, in order.
        default_problem_size: size for real measurements (a good config runs tens of ms).
        test_problem_size: tiny size for unit tests (well under a millisecond).
        problem_rules: expressions of the problem-size names that a valid size satisfies.
        arguments: ``(problem, rng) -> argument list`` (numpy arrays and numpy scalars).
        reference: ``(arguments, problem) -> answer list`` computed from pristine arguments.
        flops: floating-point operations of one run, for a problem size.
        bytes_moved: bytes a run must move to and from memory at least (compulsory traffic).
        source_file: file of the source inside ``perfpred/collect/kernels``; or
        source_text: the source itself (test-only kernels).
        rtol, atol: tolerance of the check against the reference (``|out - ref| <= atol + rtol |ref|``).
        compiler, compiler_flags: C only; the flags are the same for every config (the ISA is
            chosen in the source), which keeps the source usable with Kernel Tuner as is.
        threads_param: the tune parameter that sets the CPU thread count (for the peaks).
        block_size_names, grid_div: CUDA only: Kernel Tuner's thread-block parameter names and
            grid divisors (x, y, z); ``kt_problem_size`` maps a problem size to Kernel Tuner's.
        element_dtype: the element type of the data when it is not fp32 ("fp16", ...), recorded
            as ``workload.dtype`` so features size tiles in bytes right; None (fp32) adds nothing,
            which keeps the measurement ids of fp32 kernels as they were.
        description: one line for listings.
    """

    name: str
    function: str
    lang: str
    tune_params: Mapping[str, tuple[Any, ...]]
    restrictions: tuple[str, ...]
    problem_keys: tuple[str, ...]
    default_problem_size: Mapping[str, int]
    test_problem_size: Mapping[str, int]
    problem_rules: tuple[str, ...]
    arguments: Callable[[Problem, np.random.Generator], Arguments]
    reference: Callable[[Arguments, Problem], list[Any]]
    flops: Callable[[Problem], float]
    bytes_moved: Callable[[Problem], float]
    source_file: str | None = None
    source_text: str | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    compiler: str = "gcc"
    compiler_flags: tuple[str, ...] = ("-O3", "-fopenmp", "-fPIC")
    threads_param: str | None = None
    block_size_names: tuple[str, ...] | None = None
    grid_div: tuple[tuple[str, ...] | None, tuple[str, ...] | None, tuple[str, ...] | None] = (None, None, None)
    kt_problem_size: Callable[[Problem], tuple[int, ...]] | None = None
    element_dtype: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.lang not in LANGS:
            raise InvalidInputError(f"`lang` must be one of {LANGS}, but got lang={self.lang!r} (kernel {self.name!r})")
        if (self.source_file is None) == (self.source_text is None):
            raise InvalidInputError(f"kernel {self.name!r} needs exactly one of source_file and source_text")
        if not self.tune_params:
            raise InvalidInputError(f"kernel {self.name!r} needs at least one tune parameter")
        for param, domain in self.tune_params.items():
            if not param.isidentifier():
                raise InvalidInputError(f"tune parameter names must be identifiers, but got {param!r}")
            if not isinstance(domain, tuple) or not domain:
                raise InvalidInputError(
                    f"tune parameter {param!r} needs a non-empty tuple of values, but got {domain!r}")
        for rule in self.restrictions:
            unknown = _rule_names(rule) - set(self.tune_params)
            if unknown:
                raise InvalidInputError(f"restriction {rule!r} of kernel {self.name!r} names unknown parameter(s) "
                                        f"{sorted(unknown)}; known: {sorted(self.tune_params)}")
        for rule in self.problem_rules:
            unknown = _rule_names(rule) - set(self.problem_keys)
            if unknown:
                raise InvalidInputError(f"problem rule {rule!r} of kernel {self.name!r} names unknown size(s) "
                                        f"{sorted(unknown)}; known: {list(self.problem_keys)}")
        for size in (self.default_problem_size, self.test_problem_size):
            self.check_problem_size(size)
        if self.threads_param is not None and self.threads_param not in self.tune_params:
            raise InvalidInputError(f"`threads_param` {self.threads_param!r} is not a tune parameter of {self.name!r}")

    # ------------------------------------------------------------------ source

    def source_code(self) -> str:
        return self.source_text if self.source_text is not None else _read_source(self.source_file)  # type: ignore[arg-type]

    def source_sha(self) -> str:
        """Short content hash of the source: part of each Measurement's workload, so an edited
        kernel never resumes onto rows of the old one."""
        return hashlib.sha256(self.source_code().encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ the space

    def space(self) -> dict[str, list[Any]]:
        return {param: list(domain) for param, domain in self.tune_params.items()}

    def satisfies(self, params: Mapping[str, Any]) -> bool:
        return all(eval_rule(rule, params) for rule in self.restrictions)

    def configs(self) -> Iterator[dict[str, Any]]:
        """Every valid config (the cartesian product filtered by the restrictions), in a stable order."""
        names = list(self.tune_params)
        for values in itertools.product(*self.tune_params.values()):
            params = dict(zip(names, values, strict=True))
            if self.satisfies(params):
                yield params

    def canonical_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with each value replaced by the equal value of its domain (numpy -> Python)."""
        out = {}
        for name, value in params.items():
            value = python_scalar(value)
            for allowed in self.tune_params.get(name, ()):
                if value == allowed and isinstance(value, bool) == isinstance(allowed, bool) and (
                        isinstance(value, str) == isinstance(allowed, str)):
                    value = allowed
                    break
            out[name] = value
        return out

    def accepts(self, name: str, value: Any) -> bool:
        """Whether ``value`` is one of parameter ``name``'s values (a bool or a string only as its own kind)."""
        return any(value == allowed and isinstance(value, bool) == isinstance(allowed, bool)
                   and isinstance(value, str) == isinstance(allowed, str) for allowed in self.tune_params[name])

    def check_params(self, params: Mapping[str, Any]) -> None:
        """One-line InvalidInputError for unknown, missing, out-of-domain or restricted values."""
        if not isinstance(params, Mapping):
            raise InvalidInputError(f"a config of kernel {self.name!r} must be a dict of {list(self.tune_params)}, "
                                    f"but got {type(params).__name__}")
        unknown = sorted(set(params) - set(self.tune_params))
        if unknown:
            raise InvalidInputError(f"unknown parameter(s) {unknown} for kernel {self.name!r}; "
                                    f"known: {list(self.tune_params)}")
        missing = [p for p in self.tune_params if p not in params]
        if missing:
            raise InvalidInputError(f"kernel {self.name!r} needs a value for every tune parameter, "
                                    f"but {missing} are missing")
        for name, domain in self.tune_params.items():
            value = params[name]
            if not self.accepts(name, value):
                raise InvalidInputError(f"`{name}` must be one of {list(domain)} for kernel {self.name!r}, "
                                        f"but got {name}={value!r}")
        for rule in self.restrictions:
            if not eval_rule(rule, params):
                used = ", ".join(f"{n}={params[n]!r}" for n in self.tune_params if n in _rule_names(rule))
                raise InvalidInputError(f"restriction `{rule}` of kernel {self.name!r} must hold, but got {used}")

    def parse_problem_size(self, text: str) -> dict[str, int] | None:
        """A problem size as typed on the command line: '' -> None (the default size),
        'test' -> the tiny test size, 'm=512,n=512,k=512' -> that size (checked later)."""
        if not text:
            return None
        if text == "test":
            return dict(self.test_problem_size)
        size = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise InvalidInputError(f"kernel problem size must look like m=512,n=512 (or 'test'), but got {text!r}")
            size[key.strip()] = int(value)
        return size

    def check_problem_size(self, problem: Mapping[str, Any]) -> None:
        if not isinstance(problem, Mapping):
            raise InvalidInputError(f"a problem size of kernel {self.name!r} must be a dict of "
                                    f"{list(self.problem_keys)}, but got {type(problem).__name__}")
        if set(problem) != set(self.problem_keys):
            raise InvalidInputError(f"a problem size of kernel {self.name!r} must set exactly "
                                    f"{list(self.problem_keys)}, but got {sorted(problem)}")
        for key in self.problem_keys:
            value = problem[key]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInputError(f"`{key}` must be an integer >= 1 for kernel {self.name!r}, "
                                        f"but got {key}={value!r}")
        for rule in self.problem_rules:
            if not eval_rule(rule, problem):
                used = ", ".join(f"{k}={problem[k]}" for k in self.problem_keys if k in _rule_names(rule))
                raise InvalidInputError(f"`{rule}` must hold for kernel {self.name!r} (problem size), but got {used}")

    # ------------------------------------------------------------------ where it runs

    @property
    def device(self) -> str:
        return "cpu" if self.lang == "C" else "cuda"

    def check_runtime(self) -> None:
        """One-line error when this machine lacks what the kernel needs (nothing is run)."""
        _check_runtime(self.lang, self.compiler, self.name)

    # ------------------------------------------------------------------ Kernel Tuner

    def kernel_tuner_problem_size(self, problem: Problem) -> tuple[int, ...]:
        """Kernel Tuner's ``problem_size`` (the thread domain on a GPU; the sizes in order on the CPU)."""
        if self.kt_problem_size is not None:
            return self.kt_problem_size(problem)
        return tuple(problem[k] for k in self.problem_keys)

    def kernel_tuner_args(self, problem: Problem | None = None, *, seed: int = 0) -> dict[str, Any]:
        """Keyword arguments for ``kernel_tuner.tune_kernel`` / ``run_kernel`` on this kernel.

        ``tune_kernel(**spec.kernel_tuner_args(size))`` tunes the shipped source with Kernel
        Tuner's own runner (no child process, no compile cache): the same source and checks
        that perfpred's collector uses.
        """
        if self.lang == "triton":
            raise InvalidInputError(f"kernel {self.name!r} is a Triton kernel; Kernel Tuner cannot run it")
        problem = dict(problem or self.default_problem_size)
        self.check_problem_size(problem)
        args = self.arguments(problem, np.random.default_rng(seed))
        kt_size = self.kernel_tuner_problem_size(problem)
        kwargs: dict[str, Any] = {
            "kernel_name": self.function,
            "kernel_source": self.source_code(),
            "problem_size": kt_size,
            "arguments": args,
            "tune_params": self.space(),
            "restrictions": list(self.restrictions),
            "answer": self.reference(args, problem),
            "atol": self.atol,
            "lang": self.lang,
        }
        if self.lang == "C":
            # Kernel Tuner compiles a source string as C++ (a .cc file); the shipped sources are
            # valid C++ too, and linking needs the C++ driver of the same compiler family.
            kwargs["compiler"] = {"gcc": "g++", "clang": "clang++"}.get(self.compiler, self.compiler)
            kwargs["compiler_options"] = [f for f in self.compiler_flags if f != "-fPIC"]
        else:
            kwargs["compiler_options"] = list(self.compiler_flags)
            if self.block_size_names:
                kwargs["block_size_names"] = list(self.block_size_names)
            for axis, div in zip("xyz", self.grid_div, strict=True):
                if div is not None:
                    kwargs[f"grid_div_{axis}"] = list(div)
        return kwargs


@lru_cache(maxsize=16)
def _check_runtime(lang: str, compiler: str, name: str) -> None:
    if lang == "C":
        if importlib.util.find_spec("kernel_tuner") is None:
            raise MissingDependencyError(f"kernel {name!r} is compiled and run through Kernel Tuner, which is not "
                                         "installed: pip install kernel_tuner")
        if shutil.which(compiler) is None:
            raise MissingDependencyError(
                f"kernel {name!r} needs the C compiler {compiler!r} on PATH, but it is missing")
        return
    if lang == "triton" and importlib.util.find_spec("triton") is None:
        raise MissingDependencyError(f"kernel {name!r} needs triton (and a CUDA GPU): pip install triton")
    if lang == "CUDA":
        if importlib.util.find_spec("kernel_tuner") is None:
            raise MissingDependencyError(f"kernel {name!r} runs through Kernel Tuner, which is not installed: "
                                         "pip install kernel_tuner")
        if not any(importlib.util.find_spec(m) is not None for m in ("cuda", "cupy", "pycuda")):
            raise MissingDependencyError(f"kernel {name!r} needs a CUDA backend for Kernel Tuner "
                                         "(cuda-python, cupy or pycuda): pip install cuda-python")
    import torch

    if not torch.cuda.is_available():
        raise DeviceNotFoundError(f"kernel {name!r} runs on a CUDA GPU, but torch sees none on this machine")


# ---------------------------------------------------------------------------- SGEMM (CPU)


def sgemm_arguments(problem: Problem, rng: np.random.Generator) -> Arguments:
    m, n, k = problem["m"], problem["n"], problem["k"]
    a = rng.random(m * k, dtype=np.float32)
    b = rng.random(k * n, dtype=np.float32)
    c = np.zeros(m * n, dtype=np.float32)
    return [c, a, b, np.int32(m), np.int32(n), np.int32(k)]


def sgemm_reference(args: Arguments, problem: Problem) -> list[Any]:
    m, n, k = problem["m"], problem["n"], problem["k"]
    a = args[1].reshape(m, k).astype(np.float64)
    b = args[2].reshape(k, n).astype(np.float64)
    return [(a @ b).astype(np.float32).ravel(), None, None, None, None, None]


def gemm_flops(problem: Problem) -> float:
    return 2.0 * problem["m"] * problem["n"] * problem["k"]


def sgemm_bytes(problem: Problem) -> float:
    m, n, k = problem["m"], problem["n"], problem["k"]
    return 4.0 * (m * k + k * n + m * n)


_BLOCKS = (8, 16, 32, 64, 128, 256)

SGEMM = KernelSpec(
    name="sgemm",
    function="sgemm",
    lang="C",
    source_file="sgemm.c",
    tune_params={
        "block_m": _BLOCKS,
        "block_n": _BLOCKS,
        "block_k": _BLOCKS,
        "loop_order": (0, 1, 2, 3, 4, 5),
        "unroll": (1, 2, 4, 8),
        "isa": ("sse2", "avx2"),
        "threads": (1, 2),
    },
    # The three tiles of one (i, j, k) block fit in 256 KiB (65,536 floats), about an L2.
    restrictions=("block_m * block_k + block_k * block_n + block_m * block_n <= 65536",),
    problem_keys=("m", "n", "k"),
    default_problem_size={"m": 512, "n": 512, "k": 512},
    test_problem_size={"m": 48, "n": 64, "k": 40},
    problem_rules=("n % 8 == 0",),  # rows of B and C are walked in whole 8-float vectors
    arguments=sgemm_arguments,
    reference=sgemm_reference,
    flops=gemm_flops,
    bytes_moved=sgemm_bytes,
    # Inputs are uniform in [0, 1), so outputs are ~k/4 with no cancellation; float32 sums in
    # any order stay within ~k * 2^-24 relative of the float64 reference.
    rtol=1e-4,
    atol=1e-4,
    threads_param="threads",
    description="blocked SGEMM C = A B (row-major), SSE2 or AVX2+FMA intrinsics, OpenMP over tiles",
)

# ---------------------------------------------------------------------------- Jacobi 2D (CPU)


def jacobi2d_arguments(problem: Problem, rng: np.random.Generator) -> Arguments:
    nx, ny = problem["nx"], problem["ny"]
    u = rng.random(nx * ny, dtype=np.float32)
    v = np.zeros(nx * ny, dtype=np.float32)
    return [u, v, np.int32(nx), np.int32(ny), np.int32(problem["steps"])]


def jacobi2d_reference(args: Arguments, problem: Problem) -> list[Any]:
    nx, ny = problem["nx"], problem["ny"]
    u = args[0].reshape(ny, nx).astype(np.float64)
    for _ in range(problem["steps"]):
        nxt = u.copy()
        nxt[1:-1, 1:-1] = 0.2 * (u[1:-1, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] + u[:-2, 1:-1] + u[2:, 1:-1])
        u = nxt
    return [u.astype(np.float32).ravel(), None, None, None, None]


def jacobi2d_flops(problem: Problem) -> float:
    return 5.0 * (problem["nx"] - 2) * (problem["ny"] - 2) * problem["steps"]


def jacobi2d_bytes(problem: Problem) -> float:
    # Each step reads one grid and writes the other, once each when the rows stream well.
    return 8.0 * problem["nx"] * problem["ny"] * problem["steps"]


JACOBI2D = KernelSpec(
    name="jacobi2d",
    function="jacobi2d",
    lang="C",
    source_file="jacobi2d.c",
    tune_params={
        "tile_x": (8, 16, 32, 64, 128, 256, 512, 1024),
        "tile_y": (1, 2, 4, 8, 16, 32, 64, 128),
        "unroll": (1, 2, 4, 8),
        "isa": ("sse2", "avx2"),
        "threads": (1, 2),
    },
    # A tile is at least 64 points (less is all loop overhead) and at most 256 KiB of floats.
    restrictions=("tile_x * tile_y >= 64", "tile_x * tile_y <= 65536"),
    problem_keys=("nx", "ny", "steps"),
    # Two 64 MiB grids: far beyond the last-level cache, so each step streams from memory.
    default_problem_size={"nx": 4096, "ny": 4096, "steps": 2},
    test_problem_size={"nx": 70, "ny": 37, "steps": 3},
    problem_rules=("nx >= 3", "ny >= 3"),
    arguments=jacobi2d_arguments,
    reference=jacobi2d_reference,
    flops=jacobi2d_flops,
    bytes_moved=jacobi2d_bytes,
    rtol=1e-5,
    atol=1e-6,
    threads_param="threads",
    description="5-point Jacobi sweeps on a 2D float32 grid (memory-bound), tiled, OpenMP over tiles",
)

# ---------------------------------------------------------------------------- GPU kernels


def matmul_cuda_arguments(problem: Problem, rng: np.random.Generator) -> Arguments:
    n = problem["n"]
    a = rng.random(n * n, dtype=np.float32)
    b = rng.random(n * n, dtype=np.float32)
    c = np.zeros(n * n, dtype=np.float32)
    return [c, a, b, np.int32(n)]


def matmul_cuda_reference(args: Arguments, problem: Problem) -> list[Any]:
    n = problem["n"]
    a = args[1].reshape(n, n).astype(np.float64)
    b = args[2].reshape(n, n).astype(np.float64)
    return [(a @ b).astype(np.float32).ravel(), None, None, None]


def matmul_cuda_flops(problem: Problem) -> float:
    return 2.0 * problem["n"] ** 3


def matmul_cuda_bytes(problem: Problem) -> float:
    return 12.0 * problem["n"] ** 2


def matmul_cuda_kt_size(problem: Problem) -> tuple[int, ...]:
    return (problem["n"], problem["n"])


MATMUL_CUDA = KernelSpec(
    name="matmul_cuda",
    function="matmul_kernel",
    lang="CUDA",
    source_file="matmul.cu",
    tune_params={
        "block_size_x": (16, 32, 64),
        "block_size_y": (1, 2, 4, 8, 16, 32),
        "tile_size_x": (1, 2, 4),
        "tile_size_y": (1, 2, 4, 8),
    },
    # The shared-memory tiles are square in k: each thread row loads tile_size_y rows of A. A CUDA
    # block holds at most 1024 threads (Kernel Tuner's max_threads rule; the H200 recording's three
    # 64 x 32 blocks are its InvalidConfig rows).
    restrictions=("block_size_x == block_size_y * tile_size_y", "block_size_x * block_size_y <= 1024"),
    problem_keys=("n",),
    default_problem_size={"n": 4096},
    test_problem_size={"n": 256},
    problem_rules=("n % 256 == 0",),  # the widest block tile (64 x 4) divides n
    arguments=matmul_cuda_arguments,
    reference=matmul_cuda_reference,
    flops=matmul_cuda_flops,
    bytes_moved=matmul_cuda_bytes,
    rtol=1e-4,
    atol=1e-3,
    compiler_flags=(),
    block_size_names=("block_size_x", "block_size_y", "block_size_z"),
    grid_div=(("block_size_x", "tile_size_x"), ("block_size_y", "tile_size_y"), None),
    kt_problem_size=matmul_cuda_kt_size,
    description="shared-memory tiled SGEMM in CUDA (Kernel Tuner's classic matmul space)",
)


def matmul_triton_arguments(problem: Problem, rng: np.random.Generator) -> Arguments:
    m, n, k = problem["m"], problem["n"], problem["k"]
    a = (rng.random((m, k), dtype=np.float32) - 0.5).astype(np.float16)
    b = (rng.random((k, n), dtype=np.float32) - 0.5).astype(np.float16)
    c = np.zeros((m, n), dtype=np.float16)
    return [a, b, c]


def matmul_triton_reference(args: Arguments, problem: Problem) -> list[Any]:
    ref = args[0].astype(np.float32) @ args[1].astype(np.float32)
    return [None, None, ref.astype(np.float16)]


def matmul_triton_bytes(problem: Problem) -> float:
    m, n, k = problem["m"], problem["n"], problem["k"]
    return 2.0 * (m * k + k * n + m * n)


MATMUL_TRITON = KernelSpec(
    name="matmul_triton",
    function="matmul_kernel",
    lang="triton",
    source_file="triton_matmul.py",
    tune_params={
        "BLOCK_M": (32, 64, 128, 256),
        "BLOCK_N": (32, 64, 128, 256),
        "BLOCK_K": (32, 64, 128),
        "GROUP_M": (1, 4, 8),
        "num_warps": (2, 4, 8),
        "num_stages": (2, 3, 4, 5),
    },
    # At most 128 fp32 accumulators per thread (more spills registers on every GPU).
    restrictions=("BLOCK_M * BLOCK_N <= 128 * 32 * num_warps",),
    problem_keys=("m", "n", "k"),
    default_problem_size={"m": 4096, "n": 4096, "k": 4096},
    test_problem_size={"m": 256, "n": 256, "k": 256},
    problem_rules=("m >= 16", "n >= 16", "k >= 16"),
    arguments=matmul_triton_arguments,
    reference=matmul_triton_reference,
    flops=gemm_flops,
    bytes_moved=matmul_triton_bytes,
    # fp16 inputs in [-0.5, 0.5), fp32 accumulation, fp16 output: fp16 rounding dominates.
    rtol=1e-2,
    atol=5e-2,
    compiler_flags=(),
    element_dtype="fp16",
    description="Triton fp16 matmul with grouped tile order (the Triton tutorial kernel)",
)

KERNELS: dict[str, KernelSpec] = {spec.name: spec for spec in (SGEMM, JACOBI2D, MATMUL_CUDA, MATMUL_TRITON)}
CPU_KERNELS = tuple(name for name, spec in KERNELS.items() if spec.lang == "C")


def get_kernel(kernel: str | KernelSpec) -> KernelSpec:
    """The registered spec of that name (a spec is returned as is)."""
    if isinstance(kernel, KernelSpec):
        return kernel
    if kernel not in KERNELS:
        raise InvalidInputError(f"`kernel` must be one of {sorted(KERNELS)}, but got kernel={kernel!r}")
    return KERNELS[kernel]


def space_size(spec: KernelSpec) -> tuple[int, int]:
    """(cartesian size, valid configs after the restrictions)."""
    return math.prod(len(d) for d in spec.tune_params.values()), sum(1 for _ in spec.configs())


def problem_label(spec: KernelSpec, problem: Mapping[str, int]) -> str:
    """'512x512x512': Kernel Tuner's problem_size written as perfpred's importer writes it."""
    return "x".join(str(problem[k]) for k in spec.problem_keys)


_CHECK_CHUNK = 1 << 18  # values compared per step: the temporaries stay in cache and are reused


def tolerance_check(outputs: Sequence[Any], answer: Sequence[Any], rtol: float, atol: float) -> tuple[bool, str, float]:
    """Compare kernel outputs with the reference: (ok, message, max error ratio).

    A value passes when ``|out - ref| <= atol + rtol * |ref|``; NaN never passes. The
    error ratio is the largest ``|out - ref| / (atol + rtol * |ref|)`` (<= 1 passes; inf
    with a NaN). The arithmetic stays in the outputs' precision and walks the data in
    cache-sized chunks: checking a 64 MiB grid must not cost more than running the kernel.
    """
    worst = 0.0
    for i, (out, ref) in enumerate(zip(outputs, answer, strict=True)):
        if ref is None:
            continue
        got = np.asarray(out).ravel()
        want = np.asarray(ref).ravel()
        if got.shape != want.shape:
            return False, f"output {i} has {got.size} values, but the reference has {want.size}", math.inf
        dtype = np.result_type(got.dtype, want.dtype, np.float32)
        n_bad, first = 0, -1
        size = min(_CHECK_CHUNK, got.size)
        err, allowed = np.empty(size, dtype), np.empty(size, dtype)
        for start in range(0, got.size, _CHECK_CHUNK):
            g, w = got[start:start + _CHECK_CHUNK], want[start:start + _CHECK_CHUNK]
            e, a = err[:len(g)], allowed[:len(g)]
            np.subtract(g, w, out=e, dtype=dtype)
            np.abs(e, out=e)
            np.abs(w, out=a, dtype=dtype)
            a *= rtol
            a += atol
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                np.divide(e, a, out=e)  # NaN stays NaN; 0/0 (exact where nothing is allowed) is NaN too
            exact = (g == w)
            e[exact] = 0.0
            bad = ~(e <= 1.0)
            if bad.any():
                n_bad += int(bad.sum())
                first = start + int(np.argmax(bad)) if first < 0 else first
                worst = math.inf if np.isnan(e).any() else max(worst, float(np.nanmax(e)))
            else:
                worst = max(worst, float(e.max()) if len(e) else 0.0)
        if n_bad:
            return False, (f"output {i}: {n_bad} of {got.size} values off the numpy reference "
                           f"(first at index {first}: got {float(got[first]):.6g}, expected "
                           f"{float(want[first]):.6g}; rtol={rtol:g}, atol={atol:g})"), worst
    return True, "", worst
