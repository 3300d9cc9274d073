"""Report sections and figures of the attributes analyzers (Gulshad et al. 2020):
``attributes.robustness`` (Fig. 4), ``attributes.grounding`` (Figs. 6-7) and
``attributes.distances`` (Fig. 5).

Figures are matplotlib ``Figure`` objects (no pyplot state), written with ``run.save_figure``;
headline numbers go to ``run.summary["attributes_robustness"]`` (and ``..._grounding``,
``..._distances``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from advinterp.api import ParameterError, Section

from .distances_analysis import DistancesResult
from .grounding_analysis import SIDES, GroundingResult, to_grounding
from .robustness import COLUMNS, RobustnessResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from advinterp.api import ReportGroup, Run

__all__ = ["plot_robustness", "robustness_section", "plot_grounding", "grounding_section", "plot_distances",
           "distances_section", "SECTIONS"]


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _step_name(step: Any) -> str:
    return step.id.replace("/", "_")


_STYLE = {"softmax_clean": ("C0", ":", "o"), "softmax_adv": ("C0", "-", "o"), "sje_clean": ("C1", ":", "s"),
          "sje_adv": ("C1", "-", "s"), "at_softmax_clean": ("C2", ":", "^"), "at_softmax_adv": ("C2", "-", "^"),
          "at_sje_clean": ("C3", ":", "D"), "at_sje_adv": ("C3", "-", "D")}


def plot_robustness(result: RobustnessResult) -> "Figure":
    """Fig. 4: per mode, accuracy vs eps of softmax and SJE, clean (dotted) and adversarial
    (solid), without and with (``AT``) adversarial training."""
    if not isinstance(result, RobustnessResult):
        raise ParameterError("plot_robustness", "result", result, "a RobustnessResult")
    m = max(len(result.modes), 1)
    fig = _figure(4.2 * m, 3.4)
    axes = fig.subplots(1, m, squeeze=False)[0]
    for i, mode in enumerate(result.modes):
        ax = axes[i]
        for k, col in enumerate(COLUMNS):
            vals = result.accuracy[i, :, k]
            if not np.isfinite(vals).any():
                continue
            c, ls, mk = _STYLE[col]
            ax.plot(result.eps, vals, color=c, linestyle=ls, marker=mk, ms=4,
                    label=col.replace("at_", "AT ").replace("_", " "))
        ax.set_xscale("log")
        ax.set_xticks(result.eps, [f"{e:g}" for e in result.eps], fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("eps (l_inf)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"IFGSM {mode} ({result.n} images)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig


def robustness_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``attributes.robustness`` steps: the accuracy table and Fig. 4."""
    results = {s.id: s.result for s in group.steps}
    run.summary["attributes_robustness"] = {k: r.rows() for k, r in results.items()}
    tables = [(f"Accuracy per attack mode and eps: softmax and SJE, clean and adversarial, without and with "
               f"adversarial training (AT) -- {k} ({r.n} images; trained on {r.trained_on}; class attributes: "
               f"{r.attributes_from})", r.rows()) for k, r in results.items()]
    figs = [(f"Accuracy vs eps (Gulshad et al. Fig. 4 analogue) -- {s.id}",
             run.save_figure(plot_robustness(s.result), f"{_step_name(s)}_attributes_robustness.png"))
            for s in group.steps]
    text = ["IFGSM (l_inf, untargeted and targeted to a random class != y) on the model; SJE classifies the model's "
            "pooled features of the same adversarial images (the attack transferred from the softmax model, as in the "
            "paper). AT: a copy of the model fine-tuned with eq. 2 (alpha * CE(x) + (1 - alpha) * CE(PGD(x))), "
            "attacked "
            "itself, with an SJE refitted on its features. The user's model is not trained."]
    return Section("Attributes: softmax vs SJE under attack (Gulshad et al. Fig. 4)", text, tables=tables,
                   figures=figs)


def _name(classes: Any, c: int) -> str:
    return str(classes[c]) if classes is not None and 0 <= c < len(classes) else str(c)


def plot_grounding(result: GroundingResult, classes: Any = None) -> "Figure":
    """Figs. 6-7: one row per flipped image, clean | adversarial, each with its selected
    attributes' boxes colour-coded (legend) and the ungrounded ones listed in grey."""
    if not isinstance(result, GroundingResult):
        raise ParameterError("plot_grounding", "result", result, "a GroundingResult")
    from .grounding import draw_grounding

    n = len(result.groundings)
    fig = _figure(7.0, 2.6 * max(n, 1))
    if not n:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no flipped image ({result.n_flipped})", ha="center", va="center")
        return fig
    axes = fig.subplots(n, 2, squeeze=False)
    for i, g in enumerate(result.groundings):
        y, ya = int(result.y[i]), int(result.y_adv[i])
        for j, (side, img) in enumerate(zip(SIDES, (result.x0[i], result.x_adv[i]))):
            title = (f"clean: {_name(classes, y)} (eq. 16 vs {_name(classes, ya)})" if side == "clean" else
                     f"adversarial: {_name(classes, ya)} (eq. 17 vs {_name(classes, y)})")
            draw_grounding(axes[i, j], img.permute(1, 2, 0).clamp(0, 1).numpy(), to_grounding(g[side]), title)
    return fig


