"""``pixel_histogram``: per-channel 256-bin pixel histograms of clean and adversarial images
(Ding et al., Sec. 4.1 and Fig. 2).

Pixels in [0, 1] are read as the 8-bit grey levels an image file holds,
``level = round(255 * x)`` (clamped to 0..255). Per image and channel the analyzer keeps the
256-bin histogram of ``x0`` and of ``x'``, the mean absolute difference ``mean |level(x0) -
level(x')|`` over the image's pixels and channels (the paper reports 4.2 grey levels for
DAmageNet against ImageNet), and the total-variation distance between the two normalised
histograms of each channel, ``TV = 0.5 * sum_b |p_b - q_b|`` in [0, 1] (0: equal histograms).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..components import Analyzer
from ..params import Param
from ..results import Result

__all__ = ["PixelHistogramAnalyzer", "PixelHistograms", "grey_levels", "channel_histograms"]


def grey_levels(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit levels of pixels ``x`` in [0, 1]: ``round(255 * x)`` clamped to 0..255, int64."""
    return (x.detach().double() * 255).round().clamp(0, 255).long()


def channel_histograms(x: torch.Tensor) -> torch.Tensor:
    """256-bin histograms of the grey levels of ``x`` ``(N, C, H, W)``: ``(N, C, 256)`` int64 counts."""
    n, c = x.shape[:2]
    lv = grey_levels(x).reshape(n * c, x[0, 0].numel() if n else 0)
    offs = torch.arange(n * c, device=lv.device)[:, None] * 256
    counts = torch.bincount((lv + offs).flatten(), minlength=n * c * 256)
    return counts.reshape(n, c, 256).cpu()


@dataclass(frozen=True)
class PixelHistograms(Result):
    """Histograms of clean and adversarial images (Fig. 2 of Ding et al.).

    Attributes:
        hist_clean, hist_adv: ``(N, C, 256)`` int64 counts of each grey level per image and channel.
        mean_abs_diff: ``(N,)`` mean ``|level(x0) - level(x')|`` per image (grey levels, 0..255).
        tv: ``(N, C)`` total-variation distance between the normalised histograms of ``x0`` and
            ``x'`` per channel (0: equal, 1: disjoint).
        attack: the batch's attack name.
    """

    hist_clean: np.ndarray
    hist_adv: np.ndarray
    mean_abs_diff: np.ndarray
    tv: np.ndarray
    attack: str = ""

    per_image = ("hist_clean", "hist_adv", "mean_abs_diff", "tv")

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """The histograms summed over images: ``(clean (C, 256), adversarial (C, 256))``."""
        return self.hist_clean.sum(0), self.hist_adv.sum(0)

    def summary(self) -> dict[str, Any]:
        """``n``; ``mean_abs_diff`` (mean over images, grey levels) and its standard error;
        ``tv`` (mean over images and channels); ``tv_pooled`` (per channel, of the pooled
        histograms, averaged over channels)."""
        from ..stats import standard_error

        n = len(self.mean_abs_diff)
        c, a = self.pooled()
        if n:
            p = c / np.maximum(c.sum(1, keepdims=True), 1)
            q = a / np.maximum(a.sum(1, keepdims=True), 1)
            tv_pooled = float(0.5 * np.abs(p - q).sum(1).mean())
        else:
            tv_pooled = float("nan")
        return {"attack": self.attack, "n": n,
                "mean_abs_diff": float(np.mean(self.mean_abs_diff)) if n else float("nan"),
                "mean_abs_diff_se": standard_error(self.mean_abs_diff) if n else float("nan"),
                "tv": float(np.mean(self.tv)) if n else float("nan"), "tv_pooled": tv_pooled}

    def rows(self) -> list[dict[str, Any]]:
        """One row: :meth:`summary`."""
        return [self.summary()]


class PixelHistogramAnalyzer(Analyzer):
    """Per-channel 256-bin pixel histograms, clean vs adversarial, and their differences (Fig. 2).

    No parameters; the model is not run (it only names the batch's input shape). The result
    (:class:`PixelHistograms`) is per image, so a study may cut the batch into shards.
    """

    name = "pixel_histogram"
    shardable = True
    context_keys = ()
    feeds_model = False
    params: dict[str, Param] = {}

    def _analyze(self, model, batch, **context):
        x0, xa = batch.x0.detach(), batch.x_adv.detach()
        n, c = x0.shape[:2]
        h0, ha = channel_histograms(x0), channel_histograms(xa)
        if n:
            mad = (grey_levels(x0) - grey_levels(xa)).abs().double().flatten(1).mean(1).cpu().numpy()
            size = float(x0[0, 0].numel())
            tv = (0.5 * (h0 - ha).abs().sum(2).double() / size).numpy()
        else:
            mad, tv = np.zeros(0), np.zeros((0, c))
        return PixelHistograms(h0.numpy(), ha.numpy(), mad, tv, attack=batch.attack or "")
