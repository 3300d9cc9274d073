"""The section of the ``pse`` steps: Table 1, Fig. 2 and the PSR maps of Fig. 4."""
from __future__ import annotations

from ..report import Section
from ..results import format_table
from ..study.views import ReportGroup, Run
from .cam import selected_batch

__all__ = ["pse_section"]


def pse_section(group: ReportGroup, run: Run) -> Section:
    """Table 1 over every pse step; Fig. 2 (grid sensitivity) of the first step's first image;
    for steps with a ``report = { cam = "<explainer step>" }`` reference, the PSR of the top
    70 % grids drawn over F(x', t) (Fig. 4)."""
    from ..analyzers.pse import table1
    from ..viz import plot_pse_sensitivity, plot_psr_overlay

    results = group.results()
    rows = table1(results)
    run.summary.setdefault("pse", {})["table1"] = rows
    run.write_text("table1.txt", format_table(rows))
    figures = []
    first = group.steps[0]
    batch = selected_batch(first)
    if batch is not None and len(batch):
        figures.append((f"Grid sensitivity of a {first.id} example (Fig. 2)", run.save_figure(
            plot_pse_sensitivity(first.result, 0, batch.x_adv, run.classes), "pse_sensitivity.png")))
    for s in group.steps:
        cam, batch = s.input("cam"), selected_batch(s)
        if cam is None or batch is None or not len(batch):
            continue
        f_adv = cam.result.take(slice(0, len(batch))).xadv_t
        idx = list(range(len(batch)))
        name = f"psr_{s.id.split('.', 1)[-1]}.png" if s.id.startswith("pse.") else f"psr_{s.id}.png"
        figures.append((f"PSR of the top 70% grids by s on F(x', t): {s.id}", run.save_figure(
            plot_psr_overlay(s.result, f_adv, idx, image=batch.x_adv, classes=run.classes), name)))
    res = first.result
    return Section("Promotion-suppression effect of grid perturbations (Figs. 2 and 4, Table 1)", [
        f"Each image is cut into {res.n_grids} grids of {res.size}x{res.size} pixels (the paper's 13x13 on 299x299, "
        "scaled). For each grid, d0 is how much the true-class logit recovers and dt how much the target logit drops "
        "when the grid's perturbation is removed (floored at xi); s = d0 + dt, and the PSR r = log2(dt / d0) marks a "
        "grid suppression-dominated (r < -1, white), promotion-dominated (r > 1, black) or balanced (grey). Table 1 "
        "correlates d0, dt, s with the perturbation strength per grid, over the adversarial examples (pairs whose "
        "attack succeeded, as the paper; n_dropped counts the failed pairs left out)."],
        tables=[("Correlation of d0, dt, s with ||delta_G||_2, averaged over images (Table 1 view)", rows)],
        figures=figures)
