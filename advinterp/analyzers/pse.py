"""``pse``: the promotion-suppression effect of grid-level perturbations (PSE paper, Sec. 3).

The image is divided into grids ``G_1 .. G_m`` by a sliding window (``size`` x ``size``,
step ``stride``; see :func:`pse_grids`). ``delta_{G_i}`` is the perturbation ``delta = x' - x0``
restricted to grid ``i``, so ``x' - delta_{G_i}`` is the adversarial image with the clean pixels
put back in that grid. With ``Z`` the logits, ``t0`` the true class and ``t`` the target class
(the adversarial prediction for untargeted attacks, ``batch.target``), Definition 1 reads::

    d0_i = max(Z(x' - delta_Gi)[t0] - Z(x')[t0], xi)       (1)  suppression of t0 undone
    dt_i = max(Z(x')[t] - Z(x' - delta_Gi)[t], xi)          (2)  promotion of t undone
    s_i  = d0_i + dt_i                                      (3)  adversarial significance
    r_i  = log2(dt_i / d0_i)                                (4)  promotion-suppression ratio

and the PSR puts grid ``i`` in one of three categories: *suppression-dominated*
(``r_i < -1``), *promotion-dominated* (``r_i > 1``) or *balanced* (``-1 <= r_i <= 1``).
``xi`` (the paper's "small positive number"; it gives no value) defaults to ``1e-6``.

Cost: by default (``incremental=None``), where the model traces with ``torch.fx`` and its
ops are supported, one forward per adversarial image that keeps every feature map, then each
ablated image recomputes only the region its window reaches (exact incremental inference,
:mod:`advinterp.incremental`; ResNet-18/50 with 13x13 grids on 224x224 run 40-46 % of the
multiply-adds of full forwards).
Otherwise (or ``incremental=False``) one full forward per ablated image (``N * m``) plus one per
adversarial image (``N``). Both classes are read from the same logits; ``PSEResult.inference``
says which path ran. The ablated images (or windows) are built by the grid-ablation backend
(:func:`advinterp.registry.get_ablation_backend`: the compiled ``advinterp-gridablate`` ops when
built, else the pure-PyTorch reference) in chunks of at most ``max_batch`` images, whatever
``N`` and ``m`` are.

Table 1 of the paper correlates ``{d0_i}``, ``{dt_i}`` and ``{s_i}`` with the perturbation
strength ``{||delta_Gi||_2}`` over the grids of each image and averages over images
(:func:`table1`, Pearson and Kendall's tau-b). The refined attacks of Appendix 3 use
``S1 = {s_i > beta}`` (:meth:`PSEResult.s1_mask`, footnote 3's beta); running them is the
``refine`` analyzer (:mod:`advinterp.analyzers.refine`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..ablation import ReferenceGridAblation, grid_boxes
from ..registry import get_ablation_backend
from ..components import Analyzer, check_labels
from ..exceptions import ParameterError
from ..params import Param
from ..progress import progress_bar
from ..stats import nanmean as _nanmean, standard_error
from ..results import Result, format_table

__all__ = ["PSEResult", "PSEAnalyzer", "default_grid_size", "pse_grids", "ablated_class_logits",
           "sensitivity", "psr_category", "grid_norms", "grid_correlations", "table1", "table1_text",
           "SUPPRESSION", "BALANCED", "PROMOTION", "CATEGORY_NAMES"]

#: Category codes of :func:`psr_category` (``PSEResult.category``).
SUPPRESSION, BALANCED, PROMOTION = -1, 0, 1
CATEGORY_NAMES = {SUPPRESSION: "suppression", BALANCED: "balanced", PROMOTION: "promotion"}

#: The paper's grid: 13 x 13 pixels on 299 x 299 inputs. Its models (ResNet_v2_101 and
#: Inception_v3, TF-slim) take 299 x 299 images, and its Table A1 reports l0 norms up to
#: 268,123, which only a 299 x 299 x 3 image (268,203 values) can hold (224 x 224 x 3 is 150,528).
PAPER_GRID, PAPER_INPUT = 13, 299


# ---------------------------------------------------------------------------- grids
def default_grid_size(height: int, width: int) -> int:
    """The paper's 13 px window on 299 px inputs scaled to the image:
    ``max(2, round(13 * min(H, W) / 299))`` (13 on 299x299, 10 on 224x224, 3 on 64x64, 2 on
    16x16)."""
    return max(2, int(round(PAPER_GRID * min(height, width) / PAPER_INPUT)))


def pse_grids(height: int, width: int, size: int | None = None, stride: int | None = None, cover: bool = True,
              owner: str = "pse_grids") -> torch.Tensor:
    """The grids ``G_i`` of an ``height x width`` image: a ``size x size`` sliding window.

    Args:
        size: window side in pixels; ``None`` (default) = :func:`default_grid_size`.
        stride: step in pixels, ``1 <= stride <= size`` (``stride < size`` gives overlapping
            grids; a larger stride would leave pixels in no grid); ``None`` = ``size``.
        cover: add a last row/column of windows flush with the bottom/right border when the
            stride does not land there, so the grids cover every pixel (default True, as the
            paper's ``union G_i = [n]``).

    Returns:
        ``(m, 4)`` int64 ``[y0, x0, y1, x1]`` (end exclusive), row-major.
    """
    size = default_grid_size(height, width) if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ParameterError(owner, "size", size, "a positive integer window size (or None)")
    if size > min(height, width):
        raise ParameterError(owner, "size", size, f"a window no larger than the image ({height}x{width})",
                             "Use a smaller size, or size=None for the paper's 13/299 of the image side.")
    stride = size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ParameterError(owner, "stride", stride, "a positive integer stride (or None for stride = size)")
    if stride > size:
        raise ParameterError(owner, "stride", stride, f"a stride no larger than the window size {size}",
                             "A larger stride leaves pixels outside every grid.")
    return grid_boxes(height, width, int(size), int(stride), cover=cover)


def grid_norms(delta: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(||delta_Gi||_2, ||delta_Gi||_inf)`` per image and grid, each ``(N, m)`` float64
    (all channels of the window count)."""
    d = torch.as_tensor(delta).detach().double()
    n = len(d)
    l2 = torch.zeros(n, len(boxes), dtype=torch.float64, device=d.device)
    linf = torch.zeros_like(l2)
    for j, (y0, x0, y1, x1) in enumerate(torch.as_tensor(boxes).tolist()):
        part = d[:, :, y0:y1, x0:x1].flatten(1)
        l2[:, j] = part.norm(dim=1)
        linf[:, j] = part.abs().amax(1)
    return l2, linf


# ---------------------------------------------------------------------------- the forward passes
def _chunks(n: int, m: int, max_batch: int) -> list[tuple[int, int, int, int]]:
    """``(i0, i1, j0, j1)``: images ``i0:i1`` x grids ``j0:j1`` with ``(i1-i0)*(j1-j0) <= max_batch``."""
    if n == 0 or m == 0:
        return []
    count = min(m, max_batch)
    per = max(1, max_batch // count)
    return [(i, min(n, i + per), j, min(m, j + count)) for i in range(0, n, per) for j in range(0, m, count)]


@torch.no_grad()
def ablated_class_logits(model: Any, x0: torch.Tensor, x_adv: torch.Tensor, boxes: torch.Tensor,
                         classes: torch.Tensor, max_batch: int = 256, backend: Any = None,
                         progress: bool | None = None, incremental: bool | None = False,
                         threshold: float = 0.6, report: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of chosen classes on ``x'`` and on every ``x' - delta_{G_i}``.

    Args:
        model: a :class:`~advinterp.ModelAdapter` (or ``nn.Module``), run in eval mode.
        x0, x_adv: ``(N, C, H, W)`` clean and adversarial pixels in [0, 1].
        boxes: ``(m, 4)`` grids ``[y0, x0, y1, x1]`` (:func:`pse_grids`).
        classes: ``(N, k)`` class indices read from each image's logits (``[t0, t]`` for PSE).
        max_batch: most images in one forward (default 256): the ablated images are built
            and run in chunks of images x grids of at most this many.
        backend: a grid-ablation backend (``ablate(x_adv, x0, boxes, start, count)``, and
            ``crop`` / ``paste`` for the incremental path); ``None`` =
            :func:`advinterp.registry.get_ablation_backend` for the model's device.
        progress: show a progress bar (``None``: when on a terminal).
        incremental: ``False`` (default here): full forwards of the ablated images; ``True``:
            exact incremental inference (:mod:`advinterp.incremental`: ``x'`` runs once, each
            ablated image recomputes only what its window changes), unsupported ops running on
            full maps; ``None``: incremental when the model traces with ``torch.fx`` and every
            op on a spatial map is supported, else full.
        threshold: the incremental path's switch to full maps (share of a map's area; 0.6).
        report: a dict that receives ``path`` (``"incremental"`` / ``"full"``), ``note`` (why,
            fallbacks) and ``flops_fraction`` (the conv/linear multiply-adds run, relative to
            full forwards; incremental path only).

    Returns:
        ``(ablated, adv)``: ``(N, m, k)`` logits ``Z(x' - delta_Gi)[classes]`` and ``(N, k)``
        logits ``Z(x')[classes]``, float64 on the CPU. On the full path exactly
        ``N * (m + 1)`` images are forwarded, never more than ``max_batch`` at once.
    """
    from ..model import as_adapter

    owner = "ablated_class_logits"
    model = as_adapter(model)
    if tuple(x0.shape) != tuple(x_adv.shape):
        raise ParameterError(owner, "x_adv", x_adv, f"the shape of x0 {tuple(x0.shape)}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ParameterError(owner, "max_batch", max_batch, "a positive integer")
    if incremental not in (True, False, None):
        raise ParameterError(owner, "incremental", incremental, "True, False or None (auto)")
    n, m = len(x0), len(boxes)
    classes = torch.as_tensor(classes, dtype=torch.long)
    if classes.ndim != 2 or len(classes) != n:
        raise ParameterError(owner, "classes", classes, f"class indices of shape ({n}, k)")
    k = classes.shape[1]
    try:
        nb = model.nb_classes
    except Exception:  # a head the adapter cannot read: gather() checks the range below
        nb = None
    if nb is not None and classes.numel() and (classes.min() < 0 or classes.max() >= nb):
        raise ParameterError(owner, "classes", classes, f"class indices in [0, {nb})")
    backend = get_ablation_backend(model.device) if backend is None else backend
    dev, dtype = model.device, model.dtype
    xa, xc = x_adv.to(dev, dtype), x0.to(dev, dtype)
    cls_dev = classes.to(dev)
    ablated = torch.empty(n, m, k, dtype=torch.float64)
    adv = torch.empty(n, k, dtype=torch.float64)
    report = {} if report is None else report
    disable = None if progress is None else not progress
    with model.preserved():
        if incremental is not False and n and m:
            from ..incremental import IncrementalUnavailable, incremental_class_logits

            try:
                incremental_class_logits(model, xc, xa, boxes, cls_dev, ablated, adv, max_batch, backend,
                                         threshold, strict=incremental is None, report=report, disable=disable)
                return ablated, adv
            except IncrementalUnavailable as e:
                if incremental is True:
                    warnings.warn(f"{owner}: incremental=True, but {e}; running full forwards.", RuntimeWarning,
                                  stacklevel=2)
                report.update(path="full", note=str(e))
        report.setdefault("path", "full")
        tasks = [(i, min(n, i + max_batch), -1, -1) for i in range(0, n, max_batch)] + _chunks(n, m, max_batch)
        for i0, i1, j0, j1 in progress_bar(tasks, desc="pse grids", disable=disable):
            if j0 < 0:  # Z(x') of images i0:i1
                adv[i0:i1] = model.logits(xa[i0:i1]).gather(1, cls_dev[i0:i1]).double().cpu()
                continue
            imgs = backend.ablate(xa[i0:i1], xc[i0:i1], boxes, j0, j1 - j0)
            b, c = i1 - i0, j1 - j0
            z = model.logits(imgs.reshape(b * c, *imgs.shape[2:]).to(dev, dtype)).reshape(b, c, -1)
            ablated[i0:i1, j0:j1] = z.gather(2, cls_dev[i0:i1, None, :].expand(b, c, k)).double().cpu()
            del imgs, z
    return ablated, adv


# ---------------------------------------------------------------------------- the measures
def sensitivity(ablated: Any, adv: Any, xi: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Definition 1: ``(d0, dt, s, r)`` from the logits of ``[t0, t]``.

    Args:
        ablated: ``(N, m, 2)`` ``Z(x' - delta_Gi)[t0]`` and ``Z(x' - delta_Gi)[t]``.
        adv: ``(N, 2)`` ``Z(x')[t0]`` and ``Z(x')[t]``.
        xi: the floor ``xi > 0`` of eqs. (1)-(2) (default 1e-6).

    Returns:
        Four ``(N, m)`` float64 arrays: ``d0 = max(Z(x'-dG)[t0] - Z(x')[t0], xi)``,
        ``dt = max(Z(x')[t] - Z(x'-dG)[t], xi)``, ``s = d0 + dt``, ``r = log2(dt / d0)``.
    """
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not math.isfinite(xi) or xi <= 0:
        raise ParameterError("sensitivity", "xi", xi, "a finite number > 0")
    a = np.asarray(torch.as_tensor(ablated).double().cpu() if isinstance(ablated, torch.Tensor) else ablated,
                   dtype=np.float64)
    z = np.asarray(torch.as_tensor(adv).double().cpu() if isinstance(adv, torch.Tensor) else adv, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] != 2 or z.shape != (a.shape[0], 2):
        raise ParameterError("sensitivity", "ablated", a, "logits of shape (N, m, 2) with adv of shape (N, 2)")
    d0 = np.maximum(a[:, :, 0] - z[:, None, 0], xi)
    dt = np.maximum(z[:, None, 1] - a[:, :, 1], xi)
    return d0, dt, d0 + dt, np.log2(dt / d0)


def psr_category(r: Any, suppression: float = -1.0, promotion: float = 1.0) -> np.ndarray:
    """PSR categories: ``-1`` suppression-dominated (``r < suppression``), ``1``
    promotion-dominated (``r > promotion``), ``0`` balanced (in between, ends included).
    Returns an int8 array of ``r``'s shape."""
    if not suppression <= promotion:
        raise ParameterError("psr_category", "suppression", suppression, f"a threshold <= promotion ({promotion})")
    r = np.asarray(r, dtype=np.float64)
    out = np.zeros(r.shape, dtype=np.int8)
    out[r < suppression] = SUPPRESSION
    out[r > promotion] = PROMOTION
    return out


def grid_correlations(values: Any, strength: Any, method: str = "pearson") -> np.ndarray:
    """Per-image correlation over the grids between ``values`` and ``strength`` (Table 1).

    Args:
        values, strength: ``(N, m)`` arrays (e.g. ``s`` and ``||delta_Gi||_2``).
        method: ``"pearson"`` (:func:`scipy.stats.pearsonr`) or ``"kendall"``
            (:func:`scipy.stats.kendalltau`, tau-b: ties allowed).

    Returns:
        ``(N,)`` float64; ``nan`` for an image where either side is constant over its grids.
    """
    from scipy import stats

    if method not in ("pearson", "kendall"):
        raise ParameterError("grid_correlations", "method", method, "'pearson' or 'kendall'")
    v, w = np.asarray(values, dtype=np.float64), np.asarray(strength, dtype=np.float64)
    if v.ndim != 2 or v.shape != w.shape:
        raise ParameterError("grid_correlations", "values", v, f"an (N, m) array like strength {w.shape}")
    out = np.full(len(v), np.nan)
    for i in range(len(v)):
        if v.shape[1] < 2 or np.ptp(v[i]) == 0 or np.ptp(w[i]) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.pearsonr(v[i], w[i]) if method == "pearson" else stats.kendalltau(v[i], w[i])
        out[i] = float(res[0])
    return out


# ---------------------------------------------------------------------------- result
_MEASURES = ("d0", "dt", "s")


@dataclass(frozen=True)
class PSEResult(Result):
    """Grid sensitivity of one attack on one model (Definition 1, Table 1, Figs. 2-4).

    Per grid (arrays ``(N, m)``, ``N`` images, ``m`` grids):
        d0, dt, s, r: eqs. (1)-(4), float64.
        category: int8 PSR category: -1 suppression (``r < suppression``), 0 balanced,
            1 promotion (``r > promotion``).
        grid_l2, grid_linf: ``||delta_Gi||_2`` and ``||delta_Gi||_inf``.
        logit_t0, logit_t: ``Z(x' - delta_Gi)[t0]`` and ``Z(x' - delta_Gi)[t]`` (signed changes
            are ``logit_t0 - adv_logit_t0`` etc.; grids with ``delta_Gi = 0`` are ``x'`` itself
            and hold ``Z(x')`` exactly).
    Per image (``(N,)``):
        adv_logit_t0, adv_logit_t: ``Z(x')[t0]``, ``Z(x')[t]``.
        y_true, target: ``t0`` and ``t``; success: attack success (``None`` if unknown).
    Grids and settings:
        boxes: ``(m, 4)`` int64 ``[y0, x0, y1, x1]``; image_size: ``(H, W)``; size, stride.
        xi, suppression, promotion: eq. (1)-(2)'s floor and the PSR thresholds.
        fraction: cumulative strength filtered out of S1 (footnote 3, 0.3).
        attack, model: names; backend: the grid-ablation backend that built the images.
        inference: ``"incremental"`` (exact incremental inference, :mod:`advinterp.incremental`)
            or ``"full"`` (a full forward per ablated image); inference_note: why, the share of
            the full forwards' multiply-adds that ran, and the nodes that ran on full maps.
    """

    d0: np.ndarray
    dt: np.ndarray
    s: np.ndarray
    r: np.ndarray
    category: np.ndarray
    grid_l2: np.ndarray
    grid_linf: np.ndarray
    logit_t0: np.ndarray
    logit_t: np.ndarray
    adv_logit_t0: np.ndarray
    adv_logit_t: np.ndarray
    boxes: np.ndarray
    image_size: tuple = (0, 0)
    y_true: np.ndarray | None = None
    target: np.ndarray | None = None
    success: np.ndarray | None = None
    attack: str = ""
    model: str = ""
    backend: str = ""
    size: int = 0
    stride: int = 0
    xi: float = 1e-6
    suppression: float = -1.0
    promotion: float = 1.0
    fraction: float = 0.3
    inference: str = "full"
    inference_note: str = ""

    per_image = ("d0", "dt", "s", "r", "category", "grid_l2", "grid_linf", "logit_t0", "logit_t", "adv_logit_t0",
                 "adv_logit_t", "y_true", "target", "success")

    # ------------------------------------------------------------------ per image
    @property
    def n_images(self) -> int:
        return int(self.d0.shape[0])

    @property
    def n_grids(self) -> int:
        return int(self.d0.shape[1])

    @property
    def perturbed(self) -> np.ndarray:
        """``(N, m)`` bool: grids where ``delta_Gi != 0``."""
        return np.asarray(self.grid_l2) > 0

    def fractions(self) -> dict[str, np.ndarray]:
        """Share of the *perturbed* grids of each image in each PSR category:
        ``{"suppression", "balanced", "promotion"}`` -> ``(N,)`` (``nan`` without perturbed grids)."""
        pert = self.perturbed
        cnt = pert.sum(1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {name: np.where(cnt > 0, ((self.category == code) & pert).sum(1) / np.maximum(cnt, 1), np.nan)
                    for code, name in CATEGORY_NAMES.items()}

    def top_grids(self, k: int = 5) -> np.ndarray:
        """``(N, min(k, m))`` grid indices by decreasing ``s_i`` (ties: lower index first)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParameterError("PSEResult.top_grids", "k", k, "a positive integer")
        return np.argsort(-np.asarray(self.s), axis=1, kind="stable")[:, :k]

    def correlations(self, method: str = "pearson", strength: str = "l2") -> np.ndarray:
        """``(N, 3)`` per-image correlation of ``d0``, ``dt``, ``s`` with ``||delta_Gi||_2``
        (``strength="linf"``: with ``||delta_Gi||_inf``) over the grids (Table 1)."""
        if strength not in ("l2", "linf"):
            raise ParameterError("PSEResult.correlations", "strength", strength, "'l2' or 'linf'")
        w = self.grid_l2 if strength == "l2" else self.grid_linf
        return np.stack([grid_correlations(getattr(self, k), w, method) for k in _MEASURES], axis=1)

    def significant(self, top: float = 0.7, rule: str = "count") -> np.ndarray:
        """``(N, m)`` bool: the most significant perturbed grids of each image (Fig. 4 draws
        only these; "the top 70 % most significant perturbed grids ranked by s_i").

        Args:
            top: share kept (default 0.7).
            rule: ``"count"`` (default): the ``ceil(top * #perturbed)`` perturbed grids with
                the largest ``s_i``; ``"cumulative"``: footnote 3's rule, the perturbed grids
                with ``s_i > beta`` where beta drops the least significant grids holding
                ``1 - top`` of the cumulative ``s`` (S1 for ``top = 0.7``).
        """
        if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top <= 1:
            raise ParameterError("PSEResult.significant", "top", top, "a number in (0, 1]")
        if rule not in ("count", "cumulative"):
            raise ParameterError("PSEResult.significant", "rule", rule, "'count' or 'cumulative'")
        pert = self.perturbed
        if rule == "cumulative":
            return self.s1_grids(1.0 - float(top)) & pert
        order = np.argsort(-np.where(pert, self.s, -np.inf), axis=1, kind="stable")
        keep = np.ceil(top * pert.sum(1)).astype(int)
        out = np.zeros(pert.shape, dtype=bool)
        for i in range(len(out)):
            out[i, order[i, :keep[i]]] = True
        return out & pert

    # ------------------------------------------------------------------ refinement (S1)
    def s1_grids(self, fraction: float | None = None) -> np.ndarray:
        """``(N, m)`` bool: ``s_i > beta`` (footnote 3; ``fraction`` defaults to the result's)."""
        from ..supports import grids_above_beta

        f = self.fraction if fraction is None else fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ParameterError("PSEResult.s1_grids", "fraction", f, "a number in [0, 1)")
        return grids_above_beta(torch.as_tensor(self.s), float(f)).numpy()

    def s1_mask(self, fraction: float | None = None) -> torch.Tensor:
        """S1 as a pixel mask ``(N, 1, H, W)`` bool: the union of the grids with ``s_i > beta``,
        ready for :func:`advinterp.attacks.refine.refine` (``fraction``: default the result's 0.3)."""
        from ..supports import support_from_scores

        f = self.fraction if fraction is None else fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ParameterError("PSEResult.s1_mask", "fraction", f, "a number in [0, 1)")
        return support_from_scores(torch.as_tensor(self.s), torch.as_tensor(self.boxes),
                                   tuple(self.image_size), float(f))

    # ------------------------------------------------------------------ tables
    def image_rows(self, k: int = 3) -> list[dict[str, Any]]:
        """One row per image: labels, category shares of the perturbed grids, the ``k`` top
        grids by ``s``, and the Pearson correlations with ``||delta_Gi||_2``."""
        fr, top, corr = self.fractions(), self.top_grids(k), self.correlations("pearson")
        rows = []
        for i in range(self.n_images):
            row: dict[str, Any] = {"image": i}
            if self.y_true is not None:
                row["t0"] = int(self.y_true[i])
            if self.target is not None:
                row["t"] = int(self.target[i])
            if self.success is not None:
                row["success"] = bool(self.success[i])
            row.update({f"frac_{name}": float(v[i]) for name, v in fr.items()})
            row["top_grids"] = " ".join(str(int(j)) for j in top[i])
            row["max_s"] = float(np.max(self.s[i])) if self.n_grids else float("nan")
            row.update({f"pearson_{k_}": float(corr[i, j]) for j, k_ in enumerate(_MEASURES)})
            rows.append(row)
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """Table 1 view of this result: one row (attack, model, mean correlations)."""
        return table1([self])


def table1(results: Sequence[PSEResult], success_only: bool = True, strength: str = "l2") -> list[dict[str, Any]]:
    """Table 1 rows: per (attack, model), the correlation between ``{d0_i}``, ``{dt_i}``,
    ``{s_i}`` and ``{||delta_Gi||_2}`` over the grids of each image, averaged over images
    (Pearson and Kendall's tau-b), and the mean category shares of the perturbed grids.

    Results with the same (attack, model) are pooled image-wise; images whose correlation
    is undefined (a constant side) are left out of that mean (``n_valid`` counts the images
    with a defined Pearson correlation for ``s``); each mean correlation has its standard error
    over images, ``se_<column>`` (:func:`advinterp.stats.standard_error`). ``success_only`` (default True, the paper
    averages over adversarial examples) keeps the pairs whose attack succeeded; ``n_dropped``
    counts the failed ones left out (results without ``success`` keep every pair). Rows keep
    the order in which keys first appear; render with
    :func:`advinterp.results.format_table` or :func:`table1_text`.
    """
    groups: dict[tuple[str, str], list[PSEResult]] = {}
    for r in results:
        if not isinstance(r, PSEResult):
            raise ParameterError("table1", "results", r, "PSEResult results (of the pse analyzer)")
        groups.setdefault((r.attack, r.model), []).append(r)
    rows = []
    for (attack, model), rs in groups.items():
        pooled: dict[str, list[np.ndarray]] = {}
        dropped = 0
        for r in rs:
            keep = np.ones(r.n_images, dtype=bool)
            if success_only and r.success is not None:
                keep = np.asarray(r.success, dtype=bool)
                dropped += int((~keep).sum())
            for method in ("pearson", "kendall"):
                c = r.correlations(method, strength)[keep]
                for j, k in enumerate(_MEASURES):
                    pooled.setdefault(f"{method}_{k}", []).append(c[:, j])
            for name, v in r.fractions().items():
                pooled.setdefault(f"frac_{name}", []).append(v[keep])
        cat = {k: np.concatenate(v) for k, v in pooled.items()}
        row: dict[str, Any] = {"attack": attack, "model": model, "n": len(cat["pearson_s"]), "n_dropped": dropped,
                               "n_valid": int(np.isfinite(cat["pearson_s"]).sum()),
                               "grids": rs[0].n_grids}
        row.update({k: _nanmean(v) for k, v in cat.items()})
        # the standard error of each mean correlation over images: is a gap between rows noise?
        row.update({f"se_{k}": standard_error(v) for k, v in cat.items() if not k.startswith("frac_")})
        rows.append(row)
    return rows


def table1_text(results: Sequence[PSEResult], success_only: bool = True) -> str:
    """:func:`table1` as aligned text."""
    return format_table(table1(results, success_only))


# ---------------------------------------------------------------------------- analyzer
def _check_fraction(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < 1


class PSEAnalyzer(Analyzer):
    """Promotion-suppression effect per grid: d0, dt, s, PSR r and categories (Sec. 3, Table 1).

    Parameters (defaults are the paper's):
        size: grid window side in pixels; ``None`` (default) = ``max(2, round(13 * min(H, W) / 299))``,
            the paper's 13x13 on 299x299 (3 on the shipped 64x64 model).
        stride: window step; ``None`` (default) = ``size`` (non-overlapping); ``stride < size``
            gives overlapping grids.
        cover: add grids flush with the bottom/right border so every pixel is covered (True).
        xi: floor of d0/dt, eqs. (1)-(2) (1e-6; the paper only says "small positive").
        suppression, promotion: PSR thresholds, -1 and 1.
        fraction: S1 drops the least significant grids holding this share of the cumulative
            s (0.3, footnote 3); used by :meth:`PSEResult.s1_mask`.
        max_batch: most images per forward pass (256): the memory budget, whatever N and m are.
        backend: ``"auto"`` (the plugins' fastest grid-ablation backend for the model's device,
            e.g. the compiled ``advinterp-gridablate`` op) or ``"reference"`` (pure PyTorch).
        incremental: ``None`` (default): exact incremental inference (:mod:`advinterp.incremental`:
            ``x'`` runs once and every ablated image recomputes only the region its window
            reaches) when the model traces with ``torch.fx`` and every op on a spatial map is
            supported, else one full forward per ablated image; ``True``: incremental, ops it
            does not support running on full maps; ``False``: full forwards.
        full_threshold: the incremental path runs a node on full maps once its changed box
            covers this share of the map (0.6).

    ``analyze(model, batch)`` takes no context keywords and returns a :class:`PSEResult`.
    ``t0`` is ``batch.y_true`` and ``t`` is ``batch.target`` (the target class, or the
    adversarial prediction of an untargeted attack).
    """

    name = "pse"
    context_keys = ()
    shardable = True
    warn_failed = True
    params = {
        "size": Param.integer(None, low=1, allow_none=True,
                              doc="grid window side (None: 13/299 of the image side, at least 2)"),
        "stride": Param.integer(None, low=1, allow_none=True, doc="window step (None: = size)"),
        "cover": Param.boolean(True, doc="add border-flush grids so every pixel is in one"),
        "xi": Param.number(1e-6, low=0, low_open=True, doc="floor of d0 and dt (eqs. 1-2)"),
        "suppression": Param.number(-1.0, doc="r below this is suppression-dominated"),
        "promotion": Param.number(1.0, doc="r above this is promotion-dominated"),
        "fraction": Param(0.3, _check_fraction, "a number in [0, 1)",
                          doc="S1: cumulative share of s filtered out (footnote 3)", invalid=(-0.1, 1, 1.5, "x")),
        "max_batch": Param.integer(256, low=1, doc="most images per forward pass"),
        "backend": Param.choice("auto", ("auto", "reference"), doc="grid-ablation backend"),
        "incremental": Param(None, lambda v: v is None or isinstance(v, bool), "True, False or None (auto)",
                             "exact incremental inference (None: when the model traces and its ops are supported)",
                             ("yes", 1)),
        "full_threshold": Param.number(0.6, low=0, high=1, low_open=True,
                                       doc="incremental path: full maps once a box covers this share of its map"),
    }
    conformance_params = {"size": 4, "max_batch": 16}

    def _check_params(self) -> None:
        if self.suppression > self.promotion:
            raise ParameterError(type(self).__name__, "suppression", self.suppression,
                                 f"a threshold <= promotion ({self.promotion})")
        if self.size is not None and self.stride is not None and self.stride > self.size:
            raise ParameterError(type(self).__name__, "stride", self.stride,
                                 f"a stride no larger than size ({self.size})",
                                 "A larger stride leaves pixels outside every grid.")

    def grids(self, height: int, width: int) -> torch.Tensor:
        """The ``(m, 4)`` grids this analyzer uses on ``height x width`` images."""
        return pse_grids(height, width, self.size, self.stride, self.cover, owner=f"{type(self).__name__}")

    def _analyze(self, model, batch, **context):
        owner = f"{type(self).__name__}.analyze"
        n, _, h, w = batch.x0.shape
        boxes = pse_grids(h, w, self.size, self.stride, self.cover, owner=owner)
        size = int(boxes[0, 2] - boxes[0, 0])
        stride = size if self.stride is None else int(self.stride)
        t0 = check_labels(owner, batch.y_true, n, model.nb_classes, "batch.y_true").cpu()
        t = check_labels(owner, batch.target, n, model.nb_classes, "batch.target").cpu()
        backend = ReferenceGridAblation() if self.backend == "reference" else get_ablation_backend(model.device)
        path: dict[str, Any] = {}
        ablated, adv = ablated_class_logits(model, batch.x0, batch.x_adv, boxes, torch.stack([t0, t], 1),
                                            self.max_batch, backend, incremental=self.incremental,
                                            threshold=float(self.full_threshold), report=path)
        l2, linf = grid_norms(batch.delta, boxes)
        l2, linf = l2.cpu(), linf.cpu()
        # x' - delta_Gi is x' itself where delta_Gi = 0: its logits are Z(x') exactly (not the
        # float noise of a second forward at another batch position)
        same = (l2 == 0)[:, :, None].expand_as(ablated)
        ablated = torch.where(same, adv[:, None, :].expand_as(ablated), ablated)
        d0, dt, s, r = sensitivity(ablated, adv, float(self.xi))
        success = None if batch.success is None else batch.success.detach().cpu().numpy().astype(bool)
        return PSEResult(
            d0=d0, dt=dt, s=s, r=r, category=psr_category(r, float(self.suppression), float(self.promotion)),
            grid_l2=l2.numpy(), grid_linf=linf.numpy(), logit_t0=ablated[:, :, 0].numpy(),
            logit_t=ablated[:, :, 1].numpy(), adv_logit_t0=adv[:, 0].numpy(), adv_logit_t=adv[:, 1].numpy(),
            boxes=boxes.numpy(), image_size=(int(h), int(w)), y_true=t0.numpy(), target=t.numpy(),
            success=success, attack=batch.attack, model=model.name, backend=str(getattr(backend, "name", "")),
            size=size, stride=stride, xi=float(self.xi), suppression=float(self.suppression),
            promotion=float(self.promotion), fraction=float(self.fraction), inference=str(path.get("path", "full")),
            inference_note=str(path.get("note", "")))
