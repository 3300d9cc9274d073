"""Synthetic scenes: a fixed colour per concept, object/part boxes, :func:`plot_scenes`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..exceptions import ParameterError
from .common import _mpl, _palette

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..datasets.synthetic import Concept, SceneBatch

_OBJECT_BOX = "#ffffff"
_PART_BOX = "#ff2fb9"
_UNLABELLED = (0.91, 0.91, 0.91)


def concept_colors(concepts: Sequence["Concept"]) -> dict[int, tuple[float, float, float]]:
    """A fixed RGB colour (floats in [0, 1]) for every concept id, plus id 0 (unlabelled).

    Concepts of the ``color`` category get their own colour (the synthetic world's RGB,
    else matplotlib's colour of that name); the others get distinct qualitative colours by their
    position within their category, so a concept has the same colour in every panel.
    """
    mcolors = _mpl().colors
    palette = _palette()
    from ..datasets.synthetic import _RGB as world_rgb
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

    from ..datasets.synthetic import CLASSES, CONCEPTS, PIXEL_CATEGORIES

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

