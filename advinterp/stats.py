"""Means and standard errors over images, ignoring undefined values (NaN / inf).

The tables of the PSE paper (Table 1, Table 2) are means over adversarial examples; a
per-image value can be undefined (a correlation over constant grids, an IS of ``delta = 0``)
and is then left out. ``standard_error`` is the standard error of that mean,
``std(ddof=1) / sqrt(n)`` over the defined values (NaN with fewer than two), so that a
table can say whether a gap between two rows is larger than its noise.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["nanmean", "standard_error"]


def _finite(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def nanmean(v: Any) -> float:
    """Mean of the finite values of ``v`` (NaN when there are none)."""
    v = _finite(v)
    return float(v.mean()) if len(v) else float("nan")


def standard_error(v: Any) -> float:
    """``std(ddof=1) / sqrt(n)`` of the ``n`` finite values of ``v`` (NaN when ``n < 2``)."""
    v = _finite(v)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) >= 2 else float("nan")
