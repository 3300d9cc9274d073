"""The ``pse`` analyzer (Definition 1, eqs. 1-4, Table 1) and its figures (refined attacks: test_refine.py)."""
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter, ParameterError
from advinterp.ablation import ReferenceGridAblation, grid_boxes
from advinterp.registry import get_ablation_backend
from advinterp.analyzers.pse import (PAPER_INPUT, PSEAnalyzer, PSEResult, ablated_class_logits, default_grid_size, grid_norms,
                                     psr_category, pse_grids, sensitivity, table1)
from advinterp.testing import assert_model_unchanged


# ---------------------------------------------------------------------------- fixtures
def linear_model(c=2, h=8, w=8, k=5, seed=0):
    """Z(x) = W vec(x) + b in float64: logit changes are hand-computable."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(c * h * w, k).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, c * h * w, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    return ModelAdapter(nn.Sequential(nn.Flatten(), lin), nb_classes=k, input_shape=(c, h, w), name="linear")


def pair(n=3, c=2, h=8, w=8, eps=0.1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, c, h, w, generator=g, dtype=dtype) * 0.8 + 0.1
    xa = (x0 + (torch.rand(n, c, h, w, generator=g, dtype=dtype) * 2 - 1) * eps).clamp(0, 1)
    return x0, xa


def batch_of(x0, xa, y, t, **kw):
    return AdversarialBatch(x0=x0, x_adv=xa, y_true=torch.as_tensor(y), y_target=None if t is None else torch.as_tensor(t),
                            attack=kw.pop("attack", "test"), **kw)


class Counting(nn.Module):
    """Records the batch size of every forward."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.sizes = []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.inner(x)


