"""PSE grid sensitivity (Fig. 2 of the PSE paper), the PSR overlay on a CAM (Fig. 4) and one
image under several attacks (Fig. A2)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..exceptions import ParameterError
from .common import _image_hwc

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: PSR category colours of Fig. 4: suppression white, balanced grey, promotion black.
PSR_COLORS: dict[int, tuple[float, float, float]] = {-1: (1.0, 1.0, 1.0), 0: (0.5, 0.5, 0.5), 1: (0.0, 0.0, 0.0)}


def _pse_index(result: Any, index: Any, owner: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < result.n_images:
        raise ParameterError(owner, "index", index, f"an image index in [0, {result.n_images})")
    return int(index)


def _grid_map(values: np.ndarray, result: Any) -> np.ndarray:
    """Per-grid values of one image -> ``(H, W)`` per-pixel mean over the covering grids."""
    import torch

    from ..ablation import grid_scores_to_map

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
    from ..analyzers.pse import psr_category

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


def _per_image_maps(owner: str, name: str, cam: Any, result: Any, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """``{index: (H, W) map}`` of an ``(H, W)`` map (one index) or ``(N, H, W)`` maps."""
    maps = getattr(cam, "maps", cam)
    maps = np.asarray(maps.detach().cpu().double() if hasattr(maps, "detach") else maps, dtype=np.float64)
    h, w = (int(v) for v in result.image_size)
    if maps.shape == (h, w):
        if len(indices) != 1:
            raise ParameterError(owner, name, maps, f"maps of shape ({result.n_images}, {h}, {w}) for several images")
        return {indices[0]: maps}
    if maps.shape == (result.n_images, h, w):
        return {i: maps[i] for i in indices}
    raise ParameterError(owner, name, maps, f"a CAM of shape ({h}, {w}) or ({result.n_images}, {h}, {w})")


def _one_image(image: Any, i: int) -> Any:
    return image[i] if getattr(image, "ndim", 0) == 4 else image


def _draw_map(ax: Any, m: np.ndarray, image: Any, h: int, w: int) -> None:
    """A CAM (jet) over an image (when given), on ``[min(0, lowest), highest]``."""
    if image is not None:
        ax.imshow(_image_hwc(image), extent=(0, w, h, 0))
    ax.imshow(m, cmap="jet", alpha=0.55 if image is not None else 1.0, extent=(0, w, h, 0),
              interpolation="bilinear", vmin=min(0.0, float(m.min())), vmax=float(m.max()) or 1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_psr(ax: Any, result: Any, i: int, m: np.ndarray, image: Any, top: float, rule: str, alpha: float) -> None:
    """F(x', t) with the PSR of the top grids on it (Fig. 4)."""
    h, w = (int(v) for v in result.image_size)
    _draw_map(ax, m, image, h, w)
    over = psr_overlay(result, i, top, rule)
    over[..., 3] *= alpha
    ax.imshow(over, extent=(0, w, h, 0), interpolation="nearest")


def _psr_legend(fig: Any) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=PSR_COLORS[c], edgecolor="0.3", label=lab) for c, lab in
               ((-1, "suppression (r < -1)"), (0, "balanced"), (1, "promotion (r > 1)"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)


def plot_psr_overlay(result: Any, cam: Any, index: int | Sequence[int] = 0, top: float = 0.7,
                     image: Any = None, classes: Sequence[str] | None = None, alpha: float = 0.75,
                     rule: str = "count", *, cam_x0_t0: Any = None, x0: Any = None) -> "Figure":
    """PSR on the CAM of ``(x', t)`` (Fig. 4 of the PSE paper).

    The CAM ``F(x', t)`` is drawn with the jet colour map (over the image when given), and
    on top the PSR of the top ``top`` (70 %) perturbed grids by ``s_i``: suppression-dominated
    white, promotion-dominated black, balanced grey (:func:`psr_overlay`). With
    ``cam_x0_t0`` each image gets a row as in the paper's Fig. 4: ``x0`` (when given),
    ``F(x0, t0)`` (over ``x0`` when given) and the PSR over ``F(x', t)``.

    Args:
        result: a :class:`~advinterp.analyzers.pse.PSEResult`.
        cam: ``(H, W)`` CAM of image ``index`` w.r.t. its target class, or ``(N, H, W)`` (or an
            :class:`~advinterp.Attribution`) for all images of the result; e.g. the ``cam``
            explainer of advinterp-captum on ``(batch.x_adv, batch.target)``.
        index: the image, or a list of images (one panel, or row, each; needs ``(N, H, W)`` maps).
        top: share of the perturbed grids drawn (default 0.7).
        image: ``(N, C, H, W)`` adversarial images (or ``(C, H, W)`` for a single index), drawn
            under the CAM; optional.
        classes: class names for the titles.
        alpha: opacity of the PSR patches (0.75).
        rule: how the top grids are chosen, ``"count"`` or ``"cumulative"``
            (:meth:`PSEResult.significant`).
        cam_x0_t0: ``F(x0, t0)`` in the shapes of ``cam`` (e.g. ``PairMaps.x0_t0``); optional.
        x0: ``(N, C, H, W)`` clean images (or ``(C, H, W)``), shown and drawn under
            ``F(x0, t0)``; optional, used with ``cam_x0_t0``.

    Returns:
        A Figure with one panel per image (``cam_x0_t0=None``), or one row per image of
        2 panels (3 with ``x0``), and a legend of the three categories.
    """
    from matplotlib.figure import Figure

    owner = "plot_psr_overlay"
    indices = [index] if isinstance(index, (int, np.integer)) and not isinstance(index, bool) else list(index)
    if not indices:
        raise ParameterError(owner, "index", index, "an image index or a non-empty list of them")
    for i in indices:
        _pse_index(result, i, owner)
    maps = _per_image_maps(owner, "cam", cam, result, indices)
    clean = None if cam_x0_t0 is None else _per_image_maps(owner, "cam_x0_t0", cam_x0_t0, result, indices)
    h, w = (int(v) for v in result.image_size)
    if not (0 <= alpha <= 1):
        raise ParameterError(owner, "alpha", alpha, "a number in [0, 1]")
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))

    def label(i):
        fr = {k: v[i] for k, v in result.fractions().items()}
        head = (f"{name(result.y_true[i])} \u2192 {name(result.target[i])}"
                if result.y_true is not None and result.target is not None else f"image {i}")
        return f"{head}\nS {fr['suppression']:.0%} B {fr['balanced']:.0%} P {fr['promotion']:.0%}"

    if clean is None:
        fig = Figure(figsize=(2.4 * len(indices) + 0.4, 2.9), dpi=100)
        axes = fig.subplots(1, len(indices), squeeze=False)[0]
        for ax, i in zip(axes, indices):
            _draw_psr(ax, result, i, maps[i], None if image is None else _one_image(image, i), top, rule, alpha)
            ax.set_title(label(i), fontsize=8)
        bottom = 0.07
    else:
        heads = (["x\u2080"] if x0 is not None else []) + ["F(x\u2080, t\u2080)", "PSR on F(x\u2032, t)"]
        fig = Figure(figsize=(2.3 * len(heads) + 0.6, 2.7 * len(indices) + 1.0), dpi=100)
        axes = fig.subplots(len(indices), len(heads), squeeze=False)
        for row, i in zip(axes, indices):
            cols = list(row)
            img0 = None if x0 is None else _one_image(x0, i)
            if x0 is not None:
                ax = cols.pop(0)
                ax.imshow(_image_hwc(img0), extent=(0, w, h, 0))
                ax.set_xticks([])
                ax.set_yticks([])
            _draw_map(cols[0], clean[i], img0, h, w)
            _draw_psr(cols[1], result, i, maps[i], None if image is None else _one_image(image, i), top, rule, alpha)
            row[0].set_ylabel(label(i), fontsize=7)
        for ax, head in zip(axes[0], heads):
            ax.set_title(head, fontsize=9)
        bottom = 0.5 / fig.get_figheight()
    _psr_legend(fig)
    fig.suptitle(f"PSR on F(x\u2032, t), top {top:.0%} grids by s ({result.attack or 'attack'})", fontsize=9)
    fig.tight_layout(rect=(0, bottom, 1, 0.93 if clean is None else 1 - 0.45 / fig.get_figheight()),
                     h_pad=None if clean is None else 1.2)
    return fig


