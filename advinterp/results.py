"""Result dataclasses: ``to_dict()``, a table view, ``save(path)`` / ``load(path)``.

Every result of an analysis is a frozen dataclass deriving from :class:`Result`. Fields may
hold tensors, numpy arrays, numbers, strings, and lists/tuples/dicts of those (and nested
results). ``save`` writes a single ``.pt`` file that ``load`` reads back with
``torch.load(weights_only=True)`` — no pickled code, safe to share.

Loading never imports anything named in a file: a saved class name is resolved only among
the *result types* this process knows — every :class:`Result` subclass (recorded when its
class is created, so those of the core and of every loaded plugin), the plain dataclasses
their fields are annotated with (e.g. ``dict[str, LayerDissection]``), and classes
registered with :func:`register_result_type`. A file naming anything else is refused with a
:class:`~advinterp.exceptions.ResultFileError`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

__all__ = ["Result", "encode", "decode", "format_table", "concat_values", "take_value", "atomic_write",
           "register_result_type", "result_types"]

_FORMAT = "advinterp-result/1"
#: The formats this version reads (a file of format /1 written before the version was
#: recorded has no ``"advinterp"`` entry).
_READABLE = (_FORMAT,)

#: "module:qualname" -> class: the Result subclasses (recorded by ``Result.__init_subclass__``)
#: and the classes given to :func:`register_result_type`.
_RESULT_TYPES: dict[str, type] = {}
#: The plain dataclasses found in the field annotations of the above, computed lazily.
_nested_cache: tuple[int, dict[str, type]] = (-1, {})


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_result_type(cls: type) -> type:
    """Let :meth:`Result.load` rebuild instances of the dataclass ``cls`` nested in a result.

    Result subclasses are recorded on their own, and so are dataclasses named in their field
    annotations (``layers: dict[str, LayerDissection]``); register explicitly a dataclass that
    a result holds under a looser annotation (``Any``, ``object``). Usable as a decorator.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_result_type: {cls!r} is not a dataclass")
    _RESULT_TYPES[_type_name(cls)] = cls
    return cls


def _annotated_dataclasses(cls: type, found: dict[str, type]) -> None:
    """Add to ``found`` the dataclasses named in the field annotations of ``cls`` (recursively).
    Annotations are evaluated in the namespace of the class's (already imported) module."""
    ns = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    for f in dataclasses.fields(cls):
        hint = f.type
        if isinstance(hint, str):
            try:
                hint = eval(hint, ns, dict(vars(cls)))  # the plugin's own source, not the file's
            except Exception:
                continue
        stack = [hint]
        while stack:
            t = stack.pop()
            stack.extend(typing.get_args(t))
            if isinstance(t, type) and dataclasses.is_dataclass(t) and _type_name(t) not in found:
                found[_type_name(t)] = t
                _annotated_dataclasses(t, found)


def result_types() -> dict[str, type]:
    """``{"module:qualname": class}``: every class :meth:`Result.load` may build."""
    global _nested_cache
    if _nested_cache[0] != len(_RESULT_TYPES):
        found: dict[str, type] = {}
        for cls in list(_RESULT_TYPES.values()):
            _annotated_dataclasses(cls, found)
        _nested_cache = (len(_RESULT_TYPES), found)
    return {**_nested_cache[1], **_RESULT_TYPES}


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


