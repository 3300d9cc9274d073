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

__all__ = ["plot_scenes", "save_figure", "concept_colors", "plot_cam_overlays", "plot_is_table"]

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


# ---------------------------------------------------------------------------- CAM pairs and IS
#: The four maps of Fig. 3 of the PSE paper: key -> (image shown, column title).
CAM_PAIR_KEYS: dict[str, tuple[str, str]] = {
    "x0_t0": ("x0", "F(x\u2080, t\u2080)"),
    "xadv_t0": ("x_adv", "F(x\u2032, t\u2080)"),
    "x0_t": ("x0", "F(x\u2080, t)"),
    "xadv_t": ("x_adv", "F(x\u2032, t)"),
}


def _image_hwc(x) -> np.ndarray:
    a = x.detach().cpu().float() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return np.clip(a, 0, 1)


def plot_cam_overlays(x0: Any, x_adv: Any, maps: Mapping[str, Any], n: int = 4,
                      classes: Sequence[str] | None = None, titles: Sequence[str] | None = None, *,
                      y_true: Any = None, target: Any = None, alpha: float = 0.5) -> "Figure":
    """The four CAMs of Fig. 3 of the PSE paper overlaid on the clean/adversarial images.

    One row per image and one column per map: ``F(x0, t0)`` and ``F(x0, t)`` on the clean
    image, ``F(x', t0)`` and ``F(x', t)`` on the adversarial one (jet, ``alpha`` 0.5). The
    four maps of an image share one colour scale, ``[min(0, lowest), highest value of the
    four]``, so maps normalised to a common maximum (``explain_pair(..., normalize=True)``)
    are comparable within a row.

    Args:
        x0, x_adv: ``(N, C, H, W)`` pixels in [0, 1].
        maps: ``{key: (N, H, W) tensor or Attribution}`` with keys among ``"x0_t0"``,
            ``"xadv_t0"``, ``"x0_t"``, ``"xadv_t"`` (shown in that order; missing keys are
            left out), or an object whose ``maps()`` returns that dict (``PairMaps`` of
            ``advinterp_captum.pairs.explain_pair``; its ``t0``/``t`` label the rows).
        n: images shown (default 4; fewer if the batch is smaller).
        classes: class names for the row titles (default: indices).
        titles: one row title per image (overrides the default ``"t0 -> t"``).
        y_true, target: ``(N,)`` labels for the row titles (default: the Attributions'
            ``target`` of ``"x0_t0"`` and ``"xadv_t"`` when given as Attributions).

    Returns:
        A Figure with ``n * len(columns)`` axes.
    """
    from matplotlib.figure import Figure

    if callable(getattr(maps, "maps", None)):  # advinterp_captum's PairMaps
        y_true = getattr(maps, "t0", None) if y_true is None else y_true
        target = getattr(maps, "t", None) if target is None else target
        maps = maps.maps()
    keys = [k for k in CAM_PAIR_KEYS if k in maps]
    extra = sorted(set(maps) - set(CAM_PAIR_KEYS))
    if not keys or extra:
        raise ParameterError("plot_cam_overlays", "maps", dict(maps) if not keys else extra,
                             f"a mapping with keys among {', '.join(CAM_PAIR_KEYS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError("plot_cam_overlays", "n", n, "a positive integer")
    arrays = {}
    for k in keys:
        m = getattr(maps[k], "maps", maps[k])
        m = np.asarray(m.detach().cpu().double() if hasattr(m, "detach") else m, dtype=np.float64)
        if m.ndim != 3:
            raise ParameterError("plot_cam_overlays", f"maps[{k!r}]", m, "maps of shape (N, H, W)")
        arrays[k] = m
    images = {"x0": x0, "x_adv": x_adv}
    n = int(min(n, len(x0), *(len(a) for a in arrays.values())))
    if y_true is None and "x0_t0" in maps:
        y_true = getattr(maps["x0_t0"], "target", None)
    if target is None and "xadv_t" in maps:
        target = getattr(maps["xadv_t"], "target", None)
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))

    fig = Figure(figsize=(1.9 * len(keys) + 0.6, 1.95 * n + 0.5), dpi=100)
    axes = fig.subplots(n, len(keys), squeeze=False)
    for i in range(n):
        vals = np.stack([arrays[k][i] for k in keys])
        vmin, vmax = min(0.0, float(vals.min())), float(vals.max())
        if vmax <= vmin:
            vmax = vmin + 1.0
        for j, k in enumerate(keys):
            ax = axes[i, j]
            img = _image_hwc(images[CAM_PAIR_KEYS[k][0]][i])
            h, w = img.shape[:2]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0))
            ax.imshow(arrays[k][i], cmap="jet", alpha=alpha, vmin=vmin, vmax=vmax, extent=(0, w, h, 0),
                      interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(CAM_PAIR_KEYS[k][1], fontsize=9)
        if titles is not None and i < len(titles):
            label = str(titles[i])
        elif y_true is not None and target is not None:
            label = f"{name(y_true[i])} \u2192 {name(target[i])}"
        else:
            label = f"image {i}"
        axes[i, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("CAMs: clean/adversarial \u00d7 true/target class (one colour scale per row)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_is_table(results: Sequence[Any]) -> "Figure":
    """Bar chart of the mean interpretability score per attack, w.r.t. ``(x0, t0)`` and
    ``(x', t)`` (Table 2 of the PSE paper).

    Args:
        results: :class:`~advinterp.analyzers.interpretability_score.InterpretabilityScore`
            results, or rows of :func:`~advinterp.analyzers.interpretability_score.table2`.
            Bars are labelled by attack, plus explainer and model when the results hold
            several.

    Returns:
        A Figure with one axes.
    """
    from matplotlib.figure import Figure

    from .analyzers.interpretability_score import InterpretabilityScore, table2

    results = list(results)
    if not results:
        raise ParameterError("plot_is_table", "results", results, "a non-empty list of results or table2 rows")
    rows = table2(results) if isinstance(results[0], InterpretabilityScore) else [dict(r) for r in results]
    many = {k: len({r.get(k) for r in rows}) > 1 for k in ("explainer", "model")}
    labels = ["\n".join([str(r.get("attack", ""))] + [str(r.get(k, "")) for k in ("explainer", "model") if many[k]])
              for r in rows]
    xs = np.arange(len(rows))
    fig = Figure(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    wdt = 0.38
    ax.bar(xs - wdt / 2, [r["is_x0_t0"] for r in rows], wdt, label="IS w.r.t. (x\u2080, t\u2080)")
    ax.bar(xs + wdt / 2, [r["is_xadv_t"] for r in rows], wdt, label="IS w.r.t. (x\u2032, t)")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("interpretability score")
    ax.set_title("Interpretability score per attack (Table 2)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- PSE (grid sensitivity)
#: PSR category colours of Fig. 4: suppression white, balanced grey, promotion black.
PSR_COLORS: dict[int, tuple[float, float, float]] = {-1: (1.0, 1.0, 1.0), 0: (0.5, 0.5, 0.5), 1: (0.0, 0.0, 0.0)}


def _pse_index(result: Any, index: Any, owner: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < result.n_images:
        raise ParameterError(owner, "index", index, f"an image index in [0, {result.n_images})")
    return int(index)


def _grid_map(values: np.ndarray, result: Any) -> np.ndarray:
    """Per-grid values of one image -> ``(H, W)`` per-pixel mean over the covering grids."""
    import torch

    from .ablation import grid_scores_to_map

    h, w = (int(v) for v in result.image_size)
    return grid_scores_to_map(torch.as_tensor(np.asarray(values, dtype=np.float64)),
                              torch.as_tensor(np.asarray(result.boxes)).long(), h, w).numpy()


def plot_pse_sensitivity(result: Any, index: int = 0, x_adv: Any = None,
                         classes: Sequence[str] | None = None) -> "Figure":
    """Sensitivity of one image's grid perturbations (Fig. 2 of the PSE paper).

    Rows: (1) the adversarial image (when ``x_adv`` is given) and the heat map of
    ``||delta_Gi||_2`` per pixel (the mean over the grids covering it); (2) ``||delta_Gi||_2``
    and ``||delta_Gi||_inf`` versus grid index; (3) ``d0_i`` and ``dt_i`` versus grid index;
    (4) the PSR ``r_i`` sorted, with dashed lines at the category thresholds (+-1).

    Args:
        result: a :class:`~advinterp.analyzers.pse.PSEResult`.
        index: the image (default 0).
        x_adv: ``(N, C, H, W)`` adversarial images of the result (or ``(C, H, W)`` for this
            image); optional.
        classes: class names for the title (default: indices).

    Returns:
        A Figure of four rows.
    """
    from matplotlib.figure import Figure

    i = _pse_index(result, index, "plot_pse_sensitivity")
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    fig = Figure(figsize=(7.2, 9.0), dpi=100)
    gs = fig.add_gridspec(4, 2, height_ratios=[1.5, 1, 1, 1])
    heat = _grid_map(result.grid_l2[i], result)
    if x_adv is not None:
        img = x_adv[i] if getattr(x_adv, "ndim", 0) == 4 else x_adv
        ax = fig.add_subplot(gs[0, 0])
        ax.imshow(_image_hwc(img))
        ax.set_title("adversarial example x\u2032", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax = fig.add_subplot(gs[0, 1])
    else:
        ax = fig.add_subplot(gs[0, :])
    im = ax.imshow(heat, cmap="hot", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title("\u2016\u03b4_G\u2016\u2082 per grid", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    idx = np.arange(result.n_grids)
    ax = fig.add_subplot(gs[1, :])
    ax.plot(idx, result.grid_l2[i], lw=0.9, label="\u2016\u03b4_G\u2016\u2082")
    ax.plot(idx, result.grid_linf[i], lw=0.9, label="\u2016\u03b4_G\u2016\u221e")
    ax.set_ylabel("strength", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax = fig.add_subplot(gs[2, :])
    ax.plot(idx, result.d0[i], lw=0.9, label="d\u2080 (suppression of t\u2080)")
    ax.plot(idx, result.dt[i], lw=0.9, label="d\u209c (promotion of t)")
    ax.set_ylabel("logit change", fontsize=8)
    ax.set_xlabel("grid index", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax = fig.add_subplot(gs[3, :])
    r = np.sort(np.asarray(result.r[i]))
    ax.plot(np.arange(len(r)), r, lw=1.2, color="k")
    for thr in (result.suppression, result.promotion):
        ax.axhline(thr, ls="--", lw=0.8, color="tab:red")
    ax.set_ylabel("sorted PSR r", fontsize=8)
    ax.set_xlabel("rank", fontsize=8)
    for a in fig.axes:
        a.tick_params(labelsize=7)
    title = f"image {i}"
    if result.y_true is not None and result.target is not None:
        title = f"{name(result.y_true[i])} \u2192 {name(result.target[i])}"
    fig.suptitle(f"Grid sensitivity ({result.attack or 'attack'}, {result.model or 'model'}): {title}", fontsize=10)
    fig.tight_layout()
    return fig


def psr_overlay(result: Any, index: int = 0, top: float = 0.7, rule: str = "count") -> np.ndarray:
    """The Fig. 4 overlay of one image as an ``(H, W, 4)`` RGBA array.

    Only the top ``top`` share (0.7) of the perturbed grids ranked by ``s_i`` are drawn
    (:meth:`PSEResult.significant` with ``rule``); a pixel takes the mean PSR of the drawn grids covering it
    and its category's colour (:data:`PSR_COLORS`: suppression white, balanced grey,
    promotion black); other pixels are transparent (alpha 0).
    """
    from .analyzers.pse import psr_category

    i = _pse_index(result, index, "psr_overlay")
    sel = result.significant(top, rule)[i].astype(np.float64)
    share = _grid_map(sel, result)
    r_mean = _grid_map(np.asarray(result.r[i]) * sel, result) / np.where(share > 0, share, 1.0)
    cat = psr_category(r_mean, result.suppression, result.promotion)
    rgba = np.zeros((*share.shape, 4))
    for code, rgb in PSR_COLORS.items():
        rgba[cat == code, :3] = rgb
    rgba[..., 3] = share > 0
    return rgba


def plot_psr_overlay(result: Any, cam: Any, index: int | Sequence[int] = 0, top: float = 0.7,
                     image: Any = None, classes: Sequence[str] | None = None, alpha: float = 0.75,
                     rule: str = "count") -> "Figure":
    """PSR on the CAM of ``(x', t)`` (Fig. 4 of the PSE paper).

    The CAM ``F(x', t)`` is drawn with the jet colour map (over the image when given), and
    on top the PSR of the top ``top`` (70 %) perturbed grids by ``s_i``: suppression-dominated
    white, promotion-dominated black, balanced grey (:func:`psr_overlay`).

    Args:
        result: a :class:`~advinterp.analyzers.pse.PSEResult`.
        cam: ``(H, W)`` CAM of image ``index`` w.r.t. its target class, or ``(N, H, W)`` (or an
            :class:`~advinterp.Attribution`) for all images of the result; e.g. the ``cam``
            explainer of advinterp-captum on ``(batch.x_adv, batch.target)``.
        index: the image, or a list of images (one panel each; needs ``(N, H, W)`` maps).
        top: share of the perturbed grids drawn (default 0.7).
        image: ``(N, C, H, W)`` adversarial images (or ``(C, H, W)`` for a single index), drawn
            under the CAM; optional.
        classes: class names for the titles.
        alpha: opacity of the PSR patches (0.75).
        rule: how the top grids are chosen, ``"count"`` or ``"cumulative"``
            (:meth:`PSEResult.significant`).

    Returns:
        A Figure with one panel per image and a legend of the three categories.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    owner = "plot_psr_overlay"
    indices = [index] if isinstance(index, (int, np.integer)) and not isinstance(index, bool) else list(index)
    if not indices:
        raise ParameterError(owner, "index", index, "an image index or a non-empty list of them")
    for i in indices:
        _pse_index(result, i, owner)
    maps = getattr(cam, "maps", cam)
    maps = np.asarray(maps.detach().cpu().double() if hasattr(maps, "detach") else maps, dtype=np.float64)
    h, w = (int(v) for v in result.image_size)
    if maps.shape == (h, w):
        if len(indices) != 1:
            raise ParameterError(owner, "cam", maps, f"maps of shape ({result.n_images}, {h}, {w}) for several images")
        maps = {indices[0]: maps}
    elif maps.shape == (result.n_images, h, w):
        maps = {i: maps[i] for i in indices}
    else:
        raise ParameterError(owner, "cam", maps, f"a CAM of shape ({h}, {w}) or ({result.n_images}, {h}, {w})")
    if not (0 <= alpha <= 1):
        raise ParameterError(owner, "alpha", alpha, "a number in [0, 1]")
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    fig = Figure(figsize=(2.4 * len(indices) + 0.4, 2.9), dpi=100)
    axes = fig.subplots(1, len(indices), squeeze=False)[0]
    for ax, i in zip(axes, indices):
        if image is not None:
            img = image[i] if getattr(image, "ndim", 0) == 4 else image
            ax.imshow(_image_hwc(img), extent=(0, w, h, 0))
        m = maps[i]
        ax.imshow(m, cmap="jet", alpha=0.55 if image is not None else 1.0, extent=(0, w, h, 0),
                  interpolation="bilinear", vmin=min(0.0, float(m.min())), vmax=float(m.max()) or 1.0)
        over = psr_overlay(result, i, top, rule)
        over[..., 3] *= alpha
        ax.imshow(over, extent=(0, w, h, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        fr = {k: v[i] for k, v in result.fractions().items()}
        label = (f"{name(result.y_true[i])} \u2192 {name(result.target[i])}"
                 if result.y_true is not None and result.target is not None else f"image {i}")
        ax.set_title(f"{label}\nS {fr['suppression']:.0%} B {fr['balanced']:.0%} P {fr['promotion']:.0%}",
                     fontsize=8)
    handles = [Patch(facecolor=PSR_COLORS[c], edgecolor="0.3", label=lab) for c, lab in
               ((-1, "suppression (r < -1)"), (0, "balanced"), (1, "promotion (r > 1)"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"PSR on F(x\u2032, t), top {top:.0%} grids by s ({result.attack or 'attack'})", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.93))
    return fig
