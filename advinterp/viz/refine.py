"""Refined attacks: per-grid strength of delta before and after refinement (Figs. 6 / A6 of
the PSE paper)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..exceptions import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def _array(v: Any) -> np.ndarray:
    return np.asarray(v.detach().cpu().double() if hasattr(v, "detach") else v, dtype=np.float64)


def grid_l2_map(delta: Any, size: int, cover: bool = True) -> np.ndarray:
    """``||delta_G||_2`` per grid, laid out as the grid: ``(N, rows, cols)``.

    Args:
        delta: ``(N, C, H, W)`` perturbations (all channels of a grid count).
        size: grid side in pixels (the PSE grid, non-overlapping windows).
        cover: add a last row/column of grids flush with the bottom/right border when
            ``size`` does not divide the image (default True, as the ``pse`` grids).

    Returns:
        float64 array; entry ``[n, i, j]`` is the l2 norm of ``delta[n]`` over the grid in
        row ``i`` and column ``j``.
    """
    import torch

    from ..ablation import grid_boxes
    from ..analyzers.pse import grid_norms

    d = torch.as_tensor(_array(delta))
    if d.ndim != 4:
        raise ParameterError("grid_l2_map", "delta", delta, "perturbations of shape (N, C, H, W)")
    h, w = int(d.shape[2]), int(d.shape[3])
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= min(h, w):
        raise ParameterError("grid_l2_map", "size", size, f"a grid side in [1, {min(h, w)}]")
    boxes = grid_boxes(h, w, int(size), int(size), cover=cover)
    rows, cols = len(set(boxes[:, 0].tolist())), len(set(boxes[:, 1].tolist()))
    l2, _ = grid_norms(d, boxes)
    return l2.numpy().reshape(len(d), rows, cols)


def plot_refine_norms(result: Any, n: int = 3, grid_size: int | None = None,
                      supports: Sequence[str] | None = None, classes: Sequence[str] | None = None) -> "Figure":
    """Per-grid ``||delta_G||_2`` before and after refinement (Figs. 6 / A6 of the PSE paper).

    One row per example: the grid map of the unrefined ``delta``, then per support the grid
    map of the refined ``delta`` and the support mask (white inside). The maps of a row share
    one colour scale, ``[0, the row's highest grid norm]`` (hot), and each title gives the
    map's highest value (the paper: "max. value 1.2 against 0.25").

    Args:
        result: a :class:`~advinterp.analyzers.refine.Refinement` (``batches`` hold the
            examples; ``masks`` the supports, left out when the result has none).
        n: examples shown (default 3; fewer if the result holds fewer).
        grid_size: grid side in pixels (default: the result's ``grid_size``, the PSE grid of
            S1, or the PSE default for the image size).
        supports: the supports shown, in order (default: all of ``result.refined``).
        classes: class names for the row titles (default: indices).

    Returns:
        A Figure with ``n * (1 + 2 * len(supports))`` axes (``1 + len(supports)`` per row
        when the result keeps no masks).
    """
    from matplotlib.figure import Figure

    from ..analyzers.pse import default_grid_size

    owner = "plot_refine_norms"
    batches = getattr(result, "batches", None)
    if not isinstance(batches, dict) or "original" not in batches:
        raise ParameterError(owner, "result", result, "a Refinement holding its batches (result.batches)")
    supports = list(result.refined) if supports is None else list(supports)
    missing = [s for s in supports if s not in batches]
    if not supports or missing:
        raise ParameterError(owner, "supports", supports,
                             f"refined supports among {sorted(set(batches) - {'original'})}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(owner, "n", n, "a positive integer")
    original = batches["original"]
    h, w = (int(v) for v in original.x0.shape[2:])
    size = grid_size or int(getattr(result, "grid_size", 0) or 0) or default_grid_size(h, w)
    n = int(min(n, len(original)))
    if n == 0:
        raise ParameterError(owner, "result", result, "a Refinement of at least one example")
    maps = {"original": grid_l2_map(original.delta[:n], size)}
    for s in supports:
        maps[s] = grid_l2_map(batches[s].delta[:n], size)
    masks = getattr(result, "masks", None) or {}
    cols = [("original", "map")]
    for s in supports:
        cols += [(s, "map")] + ([(s, "mask")] if s in masks else [])
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))

    fig = Figure(figsize=(1.75 * len(cols) + 0.6, 2.25 * n + 0.6), dpi=100)
    axes = fig.subplots(n, len(cols), squeeze=False)
    for i in range(n):
        vmax = max(float(m[i].max()) for m in maps.values()) or 1.0
        for j, (key, what) in enumerate(cols):
            ax = axes[i, j]
            if what == "map":
                ax.imshow(maps[key][i], cmap="hot", vmin=0.0, vmax=vmax, interpolation="nearest")
                head = "\u03b4 original" if key == "original" else f"\u03b4 refined ({key})"
                ax.set_title(f"{head}\nmax {float(maps[key][i].max()):.3g}", fontsize=8)
            else:
                mask = _array(masks[key][i]).reshape(h, w)
                ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"support {key}\n{mask.mean():.0%} of pixels", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        label = f"image {i}"
        if original.y_target is not None:
            label = f"{name(original.y_true[i])} \u2192 {name(original.y_target[i])}"
        ok = [s for s in supports if batches[s].success is not None and not bool(batches[s].success[i])]
        axes[i, 0].set_ylabel(label + (f"\n(fails: {', '.join(ok)})" if ok else ""), fontsize=8)
    fig.suptitle(f"\u2016\u03b4_G\u2016\u2082 per {size}x{size} grid before and after refinement "
                 f"({getattr(result, 'attack', '') or 'attack'}; one colour scale per row)", fontsize=9)
    fig.tight_layout()
    return fig
