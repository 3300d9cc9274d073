"""The run folder's saved results: written atomically, checked before they are trusted.

Every result (a step's, or one shard's) is a ``.pt`` file written by
:meth:`advinterp.Result.save` (temporary file + rename) followed by a ``.sha256`` file with its
checksum, also written atomically. A result counts as done only when both exist and agree:
a process killed between the two writes, a truncated or edited file, a file from another
format -- each is detected, reported and recomputed, never loaded.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

from ..results import Result, atomic_write

__all__ = ["ResultStore", "safe_name"]


def safe_name(text: str) -> str:
    """A file-name-safe version of a step id (``pse.cw_l2`` stays; ``a/b c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "step"


class ResultStore:
    """Saved results under one folder, each guarded by a checksum.

    Args:
        root: the folder (``RUN/steps``).
        log: called with a message when a saved file is found corrupt.
    """

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.root = Path(root)
        self.log = log

    def save(self, path: Path, result: Result) -> Path:
        data = result.to_bytes()
        atomic_write(path, data)
        atomic_write(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())
        return path

    def valid(self, path: Path) -> bool:
        """Whether ``path`` holds a complete result (its checksum file agrees)."""
        sha = path.with_name(path.name + ".sha256")
        if not path.is_file() or not sha.is_file():
            return False
        try:
            ok = hashlib.sha256(path.read_bytes()).hexdigest() == sha.read_text().strip()
        except OSError:
            ok = False
        if not ok:
            self.log(f"{path}: does not match its checksum (truncated or changed): recomputing it")
        return ok

    def load(self, path: Path) -> Result | None:
        """The result at ``path``, or ``None`` when it is missing or corrupt (then removed)."""
        if not self.valid(path):
            self.discard(path)
            return None
        try:
            return Result.load(path)
        except Exception as e:  # a file this version cannot read: recompute rather than fail
            self.log(f"{path}: cannot be read ({type(e).__name__}: {e}): recomputing it")
            self.discard(path)
            return None

    def discard(self, path: Path) -> None:
        for p in (path, path.with_name(path.name + ".sha256")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def write_json(path: Path, value: Any) -> None:
        atomic_write(path, json.dumps(value, indent=2, default=str).encode())
