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

Sharded, exactly. Histograms of two shards cannot simply be added: each shard's grid
depends on the values it saw first, and re-binning counts onto another grid is not exact
(bin edges do not line up). But the grid a sequential run goes through depends only on the
per-unit ``[min, max]`` of each batch, and a doubling is a linear map of the counts. So
(:class:`GridSchedule`): a first pass records every batch's range; replaying
:meth:`StreamingQuantile.extend` on them gives the grid of every batch and the doublings
after it; each shard then counts its values on the grid of their batch (:meth:`add`) and
carries the counts forward through the later doublings; the shards' sketches, all on the
final grid, merge by summation (:meth:`StreamingQuantile.merge`) into the very counts,
minimum, maximum and ``n_min`` of the sequential run, so :meth:`quantile` is bit-identical.
:class:`QuantileState` is a sketch as a saveable :class:`~advinterp.results.Result`.

Example::

    sq = StreamingQuantile(units=64, bins=2048)
    for acts in batches:                     # (B, 64, h, w)
        sq.update(acts.transpose(0, 1).flatten(1))
    t = sq.quantile(1 - 0.005)               # (64,) float64, |t - exact| <= sq.width
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from advinterp.api import ParameterError, Result

__all__ = ["StreamingQuantile", "QuantileState", "GridSchedule", "Doubling"]

#: Values per chunk when binning: the float64 and index temporaries of a chunk (~6 MB) stay
#: in the caches (measured 1.6x faster than one pass over a 32-image batch); a chunk holds at
#: least two values per bin, so the per-chunk bincount's output never dominates.
_CHUNK = 1 << 19

