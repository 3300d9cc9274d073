"""Result dataclasses: ``to_dict()``, a table view, ``save(path)`` / ``load(path)``.

Every result of an analysis is a frozen dataclass deriving from :class:`Result`. Fields may
hold tensors, numpy arrays, numbers, strings, and lists/tuples/dicts of those (and nested
results). ``save`` writes a single ``.pt`` file that ``load`` reads back with
``torch.load(weights_only=True)`` — no pickled code, safe to share.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

__all__ = ["Result", "encode", "decode", "format_table", "concat_values", "take_value", "atomic_write"]

_FORMAT = "advinterp-result/1"


def encode(value: Any) -> Any:
    """Turn a value into something ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__list__": [encode(v) for v in value.tolist()]}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a value of type {type(value).__name__} in a result")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__list__" in value:
            return np.array([decode(v) for v in value["__list__"]], dtype=object)
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {decode(k): decode(v) for k, v in value["__dict__"]}
        if "__dataclass__" in value:
            mod, _, qual = value["__dataclass__"].partition(":")
            obj: Any = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
            if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)
                    and (issubclass(obj, Result) or mod.split(".")[0].startswith("advinterp"))):
                raise TypeError(f"refusing to build {value['__dataclass__']}: not an advinterp result dataclass")
            return obj(**{k: decode(v) for k, v in value["fields"].items()})
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """JSON-friendly form used by ``to_dict``."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def format_table(rows: Sequence[dict[str, Any]], floatfmt: str = ".4g") -> str:
    """A plain-text table (columns = union of keys, in first-seen order)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]

    def fmt(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


def take_value(value: Any, idx: Any) -> Any:
    """Index the first axis of a per-image value: tensors, arrays, ``None``, dicts of them
    (key by key) and per-image results (:meth:`Result.take`)."""
    if value is None:
        return None
    if isinstance(value, Result):
        return value.take(idx)
    if isinstance(value, dict):
        return {k: take_value(v, idx) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        if isinstance(idx, torch.Tensor):
            idx = idx.to(value.device)
        return value[idx]
    if isinstance(value, np.ndarray):
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return value[idx]
    raise TypeError(f"cannot index a per-image value of type {type(value).__name__}")


def concat_values(values: Sequence[Any], what: str = "value") -> Any:
    """Concatenate per-image values along their first axis (the inverse of
    :func:`take_value` over consecutive slices): tensors, arrays, all-``None``, dicts with the
    same keys, per-image results (:meth:`Result.merge`)."""
    from .exceptions import ParameterError

    first = values[0]
    if first is None:
        if any(v is not None for v in values):
            raise ParameterError("Result.merge", what, values, "all parts None or none of them")
        return None
    if isinstance(first, Result):
        return type(first).merge(values)
    if isinstance(first, dict):
        keys = list(first)
        if any(list(v) != keys for v in values):
            raise ParameterError("Result.merge", what, [list(v) for v in values], "the same keys in every part")
        return {k: concat_values([v[k] for v in values], f"{what}[{k!r}]") for k in keys}
    if isinstance(first, torch.Tensor):
        return torch.cat([torch.as_tensor(v) for v in values])
    if isinstance(first, np.ndarray):
        return np.concatenate([np.asarray(v) for v in values])
    raise TypeError(f"cannot concatenate per-image values of type {type(first).__name__} ({what})")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        try:
            return bool(np.array_equal(np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a),
                                       np.asarray(b.cpu() if isinstance(b, torch.Tensor) else b)))
        except Exception:
            return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return a is b


@dataclasses.dataclass(frozen=True)
class Result:
    """Base of every analysis result (a frozen dataclass).

    Subclasses override :meth:`rows` to give their tabular view (list of dicts); ``table()``
    renders it as text and ``to_frame()`` as a pandas DataFrame when pandas is installed.
    """

    kind: ClassVar[str] = "result"
    #: Fields with one entry per image along their first axis (tensors, arrays, dicts of
    #: them, per-image results). A result that names them can be sliced (:meth:`take`) and
    #: merged from consecutive parts (:meth:`merge`): that is what lets a study cut a step
    #: into shards and resume it. ``()``: not per-image (not sharded).
    per_image: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def mergeable(cls) -> bool:
        """Whether results of this type merge image-wise (``per_image`` is declared)."""
        return bool(cls.per_image)

    def take(self, idx: Any) -> "Result":
        """The same result for images ``idx`` (int, slice, index array/tensor or bool mask)."""
        if not self.per_image:
            raise TypeError(f"{type(self).__name__} declares no per-image fields; it cannot be sliced")
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(idx, None)
        return dataclasses.replace(self, **{f: take_value(getattr(self, f), idx) for f in self.per_image})

    @classmethod
    def merge(cls, parts: Sequence["Result"]) -> "Result":
        """One result from the results of consecutive image ranges (in order): per-image
        fields are concatenated, every other field must be equal in all parts."""
        from .exceptions import ParameterError

        parts = list(parts)
        if not parts:
            raise ParameterError(f"{cls.__name__}.merge", "parts", parts, "at least one result")
        if not cls.per_image:
            raise TypeError(f"{cls.__name__} declares no per-image fields; its results cannot be merged")
        for p in parts:
            if type(p) is not type(parts[0]):
                raise ParameterError(f"{cls.__name__}.merge", "parts", type(p).__name__,
                                     f"results of one type ({type(parts[0]).__name__})")
        first = parts[0]
        for f in dataclasses.fields(first):
            if f.name in cls.per_image:
                continue
            for p in parts[1:]:
                if not _same(getattr(first, f.name), getattr(p, f.name)):
                    raise ParameterError(f"{cls.__name__}.merge", f.name, getattr(p, f.name),
                                         f"the same value in every part ({getattr(first, f.name)!r})",
                                         "Only results of the same analysis with the same settings merge.")
        if len(parts) == 1:
            return first
        return dataclasses.replace(first, **{f: concat_values([getattr(p, f) for p in parts], f)
                                             for f in cls.per_image})

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain Python (lists for tensors/arrays) — JSON-serialisable."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def rows(self) -> list[dict[str, Any]]:
        """The tabular view: one dict per row (override in subclasses)."""
        return [{k: v for k, v in self.to_dict().items() if not isinstance(v, (list, dict))}]

    def table(self, floatfmt: str = ".4g") -> str:
        """The tabular view as aligned text."""
        return format_table(self.rows(), floatfmt)

    def to_frame(self):
        """The tabular view as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            from .exceptions import MissingDependencyError

            raise MissingDependencyError("pandas", f"{type(self).__name__}.to_frame()") from e
        return pd.DataFrame(self.rows())

    def to_bytes(self) -> bytes:
        """The result as the bytes :meth:`save` writes."""
        import io

        buf = io.BytesIO()
        torch.save({"format": _FORMAT, "result": encode(self)}, buf)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the result to ``path`` (``.pt``; parent folders are created). The file is
        written under a temporary name and renamed, so a killed process never leaves a
        half-written result under ``path``."""
        path = Path(path)
        atomic_write(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Result":
        """Read a result written by :meth:`save` (``weights_only=True``)."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            from .exceptions import AdvinterpError

            raise AdvinterpError(f"{path} is not an advinterp result file (format {_FORMAT}).")
        obj = decode(payload["result"])
        if cls is not Result and not isinstance(obj, cls):
            from .exceptions import AdvinterpError

            raise AdvinterpError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}.")
        return obj


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename
    (``os.replace``): readers see the old file or the new one, never a partial one."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
