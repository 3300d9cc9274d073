"""CAM pairs (Figs. 3 and A1 of the PSE paper) and the interpretability score (Table 2 and its
per-image distributions)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..exceptions import ParameterError
from .common import _image_hwc

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: The four maps of Fig. 3 of the PSE paper: key -> (image shown, column title).
CAM_PAIR_KEYS: dict[str, tuple[str, str]] = {
    "x0_t0": ("x0", "F(x\u2080, t\u2080)"),
    "xadv_t0": ("x_adv", "F(x\u2032, t\u2080)"),
    "x0_t": ("x0", "F(x\u2080, t)"),
    "xadv_t": ("x_adv", "F(x\u2032, t)"),
}


def plot_cam_overlays(x0: Any, x_adv: Any, maps: Mapping[str, Any], n: int = 4,
                      classes: Sequence[str] | None = None, titles: Sequence[str] | None = None, *,
                      y_true: Any = None, target: Any = None, success: Any = None,
                      alpha: float = 0.5) -> "Figure":
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
            left out), or a :class:`~advinterp.PairMaps` (``Explainer.explain_pair``; its
            ``t0``/``t`` label the rows).
        n: images shown (default 4; fewer if the batch is smaller).
        classes: class names for the row titles (default: indices).
        titles: one row title per image (overrides the default ``"t0 -> t"``).
        y_true, target: ``(N,)`` labels for the row titles (default: the Attributions'
            ``target`` of ``"x0_t0"`` and ``"xadv_t"`` when given as Attributions).
        success: ``(N,)`` bool attack success (e.g. ``batch.success``): rows of failed pairs
            are titled ``"t0 -> t (failed)"``, since ``t`` was then not reached.

    Returns:
        A Figure with ``n * len(columns)`` axes.
    """
    from matplotlib.figure import Figure

    from ..data import PairMaps

    if isinstance(maps, PairMaps):
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
    arrays = {k: _map_array("plot_cam_overlays", k, maps[k]) for k in keys}
    images = {"x0": x0, "x_adv": x_adv}
    n = int(min(n, len(x0), *(len(a) for a in arrays.values())))
    if y_true is None and "x0_t0" in maps:
        y_true = getattr(maps["x0_t0"], "target", None)
    if target is None and "xadv_t" in maps:
        target = getattr(maps["xadv_t"], "target", None)
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    failed = _failed_rows(success, len(x0))

    fig = Figure(figsize=(1.9 * len(keys) + 0.6, 1.95 * n + 0.5), dpi=100)
    axes = fig.subplots(n, len(keys), squeeze=False)
    for i in range(n):
        vmin, vmax = _row_range([arrays[k][i] for k in keys])
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
        axes[i, 0].set_ylabel(_row_label(i, titles, y_true, target, name, failed), fontsize=8)
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

    from ..analyzers.interpretability_score import InterpretabilityScore, table2

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


#: The five columns of Fig. A1 of the PSE paper, left to right: map key (``None``: the
#: clean image alone) -> (image shown, column title).
CAM_A1_COLUMNS: tuple[tuple[str | None, str, str], ...] = (
    ("xadv_t0", "x_adv", "F(x\u2032, t\u2080)"),
    ("x0_t0", "x0", "F(x\u2080, t\u2080)"),
    (None, "x0", "x\u2080"),
    ("x0_t", "x0", "F(x\u2080, t)"),
    ("xadv_t", "x_adv", "F(x\u2032, t)"),
)


def _failed_rows(success: Any, n: int) -> np.ndarray:
    """``(n,)`` bool: the rows whose attack failed (none when ``success`` is None)."""
    if success is None:
        return np.zeros(n, dtype=bool)
    return ~np.asarray(success.detach().cpu() if hasattr(success, "detach") else success, dtype=bool).reshape(-1)


def _row_label(i: int, titles: Sequence[str] | None, y_true: Any, target: Any, name: Any, failed: np.ndarray) -> str:
    """Row ``i``'s title: ``titles[i]``, else ``"t0 -> t"`` (``" (failed)"`` when the attack
    failed), else ``"image i"``."""
    if titles is not None and i < len(titles):
        return str(titles[i])
    if y_true is not None and target is not None:
        return f"{name(y_true[i])} \u2192 {name(target[i])}" + (" (failed)" if failed[i] else "")
    return f"image {i}"


