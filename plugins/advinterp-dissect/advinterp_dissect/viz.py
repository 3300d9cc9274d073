"""Figures of network dissection and unit sensitivity (Figs. 7-8 of the PSE paper).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (headless
safe); save it with :func:`advinterp.viz.save_figure`.

* :func:`plot_detector_counts` — detectors per concept category and layer (Fig. 7b);
* :func:`plot_pvalues` — p-value of the top-N sensitive units' IoU vs N, per layer (Fig. 7a);
* :func:`plot_top_units` — the most interpretable units of each layer with their concepts;
* :func:`plot_sensitivity_vs_iou` — ``v(k)`` against ``IoU(k)`` per layer;
* :func:`plot_detector_views` — inputs segmented by ``M_k(x)`` and ``M_k(x')`` (Fig. 8).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from advinterp.api import ParameterError

from .analysis import SensitivityAnalysis
from .dissection import Dissection
from .views import DetectorViews

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_detector_counts", "plot_pvalues", "plot_top_units", "plot_sensitivity_vs_iou",
           "plot_detector_views", "CATEGORY_COLORS"]

#: A fixed colour per Broden category.
CATEGORY_COLORS: dict[str, str] = {"color": "#e15759", "texture": "#f28e2b", "material": "#b07aa1",
                                   "part": "#59a14f", "object": "#4e79a7", "scene": "#9c755f"}


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100)


def _counts_of(source: Any, top: bool) -> tuple[dict[str, dict[str, int]], str]:
    if isinstance(source, SensitivityAnalysis):
        if top:
            ns = {ls.detector_n for ls in source.layers.values()}
            what = f"among the top {'/'.join(str(n) for n in sorted(ns))} sensitive units"
            return {k: dict(v.detector_counts) for k, v in source.layers.items()}, what
        return {k: dict(v.all_detector_counts) for k, v in source.layers.items()}, "among all units"
    if isinstance(source, Dissection):
        return {k: v.detector_counts(source.iou_threshold) for k, v in source.layers.items()}, "among all units"
    if isinstance(source, Mapping) and all(isinstance(v, Mapping) for v in source.values()):
        return {str(k): {str(c): int(n) for c, n in v.items()} for k, v in source.items()}, ""
    raise ParameterError("plot_detector_counts", "source", source,
                         "a Dissection, a SensitivityAnalysis or {layer: {category: count}}")


def plot_detector_counts(source: Any, top: bool = True, title: str | None = None) -> "Figure":
    """Concept detectors per category (grouped bars) for every layer (Fig. 7b).

    Args:
        source: a :class:`~advinterp_dissect.analysis.SensitivityAnalysis` (counts among
            the top ``detector_n`` sensitive units when ``top``, else among all units), a
            :class:`~advinterp_dissect.dissection.Dissection` (all units), or
            ``{layer: {category: count}}``.
        top: see ``source``.
        title: default: says which units are counted.
    """
    counts, what = _counts_of(source, top)
    if not counts:
        raise ParameterError("plot_detector_counts", "source", source, "at least one layer")
    layers = list(counts)
    cats = list(dict.fromkeys(c for v in counts.values() for c in v))
    fig = _figure(max(5.0, 1.2 * len(layers) + 2.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(cats))
    xs = np.arange(len(layers))
    for j, c in enumerate(cats):
        ax.bar(xs + (j - (len(cats) - 1) / 2) * width, [counts[l].get(c, 0) for l in layers], width,
               label=c, color=CATEGORY_COLORS.get(c))
    ax.set_xticks(xs, layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("concept detectors")
    ax.set_title(title or f"Detectors per concept category {what}".strip())
    ax.legend(fontsize=8, ncol=min(len(cats), 3))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pvalues(analysis: SensitivityAnalysis, alpha: float = 0.05) -> "Figure":
    """p-value of ``sum IoU`` over the top-N sensitive units vs N, one line per layer (Fig. 7a),
    log scale, with the ``alpha`` level dashed and the test's floor ``1 / (1 + n_draws)`` dotted."""
    if not isinstance(analysis, SensitivityAnalysis) or not analysis.layers:
        raise ParameterError("plot_pvalues", "analysis", analysis, "a SensitivityAnalysis with at least one layer")
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    floor = 1.0
    for name, ls in analysis.layers.items():
        ax.plot(ls.test.ns, ls.test.p_values, marker="o", label=f"{name} ({len(ls.sensitivity)} units)")
        floor = min(floor, 1.0 / (1 + ls.test.n_draws))
    ax.axhline(alpha, ls="--", color="k", lw=1, label=f"p = {alpha}")
    ax.axhline(floor, ls=":", color="grey", lw=1, label="smallest p the draws can give")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1.5)
    ax.set_xlabel("N (top-N sensitive units)")
    ax.set_ylabel("p-value")
    ax.set_title("Interpretability of the most sensitive units vs random units")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_top_units(dissection: Dissection, k: int = 8) -> "Figure":
    """One panel per layer: the ``k`` units of highest top-concept IoU, bars coloured by
    category, labelled ``unit: concept``; the detector threshold dashed."""
    if not isinstance(dissection, Dissection) or not dissection.layers:
        raise ParameterError("plot_top_units", "dissection", dissection, "a Dissection with at least one layer")
    L = len(dissection.layers)
    fig = _figure(3.3 * L, 0.3 * k + 1.4)
    for i, (name, ld) in enumerate(dissection.layers.items()):
        ax = fig.add_subplot(1, L, i + 1)
        rows = ld.top_units(k, dissection.iou_threshold)[::-1]
        ys = np.arange(len(rows))
        ax.barh(ys, [r["iou"] for r in rows], color=[CATEGORY_COLORS.get(r["category"], "#777777") for r in rows])
        ax.set_yticks(ys, [f"{r['unit']}: {r['label']} ({r['category']})" for r in rows], fontsize=7)
        ax.axvline(dissection.iou_threshold, ls="--", color="k", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("IoU", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def plot_sensitivity_vs_iou(analysis: SensitivityAnalysis) -> "Figure":
    """One panel per layer: ``IoU(k)`` against ``v(k)``, detectors coloured by category."""
    if not isinstance(analysis, SensitivityAnalysis) or not analysis.layers:
        raise ParameterError("plot_sensitivity_vs_iou", "analysis", analysis,
                             "a SensitivityAnalysis with at least one layer")
    L = len(analysis.layers)
    fig = _figure(3.0 * L, 3.0)
    for i, (name, ls) in enumerate(analysis.layers.items()):
        ax = fig.add_subplot(1, L, i + 1)
        det = ls.best_iou > analysis.iou_threshold
        colors = [CATEGORY_COLORS.get(c, "#777777") if d else "#cccccc" for c, d in zip(ls.best_category, det)]
        ax.scatter(ls.sensitivity, ls.unit_iou, s=12, c=colors)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("sensitivity v(k)", fontsize=8)
        if i == 0:
            ax.set_ylabel("IoU(k)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_detector_views(views: DetectorViews, n_images: int = 2, dim: float = 0.2) -> "Figure":
    """Fig. 8: one column per unit (titled ``layer / unit``, ``concept-category``, IoU),
    and for each of the first ``n_images`` pairs a row ``Ori`` (segmented by ``M_k(x)``) and
    a row ``Adv`` (segmented by ``M_k(x')``); pixels outside the mask are dimmed to ``dim``."""
    if not isinstance(views, DetectorViews) or len(views) == 0:
        raise ParameterError("plot_detector_views", "views", views, "DetectorViews with at least one unit")
    n = min(int(n_images), len(views.x0))
    if n < 1:
        raise ParameterError("plot_detector_views", "n_images", n_images, "a positive number of image pairs")
    K = len(views)
    fig = _figure(1.5 * K + 0.6, 1.55 * 2 * n + 0.6)
    for k in range(K):
        for i in range(n):
            for j, adv in enumerate((False, True)):
                ax = fig.add_subplot(2 * n, K, (2 * i + j) * K + k + 1)
                img = np.clip(views.segmented(k, i, adv, dim), 0, 1)
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == 0:
                    ax.set_ylabel(f"{'Adv' if adv else 'Ori'} {i}", fontsize=8)
                if i == 0 and not adv:
                    ax.set_title(f"{views.layers[k]} / {int(views.units[k])}\n{views.labels[k]}-{views.categories[k]}"
                                 f" ({views.ious[k]:.2f})", fontsize=7)
    fig.tight_layout()
    return fig
