"""Make chosen top-level modules unimportable in the kernel worker process.

Kernel Tuner imports torch whenever it can (``try: import torch``), which costs seconds;
the C-kernel worker never uses it, and a worker restarted after a crashing kernel should
be back quickly. A meta-path finder that raises ``ModuleNotFoundError`` for the hidden
names makes such optional imports take their fallback path, while code that only looks
in ``sys.modules`` (as scipy does) sees the module as simply not loaded. The worker loads
this file by its path, before importing anything else, so it must import only the standard
library.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from typing import Any


class _HiddenModules(MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname!r} is hidden in the perfpred kernel worker", name=fullname)
        return None


def hide_modules(*names: str) -> None:
    """Hide ``names`` (top-level packages) from every later import in this process.

    A name already imported stays available (hiding it then would only break its users).
    """
    hidden = frozenset(n for n in names if n not in sys.modules)
    if hidden:
        sys.meta_path.insert(0, _HiddenModules(hidden))
