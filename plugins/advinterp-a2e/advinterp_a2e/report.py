"""Report sections and figures of ``a2e.transfer`` (C4) and ``a2e.regions`` (C3).

Figures are matplotlib ``Figure`` objects (no pyplot state), written with ``run.save_figure``
(:func:`advinterp.api.save_figure`); headline numbers go to ``run.summary["a2e_transfer"]`` and
``run.summary["a2e_regions"]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from advinterp.api import ParameterError, Section, image_hwc

from .regions import A2ERegionsResult
from .transfer import A2ETransferResult, rescale

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from advinterp.api import ReportGroup, Run

__all__ = ["plot_transfer", "plot_regions", "transfer_section", "regions_section", "SECTIONS"]


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _show(ax: Any, img: Any, title: str) -> None:
    a = image_hwc(img)
    ax.imshow(a, cmap=None if a.ndim == 3 else "gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_transfer(result: A2ETransferResult, classes: Any = None, max_images: int = 6) -> "Figure":
    """Top: per model, bars of the mean target confidence (over images) for the held-out
    images without p (baseline), with p added, and for p alone rescaled. Bottom: the first
    ``max_images`` perturbations rescaled to [0, 1] (the images classified as "p alone")."""
    if not isinstance(result, A2ETransferResult):
        raise ParameterError("plot_transfer", "result", result, "an A2ETransferResult")
    n = min(len(result.target), int(max_images))
    fig = _figure(max(6.4, 1.3 * n), 5.2 if n else 3.4)
    grid = fig.add_gridspec(2 if n else 1, max(n, 1), height_ratios=[1.6, 1] if n else [1])
    ax = fig.add_subplot(grid[0, :])
    rows = result.summary_rows()
    xs = np.arange(len(rows))
    for j, (key, label) in enumerate((("baseline", "held-out images"), ("p_on_held_out", "p on held-out images"),
                                      ("p_alone", "p alone (rescaled)"))):
        vals = [r[key] for r in rows]
        ax.bar(xs + (j - 1) * 0.27, np.nan_to_num(vals), 0.27, label=label, color=f"C{j}")
    ax.set_xticks(xs, [r["model"] for r in rows], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("mean target probability")
    ax.set_title(f"Target confidence of each model ({len(result.target)} perturbations)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    for i in range(n):
        t = int(result.target[i])
        name = classes[t] if classes is not None and t < len(classes) else str(t)
        _show(fig.add_subplot(grid[1, i]), result.p_alone[i], f"p{i} -> {name}")
    return fig


def _step_name(step: Any) -> str:
    return step.id.replace("/", "_")


def transfer_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.transfer`` steps: per-model means, per (image, model) rows, the figure."""
    results = {s.id: s.result for s in group.steps}
    run.summary["a2e_transfer"] = {k: r.summary_rows() for k, r in results.items()}
    tables = [(f"Target confidence per model, means over perturbations -- {k}", r.summary_rows())
              for k, r in results.items()]
    tables += [("Target confidence per (image, model)", [{"step": k, **row} for k, r in results.items()
                                                          for row in r.rows()])]
    figs = [(f"Target confidence per model and the perturbations rescaled to [0, 1] (p alone) -- {s.id}",
             run.save_figure(plot_transfer(s.result, run.classes), f"{_step_name(s)}_a2e_transfer.png"))
            for s in group.steps]
    text = ["Each perturbation p_i = x_adv[i] - x0[i] of a targeted batch is classified by several models: added to "
            "held-out images (the batch's other images whose true class is not the target; clipped to [0, 1]) and "
            "alone, rescaled to [0, 1] as the paper displays it (Jalwana et al. 2020, Fig. 3); 'baseline' is the "
            "held-out images without p. Numbers are mean softmax probabilities of the target and top-1 = target "
            "rates. With a2e's distribution='batch' the held-out images are the samples p was computed on."]
    return Section("Attack-to-explain: transfer of p to other models (C4)", text, tables=tables, figures=figs)


def plot_regions(result: A2ERegionsResult, classes: Any = None, max_images: int = 4) -> "Figure":
    """Fig. 4: per image (first ``max_images``) and position, the obstructed seed and the
    recomputed p rescaled to [0, 1] (the patch outlined), with the fraction of ||p||^2 inside."""
    if not isinstance(result, A2ERegionsResult):
        raise ParameterError("plot_regions", "result", result, "an A2ERegionsResult")
    from matplotlib.patches import Rectangle

    n, n_pos = min(len(result.target), int(max_images)), result.positions.shape[1]
    fig = _figure(1.5 * 2 * max(n_pos, 1), 1.7 * max(n, 1))
    if not n:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no image", ha="center", va="center")
        return fig
    axes = fig.subplots(n, 2 * n_pos, squeeze=False)
    h, w = result.patch
    for i in range(n):
        t = int(result.target[i])
        name = classes[t] if classes is not None and t < len(classes) else str(t)
        for j in range(n_pos):
            r, c = (int(v) for v in result.positions[i, j])
            _show(axes[i, 2 * j], result.obstructed[i, j], f"{i} -> {name} ({r},{c})")
            _show(axes[i, 2 * j + 1], rescale(result.p[i, j]),
                  f"p: {100 * result.energy_in[i, j]:.0f}% in patch (reached {int(result.reached[i, j])})")
            axes[i, 2 * j + 1].add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, ec="red", lw=1))
    return fig


def regions_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.regions`` steps: per (image, position) rows, energy summary, Fig. 4."""
    results = {s.id: s.result for s in group.steps}

    def mean(a: np.ndarray) -> float:
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else float("nan")

    summary = [{"step": k, "pairs": int(r.energy_in.size), "patch": f"{r.patch[0]}x{r.patch[1]}",
                "patch_area": float(r.area), "energy_in_patch_obstructed": mean(r.energy_in),
                "energy_in_patch_unobstructed": mean(r.energy_in_clean),
                "reached_rate": float((r.reached >= 0).mean()) if r.reached.size else float("nan")}
               for k, r in results.items()]
    run.summary["a2e_regions"] = summary
    tables = [("Fraction of ||p||^2 inside the patch: recomputed with the patch vs the batch's own p (means)", summary),
              ("Per (image, position)", [{"step": k, **row} for k, r in results.items() for row in r.rows()])]
    figs = [(f"Obstructed seed and recomputed p rescaled to [0, 1], per position (Fig. 4) -- {s.id}",
             run.save_figure(plot_regions(s.result, run.classes), f"{_step_name(s)}_a2e_regions.png"))
            for s in group.steps]
    text = ["The seed and every sample of its distribution are obstructed with a uniform patch of the samples' mean "
            "colour (64/224 of the image side by default) and the attack-to-explain perturbation is computed again "
            "(Jalwana et al. 2020, Fig. 4). 'energy in patch' is the fraction of ||p||^2 inside the patch, for the "
            "recomputed p and for the batch's own (unobstructed) p at the same place; the patch's area fraction is "
            "what a uniform p would have there."]
    return Section("Attack-to-explain: obstructed regions (C3, Fig. 4)", text, tables=tables, figures=figs)


#: ``(group kind, component name)`` -> the section the plugin answers with.
SECTIONS: dict[tuple[str, str], Callable[["ReportGroup", "Run"], Section]] = {
    ("analyzer", "a2e.transfer"): transfer_section,
    ("analyzer", "a2e.regions"): regions_section,
}