def grounding_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``attributes.grounding`` steps: precision, the per-attribute table, Figs. 6-7."""
    results = {s.id: s.result for s in group.steps}
    run.summary["attributes_grounding"] = {k: {"precision": r.precision, "images": len(r.groundings),
                                               "detector": r.detector_source} for k, r in results.items()}
    tables = [(f"Grounding precision against the true boxes ({r.n_true} images with true boxes; detector: "
               f"{r.detector_source}) -- {k}", r.precision_rows())
              for k, r in results.items() if r.precision]
    tables += [("Selected attributes and their boxes (per image, clean / adversarial)",
                [{"step": k, **row} for k, r in results.items() for row in r.rows()])]
    figs = [(f"Selected attributes grounded on the clean and the adversarial image (Figs. 6-7 analogue) -- {s.id}",
             run.save_figure(plot_grounding(s.result, run.classes), f"{_step_name(s)}_attributes_grounding.png"))
            for s in group.steps]
    text = ["For the first images the attack flipped (right when clean, wrong when adversarial): the top-k attributes "
            "of eq. 16 (clean: Z - phi(adversarial class)) and eq. 17 (adversarial: Z-hat - phi(true class)) from SJE "
            "on the model's pooled features, grounded with the attribute detector: the boxes that carry each "
            "attribute in its colour, the attributes no box carries in grey. Precision: grounded (attribute, box) "
            "pairs whose box matches a true box (IoU >= 0.5) carrying the attribute."]
    text += [f"{k}: detector {r.detector_source}." for k, r in results.items()
             if r.detector_source.startswith("untrained")]
    return Section("Attributes: grounding the selected attributes (Gulshad et al. Figs. 6-7)", text, tables=tables,
                   figures=figs)


_TITLES = {"a": "(a) eqs. 8-9: d1 = |Z - Z_adv|, d2 = |phi(y) - phi(y_adv)|",
           "b": "(b) eqs. 12-13: d1 = |Z_adv^AT - Z_adv|, d2 = |phi(y) - phi(y_adv)|",
           "c": "(c) eqs. 10-11: d1 = |Z_adv - phi(y_adv)|, d2 = |Z_adv - phi(y)|",
           "d": "(d) eqs. 14-15: d1 = |Z_adv^AT - phi(y_adv)|, d2 = |Z_adv^AT - phi(y)|"}


def plot_distances(result: DistancesResult) -> "Figure":
    """Fig. 5: per case, the distributions of d1 and d2 over the analysed images."""
    if not isinstance(result, DistancesResult):
        raise ParameterError("plot_distances", "result", result, "a DistancesResult")
    fig = _figure(8.4, 5.6)
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    for ax, k in zip(axes, ("a", "b", "c", "d")):
        c = result.cases.get(k)
        ax.set_title(_TITLES[k], fontsize=7)
        if c is None or not len(c["d1"]):
            ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes)
            continue
        d1, d2 = np.asarray(c["d1"]), np.asarray(c["d2"])
        hi = float(max(d1.max(), d2.max())) or 1.0
        bins = np.linspace(0, hi * 1.05, 16)
        ax.hist(d1, bins, alpha=0.6, label=f"d1 (mean {d1.mean():.2f})", color="C0")
        ax.hist(d2, bins, alpha=0.6, label=f"d2 (mean {d2.mean():.2f})", color="C3")
        ax.set_xlabel(f"distance ({len(d1)} images, d1 < d2: {100 * np.mean(d1 < d2):.0f} %)", fontsize=7)
        ax.legend(fontsize=6)
    return fig


def distances_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``attributes.distances`` steps: the per-case table and Fig. 5."""
    results = {s.id: s.result for s in group.steps}
    run.summary["attributes_distances"] = {k: {"cases": r.rows(), "accuracy": r.accuracy} for k, r in results.items()}
    tables = [(f"d1 / d2 per Fig. 5 case -- {k} (robust model: {r.robust}; normalize={r.params.get('normalize')})",
               r.rows()) for k, r in results.items()]
    tables += [("Accuracy of the predictions that select the images",
                [{"step": k, **r.accuracy} for k, r in results.items()])]
    figs = [(f"d1 / d2 distributions (Gulshad et al. Fig. 5 analogue) -- {s.id}",
             run.save_figure(plot_distances(s.result), f"{_step_name(s)}_attributes_distances.png"))
            for s in group.steps]
    text = ["Distances on the top 20 % most-changing attributes, over the images correct when clean and wrong when "
            "adversarial ((a), (c): standard model; (b): of those, the ones the adversarially trained model gets "
            "right; (d): the same selection with the adversarially trained model, attacked itself)."]
    return Section("Attributes: distances d1 / d2 (Gulshad et al. Fig. 5)", text, tables=tables, figures=figs)


SECTIONS: dict[tuple[str, str], Callable[["ReportGroup", "Run"], Section]] = {
    ("analyzer", "attributes.robustness"): robustness_section,
    ("analyzer", "attributes.grounding"): grounding_section,
    ("analyzer", "attributes.distances"): distances_section,
}
