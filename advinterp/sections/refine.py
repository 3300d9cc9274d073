"""The section of the ``refine`` steps: attacks with and without a support (Table A1)."""
from __future__ import annotations

from ..report import Section
from ..results import format_table
from ..study.views import ReportGroup, Run

__all__ = ["refine_section"]


def refine_section(group: ReportGroup, run: Run) -> Section:
    """One row per step and support: distortion and ASR original vs refined; per step, the
    per-grid ||delta||_2 of its examples before and after refinement with the supports
    (Figs. 6 / A6)."""
    from ..viz import plot_refine_norms

    rows = [{"step": s.id, **r} for s in group.steps for r in s.result.rows()]
    run.summary.setdefault("pse", {})["table_a1_refined"] = rows
    run.write_text("table_a1_refined.txt", format_table(rows))
    figures = []
    for s in group.steps:
        res = s.result
        if (not res.refined or any(k not in res.batches for k in ("original", *res.refined))
                or not len(res.batches["original"])):
            continue
        name = f"refine_norms_{s.id.split('.', 1)[-1] if s.id.startswith('refine.') else s.id}.png"
        figures.append((f"Per-grid ||delta||_2 of {s.id} before and after refinement, and the supports (Figs. 6 / A6)",
                        run.save_figure(plot_refine_norms(res, n=3, classes=run.classes), name)))
    return Section("Refined attacks under S1 / S2 (Table A1 view)", [
        "Each attack re-run with delta = 0 outside a support: S1, the grids holding the top 70% of the cumulative "
        "PSE significance s, or S2, the CAM region of the true class. Norms are averaged over successful examples. "
        "The figures show, per example, ||delta||_2 per PSE grid before and after refinement on one colour scale "
        "(the title gives each map's maximum) and the support (white inside)."],
        tables=[("Attacks with and without refinement", rows)], figures=figures)