def decode(value: Any, writer: str = "") -> Any:
    """Inverse of :func:`encode`. Classes are looked up in :func:`result_types` only —
    nothing is imported; an unknown one raises :class:`~advinterp.exceptions.ResultFileError`
    (``writer``: who wrote the data, for its messages)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__list__" in value:
            return np.array([decode(v, writer) for v in value["__list__"]], dtype=object)
        if "__tuple__" in value:
            return tuple(decode(v, writer) for v in value["__tuple__"])
        if "__dict__" in value:
            return {decode(k, writer): decode(v, writer) for k, v in value["__dict__"]}
        if "__dataclass__" in value:
            cls = _result_class(str(value["__dataclass__"]), writer)
            return _build(cls, {k: decode(v, writer) for k, v in dict(value.get("fields", {})).items()}, writer)
    if isinstance(value, list):
        return [decode(v, writer) for v in value]
    return value


#: Loads the installed plugins (so their result types are defined) and returns their
#: :class:`~advinterp.plugins.PluginStatus` list. Set by :mod:`advinterp.registry` when it is
#: imported: results sit below the registry and reach it only through this callable.
plugin_loader: Callable[[], list] | None = None


def _plugin_statuses() -> list:
    if plugin_loader is None:
        return []
    try:
        return list(plugin_loader())
    except Exception:  # a broken plugin setup must not hide the file's own problem
        return []


def _written_by(writer: str) -> str:
    return f"advinterp {writer}" if writer else "an advinterp of version 0.1.0 or older (the file records none)"


def _result_class(name: str, writer: str) -> type:
    """The result type called ``name`` ("module:qualname"); loads the installed plugins once
    (as :func:`advinterp.get_registry` does) before giving up. Never imports ``module``."""
    from .exceptions import ResultFileError

    types = result_types()
    if name not in types:
        _plugin_statuses()  # the plugins' result types are defined when the plugins load
        types = result_types()
    if name in types:
        return types[name]
    from . import __version__

    mod, _, qual = name.partition(":")
    top = mod.split(".")[0]
    packages = {n.split(".")[0] for n in types}
    if top and top not in packages:
        raise ResultFileError(
            f"refusing to build {name}: its module {mod!r} belongs to no loaded advinterp plugin "
            f"(nothing was imported). {_plugin_state(top)}")
    same = sorted(n.partition(":")[2] for n in types if n.partition(":")[0] == mod)
    raise ResultFileError(
        f"refusing to build {name}: it is not a result type of {top!r} in advinterp {__version__} "
        f"(nothing was imported; result types of {mod}: {', '.join(same) or 'none'}). The class was renamed "
        f"or removed since {_written_by(writer)} wrote the file, or it is not a result: read the file with "
        f"the versions of advinterp and of the plugin that wrote it.")


def _plugin_state(package: str) -> str:
    """Why the plugin providing ``package`` is not loaded, as far as the registry knows."""
    for st in _plugin_statuses():
        if st.source.startswith("entry point ") and st.source.split()[2].split(".")[0] == package:
            why = st.error or "not loaded"
            return (f"The plugin {st.name!r} providing {package!r} is unavailable ({why})"
                    + (f": {st.hint}." if st.hint else "."))
    return (f"Install (or enable) the advinterp plugin whose module is {package!r} to read this "
            f"file; `advinterp list` shows the loaded plugins.")


def _build(cls: type, fields: dict[str, Any], writer: str) -> Any:
    """``cls(**fields)``, with a message naming what does not fit this version's class."""
    from . import __version__
    from .exceptions import ResultFileError

    known = [f.name for f in dataclasses.fields(cls) if f.init]
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    extra = [k for k in fields if k not in known]
    missing = [k for k in required if k not in fields]
    if extra or missing:
        what = "; ".join(p for p in (
            extra and f"field(s) {', '.join(map(repr, extra))} that it does not define",
            missing and f"no value for its required field(s) {', '.join(map(repr, missing))}") if p)
        raise ResultFileError(
            f"the saved {_type_name(cls)} does not fit the class of advinterp {__version__}: the file has {what} "
            f"(the class has {', '.join(known)}). It was written by {_written_by(writer)}: read it with that "
            f"version (and the plugin version of then), or re-create it.")
    try:
        return cls(**fields)
    except Exception as e:
        raise ResultFileError(f"the saved {_type_name(cls)} is refused by its class in advinterp {__version__} "
                              f"({type(e).__name__}: {e}); it was written by {_written_by(writer)}.") from e


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _RESULT_TYPES[_type_name(cls)] = cls  # what Result.load may build (see result_types)

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
        from . import __version__

        torch.save({"format": _FORMAT, "advinterp": __version__, "result": encode(self)}, buf)
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
        """Read a result written by :meth:`save` (``weights_only=True``; nothing named in the
        file is imported). A file that is not a complete result this version can read raises
        :class:`~advinterp.exceptions.ResultFileError` naming the file and what is wrong."""
        from . import __version__
        from .exceptions import ResultFileError

        path = Path(path)
        reads = f"advinterp {__version__} reads {' and '.join(_READABLE)}"
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as e:
            size = path.stat().st_size if path.is_file() else 0
            if size == 0:
                why = "is empty (0 bytes): it was never written completely"
            elif isinstance(e, (RuntimeError, EOFError)) or "zip" in str(e).lower():
                why = (f"is truncated or corrupt ({size} bytes; torch cannot read it: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__})")
            else:
                why = (f"holds objects that safe (weights_only) loading refuses "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            raise ResultFileError(f"{why}; which advinterp wrote it cannot be told ({reads}). "
                                  "Re-create it (re-save the result or re-run the step).", path) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("format"), str) \
                or not payload["format"].startswith("advinterp-result/") or "result" not in payload:
            raise ResultFileError(f"is not an advinterp result file (a torch file holding a "
                                  f"{type(payload).__name__} without an advinterp-result format; {reads}).", path)
        writer = str(payload.get("advinterp") or "")
        if payload["format"] not in _READABLE:
            raise ResultFileError(f"has the format {payload['format']}, written by {_written_by(writer)}; "
                                  f"{reads}. Read it with advinterp {writer or 'of that format'} or newer.", path)
        try:
            obj = decode(payload["result"], writer)
        except ResultFileError as e:
            raise ResultFileError(e.reason, path) from e.__cause__
        if cls is not Result and not isinstance(obj, cls):
            raise ResultFileError(f"holds a {type(obj).__name__}, not a {cls.__name__}.", path)
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
