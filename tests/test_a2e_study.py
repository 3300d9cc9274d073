"""``examples/studies/a2e.toml`` reduced: the attack-to-explain study runs end to end on the
embedded world and its report has the sections and figures of Figs. 1-5 and the claim."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from advinterp.study import Study

ROOT = Path(__file__).resolve().parents[1]
A2E = ROOT / "examples" / "studies" / "a2e.toml"
#: a few images and iterations: well under a minute on two CPUs
TINY = {"n": 4, "max_iter": 4, "refine_every": 2, "batch": 3, "regions_images": 1, "positions": 1,
        "baselines": {"pgd": {"max_iter": 3}, "cw_l2": {"binary_search_steps": 1, "max_iter": 3}},
        "n_class_pool": 48, "c5": {"images": 1, "max_iter": 2, "batch": 2, "n_samples": 2}}


@pytest.fixture(scope="module")
def a2e_run(tmp_path_factory):
    pytest.importorskip("advinterp_a2e")
    out = tmp_path_factory.mktemp("a2e") / "run"
    run = Study.from_file(A2E, TINY).run(out, log=lambda m: None)
    return out, run


def test_the_study_runs_every_step_with_its_report_section(a2e_run):
    out, run = a2e_run
    study = Study.from_file(A2E, TINY)
    assert len(run.steps) == len(study.steps) >= 13
    html = (out / "index.html").read_text()
    for title in ("transfer of p to other models", "obstructed regions", "is p alone the target?",
                  "image generation (C5, Fig. 6)", "inpainting (C5", "image manipulation from a sketch (C5, Fig. 8)"):
        assert title in html, title
    for fig in ("transfer.natural_a2e_transfer.png", "transfer.robust_a2e_transfer.png",
                "saliency.natural_a2e_saliency.png", "saliency.robust_a2e_saliency.png",
                "saliency.natural.alg1_a2e_saliency.png", "regions.natural_a2e_regions.png",
                "generation_a2e_generation.png", "inpainting_a2e_inpainting.png", "manipulation_a2e_manipulation.png"):
        assert (out / fig).is_file() and fig in html, fig


def test_the_claims_numbers_are_in_the_summary(a2e_run):
    out, _ = a2e_run
    summary = json.loads((out / "summary.json").read_text())
    sal = summary["a2e_saliency"]
    assert set(sal) == {"saliency.natural", "saliency.robust", "saliency.natural.alg1"}
    rows = sal["saliency.natural"]["summary"]
    # every method (a2e and the two baselines) by both models
    assert {(r["method"], r["model"]) for r in rows} == {
        (m, k) for m in ("a2e", "pgd", "cw_l2") for k in ("synthetic-cnn", "synthetic-cnn-robust")}
    # a2e and PGD over the step's 4 images; C&W over those where it found a perturbation
    assert all(r["images"] == 4 and 0 <= r["target_rate"] <= 1 for r in rows if r["method"] != "cw_l2")
    assert all(r["images"] <= 4 for r in rows)
    # the baselines got the a2e perturbation's l2 norm (C&W: where it succeeded)
    by = {(r["method"], r["model"]): r for r in rows}
    assert by[("pgd", "synthetic-cnn")]["mean_l2"] == pytest.approx(by[("a2e", "synthetic-cnn")]["mean_l2"], rel=1e-3)
    assert {r["baseline"] for r in sal["saliency.natural"]["ratios"]} == {"pgd", "cw_l2"}


def test_the_paper_comparison_judges_the_run(a2e_run):
    """``compare = ["jalwana2020"]``: the comparison section, one finding per claim and step, and
    each judged gap equal to the paired difference recomputed from the saved results."""
    import math

    import numpy as np

    from advinterp_a2e.paper import paired_gap

    out, run = a2e_run
    html = (out / "index.html").read_text()
    assert "Reproducing Jalwana et al." in html
    rows = json.loads((out / "summary.json").read_text())["papers"]["jalwana2020"]
    claims = [r["finding"] for r in rows]
    assert any(c.startswith("saliency.natural: p alone") and "pgd" in c for c in claims)
    assert any(c.startswith("inpainting: a2e inpaints better than PGD (PSNR") for c in claims)
    assert all(r["verdict"] in ("reproduced", "not resolved", "not reproduced", "not measured") for r in rows)
    # the saliency gap against PGD by the analysed model, recomputed
    sal = run.steps["saliency.natural"].result
    k, j = 0, sal.methods.index("pgd")
    g, se, n = paired_gap(sal.top1[:, 0, k], sal.top1[:, j, k])
    row = next(r for r in rows if r["finding"].startswith("saliency.natural: p alone") and " pgd " in r["finding"]
               and r["finding"].endswith(f"(classified by {sal.models[k]})"))
    assert row["gap"] == ("-" if not math.isfinite(g) else f"{g:+.3g}")
    assert f"(n = {n})" in row["run"]
    # by hand: paired differences over the finite pairs only
    g2, se2, n2 = paired_gap([1.0, 0.0, np.nan, 1.0], [0.0, 0.0, 1.0, np.nan])
    assert (g2, n2) == (0.5, 2) and se2 == pytest.approx(0.5)
