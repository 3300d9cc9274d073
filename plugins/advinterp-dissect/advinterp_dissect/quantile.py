"""Per-unit quantiles of a stream in fixed memory: an adaptive histogram per unit.

Network dissection needs, for every unit ``k``, the dataset-level top quantile ``T_k`` of
its activations (NetDissect: ``np.percentile(features, 100 * (1 - q), axis=[0, 2, 3])`` on
every activation of every image). Holding all activations grows with the dataset;
:class:`StreamingQuantile` keeps, per unit, a histogram of ``bins`` equal-width bins whose
range doubles (merging bins pairwise) whenever a value falls outside it. Memory is
``units x bins`` int64 counts, whatever the number of values seen.

Estimate and tolerance: counts are exact, so the order statistic of rank ``r`` is known
to lie in a particular bin; it is estimated inside that bin (uniform spread of the bin's
values). ``quantile(p)`` interpolates the estimates of ranks ``floor(p (n-1))`` and
``ceil(p (n-1))`` exactly as ``torch.quantile`` (``interpolation="linear"``) interpolates
the true order statistics, hence, deterministically::

    |quantile(p)[k] - torch.quantile(all values of unit k, p)| <= width[k]

with ``width[k]`` the unit's final bin width (:attr:`StreamingQuantile.width`, reported as
``threshold_tolerance`` by the dissection). The range starts at the first batch's
``[min, max]`` (``width = (max - min) / bins``) and only grows by doubling, so ``width[k]``
stays a small multiple of ``(max_k - min_k) / bins`` (at most 4x in the tests, which
alternate range extensions up and down); estimates are also
clamped to the exact ``[min_k, max_k]``, and ranks among the values equal to the minimum
(ReLU zeros) are answered exactly.

Example::

    sq = StreamingQuantile(units=64, bins=2048)
    for acts in batches:                     # (B, 64, h, w)
        sq.update(acts.transpose(0, 1).flatten(1))
    t = sq.quantile(1 - 0.005)               # (64,) float64, |t - exact| <= sq.width
"""
from __future__ import annotations

import torch

from advinterp.exceptions import ParameterError

__all__ = ["StreamingQuantile"]

#: Values per chunk when binning (bounds the temporary index tensors to ~64 MB).
_CHUNK = 1 << 23


