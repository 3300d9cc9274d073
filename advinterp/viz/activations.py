"""Activations: channel-mean maps per layer, clean vs adversarial, per model (Fig. 9 / A9)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..exceptions import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def normalize_map(m: Any) -> np.ndarray:
    """``m`` scaled to [0, 1] by its own minimum and maximum (zeros for a constant map)."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def plot_activation_maps(results: Mapping[str, Any], n: int | None = None,
                         batches: Mapping[str, Any] | None = None,
                         classes: Sequence[str] | None = None) -> "Figure":
    """Channel-mean activation maps, layer by layer, for natural and robust models (Fig. 9/A9).

    Per example, one row per model and input: ``<model> clean``, ``<model> adv``, ... in the
    order of ``results``; one column per layer (in the order of each result's ``layers``).
    Each map is normalised to [0, 1] on its own (per layer and row), as in the paper.

    Args:
        results: ``{model name: ActivationMapsResult}`` over the same images.
        n: examples shown (default: all the results hold, i.e. the smallest ``n_images``).
        batches: optional ``{model name: AdversarialBatch}``; when given, a first column shows
            the clean / adversarial input of each row.
        classes: class names for the row labels (default: indices).

    Returns:
        A Figure of ``n * 2 * len(results)`` rows.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ParameterError("plot_activation_maps", "results", results, "a non-empty {model: result} mapping")
    avail = min(len(r.y_true) for r in results.values())
    n = avail if n is None else min(int(n), avail)
    if n == 0:
        raise ParameterError("plot_activation_maps", "results", {k: len(r.y_true) for k, r in results.items()},
                             "results holding at least one image")
    name = (lambda c: "?" if int(c) < 0 else classes[int(c)] if classes is not None else str(int(c)))
    img_col = 1 if batches else 0
    ncols = img_col + max(len(r.layers) for r in results.values())
    per_example = 2 * len(results)
    nrows = n * per_example
    fig = Figure(figsize=(1.25 * ncols + 1.4, 1.2 * nrows + 0.6), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for j in range(n):
        for k, (model, res) in enumerate(results.items()):
            for s, (what, maps) in enumerate((("clean", res.clean), ("adv", res.adv))):
                row = j * per_example + 2 * k + s
                label = f"{model} {what}\n" + (f"true {name(res.y_true[j])}" if what == "clean"
                                                else f"\u2192 {name(res.y_adv[j])}")
                axes[row, 0].set_ylabel(label, fontsize=7)
                if img_col:
                    b = batches.get(model) if batches else None
                    if b is not None and j < len(b):
                        x = (b.x0 if what == "clean" else b.x_adv)[j]
                        axes[row, 0].imshow(x.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
                        axes[row, 0].set_frame_on(True)
                for c, layer in enumerate(res.layers):
                    ax = axes[row, img_col + c]
                    ax.imshow(normalize_map(maps[layer][j]), cmap="viridis", vmin=0, vmax=1)
                    ax.set_frame_on(True)
                    if row % per_example == 0:
                        ax.set_title(layer, fontsize=7)
    if img_col:
        for j in range(n):
            axes[j * per_example, 0].set_title("input", fontsize=7)
    height = 1.2 * nrows + 0.6
    fig.suptitle("Channel-mean activations per layer (each map scaled to [0, 1] on its own)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))
    return fig
