"""The PSE paper's comparison (``compare = ["xu2019"]``): a run's numbers next to Xu et al.'s.

Xu, Liu, Zhang, Chen, Lin, Fardad, Chen: *Interpreting Adversarial Examples by Activation
Promotion and Suppression* (arXiv:1904.02057; ``shared/seeds/000_…``). The paper's numbers
below are copied from it (ResNet_v2_101 rows: the paper's first model; the Inception rows
order the attacks the same way). The run's models and data differ (the embedded world's
64-px CNN, not ImageNet at 299 px), so values are not comparable: the findings are the
paper's *orderings, signs and thresholds*, each judged on the run's gap and its standard
error (:mod:`advinterp.sections.paper`).

What each finding reads (any steps of the run; for each attack the step over the most
pairs, so that a study's side steps -- one image with several targets, a fixed
source->target pair -- do not dilute the main ones):

* Table 1: ``pse`` steps on the four attacks' batches;
* Table 2: ``is`` steps whose explainer is ``cam`` (the paper's);
* Table A1: attack steps (original norms) and ``refine`` steps (S1 per attack, S2 for Fig. 6);
* Fig. 7a: ``unit_sensitivity`` steps (the dissect plugin; read from their table rows);
* Fig. A8: ``activation_distance`` steps on the four attacks' batches, on a natural and a
  robust model (a model whose id or name contains "robust").
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..report import Section
from ..stats import nanmean, standard_error
from ..study.views import ReportGroup, Run, StepView
from .paper import Finding, comparison_section, gap, gap_verdict, threshold_verdict

__all__ = ["xu2019_section", "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE_A1", "ATTACKS"]

#: The paper's four attacks, in its tables' order: registry name -> the paper's name.
ATTACKS = {"ifgsm": "IFGSM", "cw_l2": "C&W", "ead": "EAD", "str": "Str"}

#: Table 1 (ResNet rows): Pearson corr of d0, dt, s with ||delta_G||_2 per attack.
PAPER_TABLE1 = {"ifgsm": (0.303, 0.480, 0.522), "cw_l2": (0.507, 0.538, 0.609),
                "ead": (0.602, 0.630, 0.710), "str": (0.625, 0.720, 0.783)}
#: Table 2 (ResNet rows): mean IS w.r.t. (x0, t0) and (x', t), CAM, 5000 examples.
PAPER_TABLE2 = {"ifgsm": (0.594, 0.604), "cw_l2": (0.610, 0.823), "ead": (0.625, 0.880), "str": (0.626, 0.941)}
#: Table A1 (ResNet rows): (original, refined under S1) l0, l1, l2, linf, and the refined ASR.
PAPER_TABLE_A1 = {
    "ifgsm": {"l0": (266031, 61055), "l1": (1122.56, 176.08), "l2": (2.625, 1.87), "linf": (0.017, 0.035), "asr": 0.967},
    "cw_l2": {"l0": (268117, 21103), "l1": (183.65, 134.26), "l2": (0.697, 0.727), "linf": (0.028, 0.029), "asr": 1.0},
    "ead": {"l0": (66584, 20147), "l1": (42.57, 63.28), "l2": (1.520, 1.233), "linf": (0.234, 0.096), "asr": 1.0},
    "str": {"l0": (30823, 18744), "l1": (119.76, 110.54), "l2": (1.250, 1.132), "linf": (0.105, 0.087), "asr": 1.0},
}


# ---------------------------------------------------------------------------- step selection
def _steps(group: ReportGroup, kind: str, name: str) -> list[StepView]:
    return [s for s in group.steps if s.kind == kind and s.name == name]


def _attack_of(step: StepView) -> str | None:
    src = step.input("batch")
    return src.name if src is not None and src.kind == "attack" else None


def _size(result: Any) -> int:
    try:
        return len(result)
    except TypeError:
        return int(getattr(result, "n_images", 0))


def _largest_by(steps: list[StepView], key) -> dict[Any, StepView]:
    """For each ``key(step)`` (steps whose key is None are left out), the step over the most
    pairs (the first on ties), in first-seen order of the keys."""
    out: dict[Any, StepView] = {}
    for s in steps:
        k = key(s)
        if k is not None and (k not in out or _size(s.result) > _size(out[k].result)):
            out[k] = s
    return out


def _main_per_attack(steps: list[StepView], key=None) -> dict[str, StepView]:
    """For each of the paper's attacks, the step over the most pairs, in the paper's order."""
    out = _largest_by(steps, lambda s: _attack_of(s) if _attack_of(s) in ATTACKS and (key is None or key(s))
                      else None)
    return {a: out[a] for a in ATTACKS if a in out}


def _f(v: float, se: float | None = None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.3g}" if se is None or not np.isfinite(se) else f"{v:.3g} ± {se:.2g}"


def _missing(claim: str, where: str, paper: str, need: str) -> Finding:
    return Finding(claim, where, paper, "-", None, None, "not measured", f"needs {need}")


def _paired(diff: np.ndarray) -> tuple[float, float]:
    d = np.asarray(diff, dtype=np.float64)
    return nanmean(d), standard_error(d)


# ---------------------------------------------------------------------------- Table 1
def _table1(group: ReportGroup) -> tuple[list[Finding], list[dict]]:
    from ..analyzers.pse import table1

    where = "Table 1, ResNet rows"
    main = _main_per_attack(_steps(group, "analyzer", "pse"))
    need = "pse steps on the batches of the attacks ifgsm, cw_l2, ead and str"
    if len(main) < 2:
        return [_missing("Table 1: IFGSM lowest, Str highest corr(s, ||delta_G||_2)", where, "0.522 ... 0.783",
                         need)], []
    rows = {a: table1([s.result])[0] for a, s in main.items()}
    table = [{"attack": ATTACKS[a], "paper d0 / dt / s": " / ".join(f"{v:.3f}" for v in PAPER_TABLE1[a]),
              "run d0": _f(r["pearson_d0"], r["se_pearson_d0"]), "run dt": _f(r["pearson_dt"], r["se_pearson_dt"]),
              "run s": _f(r["pearson_s"], r["se_pearson_s"]), "pairs": r["n_valid"], "failed (dropped)": r["n_dropped"]}
             for a, r in rows.items()]
    out = []

    def extreme(which: str, sign: int) -> None:
        claim = f"Table 1: {ATTACKS[which]} has the {'lowest' if sign < 0 else 'highest'} corr(s, ||delta_G||_2)"
        others = [a for a in rows if a != which]
        if which not in rows or not others:
            out.append(_missing(claim, where, f"{PAPER_TABLE1[which][2]:.3f}", need))
            return
        # the closest competitor: the lowest of the others for "lowest", the highest for "highest"
        other = (min if sign < 0 else max)(others, key=lambda a: rows[a]["pearson_s"])
        paper = (f"{PAPER_TABLE1[which][2]:.3f} vs {ATTACKS[other]} {PAPER_TABLE1[other][2]:.3f}")
        a_, b_ = rows[which], rows[other]
        g, se = gap(b_["pearson_s"], b_["se_pearson_s"], a_["pearson_s"], a_["se_pearson_s"])
        g = g if sign < 0 else -g
        measured = f"{_f(a_['pearson_s'], a_['se_pearson_s'])} vs {ATTACKS[other]} {_f(b_['pearson_s'], b_['se_pearson_s'])}"
        out.append(Finding(claim, where, paper, measured, g, se, gap_verdict(g, se)))

    extreme("ifgsm", -1)
    extreme("str", +1)
    for a, s in main.items():
        r = s.result
        keep = np.ones(r.n_images, bool) if r.success is None else np.asarray(r.success, bool)
        c = r.correlations("pearson")[keep]
        p = PAPER_TABLE1[a]
        claim = f"Table 1, {ATTACKS[a]}: s correlates at least as well as d0 and dt"
        if not len(c):
            out.append(_missing(claim, where, f"{p[2]:.3f} vs {max(p[:2]):.3f}", f"successful pairs of {a}"))
            continue
        # the paired difference s - max(d0, dt) per image, for the measure closest to s on average
        j = int(np.argmax([nanmean(c[:, 0]), nanmean(c[:, 1])]))
        g, se = _paired(c[:, 2] - c[:, j])
        out.append(Finding(claim, where, f"s {p[2]:.3f} vs {('d0', 'dt')[j]} {p[j]:.3f}",
                           f"s {_f(nanmean(c[:, 2]))} vs {('d0', 'dt')[j]} {_f(nanmean(c[:, j]))} ({len(c)} pairs)",
                           g, se, gap_verdict(g, se, at_least=True)))
    return out, table


# ---------------------------------------------------------------------------- Table 2
def _table2(group: ReportGroup) -> tuple[list[Finding], list[dict]]:
    from ..analyzers.interpretability_score import table2

    where = "Table 2, ResNet rows (CAM)"
    main = _main_per_attack(_steps(group, "analyzer", "is"), key=lambda s: s.result.explainer == "cam")
    need = "is steps with the cam explainer on the batches of ifgsm, cw_l2, ead and str"
    rows = {a: table2([s.result])[0] for a, s in main.items()}
    table = [{"attack": ATTACKS[a], "paper IS (x0, t0)": PAPER_TABLE2[a][0], "paper IS (x', t)": PAPER_TABLE2[a][1],
              "run IS (x0, t0)": _f(r["is_x0_t0"], r["se_is_x0_t0"]), "run IS (x', t)": _f(r["is_xadv_t"], r["se_is_xadv_t"]),
              "pairs": r["n_valid"], "failed (dropped)": r["n_dropped"]} for a, r in rows.items()]
    out = []
    order = ["str", "ead", "cw_l2", "ifgsm"]
    for hi, lo in zip(order, order[1:]):
        claim = f"Table 2: IS w.r.t. (x', t) {ATTACKS[hi]} > {ATTACKS[lo]}"
        paper = f"{PAPER_TABLE2[hi][1]:.3f} vs {PAPER_TABLE2[lo][1]:.3f}"
        if hi not in rows or lo not in rows:
            out.append(_missing(claim, where, paper, need))
            continue
        a_, b_ = rows[hi], rows[lo]
        g, se = gap(a_["is_xadv_t"], a_["se_is_xadv_t"], b_["is_xadv_t"], b_["se_is_xadv_t"])
        out.append(Finding(claim, where, paper, f"{_f(a_['is_xadv_t'], a_['se_is_xadv_t'])} vs "
                           f"{_f(b_['is_xadv_t'], b_['se_is_xadv_t'])}", g, se, gap_verdict(g, se)))
    for a, s in main.items():
        r = s.result
        keep = np.ones(len(r.is_x0_t0), bool) if r.success is None else np.asarray(r.success, bool)
        claim = f"Table 2, {ATTACKS[a]}: IS(x', t) > IS(x0, t0)"
        paper = f"{PAPER_TABLE2[a][1]:.3f} vs {PAPER_TABLE2[a][0]:.3f}"
        d = np.asarray(r.is_xadv_t, np.float64)[keep] - np.asarray(r.is_x0_t0, np.float64)[keep]
        if not np.isfinite(d).any():
            out.append(_missing(claim, where, paper, f"successful pairs of {a} with delta != 0"))
            continue
        g, se = _paired(d)
        out.append(Finding(claim, where, paper, f"{_f(rows[a]['is_xadv_t'])} vs {_f(rows[a]['is_x0_t0'])} "
                           f"(paired, {int(np.isfinite(d).sum())} pairs)", g, se, gap_verdict(g, se),
                           "" if g > 0 else "the scenes of the embedded world hold one object, so the class maps "
                           "of x0 and x' overlap more than on ImageNet"))
    return out, table


# ---------------------------------------------------------------------------- Table A1, Fig. 6
def _table_a1(group: ReportGroup) -> tuple[list[Finding], list[dict]]:
    where = "Table A1, ResNet rows"
    attacks = _largest_by(group.steps, lambda s: s.name if s.kind == "attack" and s.name in ATTACKS else None)
    refines = _main_per_attack(_steps(group, "analyzer", "refine"))
    table, out = [], []
    for a in ATTACKS:
        p = PAPER_TABLE_A1[a]
        row: dict[str, Any] = {"attack": ATTACKS[a], "paper l0 orig/S1": f"{p['l0'][0]} / {p['l0'][1]}",
                               "paper l2 orig/S1": f"{p['l2'][0]} / {p['l2'][1]}", "paper ASR S1": p["asr"]}
        if a in attacks:
            r = attacks[a].rows()[0] if attacks[a].rows() else {}
            row.update({"run l0": r.get("l0"), "run l1": r.get("l1"), "run l2": r.get("l2"),
                        "run linf": r.get("linf"), "run ASR": r.get("asr")})
        ratio = asr = None
        if a in refines:
            ref = refines[a].result
            if "S1" in ref.refined:
                m1 = ref.refined["S1"]
                ok = np.asarray(ref.original.success, bool) & np.asarray(m1.success, bool)
                l0o = float(np.mean(ref.original.l0[ok])) if ok.any() else math.nan
                l0r = float(np.mean(m1.l0[ok])) if ok.any() else math.nan
                ratio, asr = l0o / l0r if l0r > 0 else math.nan, float(np.mean(m1.success))
                row.update({"run l0 S1 (pairs)": f"{l0r:.4g} ({int(ok.sum())})", "run ASR S1": asr})
        table.append(row)
        paper_ratio = p["l0"][0] / p["l0"][1]
        need_ratio = 3.0 if paper_ratio >= 3 else 1.5
        claim = f"Table A1, {ATTACKS[a]}: S1 cuts l0 by >= {need_ratio:g}x at ASR >= 95%"
        paper = f"{paper_ratio:.1f}x at {p['asr']:.1%}"
        if ratio is None:
            out.append(_missing(claim, where, paper, f"a refine step on {a}'s batch with support S1"))
            continue
        ok = bool(np.isfinite(ratio) and ratio >= need_ratio and asr >= 0.95)
        out.append(Finding(claim, where, paper, f"{ratio:.1f}x at {asr:.0%}", None, None, threshold_verdict(ok)))
    # Fig. 6: refining under S2 (the CAM region of the true class) costs more l2 than under S1
    claim, where6 = "Fig. 6: S2 refinement needs more l2 than S1", "Fig. 6 / Sec. 5"
    both = [(a, s) for a, s in refines.items() if {"S1", "S2"} <= set(s.result.refined)]
    if not both:
        out.append(_missing(claim, where6, "max l2 1.2 vs 0.25", "a refine step with supports S1 and S2"))
    for a, s in both:
        r1, r2 = s.result.refined["S1"], s.result.refined["S2"]
        ok = np.asarray(r1.success, bool) & np.asarray(r2.success, bool)
        g, se = _paired(np.asarray(r2.l2, np.float64)[ok] - np.asarray(r1.l2, np.float64)[ok])
        out.append(Finding(f"{claim} ({ATTACKS[a]})", where6, "l2 larger under S2 (max 1.2 vs 0.25)",
                           f"S2 {_f(float(np.mean(r2.l2[ok])) if ok.any() else math.nan)} vs S1 "
                           f"{_f(float(np.mean(r1.l2[ok])) if ok.any() else math.nan)} ({int(ok.sum())} pairs)",
                           g, se, gap_verdict(g, se)))
    return out, table


# ---------------------------------------------------------------------------- Fig. 7a
def _fig7a(group: ReportGroup) -> list[Finding]:
    claim, where = "Fig. 7a: sensitive units are more interpretable (p < 0.05) at the deepest layer", "Fig. 7a"
    steps = _steps(group, "analyzer", "unit_sensitivity")
    rows = [r for s in steps[:1] for r in s.rows() if "p_value" in r and "layer" in r]
    if not rows:
        return [_missing(claim, where, "p < 0.05 at deep layers", "a unit_sensitivity step (advinterp-dissect)")]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    deep = [r for r in rows if r["layer"] == layers[-1]]
    ps = [float(r["p_value"]) for r in deep]
    shallow = [float(r["p_value"]) for r in rows if r["layer"] == layers[0]]
    return [Finding(claim, where, "p < 0.05 (deep layers), not at shallow ones",
                    f"{layers[-1]}: p = {', '.join(f'{p:.3g}' for p in ps)} (N = {', '.join(str(r['N']) for r in deep)}); "
                    f"{layers[0]}: p = {', '.join(f'{p:.2g}' for p in shallow)}",
                    None, None, threshold_verdict(max(ps) < 0.05))]


# ---------------------------------------------------------------------------- Fig. A8
def _is_robust(step: StepView, run: Run) -> bool:
    name = run.models.get(step.model, "")
    return "robust" in step.model.lower() or "robust" in str(name).lower()


def _fig_a8(group: ReportGroup, run: Run) -> tuple[list[Finding], list[dict]]:
    where = "Fig. A8 / Fig. 9"
    steps = [s for s in _steps(group, "analyzer", "activation_distance") if _attack_of(s) in ATTACKS]
    if not steps:
        return [_missing("Fig. A8: the activation bias jumps at the deep layers", where, "a sharp transition at "
                         "deep layers", "activation_distance steps on the four attacks' batches")], []
    out, table = [], []
    by = _largest_by(steps, lambda s: (_attack_of(s), _is_robust(s, run)))
    for (a, robust), s in by.items():
        r = s.result
        rel = np.array([nanmean(r.relative[:, i]) for i in range(len(r.layers))])
        steps_up = np.diff(rel)
        L = len(rel)
        big = int(np.argmax(steps_up)) + 1 if L > 1 else 0  # the layer after the largest increase
        table.append({"model": s.model + (" (robust)" if robust else ""), "attack": ATTACKS[a], "layers": L,
                      "first": _f(rel[0]), "middle": _f(rel[L // 2]), "last": _f(rel[-1]),
                      "largest jump into": r.layers[big] if L > 1 else "-"})
        if not robust and L > 2:
            # the rise over the deepest third of the layers against the rise over the first two thirds
            k = (2 * L) // 3
            deep, early = rel[-1] - rel[k - 1], rel[k - 1] - rel[0]
            out.append(Finding(f"Fig. A8, {ATTACKS[a]}: the bias rises more over the deepest third of the layers "
                               "than over the first two thirds", where, "a sharp transition at deep layers",
                               f"relative bias {_f(rel[0])} -> {_f(rel[k - 1])} ({r.layers[k - 1]}) -> {_f(rel[-1])} "
                               f"over {L} layers; largest jump into {r.layers[big]}", None, None,
                               threshold_verdict(bool(deep > early))))
    for a in ATTACKS:
        nat, rob = by.get((a, False)), by.get((a, True))
        if nat is None or rob is None:
            continue
        x, y = nat.result.relative[:, -1], rob.result.relative[:, -1]
        g, se = gap(nanmean(x), standard_error(x), nanmean(y), standard_error(y))
        out.append(Finding(f"Fig. 9 / A8, {ATTACKS[a]}: the robust model's deepest-layer bias is damped", where,
                           "robust training keeps the response closer to the clean one",
                           f"relative bias natural {_f(nanmean(x), standard_error(x))} vs robust "
                           f"{_f(nanmean(y), standard_error(y))}", g, se, gap_verdict(g, se)))
    return out, table


# ---------------------------------------------------------------------------- section
def xu2019_section(group: ReportGroup, run: Run) -> Section:
    """The comparison with Xu et al. 2019 (module docstring): findings of Tables 1, 2, A1,
    Figs. 6, 7a and A8 with verdicts, and the paper's tables next to the run's."""
    f1, t1 = _table1(group)
    f2, t2 = _table2(group)
    fa1, ta1 = _table_a1(group)
    f7 = _fig7a(group)
    f8, t8 = _fig_a8(group, run)
    tables = [(n, t) for n, t in (("Table 1: corr with ||delta_G||_2, paper (ResNet) vs run", t1),
                                  ("Table 2: interpretability score (CAM), paper (ResNet) vs run", t2),
                                  ("Table A1: norms and refinement under S1, paper (ResNet) vs run", ta1),
                                  ("Fig. A8: relative activation bias at the first, middle and last layer", t8)) if t]
    intro = ["The findings of Xu et al., 'Interpreting Adversarial Examples by Activation Promotion and Suppression' "
             "(ResNet_v2_101 and Inception_v3 on ImageNet at 299 px, 5000 examples), checked on this run. Values "
             "are not comparable across models and data; the orderings, signs and thresholds are. Means are over the "
             "adversarial examples (pairs whose attack succeeded), with one standard error over images."]
    return comparison_section("Reproducing Xu et al. 2019 (PSE paper)", intro, f1 + f2 + fa1 + f7 + f8, run,
                              "xu2019", tables)
