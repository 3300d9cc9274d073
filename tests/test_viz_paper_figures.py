"""The paper's image-level figures: Fig. A1 (five CAM panels), Fig. 4 with F(x0, t0), Fig. A2
(one image under several attacks), the per-image IS box plots and Figs. 6 / A6 (per-grid
||delta||_2 before and after refinement), on hand-made inputs, and in a small study's report."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import advinterp
from advinterp.analyzers.attack_metrics import AttackMetrics
from advinterp.analyzers.interpretability_score import InterpretabilityScore, table2
from advinterp.analyzers.refine import Refinement
from advinterp.data import AdversarialBatch
from advinterp.exceptions import ParameterError
from advinterp.testing import toy_batch, toy_model
from advinterp.viz import (CAM_A1_COLUMNS, first_common_success, grid_l2_map, is_box_data, plot_cam_a1,
                           plot_is_boxes, plot_psr_attacks, plot_psr_overlay, plot_refine_norms)


# ---------------------------------------------------------------------------- Figs. 6 / A6
def test_grid_l2_map_is_the_norm_of_each_grid():
    delta = torch.zeros(2, 2, 4, 6)
    delta[0, 0, 0, 0], delta[0, 1, 1, 1] = 3.0, 4.0          # grid (0, 0): sqrt(9 + 16) = 5
    delta[0, 0, 2:4, 4:6] = 1.0                               # grid (1, 2): sqrt(4) = 2
    delta[1, :, 0:2, 2:4] = -0.5                              # grid (0, 1): sqrt(8 * 0.25)
    got = grid_l2_map(delta, 2)
    want = np.zeros((2, 2, 3))
    want[0, 0, 0], want[0, 1, 2], want[1, 0, 1] = 5.0, 2.0, math.sqrt(2.0)
    np.testing.assert_allclose(got, want)
    # a size that does not divide the image: a last column flush with the border (as pse)
    cover = grid_l2_map(delta[:1], 4)
    assert cover.shape == (1, 1, 2)
    np.testing.assert_allclose(cover[0, 0], [5.0, 2.0])
    with pytest.raises(ParameterError):
        grid_l2_map(delta, 5)


def _refinement(masks=True):
    n, h, w = 2, 8, 8
    x0 = torch.full((n, 3, h, w), 0.5)
    y, t = torch.tensor([0, 1]), torch.tensor([2, 3])
    d_orig = torch.zeros(n, 3, h, w)
    d_orig[0, 0, :4, :4] = 0.5     # grid (0, 0) of image 0: sqrt(16 * 0.25) = 2
    d_orig[0, 1, 4:, 4:] = 0.25    # grid (1, 1): 1
    d_orig[1, 2, :4, 4:] = 0.1
    support = torch.zeros(n, 1, h, w, dtype=torch.bool)
    support[:, :, :4, :] = True
    d_s1 = d_orig * support
    d_s1[0, 0, 0, 0] = 1.0          # a stronger refined delta: grid (0, 0) = sqrt(15 * 0.25 + 1)
    batch = lambda d, ok: AdversarialBatch(x0=x0, x_adv=x0 + d, y_true=y, y_target=t, success=torch.tensor(ok),
                                           attack="cw_l2")
    m = AttackMetrics("cw_l2", "toy", np.array([True, True]), *(np.ones(2),) * 4)
    return Refinement(attack="cw_l2", model="toy", original=m, refined={"S1": m}, support_share={"S1": np.ones(2) / 2},
                      batches={"original": batch(d_orig, [True, True]), "S1": batch(d_s1, [True, False])},
                      masks={"S1": support} if masks else {}, grid_size=4), d_orig, d_s1, support


def test_plot_refine_norms_maps_scale_and_masks():
    res, d_orig, d_s1, support = _refinement()
    fig = plot_refine_norms(res, n=5)
    axes = np.array(fig.axes).reshape(2, 3)     # n capped at the 2 examples; original, S1, S1's support
    for i in range(2):
        orig = axes[i, 0].get_images()[0]
        ref = axes[i, 1].get_images()[0]
        np.testing.assert_allclose(orig.get_array(), grid_l2_map(d_orig, 4)[i], rtol=1e-6)    # delta = x' - x0
        np.testing.assert_allclose(ref.get_array(), grid_l2_map(d_s1, 4)[i], rtol=1e-6)
        top = max(grid_l2_map(res.batches[k].delta, 4)[i].max() for k in ("original", "S1"))
        assert orig.get_clim() == ref.get_clim() == pytest.approx((0.0, top))   # one scale per example
        np.testing.assert_array_equal(axes[i, 2].get_images()[0].get_array(), support[i, 0].double().numpy())
    assert "max 2" in axes[0, 0].get_title()
    assert f"max {math.sqrt(4.75):.3g}" in axes[0, 1].get_title()
    assert "fails: S1" in axes[1, 0].get_ylabel() and "fails" not in axes[0, 0].get_ylabel()
    # a result saved before masks were kept: no support column
    assert len(plot_refine_norms(_refinement(masks=False)[0], n=1).axes) == 2
    assert len(plot_refine_norms(res, n=1, grid_size=2).axes[0].get_images()[0].get_array()) == 4


def test_refinement_keeps_masks_through_take_merge_and_save(tmp_path):
    res = _refinement()[0]
    head, tail = res.take(slice(0, 1)), res.take(slice(1, 2))
    assert torch.equal(tail.masks["S1"], res.masks["S1"][1:2]) and tail.grid_size == 4
    assert Refinement.merge([head, tail]).to_dict() == res.to_dict()
    assert Refinement.load(res.save(tmp_path / "r.pt")).to_dict() == res.to_dict()
    old = _refinement(masks=False)[0]
    assert Refinement.load(old.save(tmp_path / "old.pt")).masks == {}
    assert Refinement.merge([old.take(slice(0, 1)), old.take(slice(1, 2))]).masks == {}


# ---------------------------------------------------------------------------- Fig. A1
def _maps(n=2, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    return {k: torch.rand(n, h, w, generator=g) + j for j, k in enumerate(("x0_t0", "xadv_t0", "x0_t", "xadv_t"))}


def test_plot_cam_a1_five_panels_in_the_paper_order():
    x0, xa = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    maps = _maps(3)
    fig = plot_cam_a1(x0, xa, maps, n=2, classes=["a", "b", "c"], y_true=[0, 1, 2], target=[1, 2, 0],
                      success=[True, False, True])
    axes = np.array(fig.axes).reshape(2, 5)
    assert [a.get_title() for a in axes[0]] == [c[2] for c in CAM_A1_COLUMNS]
    assert [c[0] for c in CAM_A1_COLUMNS] == ["xadv_t0", "x0_t0", None, "x0_t", "xadv_t"]
    for i in range(2):
        for j, (key, which, _) in enumerate(CAM_A1_COLUMNS):
            imgs = axes[i, j].get_images()
            np.testing.assert_allclose(imgs[0].get_array(), (x0 if which == "x0" else xa)[i].permute(1, 2, 0).numpy(),
                                       atol=1e-6)
            if key is None:
                assert len(imgs) == 1           # x0 alone
            else:
                np.testing.assert_allclose(imgs[1].get_array(), maps[key][i].numpy(), atol=1e-6)
                assert imgs[1].get_clim() == pytest.approx((0.0, max(float(m[i].max()) for m in maps.values())))
    assert axes[0, 0].get_ylabel() == "a \u2192 b" and axes[1, 0].get_ylabel() == "b \u2192 c (failed)"
    with pytest.raises(ParameterError):
        plot_cam_a1(x0, xa, {"x0_t0": maps["x0_t0"]})


# ---------------------------------------------------------------------------- IS box plots
def _is(attack, explainer, a, b, success):
    n = len(a)
    return InterpretabilityScore(np.array(a, float), np.array(b, float), np.zeros((n, 2, 2), bool),
                                 np.zeros((n, 2, 2), bool), attack=attack, model="m", explainer=explainer,
                                 success=None if success is None else np.array(success))


def test_is_box_data_is_the_success_only_per_image_is():
    results = [_is("cw_l2", "cam", [0.1, 0.2, 0.3, np.nan], [0.5, 0.6, 0.7, 0.8], [True, False, True, True]),
               _is("ifgsm", "cam", [0.9, 0.4], [0.3, 0.2], None),
               _is("cw_l2", "gradcam", [0.6, 0.7], [0.1, 0.2], [False, True]),
               _is("cw_l2", "cam", [0.05], [0.15], [True])]      # a second batch of cw_l2/cam: pooled
    data = is_box_data(results)
    assert list(data) == ["cam", "gradcam"] and list(data["cam"]) == ["cw_l2", "ifgsm"]
    np.testing.assert_allclose(data["cam"]["cw_l2"]["x0_t0"], [0.1, 0.3, 0.05])        # failed and nan left out
    np.testing.assert_allclose(data["cam"]["cw_l2"]["xadv_t"], [0.5, 0.7, 0.8, 0.15])
    np.testing.assert_allclose(data["cam"]["ifgsm"]["x0_t0"], [0.9, 0.4])
    np.testing.assert_allclose(data["gradcam"]["cw_l2"]["xadv_t"], [0.2])
    # the same values table2 averages
    for row in table2(results):
        d = data[row["explainer"]][row["attack"]]
        assert np.mean(d["x0_t0"]) == pytest.approx(row["is_x0_t0"])
        assert np.mean(d["xadv_t"]) == pytest.approx(row["is_xadv_t"])
    assert len(is_box_data(results, success_only=False)["cam"]["cw_l2"]["x0_t0"]) == 4
    fig = plot_is_boxes(results)
    assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == ["cam", "gradcam"]
    # two boxes per attack: the medians drawn are those of the data
    medians = sorted(float(np.mean(line.get_ydata())) for line in fig.axes[0].lines
                     if line.get_label() == "_nolegend_" and len(line.get_ydata()) == 2
                     and line.get_ydata()[0] == line.get_ydata()[1])
    for vals in (d for per in data["cam"].values() for d in per.values()):
        assert any(m == pytest.approx(np.median(vals)) for m in medians)


# ---------------------------------------------------------------------------- Figs. 4 and A2
@pytest.fixture(scope="module")
def pse_setup():
    model = toy_model()
    batch = toy_batch(model, n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the toy attack fails: a PSE result all the same
        res = advinterp.get_analyzer("pse", size=4).analyze(model, batch)
    return batch, res


def test_first_common_success():
    assert first_common_success([[True, False, True, True], [False, True, True, True]]) == 2
    assert first_common_success([torch.tensor([True, True]), None, np.array([False, True, True])]) == 1
    assert first_common_success([[True, False], [False, True]]) is None
    assert first_common_success([None, None]) == 0 and first_common_success([]) is None


def test_plot_psr_overlay_with_f_x0_t0(pse_setup):
    batch, res = pse_setup
    maps = _maps(3, 16, 16)
    assert len(plot_psr_overlay(res, maps["xadv_t"], [0, 1], image=batch.x_adv).axes) == 2   # as before
    fig = plot_psr_overlay(res, maps["xadv_t"], [0, 2], image=batch.x_adv, cam_x0_t0=maps["x0_t0"], x0=batch.x0)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [a.get_title() for a in axes[0]] == ["x\u2080", "F(x\u2080, t\u2080)", "PSR on F(x\u2032, t)"]
    np.testing.assert_allclose(axes[1, 1].get_images()[1].get_array(), maps["x0_t0"][2].numpy(), atol=1e-6)
    np.testing.assert_allclose(axes[1, 2].get_images()[1].get_array(), maps["xadv_t"][2].numpy(), atol=1e-6)
    assert len(axes[1, 2].get_images()) == 3              # x', F(x', t) and the PSR patches
    assert len(plot_psr_overlay(res, maps["xadv_t"], 1, cam_x0_t0=maps["x0_t0"][1]).axes) == 2
    with pytest.raises(ParameterError):
        plot_psr_overlay(res, maps["xadv_t"], [0, 1], cam_x0_t0=maps["x0_t0"][0])


def test_plot_psr_attacks_rows_and_columns(pse_setup):
    batch, res = pse_setup
    maps = _maps(3, 16, 16)
    fig = plot_psr_attacks([res, res], [maps, maps], batch.x0, [batch.x_adv, batch.x_adv], index=1,
                           labels=["C&W", "IFGSM"])
    axes = np.array(fig.axes).reshape(2, 4)
    assert [a.get_ylabel() for a in axes[:, 0]] == ["C&W", "IFGSM"]
    assert axes[0, 3].get_title().startswith("PSR on F(x\u2032, t)")
    np.testing.assert_allclose(axes[0, 0].get_images()[1].get_array(), maps["x0_t0"][1].numpy(), atol=1e-6)
    np.testing.assert_allclose(axes[0, 1].get_images()[0].get_array(), batch.x0[1].permute(1, 2, 0).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(axes[1, 2].get_images()[1].get_array(), maps["xadv_t"][1].numpy(), atol=1e-6)
    with pytest.raises(ParameterError):
        plot_psr_attacks([res], [maps, maps], batch.x0, [batch.x_adv])


# ---------------------------------------------------------------------------- in a study's report
STUDY = """
title = "paper figures"
seed = 0

