"""Ding et al.'s comparison (``compare = ["ding2023"]``): a run's numbers next to the paper's.

Ding, Tan, Geng, Qin, Cao, Choo, Qin: *Interpreting Universal Adversarial Example Attacks on
Image Classification Models* (IEEE TDSC; ``shared/seeds/002_…``). The paper's numbers below are
copied from it (ResNet-50 on ILSVRC2012 val; DAmageNet and the authors' PGD dataset). The run's
model and data differ (the embedded world's 64-px CNN), so values are not comparable: the
findings are the paper's *orderings, signs and thresholds*, judged on the run's gap and its
standard error (:mod:`advinterp.sections.paper`).

Which steps each finding reads (any steps of the run, per adversarial dataset -- the ``batch``
of the step: an attack step or a pairs data table -- the step over the most pairs):

* Fig. 2: ``pixel_histogram``; Tables 2-3: ``cam_replacement``; Tables 4-7: ``feature_rmse``;
* Tables 8-9: ``channel_masking``; Tables 10-13: ``filter_scaling`` (``target="first"`` and
  ``which="most"``: the sensitive filters; ``target="last"``, ``which="least"``: the insensitive);
* Tables 14-15: ``art.adversarial_training``; Sec. 4.7: ``art.detector`` (the ART plugin).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..report import Section
from ..stats import nanmean, standard_error
from ..study.views import ReportGroup, Run, StepView
from .paper import Finding, comparison_section, gap, gap_verdict, threshold_verdict

__all__ = ["ding2023_section", "PAPER"]

#: The paper's numbers, per dataset ("DAmageNet" / "PGD") where it gives both.
PAPER: dict[str, Any] = {
    # Sec. 4.1: mean absolute grey-level difference, DAmageNet vs ImageNet
    "mean_abs_diff": 4.2,
    # Tables 2-3, change statistics (confidence %, clean / adversarial) per value 0, 127, 200, 255
    "replacement": {"DAmageNet": ((-3.2, -2.78), (-0.4, 0.11), (-4.5, -1.49), (-3.0, -0.25)),
                    "PGD": ((-22.1, -3.04), (-14.9, -3.93), (-17.3, -3.19), (-14.8, -1.90))},
    # Tables 4-7: the most different maps in the first pooling / activation layers (RMSE ~1100), the
    # least different in the fifth residual block's activations (~0.09)
    "rmse_most": "pool_1 / activation_1 (1148.25 ... 1098)", "rmse_least": "activation_42/43 (0.0883)",
    # Tables 8-9, masking the ten most different maps: change statistics (clean, adversarial)
    "masking": {"DAmageNet": (7.710, 2.970), "PGD": (1.127, 1.351)},
    # Tables 10-13, filters x 1.8: (sensitive: first layer, insensitive: last block) x (clean, adversarial)
    "scaling": {"DAmageNet": {"sensitive": (-0.601, -4.650), "insensitive": (-25.79, -4.656)},
                "PGD": {"sensitive": (-15.55, -8.221), "insensitive": (-18.58, -18.27)}},
    # Tables 14-15: training-set size -> (clean acc %, adversarial acc %); baseline in parentheses
    "training": {"DAmageNet": {"baseline": (41.77, 4.430), 10000: (15.07, 3.891), 20000: (19.21, 5.684),
                               30000: (29.98, 6.987), 40000: (54.60, 19.739)},
                 "PGD": {"baseline": (41.77, 0.130), 10000: (25.71, 11.77), 20000: (31.53, 12.21),
                         30000: (44.98, 15.68), 40000: (67.42, 24.08)}},
    # Sec. 4.7: the detector on 25000 + 25000 validation images
    "detector": {"clean_acc": 98.42, "adv_acc": 99.07, "auc": 0.9875},
}


def _f(v: Any, se: Any = None, pct: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    k = 100.0 if pct else 1.0
    if se is None or not np.isfinite(se):
        return f"{k * v:.3g}"
    return f"{k * v:.3g} ± {k * se:.2g}"


def _dataset(step: StepView) -> str:
    """The adversarial dataset a step looked at: its batch's step id (an attack step or a
    pairs data table)."""
    return str(step.refs.get("batch", "")) or step.id


def _size(step: StepView) -> int:
    r = step.result
    for attr in ("n", "y_true"):
        v = getattr(r, attr, None)
        if v is not None:
            return int(v) if isinstance(v, (int, np.integer)) else len(v)
    try:
        return len(r)
    except TypeError:
        return 0


def _per_dataset(group: ReportGroup, name: str, key: Callable[[StepView], bool] | None = None) -> dict[str, StepView]:
    """For each dataset, the ``name`` step (passing ``key``) over the most pairs."""
    out: dict[str, StepView] = {}
    for s in group.steps:
        if s.kind != "analyzer" or s.name != name or (key is not None and not key(s)):
            continue
        d = _dataset(s)
        if d not in out or _size(s) > _size(out[d]):
            out[d] = s
    return out


def _missing(claim: str, where: str, paper: str, need: str) -> Finding:
    return Finding(claim, where, paper, "-", None, None, "not measured", f"needs {need}")


# ---------------------------------------------------------------------------- Fig. 2
def _histograms(group: ReportGroup) -> list[Finding]:
    claim, where = "pixel histograms of clean and adversarial images nearly equal (pooled TV < 0.1)", "Sec. 4.1, Fig. 2"
    paper = f"mean |diff| {PAPER['mean_abs_diff']} grey levels"
    steps = _per_dataset(group, "pixel_histogram")
    if not steps:
        return [_missing(claim, where, paper, "pixel_histogram steps")]
    out = []
    for d, s in steps.items():
        st = s.result.summary()
        tv = st["tv_pooled"]
        out.append(Finding(f"{d}: {claim}", where, paper,
                           f"mean |diff| {_f(st['mean_abs_diff'], st['mean_abs_diff_se'])} grey levels, pooled TV "
                           f"{_f(tv)}, per-image TV {_f(st['tv'])}", None, None,
                           threshold_verdict(None if not np.isfinite(tv) else bool(tv < 0.1)),
                           "" if not np.isfinite(tv) or tv < 0.1 else
                           "the histograms move with the perturbation's size: DAmageNet changes 4.2 grey levels on "
                           f"average, this set {st['mean_abs_diff']:.3g}"))
    return out


# ---------------------------------------------------------------------------- Tables 2-3
def _jitter_per_image(change: Any) -> np.ndarray:
    """Per image ``|clean conf change| - |adversarial conf change|`` where neither label changed
    (``nan`` elsewhere)."""
    ok = (np.asarray(change.clean_label_before) == np.asarray(change.clean_label_after)) & \
         (np.asarray(change.adv_label_before) == np.asarray(change.adv_label_after))
    d = np.abs(np.asarray(change.clean_conf_after, np.float64) - change.clean_conf_before) - \
        np.abs(np.asarray(change.adv_conf_after, np.float64) - change.adv_conf_before)
    return np.where(ok, d, np.nan)


def _replacement(group: ReportGroup) -> tuple[list[Finding], list[dict]]:
    claim = "replacing CAM-region pixels moves the clean confidence more than the adversarial one"
    where = "Tables 2-3, change statistics"
    paper = "clean -0.4 ... -22.1 vs adversarial +0.11 ... -3.93 (%)"
    steps = _per_dataset(group, "cam_replacement")
    if not steps:
        return [_missing(claim, where, paper, "cam_replacement steps")], []
    out, table = [], []
    for d, s in steps.items():
        res = s.result
        per_value = np.stack([_jitter_per_image(c) for c in res.changes]) if len(res.pred_clean) else np.zeros((1, 0))
        seen = np.isfinite(per_value).any(0)  # images with both labels unchanged for some value
        per_image = np.where(seen, np.nansum(per_value, 0) / np.maximum(np.isfinite(per_value).sum(0), 1), np.nan)
        g, se = nanmean(per_image), standard_error(per_image)
        st = res.statistics()
        flips_c = sum(r["clean_n_changed"] for r in st)
        flips_a = sum(r["adv_n_changed"] for r in st)
        out.append(Finding(f"{d}: {claim}", where, paper,
                           f"mean |change| clean {_f(nanmean([r['clean_abs_change'] for r in st]), pct=True)} % vs "
                           f"adversarial {_f(nanmean([r['adv_abs_change'] for r in st]), pct=True)} %; labels "
                           f"changed {flips_c} vs {flips_a} (of {len(res.pred_clean)} x {len(st)})",
                           100 * g, 100 * se, gap_verdict(g, se)))
        for r in st:
            table.append({"dataset": d, "value": r["value"], "run clean %": _f(r["clean_change"], pct=True),
                          "run adv %": _f(r["adv_change"], pct=True), "run labels changed (clean / adv)":
                          f"{r['clean_n_changed']} / {r['adv_n_changed']}",
                          "paper DAmageNet (clean / adv)": " / ".join(
                              f"{v:+.3g}" for v in PAPER["replacement"]["DAmageNet"][[0, 127, 200, 255].index(
                                  r["value"])]) if r["value"] in (0, 127, 200, 255) else "-",
                          "paper PGD (clean / adv)": " / ".join(
                              f"{v:+.3g}" for v in PAPER["replacement"]["PGD"][[0, 127, 200, 255].index(
                                  r["value"])]) if r["value"] in (0, 127, 200, 255) else "-"})
    return out, table


# ---------------------------------------------------------------------------- Tables 4-7
def _rmse(group: ReportGroup) -> list[Finding]:
    claim = "the most different feature maps lie in earlier layers than the least different ones"
    where = "Tables 4-7"
    paper = f"most: {PAPER['rmse_most']}; least: {PAPER['rmse_least']}"
    steps = _per_dataset(group, "feature_rmse")
    if not steps:
        return [_missing(claim, where, paper, "feature_rmse steps")]
    out = []
    for d, s in steps.items():
        res = s.result
        L = max(len(res.layers) - 1, 1)
        most = [e["layer_index"] / L for e in res.most(10)]
        least = [e["layer_index"] / L for e in res.least(10)]
        if not most or not least:
            out.append(_missing(f"{d}: {claim}", where, paper, "pairs with finite RMSE"))
            continue
        g, se = gap(nanmean(least), standard_error(least), nanmean(most), standard_error(most))
        names = lambda es: ", ".join(sorted({e["layer"] for e in es}))  # noqa: E731
        out.append(Finding(f"{d}: {claim}", where, paper,
                           f"depth (0 first layer, 1 last) of the ten most different {_f(nanmean(most))} "
                           f"({names(res.most(10))}) vs ten least {_f(nanmean(least))} ({names(res.least(10))})",
                           g, se, gap_verdict(g, se),
                           "" if g > 0 else "RMSE is in each layer's own units, and on this CNN the perturbation's "
                           "effect grows with depth (as the activation bias of Fig. A8 in Xu et al.): compare the "
                           "layers on a common scale with activation_distance's relative distance"))
    return out


def ding2023_section(group: ReportGroup, run: Run) -> Section:
    """The comparison with Ding et al.: every finding the run has the steps for, judged."""
    findings: list[Finding] = []
    tables: list[tuple[str, list[dict]]] = []
    findings += _histograms(group)
    f, t = _replacement(group)
    findings += f
    if t:
        tables.append(("Tables 2-3: change statistics, the paper's and the run's", t))
    findings += _rmse(group)
    for extra in _EXTRA:
        f, t = extra(group)
        findings += f
        tables += t
    intro = [
        "Ding et al. (IEEE TDSC) interpret universal adversarial datasets (DAmageNet, a PGD set) on ResNet-50 / "
        "ImageNet. This run's model and data differ, so the numbers are not comparable; each finding is the "
        "paper's ordering, sign or threshold, checked on the run's own numbers. A dataset of the run is the "
        "batch its steps analysed (an attack step or a pairs folder)."]
    return comparison_section("Reproducing Ding et al.", intro, findings, run, "ding2023", tables=tables)


#: The findings of the later tables (masking, scaling, training, detector): functions
#: ``group -> (findings, [(title, rows)])``, appended below.
_EXTRA: list[Callable[[ReportGroup], tuple[list[Finding], list[tuple[str, list[dict]]]]]] = []


# ---------------------------------------------------------------------------- Tables 8-13
def _changes(change: Any, side: str) -> np.ndarray:
    """Per image the confidence change (after - before) of ``side`` ("clean" / "adv") where its
    label did not change (``nan`` elsewhere): the terms of the change-statistics row."""
    same = np.asarray(getattr(change, f"{side}_label_before")) == np.asarray(getattr(change, f"{side}_label_after"))
    d = np.asarray(getattr(change, f"{side}_conf_after"), np.float64) - getattr(change, f"{side}_conf_before")
    return np.where(same, d, np.nan)


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return nanmean(v), standard_error(v)


def _masking(group: ReportGroup) -> tuple[list[Finding], list[tuple[str, list[dict]]]]:
    claim = "masking the ten most different feature maps does not defend (adversarial accuracy gains < 0.1)"
    where = "Tables 8-9, Sec. 4.4"
    paper = ("change statistics DAmageNet +7.71 / +2.97, PGD +1.13 / +1.35 (clean / adv, %); 'no useful for "
             "defending'")
    steps = _per_dataset(group, "channel_masking")
    if not steps:
        return [_missing(claim, where, paper, "channel_masking steps")], []
    out, rows = [], []
    for d, s in steps.items():
        res = s.result
        st = res.change.statistics()
        gain = st["adv_acc_after"] - st["adv_acc_before"]
        sweep = [f"{f:g}: {_f(c)} / {_f(a)}" for f, c, a in zip(res.fractions, res.clean_accuracy, res.adv_accuracy)]
        out.append(Finding(f"{d}: {claim}", where, paper,
                           f"change statistics {_f(st['clean_change'], pct=True)} / {_f(st['adv_change'], pct=True)} %;"
                           f" adversarial accuracy {_f(st['adv_acc_before'])} -> {_f(st['adv_acc_after'])}, clean "
                           f"{_f(st['clean_acc_before'])} -> {_f(st['clean_acc_after'])}; sweep (fraction: clean / "
                           f"adv acc) {'; '.join(sweep)}", None, None,
                           threshold_verdict(None if not np.isfinite(gain) else bool(gain < 0.1))))
        rows.append({"dataset": d, "run clean %": _f(st["clean_change"], pct=True),
                     "run adv %": _f(st["adv_change"], pct=True),
                     "paper DAmageNet": " / ".join(f"{v:+.4g}" for v in PAPER["masking"]["DAmageNet"]),
                     "paper PGD": " / ".join(f"{v:+.4g}" for v in PAPER["masking"]["PGD"])})
    return out, [("Tables 8-9: change statistics after masking (clean / adversarial)", rows)]


#: Why confidence changes can vanish on a model that is nearly certain.
_SATURATED = ("a model nearly certain of its predictions (the embedded world's CNN: mean top-1 confidence 0.999 on "
              "clean images) barely moves its softmax confidence when logits change; compare the accuracies in the "
              "table")


def _is_sensitive(s: StepView) -> bool:
    return s.params.get("target") == "first" and s.params.get("which", "most") == "most"


def _is_insensitive(s: StepView) -> bool:
    return s.params.get("target") == "last" and s.params.get("which") == "least"


def _scaling(group: ReportGroup) -> tuple[list[Finding], list[tuple[str, list[dict]]]]:
    where = "Tables 10-13, Sec. 4.5"
    sens = _per_dataset(group, "filter_scaling", _is_sensitive)
    insens = _per_dataset(group, "filter_scaling", _is_insensitive)
    need = 'filter_scaling steps with target = "first", which = "most" and target = "last", which = "least"'
    p = PAPER["scaling"]
    if not sens and not insens:
        return [_missing("scaling filters by 1.8 lowers the confidence of clean and adversarial images", where,
                         "sensitive: -0.60 / -4.65 (DAmageNet), -15.6 / -8.22 (PGD)", need)], []
    out, rows = [], []
    for kind, steps in (("sensitive (first conv, most different)", sens),
                        ("insensitive (last stage, least different)", insens)):
        key = "sensitive" if kind.startswith("sensitive") else "insensitive"
        paper = (f"DAmageNet {p['DAmageNet'][key][0]:+.4g} / {p['DAmageNet'][key][1]:+.4g}, PGD "
                 f"{p['PGD'][key][0]:+.4g} / {p['PGD'][key][1]:+.4g} (clean / adv, %)")
        for d, s in steps.items():
            ch = s.result.change
            for side, what in (("clean", "clean"), ("adv", "adversarial")):
                m, se = _mean_se(_changes(ch, side))
                v = gap_verdict(-m, se)
                out.append(Finding(f"{d}: scaling the {kind} filters x{s.params.get('factor', 1.8):g} lowers the "
                                   f"{what} confidence", where, paper, f"{_f(m, se, pct=True)} %",
                                   -100 * m, 100 * se, v, _SATURATED if v != "reproduced" else ""))
            st = ch.statistics()
            rows.append({"dataset": d, "filters": key, "run clean %": _f(st["clean_change"], pct=True),
                         "run adv %": _f(st["adv_change"], pct=True),
                         "run acc clean / adv": f"{_f(st['clean_acc_before'])} -> {_f(st['clean_acc_after'])} / "
                                                f"{_f(st['adv_acc_before'])} -> {_f(st['adv_acc_after'])}",
                         "paper DAmageNet": " / ".join(f"{v:+.4g}" for v in p["DAmageNet"][key]),
                         "paper PGD": " / ".join(f"{v:+.4g}" for v in p["PGD"][key])})
    for d in sens:
        if d not in insens:
            continue
        a = _changes(insens[d].result.change, "clean")
        b = _changes(sens[d].result.change, "clean")
        g, se = gap(-nanmean(a), standard_error(a), -nanmean(b), standard_error(b))
        out.append(Finding(f"{d}: the insensitive filters lower the clean confidence more than the sensitive ones",
                           where, "DAmageNet -25.8 vs -0.60, PGD -18.6 vs -15.6 (%)",
                           f"{_f(nanmean(a), standard_error(a), pct=True)} vs "
                           f"{_f(nanmean(b), standard_error(b), pct=True)} %", 100 * g, 100 * se, gap_verdict(g, se),
                           _SATURATED if gap_verdict(g, se) != "reproduced" else ""))
    return out, [("Tables 10-13: change statistics after scaling filters (clean / adversarial)", rows)]


_EXTRA += [_masking, _scaling]


# ---------------------------------------------------------------------------- Tables 14-15, Sec. 4.7
def _val_dataset(step: StepView) -> str:
    """The dataset an adversarial-training step is validated on: its ``val`` context, else its batch."""
    return str(step.refs.get("val", "")) or _dataset(step)


def _binomial_gap(a: float, b: float, n: int) -> tuple[float, float]:
    """``(a - b, SE)`` of two accuracies over ``n`` images each (binomial standard errors)."""
    if n <= 0 or not (np.isfinite(a) and np.isfinite(b)):
        return float("nan"), float("nan")
    return gap(a, float(np.sqrt(a * (1 - a) / n)), b, float(np.sqrt(b * (1 - b) / n)))


def _training(group: ReportGroup) -> tuple[list[Finding], list[tuple[str, list[dict]]]]:
    where = "Tables 14-15, Sec. 4.6"
    steps: dict[str, StepView] = {}
    for s in group.steps:
        if s.kind == "analyzer" and s.name == "art.adversarial_training":
            d = _val_dataset(s)
            if d not in steps or s.result.n_val > steps[d].result.n_val:
                steps[d] = s
    if not steps:
        return [_missing("adversarial training raises adversarial accuracy at every training-set size", where,
                         "DAmageNet 3.9-19.7 % (4.43), PGD 11.8-24.1 % (0.13)", "art.adversarial_training steps "
                         "(the advinterp-art plugin)")], []
    out, rows = [], []
    for d, s in steps.items():
        r = s.result
        sizes, adv, clean, n = list(r.sizes), np.asarray(r.adv_acc, float), np.asarray(r.clean_acc, float), r.n_val
        if not sizes:
            continue
        i_min = int(np.argmin(adv - r.baseline_adv))
        g, se = _binomial_gap(adv[i_min], r.baseline_adv, n)
        out.append(Finding(f"{d}: adversarial training raises adversarial accuracy above the pretrained model's at "
                           "every training-set size", where,
                           "DAmageNet 5.7-19.7 % vs 4.43 % from 20k images (3.89 % at 10k), PGD 11.8-24.1 % vs 0.13 %",
                           "sizes " + ", ".join(f"{z}: {_f(a)}" for z, a in zip(sizes, adv)) +
                           f" vs {_f(r.baseline_adv)} (weakest gain at {sizes[i_min]} images)",
                           g, se, gap_verdict(g, se)))
        if len(sizes) > 1:
            g, se = _binomial_gap(adv[-1], adv[0], n)
            out.append(Finding(f"{d}: more adversarial training data, higher adversarial accuracy", where,
                               "10k -> 40k: DAmageNet 3.89 -> 19.7 %, PGD 11.8 -> 24.1 %",
                               f"{sizes[0]} -> {sizes[-1]} images: {_f(adv[0])} -> {_f(adv[-1])}", g, se,
                               gap_verdict(g, se)))
            g, se = _binomial_gap(clean[-1], clean[0], n)
            out.append(Finding(f"{d}: more adversarial training data, higher clean accuracy", where,
                               "10k -> 40k: DAmageNet 15.1 -> 54.6 %, PGD 25.7 -> 67.4 % (pretrained 41.8 %)",
                               f"{sizes[0]} -> {sizes[-1]} images: {_f(clean[0])} -> {_f(clean[-1])} (pretrained "
                               f"{_f(r.baseline_clean)})", g, se, gap_verdict(g, se),
                               "" if clean[0] < 0.98 else "the clean accuracy is at its ceiling already"))
        for z, c, a in zip(sizes, clean, adv):
            rows.append({"dataset": d, "size": z, "run clean (pretrained)": f"{_f(c)} ({_f(r.baseline_clean)})",
                         "run adversarial (pretrained)": f"{_f(a)} ({_f(r.baseline_adv)})"})
    for name, t in PAPER["training"].items():
        base = t["baseline"]
        for z in (10000, 20000, 30000, 40000):
            rows.append({"dataset": f"paper: {name}", "size": z, "run clean (pretrained)": f"{t[z][0]} ({base[0]})",
                         "run adversarial (pretrained)": f"{t[z][1]} ({base[1]})"})
    return out, [("Tables 14-15: accuracy after adversarial training (pretrained model in parentheses; the paper's "
                  "in %)", rows)]


def _detector(group: ReportGroup) -> tuple[list[Finding], list[tuple[str, list[dict]]]]:
    where = "Sec. 4.7"
    p = PAPER["detector"]
    paper = f"ROC-AUC {p['auc']}, accuracy clean {p['clean_acc']} %, adversarial {p['adv_acc']} %"
    steps = _per_dataset(group, "art.detector")
    if not steps:
        return [_missing("a binary detector separates clean from adversarial images (ROC-AUC > 0.9)", where, paper,
                         "art.detector steps (the advinterp-art plugin)")], []
    out, rows = [], []
    for d, s in steps.items():
        r = s.result
        out.append(Finding(f"{d}: a binary detector separates clean from adversarial images (ROC-AUC > 0.9)", where,
                           paper, f"ROC-AUC {_f(r.auc)} on {len(r.val_index)} held-out pairs",
                           None, None, threshold_verdict(None if not np.isfinite(r.auc) else bool(r.auc > 0.9))))
        ok = np.isfinite(r.acc_clean) and np.isfinite(r.acc_adv)
        out.append(Finding(f"{d}: the detector classifies both clean and adversarial images correctly (> 90 %)",
                           where, paper, f"clean {_f(r.acc_clean)}, adversarial {_f(r.acc_adv)}", None, None,
                           threshold_verdict(None if not ok else bool(min(r.acc_clean, r.acc_adv) > 0.9))))
        rows.append({"dataset": d, "held-out pairs": len(r.val_index), "auc": _f(r.auc),
                     "accuracy clean": _f(r.acc_clean), "accuracy adversarial": _f(r.acc_adv)})
    rows.append({"dataset": "paper: DAmageNet", "held-out pairs": 25000, "auc": p["auc"],
                 "accuracy clean": p["clean_acc"] / 100, "accuracy adversarial": p["adv_acc"] / 100})
    return out, [("Sec. 4.7: the detector", rows)]


_EXTRA += [_training, _detector]