def _row_range(maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """The common colour range of one image's maps: ``[min(0, lowest), highest]`` (width 1
    when they are constant)."""
    vals = np.stack(maps)
    vmin, vmax = min(0.0, float(vals.min())), float(vals.max())
    return vmin, (vmax if vmax > vmin else vmin + 1.0)


def _map_array(owner: str, key: str, value: Any) -> np.ndarray:
    m = getattr(value, "maps", value)
    m = np.asarray(m.detach().cpu().double() if hasattr(m, "detach") else m, dtype=np.float64)
    if m.ndim != 3:
        raise ParameterError(owner, f"maps[{key!r}]", m, "maps of shape (N, H, W)")
    return m


def plot_cam_a1(x0: Any, x_adv: Any, maps: Mapping[str, Any], n: int = 4,
                classes: Sequence[str] | None = None, titles: Sequence[str] | None = None, *,
                y_true: Any = None, target: Any = None, success: Any = None, alpha: float = 0.5) -> "Figure":
    """The five-panel view of Fig. A1 of the PSE paper: per image, left to right,
    ``F(x', t0)``, ``F(x0, t0)``, ``x0``, ``F(x0, t)``, ``F(x', t)`` (:data:`CAM_A1_COLUMNS`).

    The true-class maps sit left of the clean image and the adversarial-class maps right of
    it, each adversarial one on the outside. Maps are drawn over their image (jet, ``alpha``
    0.5), the four maps of a row on one colour scale ``[min(0, lowest), highest]``.

    Args:
        x0, x_adv: ``(N, C, H, W)`` pixels in [0, 1].
        maps: ``{key: (N, H, W) tensor or Attribution}`` with all four keys ``"x0_t0"``,
            ``"xadv_t0"``, ``"x0_t"``, ``"xadv_t"``, or a :class:`~advinterp.PairMaps`.
        n: images shown (default 4; fewer if the batch is smaller).
        classes: class names for the row titles (default: indices).
        titles: one row title per image (overrides ``"t0 -> t"``).
        y_true, target: ``(N,)`` labels for the row titles (default: the PairMaps' ``t0``/``t``).
        success: ``(N,)`` bool attack success: failed rows are titled ``"... (failed)"``.

    Returns:
        A Figure with ``n * 5`` axes.
    """
    from matplotlib.figure import Figure

    from ..data import PairMaps

    owner = "plot_cam_a1"
    if isinstance(maps, PairMaps):
        y_true = getattr(maps, "t0", None) if y_true is None else y_true
        target = getattr(maps, "t", None) if target is None else target
        maps = maps.maps()
    if not isinstance(maps, Mapping) or set(maps) != set(CAM_PAIR_KEYS):
        raise ParameterError(owner, "maps", maps, f"a mapping with the keys {', '.join(CAM_PAIR_KEYS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(owner, "n", n, "a positive integer")
    arrays = {k: _map_array(owner, k, v) for k, v in maps.items()}
    n = int(min(n, len(x0), *(len(a) for a in arrays.values())))
    name = (lambda c: classes[int(c)] if classes is not None else str(int(c)))
    failed = _failed_rows(success, len(x0))
    images = {"x0": x0, "x_adv": x_adv}
    fig = Figure(figsize=(1.9 * len(CAM_A1_COLUMNS) + 0.6, 1.95 * n + 0.5), dpi=100)
    axes = fig.subplots(n, len(CAM_A1_COLUMNS), squeeze=False)
    for i in range(n):
        vmin, vmax = _row_range([arrays[k][i] for k in CAM_PAIR_KEYS])
        for j, (key, which, head) in enumerate(CAM_A1_COLUMNS):
            ax = axes[i, j]
            img = _image_hwc(images[which][i])
            h, w = img.shape[:2]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0))
            if key is not None:
                ax.imshow(arrays[key][i], cmap="jet", alpha=alpha, vmin=vmin, vmax=vmax, extent=(0, w, h, 0),
                          interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(head, fontsize=9)
        axes[i, 0].set_ylabel(_row_label(i, titles, y_true, target, name, failed), fontsize=8)
    fig.suptitle("F(x\u2032, t\u2080), F(x\u2080, t\u2080), x\u2080, F(x\u2080, t), F(x\u2032, t) "
                 "(Fig. A1; one colour scale per row)", fontsize=9)
    fig.tight_layout()
    return fig


def is_box_data(results: Sequence[Any], success_only: bool = True) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per-image IS of several ``is`` results, as the box plots draw them.

    Returns ``{explainer: {attack: {"x0_t0": values, "xadv_t": values}}}`` (first-seen
    order), pooling results with the same explainer and attack (over models) as
    :func:`~advinterp.analyzers.interpretability_score.table2` does; with ``success_only``
    (default True, as ``table2``) only the pairs whose attack succeeded; ``nan`` (``delta = 0``)
    left out.
    """
    from ..analyzers.interpretability_score import InterpretabilityScore

    out: dict[str, dict[str, dict[str, list]]] = {}
    for r in results:
        if not isinstance(r, InterpretabilityScore):
            raise ParameterError("is_box_data", "results", r, "InterpretabilityScore results")
        keep = (np.asarray(r.success, dtype=bool) if success_only and r.success is not None
                else np.ones(len(r.is_x0_t0), dtype=bool))
        cell = out.setdefault(r.explainer, {}).setdefault(r.attack, {"x0_t0": [], "xadv_t": []})
        for which in ("x0_t0", "xadv_t"):
            cell[which].append(np.asarray(getattr(r, f"is_{which}"), dtype=np.float64)[keep])
    return {e: {a: {k: (lambda v: v[np.isfinite(v)])(np.concatenate(v)) for k, v in c.items()}
                for a, c in per.items()} for e, per in out.items()}


def plot_is_boxes(results: Sequence[Any], success_only: bool = True) -> "Figure":
    """Box plots of the per-image IS w.r.t. ``(x0, t0)`` and ``(x', t)`` per attack, one
    panel per explainer (the distributions behind Table 2 of the PSE paper).

    Args:
        results: :class:`~advinterp.analyzers.interpretability_score.InterpretabilityScore`
            results (:func:`is_box_data` pools and filters them).
        success_only: only the pairs whose attack succeeded (default True, as ``table2``).

    Returns:
        A Figure with one axes per explainer, two boxes per attack.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    results = list(results)
    if not results:
        raise ParameterError("plot_is_boxes", "results", results, "a non-empty list of is results")
    data = is_box_data(results, success_only)
    width = max(len(per) for per in data.values())
    fig = Figure(figsize=(max(4.8, 1.0 * width + 1.4) * len(data), 3.6), dpi=100)
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    colors = {"x0_t0": "tab:blue", "xadv_t": "tab:orange"}
    for ax, (explainer, per) in zip(axes, data.items()):
        xs = np.arange(len(per))
        for off, which in ((-0.2, "x0_t0"), (0.2, "xadv_t")):
            vals = [per[a][which] if len(per[a][which]) else np.array([np.nan]) for a in per]
            bp = ax.boxplot(vals, positions=xs + off, widths=0.34, patch_artist=True, showfliers=True,
                            flierprops={"markersize": 2}, medianprops={"color": "k"})
            for box in bp["boxes"]:
                box.set_facecolor(colors[which])
                box.set_alpha(0.6)
        ax.set_xticks(xs, [f"{a}\n(n={len(per[a]['x0_t0'])})" for a in per], fontsize=8)
        ax.set_xlim(-0.6, len(per) - 0.4)
        ax.set_ylim(0, 1)
        ax.set_title(explainer or "explainer", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("interpretability score", fontsize=8)
    fig.legend(handles=[Patch(facecolor=colors["x0_t0"], alpha=0.6, label="IS w.r.t. (x\u2080, t\u2080)"),
                        Patch(facecolor=colors["xadv_t"], alpha=0.6, label="IS w.r.t. (x\u2032, t)")],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Per-image interpretability score per attack" + (" (successful pairs)" if success_only else ""),
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.94))
    return fig
