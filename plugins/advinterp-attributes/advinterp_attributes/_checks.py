"""Input checks shared by :mod:`.distances` and :mod:`.selection` (errors are ``ParameterError``)."""
from __future__ import annotations

import difflib
from typing import Any, Sequence

import numpy as np

from advinterp.api import ParameterError


def matrix(owner: str, name: str, value: Any, width: int | None = None, rows: int | None = None) -> np.ndarray:
    """``value`` as a finite float64 ``(N, E)`` array (``E == width``, ``N == rows`` when given)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(owner, name, value, "a numeric (N, n_attributes) array") from None
    if a.ndim != 2:
        raise ParameterError(owner, name, f"an array of shape {a.shape}", "a 2-d (N, n_attributes) array")
    if width is not None and a.shape[1] != width:
        raise ParameterError(owner, name, f"an array of shape {a.shape}",
                             f"{width} columns, one per attribute (the class-attribute matrix has {width})")
    if rows is not None and a.shape[0] != rows:
        raise ParameterError(owner, name, f"an array of shape {a.shape}", f"{rows} rows, one per image")
    if not np.isfinite(a).all():
        raise ParameterError(owner, name, f"an array with {int((~np.isfinite(a)).sum())} NaN/inf values",
                             "finite values")
    return a


def labels(owner: str, name: str, value: Any, n: int, n_classes: int) -> np.ndarray:
    """``value`` as ``(n,)`` int class indices in ``[0, n_classes)`` (rows of the class-attribute matrix)."""
    a = np.asarray(value)
    if a.ndim != 1 or len(a) != n:
        raise ParameterError(owner, name, f"an array of shape {a.shape}", f"({n},) class indices, one per image")
    if len(a) and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= n_classes):
        raise ParameterError(owner, name, a, f"integer class indices in 0..{n_classes - 1} (rows of "
                             "class_attributes)", "Map labels to rows first, e.g. np.searchsorted(sje.classes_, y).")
    return a.astype(np.intp)


def attribute_indices(attributes: Sequence[Any] | None, n_attributes: int,
                      vocabulary: Sequence[str] | None = None, owner: str = "attribute_indices") -> np.ndarray | None:
    """Attribute names (looked up in ``vocabulary``) or column indices -> ``(K,)`` int indices.

    Args:
        attributes: names and/or ints (``None`` -> ``None``: all attributes).
        n_attributes: number of columns (indices must lie in ``[0, n_attributes)``).
        vocabulary: the ``n_attributes`` attribute names (e.g. ``SyntheticWorld.attributes``),
            needed for names.

    Raises:
        ParameterError: a name not in the vocabulary (with close matches), an index out of range,
        a duplicate, or an empty list.
    """
    if attributes is None:
        return None
    if isinstance(attributes, (str, bytes)):
        attributes = [attributes]
    vocab = None if vocabulary is None else [str(v) for v in vocabulary]
    if vocab is not None and len(vocab) != n_attributes:
        raise ParameterError(owner, "vocabulary", f"{len(vocab)} names", f"{n_attributes} names, one per attribute")
    out = []
    for a in list(attributes):
        if isinstance(a, (int, np.integer)) and not isinstance(a, bool):
            if not 0 <= int(a) < n_attributes:
                raise ParameterError(owner, "attributes", a, f"attribute indices in 0..{n_attributes - 1}")
            out.append(int(a))
        elif isinstance(a, str):
            if vocab is None:
                raise ParameterError(owner, "attributes", a, "column indices, or names with vocabulary= given")
            if a not in vocab:
                close = difflib.get_close_matches(a, vocab, n=3, cutoff=0.5)
                hint = f"Did you mean {', '.join(repr(c) for c in close)}?" if close else None
                raise ParameterError(owner, "attributes", a, f"an attribute of the vocabulary ({len(vocab)} names: "
                                     f"{', '.join(vocab[:6])}{', ...' if len(vocab) > 6 else ''})", hint)
            out.append(vocab.index(a))
        else:
            raise ParameterError(owner, "attributes", a, "attribute names (str) or column indices (int)")
    if not out:
        raise ParameterError(owner, "attributes", list(attributes), "at least one attribute")
    if len(set(out)) != len(out):
        raise ParameterError(owner, "attributes", list(attributes), "distinct attributes")
    return np.asarray(out, dtype=np.intp)


def l2_rows(a: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm (rows of zeros stay zero)."""
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1.0)
