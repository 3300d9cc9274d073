"""The section of every attack step: the Table A1 view and the perturbations."""
from __future__ import annotations

from ..report import Section
from ..results import format_table
from ..study.views import ReportGroup, Run

__all__ = ["attacks_section"]


def attacks_section(group: ReportGroup, run: Run) -> Section:
    """ASR and mean l0/l1/l2/linf of each attack step (norms over successful examples, as the
    ``attack_metrics`` analyzer averages them) and a figure of the first steps' perturbations."""
    from ..analyzers.attack_metrics import attack_metrics
    from ..viz import plot_perturbations

    rows, batches = [], {}
    for s in group.steps:
        batch = s.result
        res = attack_metrics(batch, s.model)
        rows += [{"step": s.id, **r} for r in res.rows()]
        batches.setdefault(s.id, batch)
    run.summary["attacks"] = rows
    run.write_text("table_a1.txt", format_table(rows))
    shown = {k: v for k, v in list(batches.items())[:6] if len(v)}
    figures = []
    if shown:
        figures.append(("Perturbation magnitude per attack",
                        run.save_figure(plot_perturbations(shown, n=6, classes=run.classes), "perturbations.png")))
    return Section("Attacks (Table A1 view)", [
        "Each attack step: attack success rate and the mean l0/l1/l2/linf of delta over its successful examples "
        "(l0 counts perturbed entries, pixels x channels)."],
        tables=[("Attack success rate and distortion", rows)], figures=figures)
