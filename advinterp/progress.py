"""Progress bars for loops a person waits for (tqdm, quiet when not on a terminal or in CI)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """True unless ``ADVINTERP_PROGRESS=0``, ``CI`` is set, or stderr is not a terminal."""
    env = os.environ.get("ADVINTERP_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable[T], desc: str = "", total: int | None = None,
                 disable: bool | None = None, **kwargs) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar. ``disable=None`` follows :func:`progress_enabled`."""
    if disable is None:
        disable = not progress_enabled()
    if disable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kwargs)
