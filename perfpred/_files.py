"""Writing a file so that readers only ever see the old or the new whole file."""

from __future__ import annotations

import gzip
import os
import uuid
from pathlib import Path


def write_text_atomically(path: str | os.PathLike[str], text: str, *, compress: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    A crash leaves no half-written file, and processes or threads writing the same path at once
    each rename their own temporary file (its name is unique to the writer), so the last rename
    wins whole. ``compress`` writes gzip (for ``.json.gz`` caches).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        if compress:
            with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh:
                fh.write(text)
        else:
            tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
