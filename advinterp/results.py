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

__all__ = ["Result", "encode", "decode", "format_table"]

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


@dataclasses.dataclass(frozen=True)
class Result:
    """Base of every analysis result (a frozen dataclass).

    Subclasses override :meth:`rows` to give their tabular view (list of dicts); ``table()``
    renders it as text and ``to_frame()`` as a pandas DataFrame when pandas is installed.
    """

    kind: ClassVar[str] = "result"

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

    def save(self, path: str | Path) -> Path:
        """Write the result to ``path`` (``.pt``; parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": _FORMAT, "result": encode(self)}, path)
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
