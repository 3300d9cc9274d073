"""Sections of the feature-map analyses of Ding et al. (Secs. 4.4-4.5): ``feature_rmse``
(Tables 4-7, Fig. 4, RMSE per layer), ``channel_masking`` (Tables 8-9 and the masking sweep)
and ``filter_scaling`` (Tables 10-13)."""
from __future__ import annotations

from typing import Any

from ..report import Section
from ..study.views import ReportGroup, Run

__all__ = ["feature_rmse_section", "channel_masking_section", "filter_scaling_section"]

#: Images of the before/after tables (the paper shows eight categories).
_TABLE_IMAGES = 8


def _attack_label(step: Any) -> str:
    """The attack (or batch step) a step's batch came from."""
    b = step.input("batch")
    if b is None:
        return ""
    return b.name if b.kind == "attack" and b.name else b.id


def _label(step: Any, group: ReportGroup) -> str:
    """The step id when the group has several steps, else its model (or id)."""
    return step.id if len(group.steps) > 1 else (step.model or step.id)


def _before_after(step: Any, change: Any, run: Run, extra: dict[str, Any]) -> list[dict[str, Any]]:
    rows = change.take(slice(0, _TABLE_IMAGES)).rows(run.classes)
    return [{"step": step.id, **extra, **r} for r in rows]


def feature_rmse_section(group: ReportGroup, run: Run) -> Section:
    """Ten most / least different channels per step (Tables 4-7), the mean RMSE per layer
    (figure and table) and the first pair's most different feature maps (Fig. 4)."""
    from ..viz.feature_maps import plot_feature_map_pairs, plot_layer_rmse

    tables, figures, summary = [], [], []
    for s in group.steps:
        res = s.result
        att = _attack_label(s)
        keep = ("rank", "name", "layer", "channel", "rmse")
        tables.append((f"{s.id}: the ten most different channels (Tables 4 / 6)",
                       [{k: e[k] for k in keep} for e in res.most(10)]))
        tables.append((f"{s.id}: the ten least different channels (Tables 5 / 7)",
                       [{k: e[k] for k in keep} for e in res.least(10)]))
        means = res.layer_means()
        finite = [m for m in means if m["mean"] == m["mean"]]
        top = max(finite, key=lambda m: m["mean"]) if finite else None
        most = res.most(1)
        summary.append({"step": s.id, "model": s.model, "attack": att, "n": res.n, "layers": len(res.layers),
                        "channels": int(sum(res.channels)),
                        "most_different": most[0]["name"] if most else "", "most_rmse": most[0]["rmse"] if most else
                        float("nan"), "largest_mean_layer": top["layer"] if top else "",
                        "largest_mean_layer_index": top["index"] if top else -1,
                        "first_layer_mean": means[0]["mean"] if means else float("nan"),
                        "last_layer_mean": means[-1]["mean"] if means else float("nan")})
        if len(res.maps_clean):
            fig = plot_feature_map_pairs(res, title=f"{s.id}: first pair")
            figures.append((f"{s.id}: clean (top) and adversarial (bottom) feature maps of the {len(res.maps_clean)} "
                            "most different channels, first pair (Fig. 4)",
                            run.save_figure(fig, f"feature_maps_{s.id}.png")))
    layer_rows = [{"step": s.id, **m} for s in group.steps for m in s.result.layer_means()]
    results = {_label(s, group): s.result for s in group.steps}
    figures.insert(0, ("Mean and maximum per-channel RMSE per layer, forward order",
                       run.save_figure(plot_layer_rmse(results), "feature_rmse_layers.png")))
    run.summary["feature_rmse"] = summary
    return Section("Feature-map differences, clean vs adversarial (Ding et al., Tables 4-7, Fig. 4)", [
        "Per channel of every convolution, activation and pooling layer: RMSE = sqrt(mean over the h x w positions "
        "of (a - b)^2) between the clean (a) and adversarial (b) feature map (eq. 4, per channel), averaged over the "
        "pairs; channels ranked across all layers (names are layer:channel). The paper finds the largest differences "
        "in the first activation and pooling layers and the smallest in the last block; the per-layer means show "
        "where they are in this model. RMSE is in the units of each layer's activations, so layers after a "
        "normalisation compare more fairly than raw convolution outputs."],
        tables=[("Summary per step", summary), *tables, ("Mean / max RMSE per layer", layer_rows)], figures=figures)


def channel_masking_section(group: ReportGroup, run: Run) -> Section:
    """Change statistics of the top-k mask per step, the before/after table (Tables 8-9) and the
    masking sweep (figure and table)."""
    from ..viz.feature_maps import plot_masking_sweep

    stats, tables, sweeps = [], [], []
    for s in group.steps:
        res = s.result
        stats.append({"step": s.id, "attack": _attack_label(s), **res.rows()[0],
                      "channels": ", ".join(res.channels[:10]) + (" ..." if len(res.channels) > 10 else "")})
        sweeps += [{"step": s.id, **r} for r in res.sweep_rows()]
    first = group.steps[0]
    tables.append((f"Before and after masking, {first.id}: first images (Tables 8-9 layout)",
                   _before_after(first, first.result.change, run, {})))
    figures = []
    with_sweep = {_label(s, group): s.result for s in group.steps if len(s.result.fractions)}
    if with_sweep:
        figures.append(("Top-1 accuracy vs masked fraction of the ranked channels (clean solid, adversarial dashed)",
                        run.save_figure(plot_masking_sweep(with_sweep), "channel_masking_sweep.png")))
    run.summary["channel_masking"] = stats
    run.summary["channel_masking_sweep"] = sweeps
    return Section("Masking the most different feature maps (Ding et al., Tables 8-9)", [
        "The k channels with the largest clean-vs-adversarial RMSE (from the feature_rmse step given as context "
        "rmse, else computed on the batch) are set to zero at inference; top-1 label and confidence of the clean "
        "and adversarial images before and after. clean_change / adv_change: mean confidence change over the "
        "images whose label did not change (n_changed: those whose label changed). The sweep masks growing "
        "fractions of the ranked channels: a defence would raise adversarial accuracy without costing clean "
        "accuracy. The paper finds masking no defence."],
        tables=[("Change statistics (top-k mask)", stats), *tables, ("Masking sweep", sweeps)], figures=figures)


def filter_scaling_section(group: ReportGroup, run: Run) -> Section:
    """Change statistics per step (one row each: target, which, factor) and the before/after
    rows of every step (Tables 10-13), one block per step."""
    stats, blocks = [], []
    for s in group.steps:
        res = s.result
        stats.append({"step": s.id, "attack": _attack_label(s), **res.rows()[0], "source": res.source,
                      "channels": ", ".join(res.channels[:10]) + (" ..." if len(res.channels) > 10 else "")})
        blocks += _before_after(s, res.change, run, {"target": res.target, "which": res.which})
    run.summary["filter_scaling"] = stats
    return Section("Scaling the filters of sensitive / insensitive channels (Ding et al., Tables 10-13)", [
        "The convolution filters (weight and bias rows) producing the chosen output channels are multiplied by the "
        "factor and the images re-evaluated; the model is restored bit for bit afterwards. target first / which "
        "most: the first convolution's channels most different between clean and adversarial maps (the paper's "
        "Tables 10 and 12); target last / which least: the last stage's least different ones (Tables 11 and 13). "
        "The paper finds both lower the adversarial confidence but also the clean one: no defence."],
        tables=[("Change statistics per step", stats),
                (f"Before and after scaling, first {_TABLE_IMAGES} images of each step", blocks)])
