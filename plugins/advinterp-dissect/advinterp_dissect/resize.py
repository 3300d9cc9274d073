"""``resize_maps``: activation maps resized to the label resolution as NetDissect-Lite does.

NetDissect-Lite resizes each unit's map with ``scipy.misc.imresize(map, (sh, sw),
mode='F')``: a float32 PIL image resized with ``Image.BILINEAR``. PIL resizes separably
(columns first, then rows), each output pixel a normalized triangle-filter average of the
input pixels around its centre ``(i + 0.5) * in / out``, the filter's support widened by the
reduction factor when *shrinking* (antialiasing: every input pixel under the output pixel
counts) and of radius one when enlarging (then it is plain bilinear interpolation,
``align_corners=False``). ``resize_maps`` builds PIL's coefficients exactly (Pillow's
``precompute_coeffs``, in float64) and applies them as two matrix products on the maps'
device, so one call resizes a whole ``(B, U, h, w)`` batch. It equals PIL to float32
rounding (|difference| <= 1e-6 on values in [0, 1]; tests/test_dissect_resize.py).

``F.interpolate(mode="bilinear")`` without antialiasing equals PIL only when enlarging
(shrinking 64 -> 32 with it changes IoUs by up to 0.06); with ``antialias=True`` it uses
the same filter, but computes the filter's positions in float32, which differs from PIL by
up to 4e-6 at reduction factors near one (e.g. 57 -> 56).

The coefficients are non-negative and sum to one, so a resized map never exceeds the
original's maximum (NetDissect-Lite's skip of units whose raw maximum is below ``T_k`` is
therefore exact, and so is computing ``T_k`` on the raw maps).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

__all__ = ["resize_maps", "pil_bilinear_weights"]


@lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int) -> np.ndarray:
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear (triangle) filter has radius 1
    W = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)        # C's (int) truncates toward zero, as int()
        hi = min(int(center + support + 0.5), n_in)
        x = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((x - center + 0.5) / filterscale))
        total = w.sum()
        W[i, lo:hi] = w / total if total != 0 else w
    W.setflags(write=False)
    return W


def pil_bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float64: row ``i`` holds PIL's bilinear coefficients of output pixel
    ``i`` when resizing an axis of ``n_in`` pixels to ``n_out`` (read-only, cached)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    return _weights(int(n_in), int(n_out))


def resize_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, U, h, w)`` maps resized to ``size = (sh, sw)`` as PIL's bilinear ``resize``
    (NetDissect-Lite's ``imresize(mode='F')``): antialiased when shrinking, plain bilinear
    (``align_corners=False``) when enlarging; an axis already at its size is left untouched,
    and the maps are returned as they are when both are.

    Floating-point maps on any device; the result has the input's dtype and device.
    """
    sh, sw = int(size[0]), int(size[1])
    h, w = maps.shape[-2:]
    out = maps
    if w != sw:  # PIL's horizontal pass first
        Ww = torch.tensor(pil_bilinear_weights(w, sw), device=maps.device, dtype=maps.dtype)
        out = torch.matmul(out, Ww.T)
    if h != sh:
        Wh = torch.tensor(pil_bilinear_weights(h, sh), device=maps.device, dtype=maps.dtype)
        out = torch.matmul(Wh, out)
    return out
