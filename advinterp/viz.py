"""Figures for looking at data and results (matplotlib; headless-safe).

Figures are built as :class:`matplotlib.figure.Figure` objects without pyplot, so nothing
here opens a window or needs a display; save them with :func:`save_figure`.

Example::

    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp.viz import plot_scenes, save_figure

    batch = SyntheticWorld(size=64).generate(6, split="test")
    save_figure(plot_scenes(batch, n=6), "scenes.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .exceptions import MissingDependencyError, ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .datasets.synthetic import Concept, SceneBatch

__all__ = ["plot_scenes", "save_figure", "concept_colors"]

_OBJECT_BOX = "#ffffff"
_PART_BOX = "#ff2fb9"
_UNLABELLED = (0.91, 0.91, 0.91)


def _mpl():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is installed in dev
        raise MissingDependencyError("matplotlib", "Plotting") from exc
    return matplotlib


def _palette() -> list[tuple[float, float, float]]:
    mpl = _mpl()
    cols: list[tuple[float, float, float]] = []
    for name in ("tab10", "Dark2", "Set2"):
        cols.extend(tuple(c[:3]) for c in mpl.colormaps[name].colors)
    return cols


def concept_colors(concepts: Sequence["Concept"]) -> dict[int, tuple[float, float, float]]:
    """A fixed RGB colour (floats in [0, 1]) for every concept id, plus id 0 (unlabelled).

    Concepts of the ``color`` category get their own colour (the synthetic world's RGB,
    else matplotlib's colour of that name); the others get distinct qualitative colours by their
    position within their category, so a concept has the same colour in every panel.
    """
    mcolors = _mpl().colors
    palette = _palette()
    from .datasets.synthetic import _RGB as world_rgb
    out: dict[int, tuple[float, float, float]] = {0: _UNLABELLED}
    seen: dict[str, int] = {}
    for c in concepts:
        k = seen.get(c.category, 0)
        seen[c.category] = k + 1
        if c.category == "color" and c.name in world_rgb:
            out[c.id] = tuple(v / 255.0 for v in world_rgb[c.name])
        elif c.category == "color" and mcolors.is_color_like(c.name):
            out[c.id] = tuple(mcolors.to_rgb(c.name))
        else:
            out[c.id] = palette[k % len(palette)]
    return out


def _box_stroke():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.6, foreground="black")]


def _box_patches(ax, boxes, height: int, fontsize: float) -> None:
    from matplotlib.patches import Rectangle

    label_px = 6.0 * height / 64.0  # about a label's height, in image pixels
    # object box first, parts on top
    for box in sorted(boxes, key=lambda b: b.category != "object"):
        x1, y1, x2, y2 = box.xyxy
        color = _OBJECT_BOX if box.category == "object" else _PART_BOX
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                               edgecolor=color, linewidth=1.3, path_effects=_box_stroke()))
        if box.category == "object":
            # below the box (clear of the part labels), or inside its bottom-right corner
            if y2 + label_px <= height:
                xy, ha, va = (x1 - 0.5, y2 - 0.5), "left", "top"
            else:
                xy, ha, va = (x2 - 0.5, y2 - 0.5), "right", "bottom"
        elif y1 >= label_px:  # above the part box
            xy, ha, va = (x1 - 0.5, y1 - 0.5), "left", "bottom"
        else:  # at the top edge of the image: inside the box
            xy, ha, va = (x1 - 0.5, y1 - 0.5), "left", "top"
        ax.text(*xy, box.name, color="black", fontsize=fontsize, ha=ha, va=va, clip_on=True,
                bbox=dict(boxstyle="square,pad=0.12", facecolor=color, edgecolor="none", alpha=0.85))


def plot_scenes(batch: "SceneBatch", n: int = 8,
                world_concepts: Sequence["Concept"] | None = None) -> "Figure":
    """Show the first ``n`` scenes of a synthetic :class:`SceneBatch` with their annotations.

    One column per scene, titled with its class and scene names. The first row shows the
    image with the object box (white) and part boxes (pink), each labelled; then one row per
    pixel-level concept category (``color``, ``object``, ``part``, ``texture``) shows the
    concept mask, one fixed colour per concept, with a legend of the concepts present in
    that row on the right (grey = no concept of that category).

    Args:
        batch: scenes from :meth:`SyntheticWorld.generate`.
        n: number of scenes to show (default 8; fewer if the batch is smaller).
        world_concepts: the concept vocabulary the mask ids refer to (default: the synthetic
            world's :data:`CONCEPTS`).

    Returns:
        The figure (``1 + number of mask categories`` rows of ``n`` axes).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .datasets.synthetic import CLASSES, CONCEPTS, PIXEL_CATEGORIES

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError("plot_scenes", "n", n, "a positive integer")
    if len(batch) == 0:
        raise ParameterError("plot_scenes", "batch", batch, "a SceneBatch with at least one scene")
    concepts = tuple(CONCEPTS if world_concepts is None else world_concepts)
    by_id = {c.id: c for c in concepts}
    colors = concept_colors(concepts)
    n = int(min(n, len(batch)))
    categories = [c for c in PIXEL_CATEGORIES if c in batch.masks]
    categories += [c for c in batch.masks if c not in categories]
    rows = 1 + len(categories)

    panel = 1.55
    fig = Figure(figsize=(panel * n + 1.9, panel * rows + 0.55), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False)
    fs = 7

    for j in range(n):
        ax = axes[0, j]
        ax.imshow(batch.images[j], interpolation="nearest")
        _box_patches(ax, batch.boxes[j], batch.images.shape[1], fontsize=fs - 1)
        label = int(batch.labels[j])
        cls = CLASSES[label] if 0 <= label < len(CLASSES) else f"class {label}"
        scene = by_id.get(int(batch.scenes[j]))
        ax.set_title(f"{cls}\n{scene.name if scene else batch.scenes[j]}", fontsize=fs + 2, pad=3)

    for r, cat in enumerate(categories, start=1):
        masks = np.asarray(batch.masks[cat][:n]).astype(np.int64)
        ids = [int(i) for i in np.unique(masks)]
        lut_size = max(max(ids), max(colors)) + 1
        lut = np.tile(np.array([0.5, 0.5, 0.5]), (lut_size, 1))  # unknown ids: grey
        for cid, rgb in colors.items():
            lut[cid] = rgb
        for j in range(n):
            axes[r, j].imshow(lut[masks[j]], interpolation="nearest")
        handles = []
        for cid in ids:
            if cid == 0:
                name = "(none)"
            elif cid in by_id:
                name = by_id[cid].name
            else:
                name = f"id {cid}"
            handles.append(Patch(facecolor=lut[cid], edgecolor="0.35", linewidth=0.5, label=name))
        axes[r, n - 1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.04, 0.5),
                              fontsize=fs, frameon=False, handlelength=1.0, handleheight=1.0,
                              borderaxespad=0.0, labelspacing=0.3, title=cat, title_fontsize=fs + 1,
                              alignment="left")

    axes[0, n - 1].legend(
        handles=[Patch(facecolor="none", edgecolor=c, linewidth=1.3, path_effects=_box_stroke(),
                       label=name) for c, name in ((_OBJECT_BOX, "object"), (_PART_BOX, "part"))],
        loc="center left", bbox_to_anchor=(1.04, 0.5), fontsize=fs, frameon=False,
        handlelength=1.0, handleheight=1.0, borderaxespad=0.0, title="boxes",
        title_fontsize=fs + 1, alignment="left")

    for r, name in enumerate(["image", *categories]):
        for j in range(n):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_linewidth(0.5)
                s.set_color("0.6")
        axes[r, 0].set_ylabel(name, fontsize=fs + 2)
    return fig


def save_figure(fig: "Figure", path: str | Path) -> Path:
    """Write ``fig`` as a PNG (120 dpi) to ``path``, creating parent folders; close the figure.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:].lower() or "png"
    fig.savefig(path, dpi=120, format=fmt, facecolor="white")
    manager = getattr(fig.canvas, "manager", None)
    if manager is not None:  # created through pyplot: release it there too
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def plot_layer_distances(results: Mapping[str, Any], relative: bool = True) -> "Figure":
    """Per-layer activation distance, clean vs adversarial, one line per model (Fig. A8/A9).

    Args:
        results: ``{model name: ActivationDistanceResult}``.
        relative: plot ``||A(x) - A(x')|| / ||A(x)||`` (default) or the raw distance.

    Returns:
        A Figure with mean +- std per layer.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ParameterError("plot_layer_distances", "results", results, "a non-empty {model: result} mapping")
    fig = Figure(figsize=(6.0, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for name, res in results.items():
        values = res.relative if relative else res.distance
        mean, std = values.mean(0), values.std(0)
        xs = np.arange(len(res.layers))
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=name)
        ax.set_xticks(xs, list(res.layers))
    ax.set_xlabel("layer")
    ax.set_ylabel("relative activation distance" if relative else "activation distance")
    ax.set_title("Clean vs adversarial activations per layer")
    ax.grid(alpha=0.3)
    ax.legend()
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
