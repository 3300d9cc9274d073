"""Image-level views of clean/adversarial pairs (Ding et al.): pixel histograms (Fig. 2), the
CAM of each image's own prediction (Fig. 3) and the confidence change under CAM-region pixel
replacement (Tables 2-3)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..exceptions import ParameterError
from .common import _image_hwc

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_pixel_histograms", "plot_prediction_cams", "plot_replacement_changes"]

_CHANNEL_COLORS = ("#d62728", "#2ca02c", "#1f77b4")


def _count(owner: str, n: Any, avail: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(owner, "n", n, "a positive integer")
    if avail == 0:
        raise ParameterError(owner, "x0", avail, "at least one image")
    return int(min(n, avail))


def _hist_axis(ax: Any, hist: np.ndarray, ymax: float) -> None:
    bins = np.arange(256)
    for c in range(hist.shape[0]):
        col = _CHANNEL_COLORS[c] if hist.shape[0] == 3 else "0.3"
        ax.plot(bins, hist[c], color=col, lw=0.8)
    ax.set_xlim(0, 255)
    ax.set_ylim(0, ymax)
    ax.tick_params(labelsize=6)


def plot_pixel_histograms(x0: Any, x_adv: Any, hist_clean: np.ndarray, hist_adv: np.ndarray, n: int = 3,
                          mean_abs_diff: np.ndarray | None = None) -> "Figure":
    """Fig. 2 of Ding et al.: per row, the clean image, its per-channel 256-bin histogram, the
    adversarial image and its histogram (red, green, blue lines; the two histograms of a row
    share their y axis).

    Args:
        x0, x_adv: ``(N, C, H, W)`` pixels in [0, 1].
        hist_clean, hist_adv: ``(N, C, 256)`` counts (``PixelHistograms.hist_clean`` / ``hist_adv``).
        n: rows (images) shown (default 3).
        mean_abs_diff: optional ``(N,)`` mean absolute grey-level difference, shown in the row title.
    """
    from matplotlib.figure import Figure

    n = _count("plot_pixel_histograms", n, min(len(x0), len(hist_clean)))
    fig = Figure(figsize=(9.0, 2.0 * n + 0.3), dpi=100)
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        ymax = 1.05 * float(max(np.max(hist_clean[i]), np.max(hist_adv[i]), 1))
        for j, (img, hist, what) in enumerate(((x0[i], hist_clean[i], "clean"), (x_adv[i], hist_adv[i], "adversarial"))):
            ax = axes[i, 2 * j]
            ax.imshow(_image_hwc(img))
            ax.set_xticks([])
            ax.set_yticks([])
            title = what if mean_abs_diff is None or j == 0 else f"{what} (|diff| {float(mean_abs_diff[i]):.2f})"
            ax.set_title(title, fontsize=8)
            _hist_axis(axes[i, 2 * j + 1], np.asarray(hist), ymax)
            axes[i, 2 * j + 1].set_title(f"histogram ({what})", fontsize=8)
    fig.tight_layout()
    return fig


def plot_prediction_cams(x0: Any, x_adv: Any, cam_clean: np.ndarray, cam_adv: np.ndarray, pred_clean: Any,
                         pred_adv: Any, n: int = 4, classes: Sequence[str] | None = None,
                         alpha: float = 0.5) -> "Figure":
    """Fig. 3 of Ding et al.: per row, the clean image, the CAM of its prediction (overlaid),
    the adversarial image and the CAM of its prediction.

    Args:
        x0, x_adv: ``(N, C, H, W)`` pixels in [0, 1].
        cam_clean, cam_adv: ``(N, H, W)`` maps of each image for its own top-1 class
            (``CamReplacement.cam_clean`` / ``cam_adv``), shown on ``[0, 1]`` (jet).
        pred_clean, pred_adv: ``(N,)`` the top-1 classes (column titles).
        n: rows shown (default 4); classes: class names (default: indices).
    """
    from matplotlib.figure import Figure

    n = _count("plot_prediction_cams", n, min(len(x0), len(cam_clean)))
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    fig = Figure(figsize=(8.0, 2.0 * n + 0.3), dpi=100)
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        for j, (img, cam, pred, what) in enumerate(((x0[i], cam_clean[i], pred_clean[i], "clean"),
                                                     (x_adv[i], cam_adv[i], pred_adv[i], "adversarial"))):
            im = _image_hwc(img)
            axes[i, 2 * j].imshow(im)
            axes[i, 2 * j].set_title(f"{what}: {name(pred)}", fontsize=8)
            axes[i, 2 * j + 1].imshow(im)
            axes[i, 2 * j + 1].imshow(np.clip(np.asarray(cam, np.float64), 0, 1), cmap="jet", vmin=0, vmax=1,
                                      alpha=alpha)
            axes[i, 2 * j + 1].set_title(f"CAM of {name(pred)}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_replacement_changes(rows: Sequence[dict[str, Any]]) -> "Figure":
    """Mean absolute confidence change of clean and adversarial images per replacement value
    (one group of bars per value, one panel per attack), over the label-unchanged images.

    Args:
        rows: ``CamReplacement.rows()`` of one or several steps (keys ``attack``, ``value``,
            ``clean_abs_change``, ``adv_abs_change``).
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ParameterError("plot_replacement_changes", "rows", rows, "at least one row")
    attacks = list(dict.fromkeys(str(r.get("attack", "")) for r in rows))
    fig = Figure(figsize=(3.2 * len(attacks) + 0.6, 2.8), dpi=100)
    axes = fig.subplots(1, len(attacks), squeeze=False)[0]
    for ax, attack in zip(axes, attacks):
        rs = [r for r in rows if str(r.get("attack", "")) == attack]
        pos = np.arange(len(rs))
        ax.bar(pos - 0.2, [100 * r["clean_abs_change"] for r in rs], 0.4, label="clean", color="#1f77b4")
        ax.bar(pos + 0.2, [100 * r["adv_abs_change"] for r in rs], 0.4, label="adversarial", color="#d62728")
        ax.set_xticks(pos, [str(r["value"]) for r in rs], fontsize=8)
        ax.set_xlabel("replacement value (of 255)", fontsize=8)
        ax.set_title(attack or "pairs", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("mean |confidence change| (%)", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
