"""Significance of the interpretability of the most sensitive units (Fig. 7a of the PSE paper).

For a layer with per-unit interpretability ``IoU(k)`` and sensitivity ``v(k)``, the
statistic for ``N`` is ``s_N = sum of IoU(k) over the N units of largest v(k)`` (ties in
``v`` broken by the lower unit index). Its p-value is the probability that ``N`` units
drawn uniformly at random (without replacement) reach at least that sum, estimated with
``n_draws`` seeded draws (a Monte-Carlo permutation test)::

    p_N = (1 + #{draws with sum >= s_N}) / (1 + n_draws)

which is a valid p-value (never below ``1 / (1 + n_draws)``; uniform or conservative under
the null hypothesis that the ranking by ``v`` is unrelated to ``IoU``). The draws for all
``N`` share the same random permutations (``N`` units = the first ``N`` of a permutation).
``N = U`` selects every unit and gives ``p = 1`` by construction, so only ``N < U`` is
tested (:func:`choose_ns`): the requested ``N`` below the layer width, or -- when fewer than
two of them are (a layer narrower than the paper's) -- the fractions :data:`WIDTH_FRACTIONS`
of the width, and the result says which (``ns_rule``).

Example::

    test = significance_test(unit_iou, v, ns=(10, 20, 50), n_draws=10000, seed=0)
    test.p_values           # (3,) float64
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from advinterp.api import ParameterError

__all__ = ["SignificanceTest", "significance_test", "top_sensitive", "DEFAULT_NS", "WIDTH_FRACTIONS", "choose_ns"]

#: The paper's N values (Fig. 7a).
DEFAULT_NS: tuple[int, ...] = (10, 20, 30, 50, 80, 100)
#: N as fractions of the layer width, for layers too narrow for the requested N.
WIDTH_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.8)


def choose_ns(ns: Sequence[int], units: int) -> tuple[np.ndarray, str]:
    """The N values tested on a layer of ``units`` units and how they were chosen: the
    requested ``ns`` below the width (``"requested"``), or, when fewer than two of them are,
    ``round(f * units)`` for ``f`` in :data:`WIDTH_FRACTIONS`, kept in ``[1, units - 1]``
    (``"fraction of width"``). ``N >= units`` is never tested (``p = 1`` by construction)."""
    kept = sorted({int(n) for n in ns if int(n) < units})
    if len(kept) >= 2 or units < 3:
        return np.array(kept, dtype=np.int64), "requested"
    frac = sorted({min(units - 1, max(1, int(round(f * units)))) for f in WIDTH_FRACTIONS})
    return np.array(frac, dtype=np.int64), "fraction of width"


@dataclass(frozen=True)
class SignificanceTest:
    """Attributes:
        ns: ``(M,)`` int64 the N values tested (:func:`choose_ns`: all below the width).
        statistics: ``(M,)`` sum of ``IoU(k)`` over the top-N sensitive units.
        p_values: ``(M,)`` Monte-Carlo p-values.
        null_mean, null_std: ``(M,)`` mean and std of the sum over N random units.
        n_draws: random draws per N.
        seed: the draws' seed.
    """

    ns: np.ndarray
    statistics: np.ndarray
    p_values: np.ndarray
    null_mean: np.ndarray
    null_std: np.ndarray
    n_draws: int
    seed: int
    ns_rule: str = "requested"

    def rows(self) -> list[dict[str, Any]]:
        return [{"N": int(n), "N from": self.ns_rule, "sum_iou_top": float(s), "null_mean": float(m),
                 "null_std": float(sd), "p_value": float(p)}
                for n, s, m, sd, p in zip(self.ns, self.statistics, self.null_mean, self.null_std, self.p_values)]


def top_sensitive(sensitivity: Any, n: int) -> np.ndarray:
    """Indices of the ``n`` units of largest sensitivity (ties: lower index first)."""
    v = np.asarray(sensitivity, dtype=np.float64)
    return np.argsort(-v, kind="stable")[:n]


def significance_test(unit_iou: Any, sensitivity: Any, ns: Sequence[int] = DEFAULT_NS, n_draws: int = 10000,
                      seed: int = 0, chunk: int = 1000) -> SignificanceTest:
    """Test whether the ``N`` most sensitive units are more interpretable than ``N`` random ones.

    Args:
        unit_iou: ``(U,)`` ``IoU(k)`` (e.g. ``LayerDissection.unit_iou()``).
        sensitivity: ``(U,)`` ``v(k)`` (e.g. from :func:`~advinterp_dissect.sensitivity.unit_sensitivity`).
        ns: the ``N`` values (default ``(10, 20, 30, 50, 80, 100)``), clipped to ``U``.
        n_draws: random subsets per ``N`` (default 10000).
        seed: seed of the draws (default 0).
        chunk: draws generated at a time (memory ``chunk x U`` floats).

    Returns:
        :class:`SignificanceTest`.
    """
    owner = "significance_test"
    iou = np.asarray(unit_iou, dtype=np.float64)
    v = np.asarray(sensitivity, dtype=np.float64)
    if iou.ndim != 1 or len(iou) == 0 or not np.isfinite(iou).all():
        raise ParameterError(owner, "unit_iou", unit_iou, "a non-empty 1-d array of finite values")
    if v.shape != iou.shape or not np.isfinite(v).all():
        raise ParameterError(owner, "sensitivity", sensitivity, f"a finite array of shape {iou.shape}")
    if (isinstance(ns, (int, np.integer)) and not isinstance(ns, bool)):
        ns = (int(ns),)
    if (not isinstance(ns, (list, tuple, np.ndarray)) or len(ns) == 0
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in ns)):
        raise ParameterError(owner, "ns", ns, "a non-empty sequence of positive integers")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ParameterError(owner, "n_draws", n_draws, "a positive integer")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(owner, "seed", seed, "a non-negative integer")
    U = len(iou)
    clipped, rule = choose_ns(ns, U)
    if not len(clipped):
        raise ParameterError(owner, "unit_iou", unit_iou, "a layer of at least 2 units (N < U is tested)")
    order = top_sensitive(v, U)
    stats = np.cumsum(iou[order])[clipped - 1]

    g = torch.Generator().manual_seed(seed)
    t_iou = torch.from_numpy(iou)
    idx = torch.from_numpy(clipped - 1)
    sums = []
    for s in range(0, n_draws, chunk):
        k = min(chunk, n_draws - s)
        perm = torch.rand(k, U, generator=g, dtype=torch.float64).argsort(1)
        sums.append(t_iou[perm].cumsum(1)[:, idx])               # (k, M)
    null = torch.cat(sums).numpy()                                # (n_draws, M)
    tol = 1e-12 * np.maximum(1.0, np.abs(stats))                 # the same set summed in another order
    p = (1.0 + (null >= stats[None, :] - tol[None, :]).sum(0)) / (1.0 + n_draws)
    return SignificanceTest(ns=clipped, statistics=stats, p_values=p, null_mean=null.mean(0),
                            null_std=null.std(0), n_draws=int(n_draws), seed=int(seed), ns_rule=rule)