[models.m]
model = "synthetic-cnn"

[data.d]
dataset = "synthetic"
params = { n = 2, split = "test", seed = 0 }

[[steps]]
id = "attack.ifgsm"
attack = "ifgsm"
params = { targeted = true, max_iter = 5 }
model = "m"
data = "d"

[[steps]]
id = "attack.cw_l2"
attack = "cw_l2"
params = { targeted = true, binary_search_steps = 1, max_iter = 5, initial_const = 10.0, learning_rate = 0.1 }
model = "m"
data = "d"

[[steps]]
id = "cam.${attack}"
explainer = "cam"
model = "m"
batch = "attack.${attack}"
matrix = { attack = ["ifgsm", "cw_l2"] }

[[steps]]
id = "is.cam.${attack}"
analyzer = "is"
model = "m"
batch = "attack.${attack}"
context = { maps = "cam.${attack}" }
matrix = { attack = ["ifgsm", "cw_l2"] }

[[steps]]
id = "pse.${attack}"
analyzer = "pse"
model = "m"
batch = "attack.${attack}"
params = { size = 16 }
report = { cam = "cam.${attack}" }
matrix = { attack = ["ifgsm", "cw_l2"] }

[[steps]]
id = "refine.cw_l2"
analyzer = "refine"
model = "m"
batch = "attack.cw_l2"
n = 1
context = { pse = "pse.cw_l2", region = "is.cam.cw_l2" }
params = { supports = ["S1", "S2"] }
"""


@pytest.mark.filterwarnings("ignore")
def test_study_report_has_the_paper_figures(tmp_path):
    pytest.importorskip("advinterp_captum")
    from advinterp.study import Study

    out = tmp_path / "run"
    run = Study.from_text(STUDY, tmp_path / "study.toml").run(out, log=lambda *_: None)
    html = (out / "index.html").read_text(encoding="utf-8")
    for name in ("cam_pairs.png", "cam_a1.png", "is_scores.png", "is_boxes.png", "psr_ifgsm.png", "psr_cw_l2.png",
                 "psr_attacks.png", "refine_norms_cw_l2.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert name in html, name
    res = run.steps["refine.cw_l2"].result
    assert set(res.masks) == {"S1", "S2"} and res.grid_size == 16 and len(res.masks["S1"]) == 1
