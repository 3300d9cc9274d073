"""The section of the ``refine`` steps: attacks with and without a support (Table A1)."""
from __future__ import annotations

from ..report import Section
from ..results import format_table
from ..study.views import ReportGroup, Run

__all__ = ["refine_section"]


def refine_section(group: ReportGroup, run: Run) -> Section:
    """One row per step and support: distortion and ASR original vs refined."""
    rows = [{"step": s.id, **r} for s in group.steps for r in s.result.rows()]
    run.summary.setdefault("pse", {})["table_a1_refined"] = rows
    run.write_text("table_a1_refined.txt", format_table(rows))
    return Section("Refined attacks under S1 / S2 (Table A1 view)", [
        "Each attack re-run with delta = 0 outside a support: S1, the grids holding the top 70% of the cumulative "
        "PSE significance s, or S2, the CAM region of the true class. Norms are averaged over successful examples."],
        tables=[("Attacks with and without refinement", rows)])
