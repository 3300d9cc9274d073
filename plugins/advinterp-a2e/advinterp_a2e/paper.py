"""Jalwana et al.'s comparison (``compare = ["jalwana2020"]``): a run's numbers next to the paper's.

Jalwana, Akhtar, Bennamoun, Mian: *Attack to Explain Deep Representation* (CVPR 2020;
``shared/seeds/003_…``). The paper shows its claims as figures (VGG-16 / ResNet-50 on
ImageNet) and reports no numbers for them; the run's model and data differ (the embedded
world's 64-px CNNs). Each finding below is a claim the paper makes in words, checked on the
run's own numbers as a gap in the paper's direction with its standard error (the paired
differences over the run's images; :mod:`advinterp.sections.paper`'s verdicts):

* Figs. 1-3 / Sec. 4 (``a2e.saliency``): p alone, rescaled, carries the target -- top-1 =
  target more often than a single-image perturbation of the same l2 norm (PGD-l2, C&W-l2),
  by the analysed model;
* Fig. 3 (``a2e.transfer``): p raises the target probability of the *other* models on
  held-out images, against the same images without p;
* Fig. 4 (``a2e.regions``): obstructing a region moves p's energy out of it (energy share
  inside the patch, unobstructed minus obstructed);
* Figs. 6 and 8 (``a2e.generation`` / ``a2e.manipulation``): a2e's images carry the intended
  class better than PGD's from the same seed and budget (the *standard* model's confidence:
  the robust model's saturates for both);
* Fig. 7 (``a2e.inpainting``): a2e inpaints better than PGD (PSNR and SSIM against the
  uncorrupted image).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from advinterp.api import Finding, ReportGroup, Run, Section, comparison_section, gap_verdict

__all__ = ["jalwana2020_section"]

WHERE = {"saliency": "Figs. 1-3, Sec. 4", "transfer": "Fig. 3, Sec. 4.2", "regions": "Fig. 4, Sec. 4.3",
         "generation": "Fig. 6, Sec. 5.2", "inpainting": "Fig. 7, Sec. 5.2", "manipulation": "Fig. 8, Sec. 5.2"}


def paired_gap(a: Any, b: Any) -> tuple[float, float, int]:
    """``(mean(a - b), its standard error, n)`` over the pairs where both are finite (SE NaN
    below two pairs)."""
    d = np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan, math.nan, 0
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) >= 2 else math.nan
    return float(d.mean()), se, len(d)


def _mean(v: Any) -> float:
    v = np.asarray(v, np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def _f(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.3g}"


def _finding(claim: str, where: str, paper: str, measured: str, g: float, se: float, n: int) -> Finding:
    verdict = gap_verdict(g if n else None, se)
    note = "" if n else "no image had both numbers"
    return Finding(claim, where, paper, measured + f" (n = {n})", g if n else None,
                   se if np.isfinite(se) else None, verdict, note)


def _missing(claim: str, where: str, paper: str, what: str) -> Finding:
    return Finding(claim, where, paper, "-", None, None, "not measured", f"the run has no {what} step")


def _steps(group: ReportGroup, name: str) -> list:
    return [s for s in group.steps if s.kind == "analyzer" and s.name == name and s.result is not None]


def _saliency(group: ReportGroup) -> list[Finding]:
    paper = "perturbations 'comprise salient visual features of the target label' (shown, not counted)"
    steps = _steps(group, "a2e.saliency")
    if not steps:
        return [_missing("p alone is classified as the target more often than a same-l2 baseline", WHERE["saliency"],
                         paper, "a2e.saliency")]
    out = []
    for s in steps:
        r = s.result
        for k, mod in enumerate(r.models):  # "by the model (and by the robust model)"
            a2e = r.top1[:, 0, k]
            for j, meth in enumerate(r.methods[1:], start=1):
                g, se, n = paired_gap(a2e, r.top1[:, j, k])
                out.append(_finding(f"{s.id}: p alone is top-1 = target more often than a single-image {meth} "
                                    f"perturbation of the same l2 (classified by {mod})", WHERE["saliency"], paper,
                                    f"rate a2e {_f(_mean(a2e))} vs {meth} {_f(_mean(r.top1[:, j, k]))}", g, se, n))
    return out


def _transfer(group: ReportGroup) -> list[Finding]:
    paper = "p of one model fools other models into the target (Fig. 3, qualitative)"
    steps = _steps(group, "a2e.transfer")
    if not steps:
        return [_missing("p raises other models' target probability on held-out images", WHERE["transfer"], paper,
                         "a2e.transfer")]
    out = []
    for s in steps:
        r = s.result
        for k, mod in enumerate(r.models):
            if mod == "source":
                continue
            g, se, n = paired_gap(r.held_out[:, k], r.baseline[:, k])
            out.append(_finding(f"{s.id}: p raises {mod}'s target probability on held-out images", WHERE["transfer"],
                                paper, f"{_f(_mean(r.held_out[:, k]))} with p vs "
                                       f"{_f(_mean(r.baseline[:, k]))} without", g, se, n))
    return out


def _regions(group: ReportGroup) -> list[Finding]:
    claim = "obstructing a region moves p's energy out of it (share of ||p||^2 inside the patch drops)"
    paper = "the perturbation avoids the obstructed region (Fig. 4, qualitative)"
    steps = _steps(group, "a2e.regions")
    if not steps:
        return [_missing(claim, WHERE["regions"], paper, "a2e.regions")]
    out = []
    for s in steps:
        r = s.result
        g, se, n = paired_gap(r.energy_in_clean, r.energy_in)
        out.append(_finding(f"{s.id}: {claim}", WHERE["regions"], paper,
                            f"share inside {_f(_mean(r.energy_in_clean))} unobstructed vs "
                            f"{_f(_mean(r.energy_in))} obstructed (patch area {r.area:.3g})", g, se, n))
    return out


def _class_tasks(group: ReportGroup) -> list[Finding]:
    out = []
    for task in ("generation", "manipulation"):
        claim = f"a2e's {task} carries the intended class better than PGD's (the standard model's confidence)"
        paper = "'much more realistic' images than Santurkar et al.'s PGD (shown, not measured)"
        steps = _steps(group, f"a2e.{task}")
        if not steps:
            out.append(_missing(claim, WHERE[task], paper, f"a2e.{task}"))
            continue
        for s in steps:
            r = s.result
            g, se, n = paired_gap(r.standard_a2e, r.standard_pgd)
            out.append(_finding(f"{s.id}: {claim}", WHERE[task], paper,
                                f"standard model {_f(_mean(r.standard_a2e))} a2e vs {_f(_mean(r.standard_pgd))}"
                                f" PGD; robust model {_f(_mean(r.robust_a2e))} vs {_f(_mean(r.robust_pgd))}",
                                g, se, n))
    return out


def _inpainting(group: ReportGroup) -> list[Finding]:
    paper = "better restorations than Santurkar et al.'s PGD with the same budget (Fig. 7, shown)"
    steps = _steps(group, "a2e.inpainting")
    if not steps:
        return [_missing("a2e inpaints better than PGD", WHERE["inpainting"], paper, "a2e.inpainting")]
    out = []
    for s in steps:
        r = s.result
        for metric in ("psnr", "ssim"):
            a, p, m = (getattr(r, f"{metric}_{w}") for w in ("a2e", "pgd", "masked"))
            g, se, n = paired_gap(a, p)
            out.append(_finding(f"{s.id}: a2e inpaints better than PGD ({metric.upper()} against the uncorrupted "
                                "image)", WHERE["inpainting"], paper,
                                f"a2e {_f(_mean(a))} vs PGD {_f(_mean(p))} (masked image {_f(_mean(m))})",
                                g, se, n))
    return out


def jalwana2020_section(group: ReportGroup, run: Run) -> Section:
    """The comparison with Jalwana et al.: every finding the run has the steps for, judged."""
    findings = _saliency(group) + _transfer(group) + _regions(group) + _class_tasks(group) + _inpainting(group)
    intro = [
        "Jalwana et al. (CVPR 2020) show their claims as figures on VGG-16 / ResNet-50 and ImageNet, without "
        "numbers. This run's models and data differ (the embedded world); each finding is a claim the paper makes "
        "in words, checked as a gap in the paper's direction over the run's images (paired differences)."]
    return comparison_section("Reproducing Jalwana et al.", intro, findings, run, "jalwana2020")
