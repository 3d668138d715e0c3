"""A server process that cannot outlive its owner.

The server starts in a session of its own (``start_new_session=True``), so it and every
process it spawns (vLLM starts engine-core workers) form one process group, and stopping
it kills the group: SIGTERM, a grace period, then SIGKILL. Three nets catch what a plain
``stop()`` would miss:

- the context manager stops it when the ``with`` block raises;
- an ``atexit`` hook stops every server still running when the interpreter exits;
- on Linux the child asks the kernel for SIGKILL when the thread that started it dies
  (``PR_SET_PDEATHSIG``), which covers a SIGKILL of this process, where no Python runs.
  (So start servers from a thread that outlives them: the main thread, or a pool worker.)

Output goes to a log file, never a pipe (a full pipe would stall the server).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still there (zombies of already-reaped leaders are not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies; look for a member that is not one.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class ServerProcess:
    """``argv`` started in its own process group with stdout+stderr to ``log_path``."""

    def __init__(self, argv: Sequence[str], log_path: str | os.PathLike[str], *,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=self.cwd, start_new_session=True,
                                            preexec_fn=_die_with_parent)  # only prctl: safe after fork
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self, within_s: float = 0.0) -> bool:
        """Whether the process has exited, waiting up to ``within_s`` seconds for it to."""
        if self.process is None:
            return False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(within_s)
        return self.process.poll() is not None

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace_s``; always reaps. Returns the exit code."""
        if self.process is None:
            return None
        pgid = self.process.pid
        if self.process.poll() is None:
            kill_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        # The leader may be gone while its children (engine workers) linger: kill the group regardless.
        kill_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        # SIGKILL is delivered at once but a loaded machine may take a moment to tear the members
        # down: return only when none is left (bounded), so a caller never races a dying worker.
        deadline = time.monotonic() + 10.0
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return self.process.returncode

    def log_tail(self, n_lines: int = 20, max_chars: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max(64 * 1024, 2 * max_chars)))
                text = fh.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-n_lines:])[-max_chars:]

    def __enter__(self) -> ServerProcess:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        with contextlib.suppress(Exception):
            server.stop(grace_s=2.0)
