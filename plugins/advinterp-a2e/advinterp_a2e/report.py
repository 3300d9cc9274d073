"""Report sections and figures of ``a2e.transfer`` (C4), ``a2e.regions`` (C3),
``a2e.saliency`` (the paper's claim: p alone is recognised as the target) and the robust-model
tasks of C5 (``a2e.generation``, ``a2e.inpainting``, ``a2e.manipulation``).

Figures are matplotlib ``Figure`` objects (no pyplot state), written with ``run.save_figure``
(:func:`advinterp.api.save_figure`); headline numbers go to ``run.summary["a2e_transfer"]``,
``run.summary["a2e_regions"]`` and ``run.summary["a2e_saliency"]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from advinterp.api import ParameterError, Section, image_hwc

from .generation import A2EGenerationResult
from .inpainting import A2EInpaintingResult
from .regions import A2ERegionsResult
from .saliency import A2ESaliencyResult
from .transfer import A2ETransferResult, rescale

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from advinterp.api import ReportGroup, Run

__all__ = ["plot_transfer", "plot_regions", "plot_saliency", "transfer_section", "regions_section",
           "saliency_section", "plot_generation", "plot_inpainting", "generation_section", "inpainting_section",
           "manipulation_section", "SECTIONS"]


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _show(ax: Any, img: Any, title: str) -> None:
    a = image_hwc(img)
    ax.imshow(a, cmap=None if a.ndim == 3 else "gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_transfer(result: A2ETransferResult, classes: Any = None, max_images: int = 6) -> "Figure":
    """Top: per model, bars of the mean target confidence (over images) for the held-out
    images without p (baseline), with p added, and for p alone rescaled. Bottom: the first
    ``max_images`` perturbations rescaled to [0, 1] (the images classified as "p alone")."""
    if not isinstance(result, A2ETransferResult):
        raise ParameterError("plot_transfer", "result", result, "an A2ETransferResult")
    n = min(len(result.target), int(max_images))
    fig = _figure(max(6.4, 1.3 * n), 5.2 if n else 3.4)
    grid = fig.add_gridspec(2 if n else 1, max(n, 1), height_ratios=[1.6, 1] if n else [1])
    ax = fig.add_subplot(grid[0, :])
    rows = result.summary_rows()
    xs = np.arange(len(rows))
    for j, (key, label) in enumerate((("baseline", "held-out images"), ("p_on_held_out", "p on held-out images"),
                                      ("p_alone", "p alone (rescaled)"))):
        vals = [r[key] for r in rows]
        ax.bar(xs + (j - 1) * 0.27, np.nan_to_num(vals), 0.27, label=label, color=f"C{j}")
    ax.set_xticks(xs, [r["model"] for r in rows], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("mean target probability")
    ax.set_title(f"Target confidence of each model ({len(result.target)} perturbations)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    for i in range(n):
        t = int(result.target[i])
        name = classes[t] if classes is not None and t < len(classes) else str(t)
        _show(fig.add_subplot(grid[1, i]), result.p_alone[i], f"p{i} -> {name}")
    return fig


def _step_name(step: Any) -> str:
    return step.id.replace("/", "_")


def transfer_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.transfer`` steps: per-model means, per (image, model) rows, the figure."""
    results = {s.id: s.result for s in group.steps}
    run.summary["a2e_transfer"] = {k: r.summary_rows() for k, r in results.items()}
    tables = [(f"Target confidence per model, means over perturbations -- {k}", r.summary_rows())
              for k, r in results.items()]
    tables += [("Target confidence per (image, model)", [{"step": k, **row} for k, r in results.items()
                                                          for row in r.rows()])]
    figs = [(f"Target confidence per model and the perturbations rescaled to [0, 1] (p alone) -- {s.id}",
             run.save_figure(plot_transfer(s.result, run.classes), f"{_step_name(s)}_a2e_transfer.png"))
            for s in group.steps]
    text = ["Each perturbation p_i = x_adv[i] - x0[i] of a targeted batch is classified by several models: added to "
            "held-out images (the batch's other images whose true class is not the target; clipped to [0, 1]) and "
            "alone, rescaled to [0, 1] as the paper displays it (Jalwana et al. 2020, Fig. 3); 'baseline' is the "
            "held-out images without p. Numbers are mean softmax probabilities of the target and top-1 = target "
            "rates. With a2e's distribution='batch' the held-out images are the samples p was computed on."]
    return Section("Attack-to-explain: transfer of p to other models (C4)", text, tables=tables, figures=figs)