#: One doubling of a histogram's range: ``(need, down)`` ``(units,)`` bool, the units whose
#: range doubles and, among them, those extended downwards (the others upwards).
Doubling = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class QuantileState(Result):
    """A :class:`StreamingQuantile` as data (a shard's partial sketch; saveable).

    Attributes: as :class:`StreamingQuantile` (``counts``, ``lo``, ``width``, ``min``,
    ``max``, ``n_min`` on the CPU), ``count`` and ``started`` (whether the grid is set).
    """

    counts: torch.Tensor
    lo: torch.Tensor
    width: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor
    n_min: torch.Tensor
    count: int
    started: bool

    kind = "quantile_sketch"

    def rows(self) -> list[dict]:
        return [{"units": int(self.counts.shape[0]), "bins": int(self.counts.shape[1]), "count": self.count}]


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
        started: whether the grid (``lo``, ``width``) is set (by the first :meth:`extend`).
    """

    def __init__(self, units: int, bins: int = 2048, device: str | torch.device | None = None):
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ParameterError("StreamingQuantile", "units", units, "a positive integer")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2 or bins % 2:
            raise ParameterError("StreamingQuantile", "bins", bins, "an even integer >= 2")
        self.units, self.bins = units, bins
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.count = 0
        self.started = False
        self.counts = torch.zeros(units, bins, dtype=torch.int64, device=self.device)
        self.lo = torch.zeros(units, dtype=torch.float64, device=self.device)
        self.width = torch.ones(units, dtype=torch.float64, device=self.device)
        self.min = torch.full((units,), float("inf"), dtype=torch.float64, device=self.device)
        self.max = torch.full((units,), float("-inf"), dtype=torch.float64, device=self.device)
        self.n_min = torch.zeros(units, dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ update
    def update(self, values: torch.Tensor) -> "StreamingQuantile":
        """Add ``values`` ``(units, n)`` (row ``k`` = new values of unit ``k``); returns self.

        The same as :meth:`extend` to the values' range, then :meth:`add`. Non-finite
        values raise :class:`ParameterError` (a NaN activation would make every quantile
        meaningless)."""
        v = self._values(values, "StreamingQuantile.update")
        if v is None:
            return self
        vmin, vmax = self.range_of(v, "StreamingQuantile.update")
        self.extend(vmin, vmax)
        return self._add(v, vmin, vmax)

    def _values(self, values: torch.Tensor, owner: str) -> torch.Tensor | None:
        if not isinstance(values, torch.Tensor) or values.ndim != 2 or values.shape[0] != self.units:
            raise ParameterError(owner, "values", values, f"a tensor of shape ({self.units}, n)")
        return values.detach().to(self.device) if values.shape[1] else None

    @staticmethod
    def range_of(values: torch.Tensor, owner: str = "StreamingQuantile") -> tuple[torch.Tensor, torch.Tensor]:
        """``(min, max)`` float64 per row of ``values`` ``(units, n)``; ParameterError when
        not finite (NaN propagates to both)."""
        return StreamingQuantile.range_of_maps(values.t(), owner)

    def extend(self, vmin: torch.Tensor, vmax: torch.Tensor) -> list[Doubling]:
        """Make every unit's histogram cover ``[vmin, vmax]`` (``(units,)`` float64, finite):
        the first call sets the grid (origin ``vmin``, ``bins`` bins over the span), later
        calls double the range of the units it does not cover. Returns the doublings done,
        in order (none on the first call)."""
        vmin, vmax = vmin.to(self.device, torch.float64), vmax.to(self.device, torch.float64)
        if not self.started:
            self.lo = vmin.clone()
            span = vmax - vmin
            # a constant first batch gets a tiny positive width; later values widen it by doubling
            floor = torch.clamp(vmin.abs(), min=1e-6) * 2.0 ** -20
            self.width = torch.maximum(span / self.bins, floor)
            self.started = True
            return []
        done = []
        while True:
            down = vmin < self.lo
            up = (vmax > self.lo + self.bins * self.width) & ~down
            need = down | up
            if not bool(need.any()):
                return done
            self.double(need, down)
            done.append((need, down))

    def double(self, need: torch.Tensor, down: torch.Tensor) -> "StreamingQuantile":
        """Double the range of the units ``need``: downwards where ``down`` (old bins land in
        the upper half), else upwards (lower half), merging bins pairwise; returns self."""
        need, down = need.to(self.device), down.to(self.device) & need.to(self.device)
        if self.count:  # an empty histogram has nothing to merge
            half = self.bins // 2
            merged = self.counts[need].view(-1, half, 2).sum(-1)
            new = torch.zeros(int(need.sum()), self.bins, dtype=torch.int64, device=self.device)
            d = down[need]
            new[d, half:] = merged[d]      # extend downwards: old bins land in the upper half
            new[~d, :half] = merged[~d]    # extend upwards: old bins land in the lower half
            self.counts[need] = new
        self.lo = torch.where(down, self.lo - self.bins * self.width, self.lo)
        self.width = torch.where(need, self.width * 2, self.width)
        return self

    def add(self, values: torch.Tensor) -> "StreamingQuantile":
        """Count ``values`` ``(units, n)`` on the current grid, which must cover them
        (:meth:`extend` to a range holding them first; values outside land in the edge
        bins); returns self."""
        if not self.started:
            raise ParameterError("StreamingQuantile.add", "values", values, "values after extend() set the grid")
        v = self._values(values, "StreamingQuantile.add")
        if v is None:
            return self
        vmin, vmax = self.range_of(v, "StreamingQuantile.add")
        return self._add(v, vmin, vmax)

    def _add(self, v: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor) -> "StreamingQuantile":
        return self._count(v.t(), vmin, vmax)  # (units, n) values are (n, units) maps

    # ------------------------------------------------------------------ (B, U, ...) maps
    @staticmethod
    def range_of_maps(maps: torch.Tensor, owner: str = "StreamingQuantile") -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`range_of` of the values of ``maps`` ``(B, U, ...)`` per unit (dim 1),
        without transposing them."""
        dims = [0] + list(range(2, maps.ndim))
        vmin, vmax = maps.amin(dims).double(), maps.amax(dims).double()
        if not bool(torch.isfinite(vmin).all() and torch.isfinite(vmax).all()):
            raise ParameterError(owner, "values", maps, "finite values", "The model produced NaN or inf activations.")
        return vmin, vmax

    def add_maps(self, maps: torch.Tensor, vmin: torch.Tensor | None = None,
                 vmax: torch.Tensor | None = None) -> "StreamingQuantile":
        """:meth:`add` of ``maps`` ``(B, U, ...)``: unit ``k``'s values are ``maps[:, k]``
        (the same counts as ``add(maps.transpose(0, 1).reshape(U, -1))``, without the copy).
        ``vmin``/``vmax``: their :meth:`range_of_maps` when already known."""
        if not self.started:
            raise ParameterError("StreamingQuantile.add_maps", "maps", maps, "values after extend() set the grid")
        if maps.ndim < 2 or maps.shape[1] != self.units:
            raise ParameterError("StreamingQuantile.add_maps", "maps", maps, f"a tensor of shape (B, {self.units}, ...)")
        a = maps.detach().to(self.device)
        if a.numel() == 0:
            return self
        if vmin is None or vmax is None:
            vmin, vmax = self.range_of_maps(a, "StreamingQuantile.add_maps")
        return self._count(a, vmin, vmax)

    def _count(self, a: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor) -> "StreamingQuantile":
        """Count maps ``a`` ``(B, U, ...)`` (unit ``k``'s values ``a[:, k]``) of range
        ``vmin``/``vmax`` on the current grid: the minimum's count, min/max, histogram."""
        shape = [1, self.units] + [1] * (a.ndim - 2)
        eq = a == vmin.to(a.device, a.dtype).view(shape)
        # count as bytes into int64 (a bool reduction over dims (0, 2, 3) is ~5x slower)
        at_min = (eq.reshape(eq.shape[0], self.units, -1).view(torch.uint8).sum(2, dtype=torch.int64).sum(0)
                  if a.ndim > 2 else eq.view(torch.uint8).sum(0, dtype=torch.int64))
        self.n_min = torch.where(vmin < self.min, at_min,
                                 torch.where(vmin == self.min, self.n_min + at_min, self.n_min))
        self.min = torch.minimum(self.min, vmin)
        self.max = torch.maximum(self.max, vmax)
        total = self.units * self.bins
        itype = torch.int32 if total < 2 ** 31 else torch.int64  # int32: a cheaper cast and bincount
        offs = (torch.arange(self.units, device=self.device, dtype=itype) * self.bins).view(shape)
        lo, inv = self.lo.view(shape), (1.0 / self.width).view(shape)
        per_item = a[0].numel()
        step = max(1, max(_CHUNK, 2 * total) // per_item)
        flat = self.counts.view(-1)
        for s in range(0, a.shape[0], step):
            # bin index in float64 (exact enough that a value lands in its own bin); clamp, then
            # truncate: the floor on [0, bins - 1] in one pass less
            idx = a[s:s + step].to(torch.float64, copy=True).sub_(lo).mul_(inv).clamp_(0, self.bins - 1).to(itype)
            flat += torch.bincount(idx.add_(offs).reshape(-1), minlength=total)
        self.count += a.shape[0] * (per_item // self.units)
        return self

    # ------------------------------------------------------------------ state and merging
    def state(self) -> QuantileState:
        """The sketch as a saveable :class:`QuantileState` (CPU tensors)."""
        return QuantileState(self.counts.cpu().clone(), self.lo.cpu().clone(), self.width.cpu().clone(),
                             self.min.cpu().clone(), self.max.cpu().clone(), self.n_min.cpu().clone(),
                             int(self.count), bool(self.started))

    @classmethod
    def from_state(cls, state: QuantileState, device: str | torch.device | None = None) -> "StreamingQuantile":
        """The sketch of a :class:`QuantileState`."""
        units, bins = (int(s) for s in state.counts.shape)
        sq = cls(units, bins, device)
        sq.counts = state.counts.to(sq.device, torch.int64).clone()
        sq.lo, sq.width, sq.min, sq.max = (t.to(sq.device, torch.float64).clone()
                                           for t in (state.lo, state.width, state.min, state.max))
        sq.n_min = state.n_min.to(sq.device, torch.int64).clone()
        sq.count, sq.started = int(state.count), bool(state.started)
        return sq

    @classmethod
    def merge(cls, sketches: list["StreamingQuantile | QuantileState"],
              device: str | torch.device | None = None) -> "StreamingQuantile":
        """One sketch of the values of all ``sketches``, exactly: they must share the grid
        (``lo``, ``width``; empty ones are ignored) -- e.g. shards carried to the final grid
        of a :class:`GridSchedule`; counts and ``count`` add, ``n_min`` adds over the
        sketches whose minimum is the overall one."""
        parts = [cls.from_state(s, device) if isinstance(s, QuantileState) else s for s in sketches]
        parts = [p for p in parts if p.count]
        if not parts:
            raise ParameterError("StreamingQuantile.merge", "sketches", sketches, "at least one non-empty sketch")
        first = parts[0]
        out = cls(first.units, first.bins, device if device is not None else first.device)
        out.lo, out.width, out.started = first.lo.to(out.device).clone(), first.width.to(out.device).clone(), True
        for p in parts:
            if (p.units, p.bins) != (out.units, out.bins) or not (
                    torch.equal(p.lo.to(out.device), out.lo) and torch.equal(p.width.to(out.device), out.width)):
                raise ParameterError("StreamingQuantile.merge", "sketches", sketches,
                                     "sketches on one grid (the same units, bins, lo and width)",
                                     "Carry each sketch to the final grid first (GridSchedule.advance).")
            out.counts += p.counts.to(out.device)
            out.count += p.count
            out.min = torch.minimum(out.min, p.min.to(out.device))
            out.max = torch.maximum(out.max, p.max.to(out.device))
        for p in parts:
            out.n_min += torch.where(p.min.to(out.device) == out.min, p.n_min.to(out.device), 0)
        return out

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


@dataclass
class GridSchedule:
    """The grids a :class:`StreamingQuantile` goes through when fed batch after batch.

    Built by :meth:`replay` from the per-unit range of every batch (nothing else decides the
    grid); then :meth:`sketch` gives an empty sketch on the grid of batch ``t`` and
    :meth:`advance` carries a sketch through the doublings of later batches. A shard that
    counts its values of batch ``t`` on ``sketch(t)`` (advancing between its batches) and
    is advanced to the last batch holds exactly its share of the sequential histogram.

    Attributes:
        bins: bins per unit.
        lo, width: ``(units,)`` float64 grid after the first batch.
        doublings: per batch, the doublings its :meth:`StreamingQuantile.extend` did
            (``doublings[0] == []``).
    """

    bins: int
    lo: torch.Tensor
    width: torch.Tensor
    doublings: list[list[Doubling]]

    @classmethod
    def replay(cls, vmin: torch.Tensor, vmax: torch.Tensor, bins: int) -> "GridSchedule":
        """The schedule of batches whose per-unit ranges are ``vmin``, ``vmax`` ``(T, units)``
        float64 (``T >= 1`` batches, in order)."""
        if vmin.ndim != 2 or vmin.shape != vmax.shape or len(vmin) < 1:
            raise ParameterError("GridSchedule.replay", "vmin", vmin, "(T, units) per-batch minima, T >= 1")
        sq = StreamingQuantile(int(vmin.shape[1]), bins)
        sq.extend(vmin[0], vmax[0])
        lo, width = sq.lo.clone(), sq.width.clone()
        return cls(bins, lo, width, [[]] + [sq.extend(vmin[t], vmax[t]) for t in range(1, len(vmin))])

    def __len__(self) -> int:
        return len(self.doublings)

    def sketch(self, t: int, device: str | torch.device | None = None) -> StreamingQuantile:
        """An empty sketch on the grid of batch ``t`` (after its :meth:`~StreamingQuantile.extend`)."""
        sq = StreamingQuantile(len(self.lo), self.bins, device)
        sq.lo, sq.width, sq.started = self.lo.to(sq.device).clone(), self.width.to(sq.device).clone(), True
        return self.advance(sq, 0, t)

    def advance(self, sq: StreamingQuantile, t_from: int, t_to: int | None = None) -> StreamingQuantile:
        """Apply to ``sq`` (on the grid of batch ``t_from``) the doublings of batches
        ``t_from + 1 .. t_to`` (default: the last batch); returns ``sq``."""
        t_to = len(self) - 1 if t_to is None else t_to
        for ops in self.doublings[t_from + 1:t_to + 1]:
            for need, down in ops:
                sq.double(need, down)
        return sq
