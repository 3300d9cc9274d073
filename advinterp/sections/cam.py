"""Sections of the image-level steps: explainers' four maps (Figs. 3 and A1) and ``is`` (Table 2
and its per-image box plots)."""
from __future__ import annotations

from ..report import Section
from ..results import format_table
from ..study.views import ReportGroup, Run, StepView

__all__ = ["explainer_section", "is_section", "selected_batch"]


def selected_batch(step: StepView):
    """The part of a step's input batch it looked at (its ``start``/``n``), or ``None``."""
    src = step.input("batch")
    if src is None:
        return None
    batch = src.result
    start, n = int(step.spec.get("start", 0) or 0), step.spec.get("n")
    if start or n is not None:
        batch = batch.take(slice(start, None if n is None else start + int(n)))
    return batch


def explainer_section(group: ReportGroup, run: Run) -> Section:
    """F(x0, t0), F(x', t0), F(x0, t), F(x', t) of the first step's examples (Fig. 3) and the
    same maps in the five-panel layout of Fig. A1; one table row per step."""
    from ..viz import plot_cam_a1, plot_cam_overlays

    rows = [{"step": s.id, **r} for s in group.steps for r in s.result.rows()]
    first = group.steps[0]
    batch = selected_batch(first)
    figures = []
    if batch is not None and len(batch):
        pair = first.result
        fig = plot_cam_overlays(batch.x0, batch.x_adv, pair.maps(), n=4, classes=run.classes,
                                y_true=batch.y_true, target=batch.target, success=batch.success)
        name = "cam_pairs.png" if group.name == "cam" else f"cam_pairs_{group.name}.png"
        figures.append((f"{group.name} maps of {first.id} (normalised to a common maximum per image)",
                        run.save_figure(fig, name)))
        fig = plot_cam_a1(batch.x0, batch.x_adv, pair.maps(), n=4, classes=run.classes,
                          y_true=batch.y_true, target=batch.target, success=batch.success)
        name = "cam_a1.png" if group.name == "cam" else f"cam_a1_{group.name}.png"
        figures.append((f"{group.name} maps of {first.id}: F(x', t0), F(x0, t0), x0, F(x0, t), F(x', t) (Fig. A1)",
                        run.save_figure(fig, name)))
    return Section(f"Explaining adversarial examples: {group.name} (Fig. 3)", [
        f"{group.name} maps of the clean image x0 and the adversarial image x' for the true class t0 and the "
        "adversarial class t, F(x0, t0), F(x', t0), F(x0, t), F(x', t), divided by their common maximum per image."],
        tables=[("Maps per step", rows)], figures=figures)


def is_section(group: ReportGroup, run: Run) -> Section:
    """Table 2: mean IS w.r.t. (x0, t0) and (x', t) per attack, model and explainer; box plots
    of the per-image IS per explainer and attack (successful pairs)."""
    from ..analyzers.interpretability_score import table2
    from ..viz import plot_is_boxes, plot_is_table

    results = group.results()
    rows = table2(results)
    run.summary["interpretability_score"] = rows
    run.write_text("table2.txt", format_table(rows))
    fig = run.save_figure(plot_is_table(results), "is_scores.png")
    boxes = run.save_figure(plot_is_boxes(results), "is_boxes.png")
    return Section("Interpretability score of the perturbations (Table 2 view)", [
        "IS = ||B o delta||_2 / ||delta||_2, with B the pixels where the map is at least its 70% quantile: the share "
        "of the perturbation's energy inside the discriminative region w.r.t. (x0, t0) and (x', t); images with "
        "delta = 0 are left out of the means (n_valid counts the others). Means are over the adversarial examples "
        "(pairs whose attack succeeded, as the paper; n_dropped counts the failed pairs left out)."],
        tables=[("Interpretability score per attack and explainer (Table 2 view)", rows)],
        figures=[("Mean interpretability score per attack", fig),
                 ("Per-image interpretability score per attack and explainer (successful pairs)", boxes)])