def plot_regions(result: A2ERegionsResult, classes: Any = None, max_images: int = 4) -> "Figure":
    """Fig. 4: per image (first ``max_images``) and position, the obstructed seed and the
    recomputed p rescaled to [0, 1] (the patch outlined), with the fraction of ||p||^2 inside."""
    if not isinstance(result, A2ERegionsResult):
        raise ParameterError("plot_regions", "result", result, "an A2ERegionsResult")
    from matplotlib.patches import Rectangle

    n, n_pos = min(len(result.target), int(max_images)), result.positions.shape[1]
    fig = _figure(1.5 * 2 * max(n_pos, 1), 1.7 * max(n, 1))
    if not n:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no image", ha="center", va="center")
        return fig
    axes = fig.subplots(n, 2 * n_pos, squeeze=False)
    h, w = result.patch
    for i in range(n):
        t = int(result.target[i])
        name = classes[t] if classes is not None and t < len(classes) else str(t)
        for j in range(n_pos):
            r, c = (int(v) for v in result.positions[i, j])
            _show(axes[i, 2 * j], result.obstructed[i, j], f"{i} -> {name} ({r},{c})")
            _show(axes[i, 2 * j + 1], rescale(result.p[i, j]),
                  f"p: {100 * result.energy_in[i, j]:.0f}% in patch (reached {int(result.reached[i, j])})")
            axes[i, 2 * j + 1].add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, ec="red", lw=1))
    return fig