class StreamingQuantile:
    """Quantiles of ``units`` independent streams from per-unit adaptive histograms.

    Args:
        units: number of streams (units / channels), >= 1.
        bins: histogram bins per unit (default 2048; even, >= 2). The tolerance of
            :meth:`quantile` is one bin width (see the module docstring).
        device: where the counts live (default CPU; use the model's device).

    Attributes:
        count: number of values seen per unit (the same for every unit).
        min, max: ``(units,)`` float64 exact minimum and maximum seen.
        n_min: ``(units,)`` int64 number of values equal to ``min`` (ranks below it are
            answered exactly: a ReLU unit's many zeros give an exact ``T_k = 0``).
        lo, width: ``(units,)`` float64 histogram origin and bin width; bin ``j`` of unit
            ``k`` covers ``[lo_k + j width_k, lo_k + (j + 1) width_k)``.
        counts: ``(units, bins)`` int64.
    """

    def __init__(self, units: int, bins: int = 2048, device: str | torch.device | None = None):
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ParameterError("StreamingQuantile", "units", units, "a positive integer")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2 or bins % 2:
            raise ParameterError("StreamingQuantile", "bins", bins, "an even integer >= 2")
        self.units, self.bins = units, bins
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.count = 0
        self.counts = torch.zeros(units, bins, dtype=torch.int64, device=self.device)
        self.lo = torch.zeros(units, dtype=torch.float64, device=self.device)
        self.width = torch.ones(units, dtype=torch.float64, device=self.device)
        self.min = torch.full((units,), float("inf"), dtype=torch.float64, device=self.device)
        self.max = torch.full((units,), float("-inf"), dtype=torch.float64, device=self.device)
        self.n_min = torch.zeros(units, dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ update
    def update(self, values: torch.Tensor) -> "StreamingQuantile":
        """Add ``values`` ``(units, n)`` (row ``k`` = new values of unit ``k``); returns self.

        Non-finite values raise :class:`ParameterError` (a NaN activation would make every
        quantile meaningless)."""
        if not isinstance(values, torch.Tensor) or values.ndim != 2 or values.shape[0] != self.units:
            raise ParameterError("StreamingQuantile.update", "values", values,
                                 f"a tensor of shape ({self.units}, n)")
        if values.shape[1] == 0:
            return self
        v = values.detach().to(self.device)
        vmin, vmax = v.amin(1).double(), v.amax(1).double()
        if not bool(torch.isfinite(vmin).all() and torch.isfinite(vmax).all()):  # NaN propagates to min/max
            raise ParameterError("StreamingQuantile.update", "values", values, "finite values",
                                 "The model produced NaN or inf activations.")
        if self.count == 0:
            self.lo = vmin.clone()
            span = vmax - vmin
            # a constant first batch gets a tiny positive width; later values widen it by doubling
            floor = torch.clamp(vmin.abs(), min=1e-6) * 2.0 ** -20
            self.width = torch.maximum(span / self.bins, floor)
        else:
            self._cover(vmin, vmax)
        at_min = (v == vmin.to(v.dtype)[:, None]).sum(1)
        self.n_min = torch.where(vmin < self.min, at_min,
                                 torch.where(vmin == self.min, self.n_min + at_min, self.n_min))
        self.min = torch.minimum(self.min, vmin)
        self.max = torch.maximum(self.max, vmax)
        offs = (torch.arange(self.units, device=self.device) * self.bins)[:, None]
        lo, inv = self.lo[:, None], 1.0 / self.width[:, None]
        step = max(1, _CHUNK // self.units)
        flat = self.counts.view(-1)
        for s in range(0, v.shape[1], step):
            # bin index in float64 (exact enough that a value lands in its own bin)
            idx = v[:, s:s + step].to(torch.float64, copy=True).sub_(lo).mul_(inv).floor_().clamp_(0, self.bins - 1).long().add_(offs)
            flat += torch.bincount(idx.reshape(-1), minlength=self.units * self.bins)
        self.count += int(v.shape[1])
        return self

    def _cover(self, vmin: torch.Tensor, vmax: torch.Tensor) -> None:
        """Double the range of the units whose histogram does not cover ``[vmin, vmax]``."""
        half = self.bins // 2
        while True:
            down = vmin < self.lo
            up = (vmax > self.lo + self.bins * self.width) & ~down
            need = down | up
            if not bool(need.any()):
                return
            merged = self.counts[need].view(-1, half, 2).sum(-1)
            new = torch.zeros(int(need.sum()), self.bins, dtype=torch.int64, device=self.device)
            d = down[need]
            new[d, half:] = merged[d]      # extend downwards: old bins land in the upper half
            new[~d, :half] = merged[~d]    # extend upwards: old bins land in the lower half
            self.counts[need] = new
            self.lo = torch.where(down, self.lo - self.bins * self.width, self.lo)
            self.width = torch.where(need, self.width * 2, self.width)

    # ------------------------------------------------------------------ queries
    def _rank_value(self, rank: torch.Tensor) -> torch.Tensor:
        """Estimate of the order statistic of 0-based ``rank`` ``(units,)`` per unit."""
        cum = self.counts.cumsum(1)
        j = torch.searchsorted(cum, rank[:, None], right=True)[:, 0].clamp_(max=self.bins - 1)
        c = self.counts.gather(1, j[:, None])[:, 0].double()
        before = cum.gather(1, j[:, None])[:, 0].double() - c
        inside = (rank.double() - before + 0.5) / c.clamp(min=1)
        est = self.lo + self.width * (j.double() + inside)
        est = torch.minimum(torch.maximum(est, self.min), self.max)
        est = torch.where(rank >= self.count - 1, self.max, est)  # the largest value is known exactly
        return torch.where(rank < self.n_min, self.min, est)  # ties at the minimum (ReLU zeros) are exact

    def quantile(self, p: float) -> torch.Tensor:
        """``(units,)`` float64 estimate of the ``p`` quantile (``p`` in [0, 1]) of every
        unit's values, with ``torch.quantile``'s linear interpolation; within
        :attr:`width` of the exact value."""
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ParameterError("StreamingQuantile.quantile", "p", p, "a number in [0, 1]")
        if self.count == 0:
            raise ParameterError("StreamingQuantile.quantile", "count", 0, "at least one value per unit",
                                 "Call update() first.")
        pos = p * (self.count - 1)
        f = int(pos // 1)
        frac = pos - f
        lo_rank = torch.full((self.units,), f, dtype=torch.int64, device=self.device)
        a = self._rank_value(lo_rank)
        if frac == 0 or f + 1 >= self.count:
            return a
        b = self._rank_value(lo_rank + 1)
        return a + frac * (b - a)

    def __repr__(self) -> str:
        return f"StreamingQuantile(units={self.units}, bins={self.bins}, count={self.count})"
