"""Sections of the model-level steps: ``accuracy`` (probe) and ``activation_distance``."""
from __future__ import annotations

from ..report import Section
from ..study.views import ReportGroup, Run

__all__ = ["accuracy_section", "activation_distance_section"]


def accuracy_section(group: ReportGroup, run: Run) -> Section:
    """Clean accuracy (and accuracy under the context batch's attack) per model."""
    rows = [{"step": s.id, **r} for s in group.steps for r in s.result.rows()]
    run.summary["models"] = rows
    return Section("Models: accuracy, clean and under attack",
                   ["Top-1 accuracy on the clean data, and on the adversarial images of the attack each probe was "
                    "given (adv_accuracy over adv_n images)."],
                   tables=[("Accuracy (clean and under attack)", rows)])


def activation_distance_section(group: ReportGroup, run: Run) -> Section:
    """Per-layer distance clean vs adversarial, one curve per step (A11)."""
    from ..viz import plot_layer_distances

    results = {(s.model or s.id): s.result for s in group.steps}
    if len(results) < len(group.steps):  # two steps on one model: name curves by step
        results = {s.id: s.result for s in group.steps}
    fig = run.save_figure(plot_layer_distances(results), "activation_distance.png")
    rows = [{"model": name, **r} for name, res in results.items() for r in res.rows()]
    run.summary["activation_distance"] = rows
    return Section("Activation bias per layer (A11)", [
        "Mean Euclidean distance between clean and adversarial activations per layer, relative to the clean "
        "activation norm: the perturbation grows through a natural model and is damped by a robust one."],
        tables=[("Distance per layer", rows)], figures=[("Relative activation distance", fig)])
