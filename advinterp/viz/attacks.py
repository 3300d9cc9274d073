"""Attacks: per-layer activation distances and perturbation magnitudes."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..exceptions import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def plot_layer_distances(results: Mapping[str, Any], relative: bool = True) -> "Figure":
    """Per-layer activation distance, clean vs adversarial (Fig. A8 of the PSE paper).

    Args:
        results: ``{curve name: ActivationDistanceResult}`` (one axes, one line per entry, e.g.
            per model), or ``{panel name: {curve name: ActivationDistanceResult}}`` (one panel
            per outer key, e.g. per model, and one line per inner key, e.g. per attack: the
            layout of Fig. A8).
        relative: plot ``||A(x) - A(x')|| / ||A(x)||`` (default) or the raw distance.

    Returns:
        A Figure with mean +- std per layer, the layers in order along x.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ParameterError("plot_layer_distances", "results", results, "a non-empty {model: result} mapping")
    nested = all(isinstance(v, Mapping) for v in results.values())
    panels = dict(results) if nested else {"": results}
    if any(not curves for curves in panels.values()):
        raise ParameterError("plot_layer_distances", "results", results, "non-empty {curve: result} panels")
    n_layers = max(len(r.layers) for curves in panels.values() for r in curves.values())
    many = n_layers > 8
    width = max(6.0, 0.35 * n_layers + 2.0) if many else 6.0
    fig = Figure(figsize=(width * (len(panels) if nested else 1) * (0.8 if nested else 1), 3.6 + 1.0 * many),
                 dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, curves) in zip(axes, panels.items()):
        for name, res in curves.items():
            values = res.relative if relative else res.distance
            values = np.where(np.isfinite(values), values, np.nan)
            with warnings.catch_warnings():  # a layer without finite values: a gap in the line
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
            xs = np.arange(len(res.layers))
            ax.errorbar(xs, mean, yerr=std, marker="o", markersize=3 if many else 6, capsize=3, label=name)
            ax.set_xticks(xs, list(res.layers), rotation=90 if many else 0, fontsize=7 if many else None)
        ax.set_xlabel("layer")
        ax.set_ylabel("relative activation distance" if relative else "activation distance")
        ax.set_title(panel if nested else "Clean vs adversarial activations per layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if nested:
        fig.suptitle("Clean vs adversarial activations per layer", fontsize=10)
    fig.tight_layout()
    return fig


def plot_perturbations(batches: Mapping[str, Any], n: int = 6, classes: Sequence[str] | None = None) -> "Figure":
    """Clean images (first row) and, per attack, the perturbation magnitude ``|delta|``
    summed over channels (one row per attack, one colour scale per row).

    Args:
        batches: ``{attack name: AdversarialBatch}`` over the same clean images.
        n: images shown (default 6).
        classes: class names for the titles (default: indices).

    Returns:
        A Figure of ``1 + len(batches)`` rows; titles give the true class, and per attack the
        target (or adversarial prediction) with a check mark when the attack succeeded and
        the l2 norm of delta.
    """
    from matplotlib.figure import Figure

    if not batches:
        raise ParameterError("plot_perturbations", "batches", batches, "a non-empty {attack: batch} mapping")
    first = next(iter(batches.values()))
    n = min(int(n), len(first))
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    fig = Figure(figsize=(1.7 * n + 1.2, 1.8 * (1 + len(batches))), dpi=100)
    axes = fig.subplots(1 + len(batches), n, squeeze=False)
    for j in range(n):
        ax = axes[0, j]
        ax.imshow(first.x0[j].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"true: {name(first.y_true[j])}", fontsize=8)
    for i, (attack, b) in enumerate(batches.items(), start=1):
        mag = b.delta[:n].detach().abs().sum(1).cpu()
        vmax = float(mag.max()) or 1.0
        l2 = b.delta[:n].detach().flatten(1).norm(dim=1).cpu()
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(mag[j].numpy(), cmap="magma", vmin=0, vmax=vmax)
            tgt = b.y_target if b.y_target is not None else b.y_adv
            ok = "\u2713" if b.success is not None and bool(b.success[j]) else "\u2717"
            ax.set_title(f"\u2192 {name(tgt[j])} {ok}  \u21132={float(l2[j]):.2f}", fontsize=7)
        axes[i, 0].set_ylabel(attack, fontsize=9)
    axes[0, 0].set_ylabel("clean", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("|\u03b4| per attack (summed over channels; one colour scale per row)", fontsize=9)
    fig.tight_layout()
    return fig
