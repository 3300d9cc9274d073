"""Shared helpers of :mod:`advinterp.viz`: the lazy matplotlib import, the qualitative
palette, :func:`save_figure` and image conversion for ``imshow``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def _mpl():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is installed in dev
        raise MissingDependencyError("matplotlib", "Plotting") from exc
    return matplotlib


def _palette() -> list[tuple[float, float, float]]:
    mpl = _mpl()
    cols: list[tuple[float, float, float]] = []
    for name in ("tab10", "Dark2", "Set2"):
        cols.extend(tuple(c[:3]) for c in mpl.colormaps[name].colors)
    return cols


def save_figure(fig: "Figure", path: str | Path) -> Path:
    """Write ``fig`` as a PNG (120 dpi) to ``path``, creating parent folders; close the figure.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:].lower() or "png"
    fig.savefig(path, dpi=120, format=fmt, facecolor="white")
    manager = getattr(fig.canvas, "manager", None)
    if manager is not None:  # created through pyplot: release it there too
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def image_hwc(x) -> np.ndarray:
    """An image for ``imshow``: a ``(C, H, W)`` or ``(H, W, C)`` tensor or array as ``(H, W, 3)``
    (``(H, W)`` for one channel), clipped to [0, 1]."""
    a = x.detach().cpu().float() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return np.clip(a, 0, 1)


_image_hwc = image_hwc  # the name the core's figure modules use