def regions_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.regions`` steps: per (image, position) rows, energy summary, Fig. 4."""
    results = {s.id: s.result for s in group.steps}

    def mean(a: np.ndarray) -> float:
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else float("nan")

    summary = [{"step": k, "pairs": int(r.energy_in.size), "patch": f"{r.patch[0]}x{r.patch[1]}",
                "patch_area": float(r.area), "energy_in_patch_obstructed": mean(r.energy_in),
                "energy_in_patch_unobstructed": mean(r.energy_in_clean),
                "reached_rate": float((r.reached >= 0).mean()) if r.reached.size else float("nan")}
               for k, r in results.items()]
    run.summary["a2e_regions"] = summary
    tables = [("Fraction of ||p||^2 inside the patch: recomputed with the patch vs the batch's own p (means)", summary),
              ("Per (image, position)", [{"step": k, **row} for k, r in results.items() for row in r.rows()])]
    figs = [(f"Obstructed seed and recomputed p rescaled to [0, 1], per position (Fig. 4) -- {s.id}",
             run.save_figure(plot_regions(s.result, run.classes), f"{_step_name(s)}_a2e_regions.png"))
            for s in group.steps]
    text = ["The seed and every sample of its distribution are obstructed with a uniform patch of the samples' mean "
            "colour (64/224 of the image side by default) and the attack-to-explain perturbation is computed again "
            "(Jalwana et al. 2020, Fig. 4). 'energy in patch' is the fraction of ||p||^2 inside the patch, for the "
            "recomputed p and for the batch's own (unobstructed) p at the same place; the patch's area fraction is "
            "what a uniform p would have there."]
    return Section("Attack-to-explain: obstructed regions (C3, Fig. 4)", text, tables=tables, figures=figs)


def plot_saliency(result: A2ESaliencyResult, classes: Any = None, max_images: int = 6) -> "Figure":
    """Left: per image (first ``max_images``), x0 and each method's perturbation alone,
    rescaled to [0, 1] (the title says whether each model's top-1 is the target). Right: bars
    of the target rate of p alone per method and model."""
    if not isinstance(result, A2ESaliencyResult):
        raise ParameterError("plot_saliency", "result", result, "an A2ESaliencyResult")
    n, m = min(len(result.target), int(max_images)), len(result.methods)
    fig = _figure(1.45 * (m + 1) + 4.2, max(2.8, 1.45 * max(n, 1)))
    grid = fig.add_gridspec(max(n, 1), m + 2, width_ratios=[1] * (m + 1) + [2.6])
    for i in range(n):
        t = int(result.target[i])
        name = classes[t] if classes is not None and t < len(classes) else str(t)
        _show(fig.add_subplot(grid[i, 0]), result.x0[i], f"x0 -> {name}")
        for j, meth in enumerate(result.methods):
            hits = "".join("T" if result.top1[i, j, k] == 1 else "-" for k in range(len(result.models)))
            label = f"{meth} ||p||={result.norms[i, j]:.2f} [{hits}]" if result.norms[i, j] > 0 else f"{meth}: failed"
            _show(fig.add_subplot(grid[i, j + 1]), result.alone[i, j], label)
    ax = fig.add_subplot(grid[:, m + 1])
    rows = {(r["method"], r["model"]): r for r in result.summary_rows()}
    xs = np.arange(len(result.models))
    width = 0.8 / max(m, 1)
    for j, meth in enumerate(result.methods):
        vals = [rows[(meth, mod)]["target_rate"] for mod in result.models]
        ax.bar(xs + (j - (m - 1) / 2) * width, np.nan_to_num(vals), width, label=meth, color=f"C{j}")
    ax.set_xticks(xs, list(result.models), fontsize=7, rotation=15)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("p alone: top-1 = target rate")
    ax.set_title(f"{len(result.target)} perturbations", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


def saliency_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.saliency`` steps: rates per (method, model), the a2e / baseline ratios, the
    per (image, method, model) rows and the figure."""
    results = {s.id: s.result for s in group.steps}
    run.summary["a2e_saliency"] = {k: {"summary": r.summary_rows(), "ratios": r.ratio_rows()}
                                   for k, r in results.items()}
    tables = []
    for k, r in results.items():
        tables.append((f"p alone, rescaled to [0, 1]: target rate (top-1 = target) and mean target probability per "
                       f"method and model -- {k}", r.summary_rows()))
        tables.append((f"By how much: the batch's p over each baseline (rate and probability ratios) -- {k}",
                       r.ratio_rows()))
    tables.append(("Per (image, method, model)", [{"step": k, **row} for k, r in results.items() for row in r.rows()]))
    figs = [(f"x0 and each perturbation alone, rescaled to [0, 1] ([T]: top-1 is the target, per model), and the "
             f"target rates -- {s.id}", run.save_figure(plot_saliency(s.result, run.classes),
                                                         f"{_step_name(s)}_a2e_saliency.png"))
            for s in group.steps]
    text = ["The paper's qualitative claim (Jalwana et al. 2020, Figs. 1-3): the refined attack-to-explain "
            "perturbation p, shown alone and rescaled to [0, 1], looks like the target class. Measured here: each "
            "p_i = x_adv[i] - x0[i] and, on the single image x0[i], targeted baselines of the same l2 norm ||p_i|| "
            "(l2 PGD with eps = ||p_i||; C&W-l2's minimal perturbation scaled up to ||p_i||, clipped so that "
            "x0 + delta stays in [0, 1]) are classified alone, rescaled, by each model. 'attack_success' is whether "
            "x0 + delta itself is classified as the target by the analysed model; a baseline that failed (C&W "
            "without a successful iterate: delta = 0) is left out of its rates ('images' counts the rest). Ratios "
            "are the batch's p over the baseline (inf: the baseline never hits the target)."]
    return Section("Attack-to-explain: is p alone the target? (the paper's claim)", text, tables=tables, figures=figs)


def _name(classes: Any, t: int) -> str:
    return classes[t] if classes is not None and t < len(classes) else str(t)


def plot_generation(result: A2EGenerationResult, classes: Any = None, max_images: int = 6) -> "Figure":
    """Figs. 6 / 8: per image (first ``max_images``) the seed (or sketch), the a2e image, the
    PGD image (and the original of a sketch), titled with the robust / standard model's
    confidence in the intended class."""
    if not isinstance(result, A2EGenerationResult):
        raise ParameterError("plot_generation", "result", result, "an A2EGenerationResult")
    n = min(len(result.target), int(max_images))
    cols = 3 + (result.original is not None)
    fig = _figure(1.6 * cols, 1.75 * max(n, 1))
    if not n:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no image", ha="center", va="center")
        return fig
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        t = int(result.target[i])
        for j, (kind, img) in enumerate((("seed", result.seeds[i]), ("a2e", result.a2e[i]), ("pgd", result.pgd[i]))):
            rc = float(getattr(result, f"robust_{kind}")[i])
            sc = float(getattr(result, f"standard_{kind}")[i])
            label = ("sketch" if result.original is not None else "seed") if kind == "seed" else kind.upper()
            extra = "" if not np.isfinite(sc) else f", std {sc:.2f}"
            _show(axes[i, j], img, f"{label} -> {_name(classes, t)}\nrobust {rc:.2f}{extra}")
        if result.original is not None:
            _show(axes[i, 3], result.original[i], "original")
    return fig


def _confidence_section(group: "ReportGroup", run: "Run", key: str, title: str, what: str) -> Section:
    results = {s.id: s.result for s in group.steps}
    summary = [{"step": k, "eta": r.eta, **row} for k, r in results.items() for row in r.summary_rows()]
    run.summary[key] = summary
    tables = [("Confidence in the intended class (means over images)", summary),
              ("Per image", [{"step": k, **row} for k, r in results.items() for row in r.rows()])]
    figs = [(f"{what} -- {s.id}", run.save_figure(plot_generation(s.result, run.classes),
                                                   f"{_step_name(s)}_{key}.png")) for s in group.steps]
    text = ["Attack-to-explain on the analysed (adversarially robust) model next to the baseline of Santurkar et al. "
            "(2019): targeted l2 PGD from the same seed with the same l2 budget eta (the paper's budget at 3x224x224 "
            "scaled with sqrt(C*H*W)). D_bar is a set of samples of the intended class's Gaussian (4x downsampled "
            "mean and covariance, Sec. 5.2). 'confidence' is the softmax probability of the intended class for "
            "the robust model and for a standard model, which the images were not optimised on."]
    return Section(title, text, tables=tables, figures=figs)


def generation_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.generation`` steps: confidences (robust, standard) for seed / a2e / PGD, Fig. 6."""
    return _confidence_section(group, run, "a2e_generation", "Attack-to-explain: image generation (C5, Fig. 6)",
                               "Seed (class Gaussian sample), a2e and PGD images with the confidences (Fig. 6)")


def manipulation_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.manipulation`` steps: confidences for sketch / a2e / PGD, Fig. 8."""
    return _confidence_section(group, run, "a2e_manipulation",
                               "Attack-to-explain: image manipulation from a sketch (C5, Fig. 8)",
                               "Sketch, a2e (with refinement) and PGD images, and the original (Fig. 8)")


def plot_inpainting(result: A2EInpaintingResult, classes: Any = None, max_images: int = 6) -> "Figure":
    """Fig. 7: per image masked | a2e | PGD | original, with PSNR / SSIM against the original."""
    if not isinstance(result, A2EInpaintingResult):
        raise ParameterError("plot_inpainting", "result", result, "an A2EInpaintingResult")
    from matplotlib.patches import Rectangle

    n = min(len(result.target), int(max_images))
    fig = _figure(1.6 * 4, 1.75 * max(n, 1))
    if not n:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no image", ha="center", va="center")
        return fig
    axes = fig.subplots(n, 4, squeeze=False)
    side = int(result.masks[0].sum().item() ** 0.5) if len(result.masks) else 0
    for i in range(n):
        for j, kind in enumerate(("masked", "a2e", "pgd")):
            img = getattr(result, kind)[i]
            db, ss = float(getattr(result, f"psnr_{kind}")[i]), float(getattr(result, f"ssim_{kind}")[i])
            _show(axes[i, j], img, f"{kind if kind == 'masked' else kind.upper()}: {db:.1f} dB, SSIM {ss:.2f}")
            r, c = (int(v) for v in result.positions[i])
            axes[i, j].add_patch(Rectangle((c - 0.5, r - 0.5), side, side, fill=False, ec="red", lw=0.8))
        _show(axes[i, 3], result.original[i], f"original ({_name(classes, int(result.target[i]))})")
    return fig


def inpainting_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``a2e.inpainting`` steps: PSNR / SSIM of masked, a2e and PGD images, Fig. 7."""
    results = {s.id: s.result for s in group.steps}
    summary = [{"step": k, "eta": r.eta, "beta": r.beta, **row} for k, r in results.items() for row in r.summary_rows()]
    run.summary["a2e_inpainting"] = summary
    tables = [("PSNR (dB) and SSIM against the uncorrupted image (means over images; wins: images where the method "
               "beats the other)", summary),
              ("Per image", [{"step": k, **row} for k, r in results.items() for row in r.rows()])]
    figs = [(f"Masked image (seed), a2e, PGD, original, with PSNR / SSIM (Fig. 7) -- {s.id}",
             run.save_figure(plot_inpainting(s.result, run.classes), f"{_step_name(s)}_a2e_inpainting.png"))
            for s in group.steps]
    text = ["A square region F of each image is replaced by a flat colour; the masked image is the seed of "
            "attack-to-explain with loss eq. 4 (beta * ||p (1 - F)||_2 added to every image's cross-entropy) and of "
            "targeted l2 PGD (by default restricted to F), both towards the image's class with the same l2 budget. "
            "Since the true image is known, PSNR and SSIM (scikit-image, data range 1) against it measure what the "
            "paper only shows; 'psnr_region' is the PSNR inside F alone, 'outside_change' the l2 change outside F. "
            "PSNR of an unchanged image is reported as 100 dB."]
    return Section("Attack-to-explain: inpainting (C5, eq. 4, Fig. 7)", text, tables=tables, figures=figs)


#: ``(group kind, component name)`` -> the section the plugin answers with.
SECTIONS: dict[tuple[str, str], Callable[["ReportGroup", "Run"], Section]] = {
    ("analyzer", "a2e.transfer"): transfer_section,
    ("analyzer", "a2e.regions"): regions_section,
    ("analyzer", "a2e.saliency"): saliency_section,
    ("analyzer", "a2e.generation"): generation_section,
    ("analyzer", "a2e.inpainting"): inpainting_section,
    ("analyzer", "a2e.manipulation"): manipulation_section,
}
