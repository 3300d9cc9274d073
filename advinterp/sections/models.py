"""Sections of the model-level steps: ``accuracy`` (probe), ``activation_distance`` (Fig. A8) and
``activation_maps`` (Fig. 9 / A9)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..report import Section
from ..study.views import ReportGroup, Run

__all__ = ["accuracy_section", "activation_distance_section", "activation_maps_section", "layer_jump_rows"]


def accuracy_section(group: ReportGroup, run: Run) -> Section:
    """Clean accuracy (and accuracy under the context batch's attack) per model."""
    rows = [{"step": s.id, **r} for s in group.steps for r in s.result.rows()]
    run.summary["models"] = rows
    return Section("Models: accuracy, clean and under attack",
                   ["Top-1 accuracy on the clean data, and on the adversarial images of the attack each probe was "
                    "given (adv_accuracy over adv_n images)."],
                   tables=[("Accuracy (clean and under attack)", rows)])


def _attack_of(step: Any) -> str:
    """The attack a step's batch came from: the batch step's component name (its id when the
    batch is not an attack step; ``""`` without a batch)."""
    b = step.input("batch")
    if b is None:
        return ""
    return b.name if b.kind == "attack" and b.name else b.id


def _finite_mean(v: Any) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def layer_jump_rows(results: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """The "jump at deep layers" of Fig. A8 in numbers: per ``(model, attack)`` the mean
    relative distance at the first, middle (index ``L // 2``) and last layer, and last / first."""
    rows = []
    for (model, attack), res in results.items():
        L = len(res.layers)
        if not L:
            continue
        idx = {"first": 0, "middle": L // 2, "last": L - 1}
        row: dict[str, Any] = {"model": model, "attack": attack, "n": int(len(res.relative)), "layers": L}
        for k, i in idx.items():
            row[f"{k}_layer"] = res.layers[i]
            row[k] = _finite_mean(res.relative[:, i])
        row["last/first"] = row["last"] / row["first"] if row["first"] else float("nan")
        rows.append(row)
    return rows


def activation_distance_section(group: ReportGroup, run: Run) -> Section:
    """Per-layer distance clean vs adversarial (A11, Fig. A8): one panel per model and one curve
    per attack when the steps cover several attacks, else one curve per model; with the mean
    relative distance at the first, middle and last layer per model and attack."""
    from ..viz import plot_layer_distances

    keyed = {}
    for s in group.steps:
        key = (s.model or s.id, _attack_of(s) or s.id)
        keyed[key if key not in keyed else (key[0], s.id)] = s.result
    attacks = {a for _, a in keyed}
    if len(attacks) > 1:  # Fig. A8: panels = models, curves = attacks
        panels: dict[str, dict[str, Any]] = {}
        for (model, attack), res in keyed.items():
            panels.setdefault(model, {})[attack] = res
        fig = run.save_figure(plot_layer_distances(panels), "activation_distance.png")
    else:
        results = {(s.model or s.id): s.result for s in group.steps}
        if len(results) < len(group.steps):  # two steps on one model: name curves by step
            results = {s.id: s.result for s in group.steps}
        fig = run.save_figure(plot_layer_distances(results), "activation_distance.png")
    rows = [{"model": model, "attack": attack, **r} for (model, attack), res in keyed.items() for r in res.rows()]
    jump = layer_jump_rows(keyed)
    run.summary["activation_distance"] = rows
    run.summary["activation_distance_jump"] = jump
    return Section("Activation bias per layer (A11)", [
        "Mean Euclidean distance between clean and adversarial activations per layer, relative to the clean "
        "activation norm: the perturbation grows through a natural model and is damped by a robust one. The paper "
        "(Fig. A8) finds a sharp transition only at deep layers; the second table gives the mean relative distance "
        "at the first, middle and last layer of each model and attack."],
        tables=[("Jump at deep layers (mean relative distance)", jump), ("Distance per layer", rows)],
        figures=[("Relative activation distance per layer", fig)])


def activation_maps_section(group: ReportGroup, run: Run) -> Section:
    """Channel-mean activation maps per layer, clean and adversarial, per model (Fig. 9 / A9)."""
    from ..viz.activations import plot_activation_maps

    results: dict[str, Any] = {}
    batches: dict[str, Any] = {}
    for s in group.steps:
        key = s.model or s.id
        key = key if key not in results else s.id
        results[key] = s.result
        b = s.input("batch")
        if b is not None:
            try:
                batches[key] = b.result
            except Exception:  # the batch's file is missing: the figure goes without the inputs
                pass
    rows = [{"model": name, **r} for name, res in results.items() for r in res.rows()]
    run.summary["activation_maps"] = rows
    figures = []
    if any(len(r.y_true) for r in results.values()):
        fig = plot_activation_maps(results, batches=batches if len(batches) == len(results) else None,
                                   classes=run.classes)
        figures.append(("Channel-mean activations (rows: model and input; columns: layers)",
                        run.save_figure(fig, "activation_maps.png")))
    return Section("Activation maps per layer (Fig. 9 / A9)", [
        "Mean over channels of each layer's activations for the first images of the batch, clean and adversarial, "
        "for each model; each map is scaled to [0, 1] on its own. The paper finds that the robust model keeps finer "
        "local features of the input at early layers, and that the response diverges towards misclassification at "
        "deep layers. The table gives the mean absolute difference of the clean and adversarial maps per layer."],
        tables=[("Channel-mean maps per layer", rows)], figures=figures)
