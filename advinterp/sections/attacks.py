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
    figures = []
    shown = _same_images(batches)
    if shown:
        k = min(6, *(len(b) for b in shown.values()))
        figures.append(("Perturbation magnitude per attack step (the same clean images)",
                        run.save_figure(plot_perturbations(shown, n=k, classes=run.classes), "perturbations.png")))
    return Section("Attacks (Table A1 view)", [
        "Each attack step: attack success rate and the mean l0/l1/l2/linf of delta over its successful examples "
        "(l0 counts perturbed entries, pixels x channels)."],
        tables=[("Attack success rate and distortion", rows)], figures=figures)


def _same_images(batches: dict, most: int = 6) -> dict:
    """Up to ``most`` batches whose first clean images are those of the first non-empty batch
    (one figure compares attacks on the same images)."""
    import torch

    ref = next((b for b in batches.values() if len(b)), None)
    if ref is None:
        return {}
    out = {}
    for name, b in batches.items():
        k = min(6, len(b), len(ref))
        if k and b.x0.shape[1:] == ref.x0.shape[1:] and torch.equal(b.x0[:k].cpu(), ref.x0[:k].cpu()):
            out[name] = b
        if len(out) == most:
            break
    return out
