"""Sections of the image-level views of paired datasets (Ding et al.): ``pixel_histogram``
(Fig. 2) and ``cam_replacement`` (Fig. 3, Tables 2-3)."""
from __future__ import annotations

from typing import Any

from ..report import Section
from ..study.views import ReportGroup, Run
from .cam import selected_batch

__all__ = ["pixel_histogram_section", "cam_replacement_section"]


def _attack_label(step: Any) -> str:
    """The attack (or pairs folder) a step's batch came from."""
    b = step.input("batch")
    if b is None:
        return step.result.attack if hasattr(step.result, "attack") else ""
    return b.name if b.kind == "attack" and b.name else b.id


def pixel_histogram_section(group: ReportGroup, run: Run) -> Section:
    """Per step: mean absolute grey-level difference and histogram distances; Fig. 2 of the
    first step (image, histogram, adversarial, histogram)."""
    from ..viz.pixels import plot_pixel_histograms

    rows = [{"step": s.id, **{**s.result.summary(), "attack": _attack_label(s)}} for s in group.steps]
    run.summary["pixel_histogram"] = rows
    figures = []
    first = group.steps[0]
    batch = selected_batch(first)
    res = first.result
    if batch is not None and len(batch) and len(res.hist_clean):
        fig = plot_pixel_histograms(batch.x0, batch.x_adv, res.hist_clean, res.hist_adv, n=3,
                                    mean_abs_diff=res.mean_abs_diff)
        figures.append((f"Clean and adversarial images of {first.id} with their per-channel histograms (Fig. 2)",
                        run.save_figure(fig, "pixel_histograms.png")))
    return Section("Pixel histograms, clean vs adversarial (Ding et al., Fig. 2)", [
        "Per image and channel, the 256-bin histogram of the 8-bit grey levels of x0 and of x'. mean_abs_diff: "
        "mean |level(x0) - level(x')| over pixels and channels, in grey levels (the paper reports 4.2 for "
        "DAmageNet); tv: total-variation distance between the normalised histograms of x0 and x' per image and "
        "channel (0: equal, 1: disjoint), tv_pooled: the same of the histograms summed over images."],
        tables=[("Pixel statistics per step", rows)], figures=figures)


def cam_replacement_section(group: ReportGroup, run: Run) -> Section:
    """The change statistics per step and value (the bottom rows of Tables 2-3), the paper's
    before/after table for the first step's first images, Fig. 3 and a bar chart of the mean
    absolute confidence changes."""
    from ..viz.pixels import plot_prediction_cams, plot_replacement_changes

    rows, figures, tables = [], [], []
    for s in group.steps:
        for r in s.result.rows():
            rows.append({"step": s.id, **r, "attack": _attack_label(s)})
    run.summary["cam_replacement"] = rows
    tables.append(("Change statistics per step and replacement value (mean confidence change over the images "
                   "whose top-1 label did not change; n_changed: images whose label changed)", rows))
    first = group.steps[0]
    res = first.result
    tables.append((f"Before and after the replacement, {first.id}: first images (Tables 2-3 layout)",
                   res.paper_rows(run.classes, images=8)))
    batch = selected_batch(first)
    if batch is not None and len(batch) and len(res.cam_clean):
        fig = plot_prediction_cams(batch.x0, batch.x_adv, res.cam_clean, res.cam_adv, res.pred_clean, res.pred_adv,
                                   n=4, classes=run.classes)
        figures.append((f"{res.explainer} of the clean and the adversarial image for their own predictions, "
                        f"{first.id} (Fig. 3)", run.save_figure(fig, "prediction_cams.png")))
    if rows:
        figures.append(("Mean |confidence change| after the replacement, clean vs adversarial",
                        run.save_figure(plot_replacement_changes(rows), "cam_replacement.png")))
    return Section("Replacing pixels of the CAM region (Ding et al., Tables 2-3, Fig. 3)", [
        f"For each pair: k = {res.k} pixels drawn at random (seed {res.seed}) from the top {100 * res.top:g} % of the "
        f"clean image's {res.explainer} map for its own prediction, set to each value v / 255 in every channel of "
        "x0 and, at the same positions, of x'. clean_change / adv_change: mean top-1 confidence change (after - "
        "before) over the images whose label did not change; *_abs_change: the mean of |after - before| over the "
        "same images (the paper's 'jitter'). The paper finds the clean images' confidence moving more than the "
        "adversarial ones'."], tables=tables, figures=figures)