#: Row order and labels of Fig. A2 of the PSE paper (other attacks follow, by name).
PAPER_ATTACKS: dict[str, str] = {"cw_l2": "C&W", "ead": "EAD", "str": "Str", "ifgsm": "IFGSM"}


def first_common_success(successes: Sequence[Any]) -> int | None:
    """The first image index whose attack succeeded in every one of ``successes`` (``(N,)``
    bools of attacks on the same images; ``None`` entries count as all successful), over
    the images all of them hold; ``None`` when there is no such image."""
    arrays = [None if s is None else np.asarray(s.detach().cpu() if hasattr(s, "detach") else s,
                                                dtype=bool).reshape(-1) for s in successes]
    known = [a for a in arrays if a is not None]
    if not known:
        return 0 if arrays else None
    n = min(len(a) for a in known)
    both = np.logical_and.reduce([a[:n] for a in known])
    hits = np.flatnonzero(both)
    return int(hits[0]) if len(hits) else None


def plot_psr_attacks(results: Sequence[Any], cams: Sequence[Any], x0: Any, x_adv: Sequence[Any], index: int = 0,
                     labels: Sequence[str] | None = None, classes: Sequence[str] | None = None, top: float = 0.7,
                     rule: str = "count", alpha: float = 0.75, title: str | None = None) -> "Figure":
    """One image under several attacks (Fig. A2 of the PSE paper).

    One row per attack (the paper: C&W, EAD, Str, IFGSM); columns ``F(x0, t0)`` (over
    ``x0``), ``x0``, ``F(x', t)`` (over ``x'``) and the PSR ``r_i`` of the top ``top`` (70 %)
    grids by ``s_i`` over ``F(x', t)`` (:func:`psr_overlay`).

    Args:
        results: one :class:`~advinterp.analyzers.pse.PSEResult` per attack, of the same images.
        cams: per attack a :class:`~advinterp.PairMaps` or a mapping with ``"x0_t0"`` and
            ``"xadv_t"``, ``(N, H, W)`` maps of the same images.
        x0: ``(N, C, H, W)`` clean images (or ``(C, H, W)``, the image ``index``).
        x_adv: per attack ``(N, C, H, W)`` adversarial images (or ``(C, H, W)``).
        index: the image (default 0; :func:`first_common_success` picks one).
        labels: row titles (default: each result's ``attack``).
        title: the figure's title (default: "One image under k attacks (Fig. A2): t0 -> t";
            e.g. Fig. 5's one image with several targets).
        classes: class names for the title.
        top, rule, alpha: as :func:`plot_psr_overlay`.

    Returns:
        A Figure with ``4 * len(results)`` axes.
    """
    from matplotlib.figure import Figure

    owner = "plot_psr_attacks"
    results, cams, x_adv = list(results), list(cams), list(x_adv)
    if not results or len(cams) != len(results) or len(x_adv) != len(results):
        raise ParameterError(owner, "results", len(results),
                             f"one or more results, with as many cams ({len(cams)}) and x_adv ({len(x_adv)})")
    labels = [r.attack or f"attack {k}" for k, r in enumerate(results)] if labels is None else list(labels)
    h, w = (int(v) for v in results[0].image_size)
    heads = ["F(x\u2080, t\u2080)", "x\u2080", "F(x\u2032, t)", f"PSR on F(x\u2032, t), top {top:.0%}"]
    fig = Figure(figsize=(2.2 * len(heads) + 0.6, 2.55 * len(results) + 1.0), dpi=100)
    axes = fig.subplots(len(results), len(heads), squeeze=False)
    img0 = _one_image(x0, index)
    for row, res, cam, adv, lab in zip(axes, results, cams, x_adv, labels):
        i = _pse_index(res, index, owner)
        pair = cam.maps() if hasattr(cam, "maps") and callable(cam.maps) else cam
        missing = [k for k in ("x0_t0", "xadv_t") if k not in pair]
        if missing:
            raise ParameterError(owner, "cams", cam, "PairMaps or mappings with 'x0_t0' and 'xadv_t'")
        f0 = _per_image_maps(owner, "cams[x0_t0]", pair["x0_t0"], res, [i])[i]
        ft = _per_image_maps(owner, "cams[xadv_t]", pair["xadv_t"], res, [i])[i]
        xa = _one_image(adv, i)
        _draw_map(row[0], f0, img0, h, w)
        row[1].imshow(_image_hwc(img0), extent=(0, w, h, 0))
        row[1].set_xticks([])
        row[1].set_yticks([])
        _draw_map(row[2], ft, xa, h, w)
        _draw_psr(row[3], res, i, ft, xa, top, rule, alpha)
        row[0].set_ylabel(lab, fontsize=9)
    for ax, head in zip(axes[0], heads):
        ax.set_title(head, fontsize=8)
    first = results[0]
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    what = (f"{name(first.y_true[index])} \u2192 {name(first.target[index])}"
            if first.y_true is not None and first.target is not None else f"image {index}")
    _psr_legend(fig)
    fig.suptitle(title if title is not None else f"One image under {len(results)} attacks (Fig. A2): {what}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1 - 0.4 / fig.get_figheight()), h_pad=1.2)
    return fig