# ---------------------------------------------------------------------------- definition 1
def test_linear_model_matches_closed_form():
    model = linear_model()
    x0, xa = pair()
    y, t = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 0])
    res = PSEAnalyzer(size=3, stride=2, xi=1e-6).analyze(model, batch_of(x0, xa, y, t))
    W = model.module[1].weight.detach().numpy()
    delta = (xa - x0).numpy()
    boxes = grid_boxes(8, 8, 3, 2)
    assert np.array_equal(res.boxes, boxes.numpy()) and res.n_grids == len(boxes) == 16
    for i in range(3):
        for j, (y0, x0_, y1, x1) in enumerate(boxes.tolist()):
            dg = np.zeros_like(delta[i])
            dg[:, y0:y1, x0_:x1] = delta[i][:, y0:y1, x0_:x1]
            change = -W @ dg.reshape(-1)            # Z(x' - d_G) - Z(x') = -W d_G
            d0 = max(change[y[i]], 1e-6)
            dt = max(-change[t[i]], 1e-6)
            np.testing.assert_allclose(res.d0[i, j], d0, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(res.dt[i, j], dt, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(res.s[i, j], d0 + dt, rtol=1e-9)
            np.testing.assert_allclose(res.r[i, j], np.log2(dt / d0), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(res.grid_l2[i, j], np.linalg.norm(dg), rtol=1e-12)
            np.testing.assert_allclose(res.grid_linf[i, j], np.abs(dg).max(), rtol=1e-12)
    # both floors are active somewhere, so xi matters
    assert (res.d0 == 1e-6).any() and (res.dt == 1e-6).any() and (res.d0 > 1e-6).any()
    assert res.y_true.tolist() == [0, 1, 2] and res.target.tolist() == [3, 4, 0]


def test_xi_and_untouched_grids():
    model = linear_model()
    x0, _ = pair(n=1)
    xa = x0.clone()
    xa[:, :, 0:4, 0:4] = (xa[:, :, 0:4, 0:4] + 0.05).clamp(0, 1)  # only grid 0 of four is perturbed
    res = PSEAnalyzer(size=4, xi=0.01).analyze(model, batch_of(x0, xa, [0], [1]))
    assert res.perturbed.tolist() == [[True, False, False, False]]
    # x' - delta_G = x' exactly on untouched grids: both changes are 0, floored at xi, r = 0 (balanced)
    assert (res.d0[0, 1:] == 0.01).all() and (res.dt[0, 1:] == 0.01).all() and (res.r[0, 1:] == 0).all()
    assert (res.category[0, 1:] == 0).all()
    assert (res.logit_t0[0, 1:] == res.adv_logit_t0[0]).all()
    # category shares count perturbed grids only
    fr = res.fractions()
    assert sum(float(v[0]) for v in fr.values()) == pytest.approx(1.0)
    assert max(float(v[0]) for v in fr.values()) == 1.0


def test_untargeted_batches_use_the_adversarial_prediction():
    model = linear_model()
    x0, xa = pair(n=2)
    y_adv = model.predict(xa)
    b = AdversarialBatch(x0=x0, x_adv=xa, y_true=torch.tensor([0, 1]), y_adv=y_adv)
    res = PSEAnalyzer(size=4).analyze(model, b)
    assert res.target.tolist() == y_adv.tolist()
    ablated, adv = ablated_class_logits(model, x0, xa, grid_boxes(8, 8, 4, 4), torch.stack([b.y_true, y_adv], 1))
    d0, dt, _, _ = sensitivity(ablated, adv, 1e-6)
    # grid norms are all positive here, so the analyzer used these very logits
    np.testing.assert_allclose(res.d0, d0)
    np.testing.assert_allclose(res.dt, dt)
    with pytest.raises(ParameterError, match="y_adv"):
        PSEAnalyzer(size=4).analyze(model, AdversarialBatch(x0=x0, x_adv=xa, y_true=torch.tensor([0, 1])))


def test_shipped_model_matches_a_loop_of_single_forwards(synthetic_model):
    x, y = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    g = torch.Generator().manual_seed(1)
    xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 0.06).clamp(0, 1)
    t = (y + 3) % 12
    res = PSEAnalyzer(size=16, stride=8, max_batch=20).analyze(synthetic_model, batch_of(x, xa, y, t))
    assert res.n_grids == 49  # overlapping 16x16 windows, stride 8
    with torch.no_grad():
        for i in range(2):
            z_adv = synthetic_model.logits(xa[i:i + 1])[0].double()
            for j, (y0, x0_, y1, x1) in enumerate(res.boxes.tolist()):
                img = xa[i:i + 1].clone()
                img[:, :, y0:y1, x0_:x1] = x[i:i + 1, :, y0:y1, x0_:x1]
                z = synthetic_model.logits(img)[0].double()
                d0 = max(float(z[y[i]] - z_adv[y[i]]), 1e-6)
                dt = max(float(z_adv[t[i]] - z[t[i]]), 1e-6)
                assert abs(res.d0[i, j] - d0) < 1e-5 and abs(res.dt[i, j] - dt) < 1e-5, (i, j)
    assert res.backend == get_ablation_backend("cpu").name


def test_removing_delta_from_every_grid_gives_back_the_clean_image(synthetic_model):
    x, y = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    xa = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    an = PSEAnalyzer(size=16)  # non-overlapping 16x16 grids tiling 64x64
    boxes = an.grids(64, 64)
    img = xa.clone()
    for j in range(len(boxes)):  # take delta out of grid after grid
        img = ReferenceGridAblation().ablate(img, x, boxes, j, 1)[:, 0]
    assert torch.equal(img, x)
    with torch.no_grad():
        assert torch.equal(synthetic_model.logits(img), synthetic_model.logits(x))
    # on a linear model the per-grid logit changes of a tiling add up to Z(x0) - Z(x')
    model = linear_model()
    x0, xa = pair()
    res = PSEAnalyzer(size=4).analyze(model, batch_of(x0, xa, [0, 1, 2], [1, 2, 3]))
    with torch.no_grad():
        z0, za = model.logits(x0), model.logits(xa)
    total_t0 = (res.logit_t0 - res.adv_logit_t0[:, None]).sum(1)
    total_t = (res.logit_t - res.adv_logit_t[:, None]).sum(1)
    np.testing.assert_allclose(total_t0, (z0 - za)[torch.arange(3), [0, 1, 2]].numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(total_t, (z0 - za)[torch.arange(3), [1, 2, 3]].numpy(), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- batching / memory budget
@pytest.mark.parametrize("max_batch", [1, 5, 7, 16, 17, 100])
def test_forward_batches_never_exceed_max_batch(max_batch):
    inner = linear_model().module
    counting = Counting(inner)
    model = ModelAdapter(counting, nb_classes=5, input_shape=(2, 8, 8), classifier="inner.1")
    x0, xa = pair(n=3)
    res = PSEAnalyzer(size=2, max_batch=max_batch).analyze(model, batch_of(x0, xa, [0, 1, 2], [1, 2, 3]))
    m = res.n_grids
    assert m == 16
    assert max(counting.sizes) <= max_batch
    assert sum(counting.sizes) == 3 * (m + 1)  # one forward per ablated image plus Z(x')
    ref = PSEAnalyzer(size=2, max_batch=1000).analyze(linear_model(), batch_of(x0, xa, [0, 1, 2], [1, 2, 3]))
    np.testing.assert_allclose(res.d0, ref.d0, rtol=1e-12)
    np.testing.assert_allclose(res.dt, ref.dt, rtol=1e-12)


def test_reference_backend_is_forced_by_the_parameter(synthetic_model):
    x, y = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    xa = (x + 0.04 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    b = batch_of(x, xa, y, (y + 2) % 12)
    ref = PSEAnalyzer(size=8, stride=4, backend="reference", max_batch=40).analyze(synthetic_model, b)
    auto = PSEAnalyzer(size=8, stride=4, backend="auto", max_batch=40).analyze(synthetic_model, b)
    assert ref.backend == "reference" and auto.backend == get_ablation_backend("cpu").name
    # the same ablated images in the same batches: the same logits, whichever backend built them
    assert np.array_equal(ref.logit_t0, auto.logit_t0) and np.array_equal(ref.logit_t, auto.logit_t)


# ---------------------------------------------------------------------------- errors and parameters
def test_bad_inputs_raise_parameter_errors():
    model = linear_model()
    x0, xa = pair()
    with pytest.raises(ParameterError, match="x_adv"):
        AdversarialBatch(x0=x0, x_adv=xa[:, :, :7], y_true=torch.tensor([0, 1, 2]))
    with pytest.raises(ParameterError, match="x_adv"):
        ablated_class_logits(model, x0, xa[:, :1], grid_boxes(8, 8, 4, 4), torch.zeros(3, 2, dtype=torch.long))
    b = batch_of(x0, xa, [0, 1, 2], [1, 2, 3])
    with pytest.raises(ParameterError, match="size=9 .*no larger than the image"):
        PSEAnalyzer(size=9).analyze(model, b)
    with pytest.raises(ParameterError, match="stride"):
        PSEAnalyzer(stride=0)
    with pytest.raises(ParameterError, match="stride"):
        pse_grids(8, 8, 4, 0)
    with pytest.raises(ParameterError, match="stride"):
        PSEAnalyzer(size=3, stride=4)  # gaps between grids
    with pytest.raises(ParameterError, match="stride"):
        PSEAnalyzer(stride=5).analyze(model, b)  # default size on 8x8 is 2
    with pytest.raises(ParameterError, match="batch.target"):
        PSEAnalyzer(size=4).analyze(model, batch_of(x0, xa, [0, 1, 2], [1, 2, 7]))  # 5 classes
    with pytest.raises(ParameterError, match="batch.y_true"):
        PSEAnalyzer(size=4).analyze(model, batch_of(x0, xa, [0, -1, 2], [1, 2, 3]))
    with pytest.raises(ParameterError, match="classes"):
        ablated_class_logits(model, x0, xa, grid_boxes(8, 8, 4, 4), torch.full((3, 2), 5))
    with pytest.raises(ParameterError, match="suppression"):
        PSEAnalyzer(suppression=2.0, promotion=1.0)
    with pytest.raises(ParameterError, match="xi"):
        PSEAnalyzer(xi=0.0)
    with pytest.raises(ParameterError, match="max_batch"):
        PSEAnalyzer(max_batch=0)
    with pytest.raises(ParameterError, match="extra"):
        PSEAnalyzer(size=4).analyze(model, b, extra=1)


def test_default_grid_size_scales_the_papers_13_on_299():
    """The paper's 13 px grid is on 299 px inputs (issue 13, item 4): its Table A1 l0 of
    268,123 exceeds 224*224*3 = 150,528 but not 299*299*3 = 268,203. By hand: round(13 * s / 299)."""
    assert PAPER_INPUT == 299 and 224 * 224 * 3 < 268123 <= 299 * 299 * 3
    assert default_grid_size(299, 299) == 13 and default_grid_size(224, 224) == 10   # 9.73
    assert default_grid_size(64, 64) == 3 and default_grid_size(64, 128) == 3         # 2.78
    assert default_grid_size(16, 16) == 2 and default_grid_size(600, 400) == 17        # 0.70 -> 2; 17.39
    b = pse_grids(64, 64)
    # 21 windows of 3 px per side, plus one flush with the border (61..64): 22 x 22
    assert len(b) == 22 * 22 and (b[:, 2] - b[:, 0] == 3).all() and b[:, 2].max() == 64
    assert PSEAnalyzer().grids(299, 299)[0].tolist() == [0, 0, 13, 13]


def test_psr_categories_and_thresholds():
    r = np.array([-2.0, -1.0, -0.5, 0.0, 1.0, 1.0001, 5.0])
    assert psr_category(r).tolist() == [-1, 0, 0, 0, 0, 1, 1]
    assert psr_category(r, -0.25, 0.5).tolist() == [-1, -1, -1, 0, 1, 1, 1]
    with pytest.raises(ParameterError):
        psr_category(r, 1.0, -1.0)
    model = linear_model()
    x0, xa = pair()
    res = PSEAnalyzer(size=2, suppression=-0.5, promotion=2.0).analyze(model, batch_of(x0, xa, [0, 1, 2], [1, 2, 3]))
    assert np.array_equal(res.category, psr_category(res.r, -0.5, 2.0))
    assert {-1, 0, 1} <= set(np.unique(res.category).tolist())


def test_sensitivity_by_hand():
    ablated = np.array([[[3.0, 1.0], [1.0, 2.5], [2.0, 3.0]]])  # Z(x'-dG)[t0], Z(x'-dG)[t] per grid
    adv = np.array([[2.0, 3.0]])                                  # Z(x')[t0] = 2, Z(x')[t] = 3
    d0, dt, s, r = sensitivity(ablated, adv, xi=0.1)
    np.testing.assert_allclose(d0, [[1.0, 0.1, 0.1]])
    np.testing.assert_allclose(dt, [[2.0, 0.5, 0.1]])
    np.testing.assert_allclose(s, [[3.0, 0.6, 0.2]])
    np.testing.assert_allclose(r, [[1.0, np.log2(5.0), 0.0]])


# ---------------------------------------------------------------------------- Table 1 and the result
def hand_result(d0, dt, l2, attack="a", model="m", success=None, boxes=None, size=(4, 4)):
    d0, dt, l2 = (np.asarray(v, dtype=np.float64) for v in (d0, dt, l2))
    n, m = d0.shape
    r = np.log2(dt / d0)
    boxes = grid_boxes(*size, 2, 2).numpy() if boxes is None else boxes
    z = np.zeros((n, m))
    return PSEResult(d0=d0, dt=dt, s=d0 + dt, r=r, category=psr_category(r), grid_l2=l2, grid_linf=l2 / 2,
                     logit_t0=z, logit_t=z, adv_logit_t0=z[:, 0], adv_logit_t=z[:, 0], boxes=boxes,
                     image_size=size, y_true=np.zeros(n, dtype=np.int64), target=np.ones(n, dtype=np.int64),
                     success=success, attack=attack, model=model)


def test_table1_equals_scipy_on_hand_data():
    d0a, dta, l2a = [[1, 2, 3, 4], [4, 1, 2, 2]], [[1, 1, 2, 5], [1, 3, 3, 1]], [[1, 2, 2.5, 4], [2, 2, 1, 3]]
    d0b, dtb, l2b = [[2, 1, 1, 3]], [[1, 2, 1, 1]], [[1, 1, 1, 1]]  # constant strength: undefined correlation
    ra = hand_result(d0a, dta, l2a, success=np.array([True, False]))
    rb = hand_result(d0b, dtb, l2b)
    other = hand_result(d0a, dta, l2a, attack="b")
    rows = table1([ra, other, rb], success_only=False)
    assert [(r["attack"], r["n"], r["n_valid"], r["n_dropped"]) for r in rows] == [("a", 3, 2, 0), ("b", 2, 2, 0)]
    for name, fn in (("pearson", stats.pearsonr), ("kendall", stats.kendalltau)):
        for key, vals in (("d0", d0a), ("dt", dta), ("s", np.add(d0a, dta))):
            expected = np.mean([fn(vals[i], l2a[i])[0] for i in range(2)])
            assert rows[0][f"{name}_{key}"] == pytest.approx(expected, rel=1e-12)
    row_ok = table1([ra, rb])[0]  # the default (issue 13): the paper averages over adversarial examples
    assert row_ok["n"] == 2 and row_ok["n_dropped"] == 1
    assert row_ok["pearson_s"] == pytest.approx(stats.pearsonr(np.add(d0a, dta)[0], l2a[0])[0])
    np.testing.assert_equal(table1([ra, rb], success_only=True), [row_ok])  # NaN-aware
    np.testing.assert_equal(ra.rows(), table1([ra]))
    with pytest.raises(ParameterError):
        table1([ra, "x"])


def test_result_views_s1_and_save_load(tmp_path):
    d0 = [[1.0, 2.0, 3.0, 4.0]]
    res = hand_result(d0, [[1e-6] * 4], [[1, 1, 1, 1]])
    assert res.top_grids(2).tolist() == [[3, 2]]
    # s = d0 + 1e-6, ascending 1, 2, 3, 4 (sum 10): 30 % reached at 2 -> keep grids 2 and 3
    assert res.s1_grids().tolist() == [[False, False, True, True]]
    mask = res.s1_mask()
    assert mask.shape == (1, 1, 4, 4) and mask[0, 0, 2:, :].all() and not mask[0, 0, :2, :].any()
    assert res.significant(0.5).tolist() == [[False, False, True, True]]
    assert res.significant(0.7).sum() == 3  # ceil(0.7 * 4) grids by count
    assert res.significant(0.7, "cumulative").tolist() == res.s1_grids(0.3).tolist()
    rows = res.image_rows(k=2)
    assert rows[0]["top_grids"] == "3 2" and rows[0]["frac_promotion"] == 0.0
    back = PSEResult.load(res.save(tmp_path / "pse.pt"))
    for f in ("d0", "dt", "s", "r", "category", "grid_l2", "boxes"):
        assert np.array_equal(getattr(back, f), getattr(res, f)), f
    assert back.image_size == res.image_size and back.table() == res.table()


def test_analyzer_leaves_the_model_unchanged_and_saves(synthetic_model, tmp_path):
    x, y = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    xa = (x + 0.03).clamp(0, 1)
    b = batch_of(x, xa, y, (y + 1) % 12, success=torch.tensor([True, False]))
    an = advinterp.get_analyzer("pse", size=16)
    res = assert_model_unchanged(synthetic_model, lambda: an.analyze(synthetic_model, b))
    back = PSEResult.load(res.save(tmp_path / "r.pt"))
    assert np.array_equal(back.d0, res.d0) and back.success.tolist() == [True, False]
    assert back.backend == res.backend and back.model == "synthetic-cnn"


def test_grid_norms_by_hand():
    d = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    d[0, 0, 0, 0], d[0, 0, 0, 1], d[0, 0, 3, 3] = 3.0, -4.0, 2.0
    l2, linf = grid_norms(d, grid_boxes(4, 4, 2, 2))
    assert l2.tolist() == [[5.0, 0.0, 0.0, 2.0]] and linf.tolist() == [[4.0, 0.0, 0.0, 2.0]]


# ---------------------------------------------------------------------------- figures
def test_pse_figures_render_and_colour_the_categories(tmp_path):
    from advinterp.viz import PSR_COLORS, plot_pse_sensitivity, plot_psr_overlay, psr_overlay, save_figure

    # 4 grids of 2x2 on 4x4: suppression, promotion, balanced, unperturbed
    d0 = [[4.0, 1.0, 1.0, 1e-6]]
    dt = [[1.0, 4.0, 1.5, 1e-6]]
    res = hand_result(d0, dt, [[1.0, 1.0, 1.0, 0.0]])
    rgba = psr_overlay(res, 0, top=1.0)
    assert rgba.shape == (4, 4, 4)
    assert tuple(rgba[0, 0, :3]) == PSR_COLORS[-1] and tuple(rgba[0, 3, :3]) == PSR_COLORS[1]
    assert tuple(rgba[3, 0, :3]) == PSR_COLORS[0]
    assert (rgba[:2, :, 3] == 1).all() and (rgba[2:, 2:, 3] == 0).all()  # the unperturbed grid is not drawn
    assert (psr_overlay(res, 0, top=0.34)[..., 3] > 0).sum() == 8  # ceil(0.34 * 3) = 2 grids
    x = torch.rand(1, 3, 4, 4)
    save_figure(plot_pse_sensitivity(res, 0, x_adv=x, classes=["a", "b"]), tmp_path / "fig2.png")
    save_figure(plot_psr_overlay(res, np.random.rand(4, 4), 0, image=x), tmp_path / "fig4.png")
    save_figure(plot_psr_overlay(res, torch.rand(1, 4, 4), [0]), tmp_path / "fig4b.png")
    assert (tmp_path / "fig2.png").stat().st_size > 0 and (tmp_path / "fig4.png").stat().st_size > 0
    with pytest.raises(ParameterError, match="cam"):
        plot_psr_overlay(res, np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="index"):
        plot_pse_sensitivity(res, 5)


def test_analyzers_reject_unknown_context_keywords():
    from advinterp.testing import toy_batch, toy_model

    model = toy_model()
    batch = toy_batch(model)
    with pytest.raises(ParameterError, match=r"bogus.*takes no context"):
        advinterp.get_analyzer("pse").analyze(model, batch, bogus=1)
    with pytest.raises(ParameterError, match=r"bogus.*Accepted: explainer=, maps="):
        advinterp.get_analyzer("is").analyze(model, batch, bogus=1)


# ---------------------------------------------------------------------------- exactness and signs (issue 11)
class _BatchSizeDependent(nn.Module):
    """Adds 1e-3 x (batch size) to the logits: a deterministic stand-in for the kernel choice
    by batch size, so the test below fails on any CPU if untouched grids take a second
    forward's logits instead of Z(x')."""

    def forward(self, z):
        return z + 1e-3 * z.shape[0]


@pytest.mark.parametrize("jitter", [False, True], ids=["float32", "batch-dependent"])
@pytest.mark.parametrize("max_batch", [5, 3, 256])
def test_untouched_grids_get_exactly_z_of_x_adv_on_a_float32_conv_model(max_batch, jitter):
    """docs/pse.md: x' - delta_G = x' on grids with delta_G = 0, so their change is exactly 0.
    A float32 conv net's logits depend on the batch size (a batch of one takes other kernels
    than a batch of several on the CPU): with 16 grids and max_batch 5 or 3 the last grid is
    forwarded alone while Z(x') is computed in batches of several images, so the analyzer must
    take Z(x') itself on untouched grids, not the logits of a second forward."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
                        *([_BatchSizeDependent()] if jitter else []))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    model = ModelAdapter(net, nb_classes=5, input_shape=(3, 16, 16), name="conv32")
    n = 6
    x0 = torch.rand(n, 3, 16, 16, generator=g) * 0.8 + 0.1
    xa = x0.clone()
    # each image perturbed in a few of its 16 grids (4x4 windows), the others untouched
    for i in range(n):
        for j in {i % 16, (3 * i + 5) % 16}:
            r, c = divmod(j, 4)
            xa[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += (torch.rand(3, 4, 4, generator=g) - 0.5) * 0.1
    xa = xa.clamp(0, 1)
    assert model.dtype == torch.float32
    res = PSEAnalyzer(size=4, max_batch=max_batch).analyze(model, batch_of(x0, xa, [0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]))
    untouched = res.grid_l2 == 0
    assert untouched.sum() >= n * 12 and (~untouched).any()
    for i in range(n):
        for j in range(16):
            if untouched[i, j]:
                assert res.logit_t0[i, j] == res.adv_logit_t0[i] and res.logit_t[i, j] == res.adv_logit_t[i]
                assert res.d0[i, j] == res.xi and res.dt[i, j] == res.xi and res.r[i, j] == 0.0


def test_sensitivity_signs_of_both_changes_by_hand():
    """d0 = Z(x'-dG)[t0] - Z(x')[t0] (t0 recovers: positive), dt = Z(x')[t] - Z(x'-dG)[t] (t
    loses: positive); each floored at xi. Grids chosen so a flipped sign in either changes it."""
    adv = np.array([[1.0, 4.0]])
    ablated = np.array([[[3.0, 4.0],     # t0 up by 2, t unchanged  -> d0 = 2, dt = xi
                         [1.0, 1.5],     # t0 unchanged, t down 2.5 -> d0 = xi, dt = 2.5
                         [-1.0, 6.0],    # t0 down 2, t up 2        -> both xi
                         [2.0, 3.0]]])   # t0 up 1, t down 1        -> 1, 1
    d0, dt, s, r = sensitivity(ablated, adv, xi=0.25)
    np.testing.assert_array_equal(d0, [[2.0, 0.25, 0.25, 1.0]])
    np.testing.assert_array_equal(dt, [[0.25, 2.5, 0.25, 1.0]])
    np.testing.assert_array_equal(s, [[2.25, 2.75, 0.5, 2.0]])
    np.testing.assert_allclose(r, [[np.log2(0.125), np.log2(10.0), 0.0, 0.0]], rtol=1e-15)
    assert psr_category(r).tolist() == [[-1, 1, 0, 0]]


def test_psr_thresholds_are_strict_at_exactly_minus_one_and_one():
    r = np.array([np.nextafter(-1.0, -2.0), -1.0, np.nextafter(-1.0, 0.0), 0.0,
                  np.nextafter(1.0, 0.0), 1.0, np.nextafter(1.0, 2.0)])
    assert psr_category(r).tolist() == [-1, 0, 0, 0, 0, 0, 1]
    # r = log2(dt / d0) lands exactly on the ends: dt = 2 d0 and d0 = 2 dt are balanced
    _, _, _, r2 = sensitivity(np.array([[[3.0, 2.0], [2.0, 2.0]]]), np.array([[1.0, 4.0]]), xi=1e-6)
    assert r2.tolist() == [[0.0, 1.0]]          # (d0, dt) = (2, 2) and (1, 2)
    _, _, _, r3 = sensitivity(np.array([[[5.0, 2.0], [3.0, 3.0]]]), np.array([[1.0, 4.0]]), xi=1e-6)
    assert r3.tolist() == [[-1.0, -1.0]]        # (d0, dt) = (4, 2) and (2, 1)
    assert psr_category(r2).tolist() == [[0, 0]] and psr_category(r3).tolist() == [[0, 0]]


def test_table1_standard_errors_by_hand():
    """se_<column> = std(ddof=1) / sqrt(n) of the per-image correlations (issue 13: gaps are
    reported with their standard error); undefined correlations are left out."""
    from advinterp.stats import nanmean, standard_error

    assert standard_error([1.0, 3.0]) == pytest.approx(1.0)            # std 1.414 / sqrt 2
    assert standard_error([1.0, np.nan, 3.0, np.inf]) == pytest.approx(1.0)
    assert np.isnan(standard_error([2.0])) and np.isnan(nanmean([np.nan]))
    d0, dt, l2 = [[1, 2, 3, 4], [4, 1, 2, 2], [1, 1, 2, 1]], [[1, 1, 2, 5], [1, 3, 3, 1], [2, 1, 1, 1]], \
        [[1, 2, 2.5, 4], [2, 2, 1, 3], [1, 3, 1, 2]]
    row = table1([hand_result(d0, dt, l2)])[0]
    per_image = [stats.pearsonr(np.add(d0, dt)[i], l2[i])[0] for i in range(3)]
    assert row["se_pearson_s"] == pytest.approx(np.std(per_image, ddof=1) / np.sqrt(3), rel=1e-12)
    assert "se_frac_promotion" not in row
