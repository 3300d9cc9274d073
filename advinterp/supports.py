"""Supports of refined attacks (PSE paper, Appendix 3, eq. 11) as pixel masks.

A refined attack re-runs an optimisation attack with ``delta = 0`` outside a support ``S``
(:func:`advinterp.attacks.refine.refine`). The paper uses two:

* ``S1 = {i | s_i > beta}``: the grids whose adversarial significance ``s_i`` (the ``pse``
  analysis) exceeds ``beta``, where ``beta = s~_k`` for the smallest ``k`` with
  ``sum_{i<=k} s~_i / sum_i s~_i >= 30 %`` over the ascending-sorted scores ``s~``
  (footnote 3): the least significant grids holding 30 % of the cumulative strength are
  dropped (:func:`grids_above_beta`, :func:`support_from_scores`).
* ``S2 = {i | B(x0, t0)_i > 0}``: the discriminative region of the true class, the CAM
  region of the ``is`` analysis (:func:`support_from_region`).

These are the pure mask builders; the registered support rules ``"S1"`` and ``"S2"``
(``rule(model, batch, **context)``) and the ``refine`` analyzer are in
:mod:`advinterp.analyzers.refine`.
"""
from __future__ import annotations

from typing import Any

import torch

from .exceptions import ParameterError

__all__ = ["support_from_scores", "grids_above_beta", "support_from_region"]


def support_from_scores(scores: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                        fraction: float = 0.3) -> torch.Tensor:
    """S1 as a pixel mask.

    Args:
        scores: ``(N, m)`` non-negative grid scores ``s_i`` (or ``(m,)`` for one image).
        boxes: ``(m, 4)`` grids ``[y0, x0, y1, x1]`` (see :func:`advinterp.ablation.grid_boxes`).
        image_size: ``(H, W)``.
        fraction: cumulative strength filtered out (default 0.3, the paper's 30 %).

    Returns:
        ``(N, 1, H, W)`` bool: the union of the grids with ``s_i > beta``. An image whose
        scores are all zero gets an empty support.
    """
    if not (0.0 <= float(fraction) < 1.0):
        raise ParameterError("support_from_scores", "fraction", fraction, "a number in [0, 1)")
    s = torch.as_tensor(scores, dtype=torch.float64)
    if s.ndim == 1:
        s = s[None]
    boxes = torch.as_tensor(boxes, dtype=torch.long)
    if s.ndim != 2 or s.shape[1] != len(boxes):
        raise ParameterError("support_from_scores", "scores", scores, f"shape (N, {len(boxes)}), one score per grid")
    if (s < 0).any() or not torch.isfinite(s).all():
        raise ParameterError("support_from_scores", "scores", scores, "finite non-negative scores s_i")
    keep = grids_above_beta(s, fraction)
    h, w = image_size
    out = torch.zeros(len(s), 1, h, w, dtype=torch.bool)
    for j, (y0, x0, y1, x1) in enumerate(boxes.tolist()):
        sel = keep[:, j]
        if sel.any():
            out[sel, :, y0:y1, x0:x1] = True
    return out


def grids_above_beta(scores: torch.Tensor, fraction: float = 0.3) -> torch.Tensor:
    """``(N, m)`` bool: ``s_i > beta`` with beta from footnote 3 (see module docstring)."""
    s = scores.to(torch.float64)
    sorted_s, _ = s.sort(dim=1)
    total = sorted_s.sum(1, keepdim=True)
    cum = sorted_s.cumsum(1) / total.clamp_min(1e-300)
    k = (cum >= fraction - 1e-12).float().argmax(1)  # first index reaching the fraction
    beta = sorted_s.gather(1, k[:, None])
    return (s > beta) & (total > 0)


def support_from_region(region: Any, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """S2 as a pixel mask from a region ``B(x0, t0)``: ``(N, H, W)`` or ``(N, 1, H, W)``
    bool/0-1 (the ``is`` analysis' ``B``) -> ``(N, 1, H, W)`` bool."""
    r = torch.as_tensor(region)
    if r.ndim == 3:
        r = r[:, None]
    if r.ndim != 4 or r.shape[1] != 1:
        raise ParameterError("support_from_region", "region", region, "a mask of shape (N, H, W) or (N, 1, H, W)")
    if image_size is not None and tuple(r.shape[-2:]) != tuple(image_size):
        raise ParameterError("support_from_region", "region", region, f"masks of size {tuple(image_size)}",
                             "Upsample the CAM to the input before thresholding.")
    return r > 0
