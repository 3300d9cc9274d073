"""The figure of a paper comparison: each finding's measured gap in standard errors."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..exceptions import ParameterError
from .common import _mpl

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_findings"]

_COLOURS = {"reproduced": (0.17, 0.55, 0.25), "not resolved": (0.55, 0.55, 0.55),
            "not reproduced": (0.78, 0.18, 0.16)}


def plot_findings(findings: Sequence[Any], z: float = 2.0, clip: float = 10.0) -> "Figure":
    """One row per finding (:class:`advinterp.sections.paper.Finding` with a gap and a positive
    standard error): the gap divided by its standard error, as a dot with a bar of +-1, the
    band ``[-z, z]`` shaded (not resolved), coloured by verdict; values beyond ``+-clip`` are
    drawn at the edge with their value written. Gaps are in the paper's direction, so dots to
    the right of the band agree with the paper."""
    if not findings:
        raise ParameterError("plot_findings", "findings", findings, "at least one finding with a gap and an SE")
    _mpl()
    from matplotlib.figure import Figure

    scores = np.array([f.gap / f.se for f in findings], dtype=np.float64)
    shown = np.clip(scores, -clip, clip)
    fig = Figure(figsize=(8.5, 0.38 * len(findings) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.axvspan(-z, z, color=(0.92, 0.92, 0.92), zorder=0)
    ax.axvline(0, color="black", lw=0.8)
    ys = np.arange(len(findings))[::-1]
    for y, f, s, v in zip(ys, findings, shown, scores):
        c = _COLOURS.get(f.verdict, (0.2, 0.2, 0.2))
        ax.errorbar([s], [y], xerr=[[1.0], [1.0]], fmt="o", color=c, capsize=3)
        if abs(v) > clip:
            ax.annotate(f"{v:.0f}", (s, y), textcoords="offset points", xytext=(-14 if v > 0 else 4, 6), fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([f.claim if len(f.claim) <= 60 else f.claim[:57] + "..." for f in findings], fontsize=8)
    ax.set_xlim(-clip - 1.5, clip + 1.5)
    ax.set_xlabel(f"gap / standard error (right: as the paper; grey, within {z:g}: not resolved)")
    fig.tight_layout()
    return fig
