"""Build llama.cpp's ``llama-server`` from the sources vendored in PyPI's llama-cpp-python sdist.

No other place to fetch llama.cpp from is needed: the sdist of ``llama-cpp-python`` carries
``vendor/llama.cpp``. The build is CPU-only, static (one self-contained binary), tuned for
this CPU (``GGML_NATIVE``), with nothing that downloads at build time (no prebuilt web UI,
no OpenSSL/curl model fetching). About 10 minutes on 2 cores, run under ``nice``.

The binary is cached in ``engines_dir()/llama-server-<version>-<cpu hash>/`` (the hash covers
the CPU's ISA flags and the compiler, since ``-march=native`` code is only valid there);
a re-run finds it and returns at once. A lock file keeps two builds from racing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from perfpred.collect.serving._paths import engines_dir, file_lock
from perfpred.errors import PerfPredError

# The llama-cpp-python release whose vendored llama.cpp we build (its own version is 0.3.x;
# llama.cpp inside it has build numbers of its own, recorded in build.json).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BINARY = "llama-server"

# Everything off that is not llama-server, or that would reach the network at build time.
CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_CUDA=OFF",
    "-DGGML_VULKAN=OFF",
    "-DGGML_METAL=OFF",
)


class BuildError(PerfPredError):
    """Building an engine failed; the message names the step and ends with the log tail."""

    exit_code = 1  # the environment failed, not the user's input


def _compiler_version() -> str:
    try:
        out = subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


def cpu_key() -> str:
    """Short hash of what a ``-march=native`` binary depends on: arch, ISA flags, compiler."""
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.partition(":")[2].split()))
                break
    payload = json.dumps({"arch": platform.machine(), "flags": flags, "cxx": _compiler_version()}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:10]


def llama_server_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return engines_dir() / f"llama-server-{version}-{cpu_key()}"


def find_llama_server(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The llama-server binary to use: ``PERFPRED_LLAMA_SERVER`` if set, else the cached build, else None."""
    explicit = os.environ.get("PERFPRED_LLAMA_SERVER")
    if explicit:
        return Path(explicit) if os.access(explicit, os.X_OK) else None
    binary = llama_server_dir(version) / BINARY
    return binary if os.access(binary, os.X_OK) else None


def _run(step: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
    """Run one build step at the lowest CPU priority, appending its output to the build log."""
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        code = subprocess.call(["nice", "-n", "19", *argv], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"llama-server build step '{step}' failed with exit code {code} (log: {log_path}):\n{tail}")


def _sdist(version: str, sdist: Path | None, log_path: Path) -> Path:
    if sdist is not None:
        if not sdist.is_file():
            raise BuildError(f"the llama-cpp-python sdist must be a file, but got sdist='{sdist}'")
        return sdist
    src = engines_dir() / "src"
    src.mkdir(parents=True, exist_ok=True)
    wanted = src / f"llama_cpp_python-{version}.tar.gz"
    if not wanted.is_file():
        _run("download", [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                          f"llama-cpp-python=={version}", "-d", str(src)], log_path)
    if not wanted.is_file():
        raise BuildError(f"pip download gave no '{wanted.name}' in '{src}' (log: {log_path})")
    return wanted


def _extract_llama_cpp(sdist: Path, work: Path) -> Path:
    """Only ``vendor/llama.cpp`` of the sdist, extracted with tarfile's safe 'data' filter."""
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        root = names[0].split("/")[0] if names else ""
        prefix = f"{root}/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise BuildError(f"'{sdist.name}' has no vendor/llama.cpp folder; is it a llama-cpp-python sdist?")
        tar.extractall(work, members=members, filter="data")
    return work / root / "vendor" / "llama.cpp"


def build_llama_server(version: str = LLAMA_CPP_PYTHON_VERSION, *, sdist: str | os.PathLike[str] | None = None,
                       jobs: int | None = None, force: bool = False, keep_build: bool = False,
                       log: Callable[[str], None] = print) -> Path:
    """Build (or find the cached) llama-server; returns the binary's path. Idempotent."""
    target = llama_server_dir(version)
    binary = target / BINARY
    with file_lock(engines_dir() / f".llama-server-{version}.lock"):
        if binary.is_file() and os.access(binary, os.X_OK) and not force:
            log(f"llama-server {version} already built: {binary}")
            return binary
        work = target.with_name(target.name + ".build")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log_path = work / "build.log"
        t0 = time.monotonic()
        tarball = _sdist(version, Path(sdist) if sdist else None, log_path)
        log(f"extracting vendor/llama.cpp from {tarball.name}")
        source = _extract_llama_cpp(tarball, work / "src")
        build = work / "build"
        jobs = jobs or max(1, len(os.sched_getaffinity(0)))
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        log(f"configuring (cmake {' '.join(generator)}); log: {log_path}")
        _run("configure", ["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_ARGS], log_path)
        log(f"compiling the llama-server target with {jobs} jobs under nice (about 10 min on 2 cores)")
        _run("compile", ["cmake", "--build", str(build), "--target", BINARY, "-j", str(jobs)], log_path)
        built = build / "bin" / BINARY
        if not built.is_file():
            raise BuildError(f"the build finished but '{built}' is missing (log: {log_path})")
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copy2(built, staging / BINARY)
        version_out = subprocess.run([str(staging / BINARY), "--version"], capture_output=True, text=True,
                                     timeout=60)
        info = {"llama_cpp_python": version, "cpu_key": cpu_key(), "cmake_args": list(CMAKE_ARGS),
                "compiler": _compiler_version(), "build_s": round(time.monotonic() - t0, 1),
                "version_output": (version_out.stdout + version_out.stderr).strip()}
        (staging / "build.json").write_text(json.dumps(info, indent=2))
        shutil.copy2(log_path, staging / "build.log")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        if not keep_build:
            shutil.rmtree(work, ignore_errors=True)
        log(f"built {target / BINARY} in {info['build_s']:.0f} s")
        return target / BINARY
