"""Feature-map figures of Ding et al. Sec. 4.4-4.5: mean RMSE per layer (clean vs adversarial
feature maps), the most different clean / adversarial feature-map pairs (Fig. 4), and the
channel-masking sweep (clean and adversarial accuracy vs masked fraction)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..exceptions import ParameterError
from .common import _mpl, _palette

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_layer_rmse", "plot_feature_map_pairs", "plot_masking_sweep"]


def plot_layer_rmse(results: Mapping[str, Any]) -> "Figure":
    """Mean (line) and maximum (dotted) per-channel RMSE per layer, in forward order, one colour
    per result.

    Args:
        results: ``{label: FeatureRMSE}``; results over different layer lists are drawn against
            their own layer index, the x tick labels are those of the longest.

    Returns:
        A Figure with one axis.
    """
    from matplotlib.figure import Figure

    _mpl()
    if not results:
        raise ParameterError("plot_layer_rmse", "results", results, "a non-empty {label: FeatureRMSE} mapping")
    longest = max(results.values(), key=lambda r: len(r.layers))
    L = len(longest.layers)
    fig = Figure(figsize=(max(6.0, 0.42 * L + 2.5), 4.2), dpi=100)
    ax = fig.subplots()
    cols = _palette()
    for i, (label, res) in enumerate(results.items()):
        means = res.layer_means()
        x = np.arange(len(means))
        ax.plot(x, [m["mean"] for m in means], "-o", ms=3.5, color=cols[i % len(cols)], label=f"{label} (mean)")
        ax.plot(x, [m["max"] for m in means], ":", color=cols[i % len(cols)], alpha=0.8, label=f"{label} (max)")
    ax.set_xticks(np.arange(L))
    ax.set_xticklabels(longest.layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("RMSE of clean vs adversarial feature map")
    ax.set_xlabel("layer (forward order)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def plot_feature_map_pairs(result: Any, title: str = "") -> "Figure":
    """The first pair's feature maps of the most different channels (Fig. 4): one column per
    channel, clean on top, adversarial below, both on the colour scale of the pair.

    Args:
        result: a ``FeatureRMSE`` holding maps (``n_maps > 0`` and at least one pair).
        title: an optional figure title.
    """
    from matplotlib.figure import Figure

    _mpl()
    k = len(result.maps_clean)
    if not k:
        raise ParameterError("plot_feature_map_pairs", "result", f"a FeatureRMSE with n={result.n}, no maps",
                             "a FeatureRMSE with feature maps", "Run feature_rmse with n_maps > 0 on at least one pair.")
    fig = Figure(figsize=(2.1 * k + 0.6, 4.6), dpi=100)
    axes = fig.subplots(2, k, squeeze=False)
    score = {(e["layer"], e["channel"]): e["rmse"] for e in result.ranking()}
    for j in range(k):
        a, b = np.asarray(result.maps_clean[j]), np.asarray(result.maps_adv[j])
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        for r, (m, what) in enumerate(((a, "clean"), (b, "adversarial"))):
            ax = axes[r, j]
            ax.imshow(m, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                layer, c = result.map_layers[j], result.map_channels[j]
                ax.set_title(f"{layer}:{c}\nRMSE {score.get((layer, c), float('nan')):.3g}", fontsize=8)
            if j == 0:
                ax.set_ylabel(what, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_masking_sweep(results: Mapping[str, Any]) -> "Figure":
    """Clean (solid) and adversarial (dashed) top-1 accuracy vs the masked fraction of the
    ranked channels, one colour per result (the neuron-masking defence: robustness gained vs
    clean accuracy lost).

    Args:
        results: ``{label: ChannelMasking}`` with a sweep (``fractions`` non-empty).
    """
    from matplotlib.figure import Figure

    _mpl()
    results = {k: r for k, r in results.items() if len(r.fractions)}
    if not results:
        raise ParameterError("plot_masking_sweep", "results", "no sweep", "ChannelMasking results with fractions",
                             "Run channel_masking with fractions=[0, 0.01, ...].")
    fig = Figure(figsize=(6.2, 4.0), dpi=100)
    ax = fig.subplots()
    cols = _palette()
    for i, (label, res) in enumerate(results.items()):
        f = 100 * np.asarray(res.fractions, np.float64)
        ax.plot(f, res.clean_accuracy, "-o", ms=4, color=cols[i % len(cols)], label=f"{label}: clean")
        ax.plot(f, res.adv_accuracy, "--s", ms=4, color=cols[i % len(cols)], label=f"{label}: adversarial")
    ax.set_xlabel("masked channels (% of the ranked channels, most different first)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
