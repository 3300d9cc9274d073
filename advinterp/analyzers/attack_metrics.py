"""``attack_metrics``: attack success rate and l0/l1/l2/linf distortion (Table A1 columns)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..components import Analyzer
from ..params import Param
from ..results import Result, format_table

__all__ = ["AttackMetrics", "AttackMetricsAnalyzer", "attack_metrics", "metrics_table"]

NORMS = ("l0", "l1", "l2", "linf")


@dataclass(frozen=True)
class AttackMetrics(Result):
    """Per-image success and distortion of one attack on one model.

    Attributes:
        attack, model: names.
        success: ``(N,)`` bool.
        l0, l1, l2, linf: ``(N,)`` norms of delta (l0 counts entries, pixels x channels).
        average_over: ``"success"`` (norms averaged over successful images, the usual
            convention of C&W/EAD/Str tables) or ``"all"``.
    """

    attack: str
    model: str
    success: np.ndarray
    l0: np.ndarray
    l1: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    average_over: str = "success"

    per_image = ("success", "l0", "l1", "l2", "linf")

    @property
    def asr(self) -> float:
        return float(self.success.mean()) if len(self.success) else float("nan")

    @property
    def n_valid(self) -> int:
        """Images the mean norms are taken over: the successful ones (``average_over="success"``)
        or all."""
        return int(self.success.sum()) if self.average_over == "success" else len(self.success)

    def mean(self, norm: str) -> float:
        v = getattr(self, norm)
        if self.average_over == "success":
            v = v[self.success]
        return float(v.mean()) if len(v) else float("nan")

    def rows(self) -> list[dict[str, Any]]:
        return [{"attack": self.attack, "model": self.model, "n": len(self.success), "n_valid": self.n_valid,
                 "asr": self.asr, **{k: self.mean(k) for k in NORMS}}]


def attack_metrics(batch: Any, model: str = "", average_over: str = "success",
                   tol: float | None = None) -> AttackMetrics:
    """:class:`AttackMetrics` of a batch that records its ``success`` (every attack's does),
    without a model: per-image norms of ``delta`` (l0 counts ``|delta| > tol``; ``None``: the
    round-off-robust default of :meth:`~advinterp.AdversarialBatch.norms`)."""
    from ..exceptions import ParameterError

    if getattr(batch, "success", None) is None:
        raise ParameterError("attack_metrics", "batch", batch, "a batch with success (made by an attack)",
                             "Run the attack_metrics analyzer with the model instead.")
    n = {k: v.detach().cpu().numpy() for k, v in batch.norms(tol).items()}
    return AttackMetrics(batch.attack, model, batch.success.detach().cpu().numpy().astype(bool),
                         n["l0"], n["l1"], n["l2"], n["linf"], average_over)


def metrics_table(results: Sequence[AttackMetrics]) -> str:
    """A Table A1-style text table of several results."""
    return format_table([r for res in results for r in res.rows()])


class AttackMetricsAnalyzer(Analyzer):
    """Attack success rate and l0/l1/l2/linf of delta, per image and averaged (Table A1)."""

    name = "attack_metrics"
    shardable = True
    feeds_model = False  # norms of delta; the model only runs (below) when success is missing
    params = {
        "average_over": Param.choice("success", ("success", "all"),
                                     doc="average the norms over successful images or all"),
        "tol": Param.number(None, low=0.0, allow_none=True,
                            doc="|delta| above this counts for l0 (None: max(1e-8, 4 eps of the dtype))"),
    }

    def _analyze(self, model, batch, **context):
        if batch.success is None:
            from ..components import check_images
            from ..data import AdversarialBatch

            check_images(f"{type(self).__name__}.analyze", batch.x0, "batch.x0", model.input_shape)

            batch = AdversarialBatch.from_pair(batch.x0, batch.x_adv, batch.y_true, model=model,
                                               y_target=batch.y_target, attack=batch.attack)
        return attack_metrics(batch, model.name, self.average_over, self.tol)
