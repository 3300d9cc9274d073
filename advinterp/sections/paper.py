"""Setting a run's numbers next to a paper's: findings, verdicts and the comparison section.

A *paper comparison* (registered with ``advinterp_register_papers``, asked for by a study's
``compare = ["name"]``) lists **findings**: a claim the paper makes (an ordering, a sign, a
threshold), where the paper makes it (table and row), what the paper reports, and what the
run measured. Orderings and signs are judged on the measured *gap* and its standard error:

* ``reproduced``: the gap has the paper's sign and is more than ``Z`` (2) standard errors
  from zero;
* ``not resolved``: it is within ``Z`` standard errors of zero (more pairs would decide);
* ``not reproduced``: it has the other sign by more than ``Z`` standard errors;
* ``not measured``: the run lacks the steps the finding needs (the finding says which).

Claims of the form "at least as high" (``at_least=True``) are reproduced unless the gap is
more than ``Z`` standard errors below zero. Thresholds (``S1 cuts l0 by >= 3x``) are judged
on the value alone (``threshold_verdict``). The standard error of a gap between two means
is ``sqrt(se_a^2 + se_b^2)`` (:func:`gap`): exact for independent samples, conservative for
the positively correlated paired ones of a study (the same images under every attack).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..report import Section

__all__ = ["Z", "Finding", "gap", "gap_verdict", "threshold_verdict", "finding_rows", "comparison_section"]

#: Standard errors a gap must clear to count as reproduced (or contradicted).
Z = 2.0

VERDICTS = ("reproduced", "not resolved", "not reproduced", "not measured")


@dataclass
class Finding:
    """One claim of a paper and the run's answer.

    Attributes:
        claim: the claim in words (``"IS w.r.t. (x', t): Str > EAD"``).
        where: where the paper makes it (``"Table 2, ResNet rows"``).
        paper: the paper's numbers behind it, as text (``"0.941 vs 0.880"``).
        measured: the run's numbers behind it, as text (``"0.771 +- 0.022 vs 0.792 +- 0.024"``).
        gap: the measured gap in the paper's direction (positive = as the paper), or ``None``.
        se: its standard error, or ``None``.
        verdict: one of :data:`VERDICTS`.
        note: why, when the run disagrees, or which steps are missing.
    """

    claim: str
    where: str
    paper: str
    measured: str
    gap: float | None
    se: float | None
    verdict: str
    note: str = ""


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def gap(a: float, se_a: float | None, b: float, se_b: float | None) -> tuple[float, float]:
    """``(a - b, sqrt(se_a^2 + se_b^2))``; a missing or non-finite standard error counts as 0
    (a single image has none). When both are missing the SE is 0, which :func:`gap_verdict`
    calls ``not resolved``."""
    sa = se_a if _finite(se_a) else 0.0
    sb = se_b if _finite(se_b) else 0.0
    return float(a - b), float(math.hypot(sa, sb))


def gap_verdict(g: float | None, se: float | None, at_least: bool = False, z: float = Z) -> str:
    """The verdict of a gap ``g`` (positive = the paper's direction) with standard error ``se``
    (module docstring). A gap without a standard error (0 or ``None``) is ``not resolved``:
    one image decides nothing."""
    if not _finite(g):
        return "not measured"
    if not _finite(se) or se <= 0:
        return "not resolved" if not at_least or g < 0 else "reproduced"
    if at_least:
        return "reproduced" if g >= -z * se else "not reproduced"
    if g > z * se:
        return "reproduced"
    if g < -z * se:
        return "not reproduced"
    return "not resolved"


def threshold_verdict(ok: bool | None) -> str:
    """``reproduced`` / ``not reproduced`` for a claim judged on a value against a
    threshold; ``not measured`` for ``None``."""
    return "not measured" if ok is None else ("reproduced" if ok else "not reproduced")


def finding_rows(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """The findings as report table rows (gap and SE to 3 significant digits)."""
    rows = []
    for f in findings:
        rows.append({"finding": f.claim, "paper (where)": f"{f.paper} ({f.where})", "run": f.measured,
                     "gap": "-" if not _finite(f.gap) else f"{f.gap:+.3g}",
                     "SE": "-" if not _finite(f.se) else f"{f.se:.2g}", "verdict": f.verdict, "note": f.note})
    return rows


def comparison_section(title: str, intro: Sequence[str], findings: Sequence[Finding], run: Any, name: str,
                       tables: Sequence[tuple[str, list[dict]]] = ()) -> Section:
    """The section of a paper comparison: the intro, a count of verdicts, the findings table
    (also written to ``paper_<name>.txt``), a figure of each judged gap with its ``Z``-SE
    bar, and ``tables`` (the paper's tables next to the run's). Adds
    ``run.summary["papers"][name]`` (the findings as rows)."""
    from ..results import format_table

    rows = finding_rows(findings)
    run.summary.setdefault("papers", {})[name] = rows
    run.write_text(f"paper_{name}.txt", format_table(rows))
    counts = {v: sum(f.verdict == v for f in findings) for v in VERDICTS}
    text = list(intro) + [
        f"Of {len(findings)} findings: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ". "
        f"A gap is the measured difference in the paper's direction (positive = as the paper); it counts as "
        f"reproduced when it is more than {Z:g} standard errors above zero, not reproduced when more than {Z:g} "
        "below, and not resolved in between."]
    figures = []
    judged = [f for f in findings if _finite(f.gap) and _finite(f.se) and f.se > 0]
    if judged:
        from ..viz.paper import plot_findings

        figures.append((f"Measured gaps in the paper's direction, with {Z:g} standard errors",
                        run.save_figure(plot_findings(judged, z=Z), f"paper_{name}.png")))
    return Section(title, text, tables=[("Findings", rows), *tables], figures=figures)
