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

from .robustness import COLUMNS, RobustnessResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from advinterp.api import ReportGroup, Run

__all__ = ["plot_robustness", "robustness_section", "SECTIONS"]


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
            "paper). AT: a copy of the model fine-tuned with eq. 2 (alpha * CE(x) + (1 - alpha) * CE(PGD(x))), attacked "
            "itself, with an SJE refitted on its features. The user's model is not trained."]
    return Section("Attributes: softmax vs SJE under attack (Gulshad et al. Fig. 4)", text, tables=tables,
                   figures=figs)


SECTIONS: dict[tuple[str, str], Callable[["ReportGroup", "Run"], Section]] = {
    ("analyzer", "attributes.robustness"): robustness_section,
}
