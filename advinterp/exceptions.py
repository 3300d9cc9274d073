"""Exceptions raised by advinterp. All derive from :class:`AdvinterpError`.

Every message names the offending value and says what to do instead.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

__all__ = [
    "AdvinterpError",
    "ParameterError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "MissingDependencyError",
    "IncompatibleModelError",
    "DatasetFormatError",
    "ResultFileError",
]


class AdvinterpError(Exception):
    """Base class of every error advinterp raises on purpose.

    Picklable whatever the subclass's constructor takes (the message and attributes travel
    as they are), so an error raised in a worker process (a data-loader worker, a study
    shard) reaches the caller with its type and message.
    """

    def __reduce__(self):
        return _rebuild, (type(self), self.args), dict(self.__dict__)


def _rebuild(cls: type, args: tuple) -> "AdvinterpError":
    err = Exception.__new__(cls)
    err.args = args
    return err


class ParameterError(AdvinterpError, ValueError):
    """A parameter or input has an invalid value.

    The message format is the same everywhere:
    ``<owner>: <name>=<value!r> is invalid; expected <expected>.``
    """

    def __init__(self, owner: str, name: str, value: Any, expected: str, hint: str | None = None):
        self.owner, self.name, self.value, self.expected = owner, name, value, expected
        shown = _short_repr(value)
        msg = f"{owner}: {name}={shown} is invalid; expected {expected}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class UnknownComponentError(AdvinterpError, KeyError):
    """No registered component of this kind has this name."""

    def __init__(self, kind: str, name: str, known: Iterable[str], unavailable: dict[str, str] | None = None):
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        msg = f"unknown {kind} {name!r}."
        if close:
            msg += f" Did you mean {', '.join(repr(c) for c in close)}?"
        msg += f" Known {kind}s: {', '.join(known) if known else '(none)'}."
        if unavailable:
            reasons = "; ".join(f"{p}: {r}" for p, r in sorted(unavailable.items()))
            msg += f" Some plugins are unavailable and may provide it ({reasons}); see `advinterp list`."
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DuplicateComponentError(AdvinterpError):
    """Two plugins register a component of the same kind under the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str):
        self.kind, self.name, self.first, self.second = kind, name, first, second
        super().__init__(
            f"{kind} {name!r} is registered twice: by plugin {first!r} and by plugin {second!r}. "
            f"Rename one of them, or block one with ADVINTERP_DISABLE_PLUGINS={second}."
        )


class MissingDependencyError(AdvinterpError, ImportError):
    """An optional package needed for this feature is not installed."""

    def __init__(self, package: str, feature: str, install: str | None = None):
        self.package, self.feature = package, feature
        install = install or f"pip install {package}"
        super().__init__(f"{feature} needs the package {package!r}, which is not installed. Install it with: {install}")


class IncompatibleModelError(AdvinterpError, TypeError):
    """The model lacks something this analysis needs (a layer, a GAP+linear head, ...)."""


class DatasetFormatError(AdvinterpError, ValueError):
    """A dataset file is missing, unreadable or malformed; the message names the file (and line)."""


class ResultFileError(AdvinterpError):
    """A saved result file cannot be read: empty, truncated, of another format, or holding a
    class this version does not define (or may not build). The message names the file, what is
    wrong, which advinterp wrote it and which can read it; ``path`` is the file."""

    def __init__(self, message: str, path: Any = None):
        self.path, self.reason = path, message
        super().__init__(f"{path}: {message}" if path is not None else message)


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return f"<tensor shape={tuple(value.shape)} dtype={value.dtype}>"
    except ImportError:  # pragma: no cover
        pass
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return f"<ndarray shape={value.shape} dtype={value.dtype}>"
    except ImportError:  # pragma: no cover
        pass
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."
