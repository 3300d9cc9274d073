"""advinterp-a2e, capability C5 (Jalwana et al. 2020, Sec. 5.2): the class-conditional Gaussian,
eq. 4's penalty in Algorithm 1, and the robust-model analyzers a2e.generation, a2e.inpainting
and a2e.manipulation (each next to targeted l2 PGD)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import advinterp
from advinterp.data import AdversarialBatch
from advinterp.exceptions import ParameterError
from advinterp.testing import assert_model_unchanged, toy_model

pytest.importorskip("advinterp_a2e")
from advinterp_a2e import attack_to_explain  # noqa: E402
from advinterp_a2e.algorithm import penalty_gradient  # noqa: E402
from advinterp_a2e.gaussian import class_gaussian, downsample  # noqa: E402
from advinterp_a2e.generation import A2EGeneration, scaled_eta  # noqa: E402
from advinterp_a2e.inpainting import (PSNR_CAP, A2EInpainting, corrupt, psnr, region_psnr, square_mask,  # noqa: E402
                                      ssim)
from advinterp_a2e.manipulation import A2EManipulation, sketch  # noqa: E402

torch.set_num_threads(2)
SMALL = {"max_iter": 3, "batch": 3, "n_samples": 4, "pgd_max_iter": 3}


# ---------------------------------------------------------------------------- the Gaussian
def test_gaussian_of_identical_flat_images_samples_the_image():
    img = torch.ones(3, 8, 8) * torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1)
    g = class_gaussian(img[None].repeat(5, 1, 1, 1), factor=4, ridge=0.0)
    assert g.small == (3, 2, 2) and g.n == 5
    s = g.sample(3, torch.Generator().manual_seed(0))
    assert s.shape == (3, 3, 8, 8) and torch.allclose(s, img.expand(3, -1, -1, -1), atol=1e-6)
    assert torch.count_nonzero(g.covariance()) == 0


def test_gaussian_mean_and_covariance_of_two_images_by_hand():
    a = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(1))
    b = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(2))
    g = class_gaussian(torch.stack([a, b]), factor=1, ridge=0.01)
    d = (a - b).flatten().double()
    assert torch.allclose(g.mean, ((a + b) / 2).flatten().double())
    # Sigma = E[(I - mu)(I - mu)^T] = (a - b)(a - b)^T / 4, plus the ridge
    assert torch.allclose(g.covariance(), torch.outer(d, d) / 4 + 0.01 * torch.eye(12, dtype=torch.float64))


def test_gaussian_downsamples_by_area_and_samples_have_its_moments():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    small = downsample(x, 4)
    assert torch.allclose(small[1, 2, 0, 1], x[1, 2, 0:4, 4:8].mean())
    g = class_gaussian(x, factor=4, ridge=1e-3)
    z = g.sample_small(40000, torch.Generator().manual_seed(4)).flatten(1)
    assert torch.allclose(z.mean(0), g.mean, atol=0.01)
    emp = torch.cov(z.T, correction=0)
    assert (emp - g.covariance()).abs().max() < 0.01
    a = g.sample(2, torch.Generator().manual_seed(5))
    assert torch.equal(a, g.sample(2, torch.Generator().manual_seed(5))) and a.min() >= 0 and a.max() <= 1


def test_gaussian_bad_inputs_are_named():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ParameterError, match="factor"):
        class_gaussian(x, factor=0)
    with pytest.raises(ParameterError, match="ridge"):
        class_gaussian(x, ridge=-1.0)
    with pytest.raises(ParameterError, match="at least one image"):
        class_gaussian(x[:0])
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        class_gaussian(x * 3)


def test_scaled_eta_is_the_documented_rule():
    assert scaled_eta(40, (3, 224, 224)) == pytest.approx(40.0)
    assert scaled_eta(40, (3, 64, 64)) == pytest.approx(40 * math.sqrt(3 * 64 * 64 / (3 * 224 * 224)))
    assert scaled_eta(21, (2, 3, 64, 64)) == pytest.approx(6.0)


# ---------------------------------------------------------------------------- eq. 4 in Algorithm 1
def test_penalty_gradient_is_autograd_of_the_penalty():
    p = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keep = torch.ones(1, 4, 4, dtype=torch.float64)
    keep[:, 1:3, 1:3] = 0
    q = p.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(10 * (q * keep).norm(), q)
    assert torch.allclose(penalty_gradient(p, keep, 10.0), want)
    assert torch.equal(penalty_gradient(torch.zeros(3, 4, 4), keep.float(), 10.0), torch.zeros(3, 4, 4))
    assert torch.allclose(penalty_gradient(torch.tensor([3.0, 4.0]), torch.ones(2), 1.0), torch.tensor([0.6, 0.8]))


def _toy_problem():
    model = toy_model(num_classes=4, size=16)
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(3, 16, 16, generator=g), torch.rand(8, 3, 16, 16, generator=g)


def test_penalty_weight_zero_is_algorithm_1_bit_for_bit():
    model, seed, samples = _toy_problem()
    kw = dict(eta=2.0, batch=4, gamma=1.0, max_iter=4, refine=False, progress=False, search_radius=0.02)
    plain = attack_to_explain(model, seed, samples, 1, **kw)
    f = torch.zeros(16, 16)
    f[4:10, 4:10] = 1
    zero = attack_to_explain(model, seed, samples, 1, penalty_mask=f, penalty_beta=0.0, **kw)
    assert torch.equal(plain.p, zero.p) and torch.equal(plain.wp, zero.wp)
    assert "penalty_beta" not in plain.params and zero.params["penalty_pixels"] == 36


def test_a_strong_penalty_keeps_p_inside_the_corrupt_region():
    model, seed, samples = _toy_problem()
    kw = dict(eta=2.0, batch=4, gamma=1.0, max_iter=12, refine=False, progress=False, search_radius=0.02)
    f = torch.zeros(1, 16, 16)
    f[:, 4:10, 4:10] = 1

    def outside(res):
        return float((res.p * (1 - f)).norm() / res.p.norm())

    free = attack_to_explain(model, seed, samples, 1, **kw)
    held = attack_to_explain(model, seed, samples, 1, penalty_mask=f, penalty_beta=1e3, **kw)
    assert outside(free) > 0.5  # 86 % of the pixels lie outside F
    assert outside(held) < 0.5 * outside(free)


def test_bad_penalty_settings_are_named():
    model, seed, samples = _toy_problem()
    kw = dict(max_iter=1, batch=3, progress=False)
    with pytest.raises(ParameterError, match="penalty_mask"):
        attack_to_explain(model, seed, samples, 1, penalty_mask=torch.zeros(8, 8), **kw)
    with pytest.raises(ParameterError, match="only 0 and 1"):
        attack_to_explain(model, seed, samples, 1, penalty_mask=torch.full((16, 16), 0.5), **kw)
    with pytest.raises(ParameterError, match="penalty_beta"):
        attack_to_explain(model, seed, samples, 1, penalty_mask=torch.zeros(16, 16), penalty_beta=-1.0, **kw)


# ---------------------------------------------------------------------------- metrics, masks, sketches
def test_psnr_ssim_and_region_psnr_by_hand():
    a = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    assert psnr(a, a) == PSNR_CAP and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-6)  # mse 0.01
    f = square_mask((16, 16), 4, (2, 3))
    assert f.sum() == 16 and f[0, 2, 3] == 1 and f[0, 6, 3] == 0
    b = a + 0.2 * f  # changed only inside F: mse there 0.04 -> 13.98 dB
    assert region_psnr(a, b, f) == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-6)
    assert ssim(a, b) < 1.0
    with pytest.raises(ParameterError, match="inside"):
        square_mask((16, 16), 4, (14, 0))


def test_corrupt_fills_with_the_mean_colour_outside_the_mask():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    f = square_mask((8, 8), 3, (1, 1))
    m = corrupt(x, f, "mean")
    keep = (1 - f).bool().expand(3, -1, -1)
    assert torch.equal(m[keep], x[keep])
    want = torch.stack([x[c][~f[0].bool()].mean() for c in range(3)])
    assert torch.allclose(m[:, 2, 2], want, atol=1e-6)
    assert torch.equal(corrupt(x, f, 0.0)[:, 1:4, 1:4], torch.zeros(3, 3, 3))


def test_sketch_of_a_two_colour_image_is_the_image():
    x = torch.zeros(3, 12, 12)
    x[0] = 0.9
    x[:, 3:8, 4:9] = torch.tensor([0.1, 0.6, 0.2]).view(3, 1, 1)
    assert torch.allclose(sketch(x, colours=2, blur=1), x, atol=1e-6)
    s = sketch(torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0)), colours=3, blur=3)
    assert len(torch.unique(s.flatten(1).T, dim=0)) <= 3
    with pytest.raises(ParameterError, match="odd"):
        sketch(x, blur=2)


# ---------------------------------------------------------------------------- the analyzers (toy model)
def _batch():
    model = toy_model(num_classes=4, size=16)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(8, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return model, AdversarialBatch.from_pair(x, x, y)


def _hand_probs(model, x, y):
    with torch.no_grad():
        return torch.softmax(model.module((x - 0.5) / 0.25).double(), 1).gather(1, y[:, None])[:, 0].numpy()


def test_generation_seeds_budget_confidences_and_model_unchanged():
    model, batch = _batch()
    an = A2EGeneration(images=2, standard_model=None, eta=1.5, **SMALL)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    assert res.seeds.shape == (2, 3, 16, 16) and list(res.target) == [0, 1]
    # seed i: the first draw of the Gaussian of the batch's *other* images of its class, seed + i
    for i in range(2):
        g = class_gaussian(batch.x0[4 + i][None], factor=4, ridge=1e-4)
        assert torch.equal(res.seeds[i], g.sample(1, torch.Generator().manual_seed(i))[0])
    assert (res.l2_a2e <= 1.5 + 1e-5).all() and (res.l2_pgd <= 1.5 + 1e-5).all()
    assert np.allclose(res.robust_pgd, _hand_probs(model, res.pgd, torch.tensor([0, 1])), atol=1e-6)
    assert np.allclose(res.robust_seed, _hand_probs(model, res.seeds, torch.tensor([0, 1])), atol=1e-6)
    assert (res.robust_pgd > res.robust_seed).all()  # targeted PGD raised the intended class
    assert np.isnan(res.standard_a2e).all() and res.attack_params["pgd"]["eps"] == 1.5
    assert len(res.rows()) == 2 and {r["image"] for r in res.summary_rows()} == {"seed", "a2e", "pgd"}


def test_generation_takes_class_images_from_context_and_names_missing_ones():
    model, batch = _batch()
    cx = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    cy = torch.tensor([0, 0, 1, 3])
    res = A2EGeneration(images=1, standard_model=None, **SMALL).analyze(model, batch, class_images=cx,
                                                                        class_labels=cy)
    g = class_gaussian(cx[:2], factor=4, ridge=1e-4)
    assert torch.equal(res.seeds[0], g.sample(1, torch.Generator().manual_seed(0))[0]) and res.n_class_images[0] == 2
    with pytest.raises(ParameterError, match="no image of class 2"):
        A2EGeneration(images=3, standard_model=None, **SMALL).analyze(model, batch, class_images=cx, class_labels=cy)
    with pytest.raises(ParameterError, match="together"):
        A2EGeneration(**SMALL).analyze(model, batch, class_images=cx)
    lonely = AdversarialBatch.from_pair(batch.x0[:4], batch.x0[:4], batch.y_true[:4])
    with pytest.raises(ParameterError, match="other than image 0"):
        A2EGeneration(images=1, standard_model=None, **SMALL).analyze(model, lonely)


def test_inpainting_metrics_masks_and_restricted_pgd():
    model, batch = _batch()
    an = A2EInpainting(images=2, patch=6, **SMALL)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    eta = scaled_eta(21, (3, 16, 16))
    assert res.eta == pytest.approx(eta) and res.beta == 10.0
    for i in range(2):
        f = res.masks[i]
        assert f.sum() == 36
        assert torch.equal(res.masked[i], corrupt(batch.x0[i], f, "mean"))
        assert torch.equal(res.original[i], batch.x0[i])
        # PGD restricted to F: nothing changes outside it
        assert torch.equal((res.pgd[i] - res.masked[i]) * (1 - f), torch.zeros(3, 16, 16))
        assert res.psnr_a2e[i] == pytest.approx(psnr(batch.x0[i], res.a2e[i]))
        assert res.ssim_pgd[i] == pytest.approx(ssim(batch.x0[i], res.pgd[i]))
        assert res.psnr_region_masked[i] == pytest.approx(region_psnr(batch.x0[i], res.masked[i], f))
    assert (res.l2_a2e <= eta + 1e-5).all() and (res.l2_pgd <= eta + 1e-5).all()
    assert np.all(res.outside_pgd == 0)
    free = A2EInpainting(images=1, patch=6, pgd_restrict=False, **SMALL).analyze(model, batch)
    assert free.outside_pgd[0] > 0
    rows = {r["image"]: r for r in res.summary_rows()}
    assert rows["a2e"]["psnr_wins"] + rows["pgd"]["psnr_wins"] <= 2
    with pytest.raises(ParameterError, match="patch"):
        A2EInpainting(images=1, patch=17, **SMALL).analyze(model, batch)


def test_manipulation_seeds_are_sketches_with_refinement():
    model, batch = _batch()
    an = A2EManipulation(images=1, standard_model=None, gamma=0.05, refine_every=1, **SMALL)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    assert torch.equal(res.seeds[0], sketch(batch.x0[0], 3, 5))
    assert torch.equal(res.original[0], batch.x0[0])
    assert res.refinements[0] >= 1 and res.reached[0] >= 1
    assert res.l2_pgd[0] <= scaled_eta(60, (3, 16, 16)) + 1e-5


def test_analyzers_registered_with_sections_and_parameters_checked(tmp_path):
    names = {i.name for i in advinterp.list_components("analyzer")}
    assert {"a2e.generation", "a2e.inpainting", "a2e.manipulation"} <= names
    from advinterp.api import Run
    from advinterp_a2e.report import SECTIONS

    model, batch = _batch()
    run = Run(out=tmp_path)
    for name, cls, kw in (("a2e.generation", A2EGeneration, {"standard_model": None}),
                          ("a2e.inpainting", A2EInpainting, {"patch": 4}),
                          ("a2e.manipulation", A2EManipulation, {"standard_model": None})):
        res = cls(images=1, **SMALL, **kw).analyze(model, batch)
        group = SimpleNamespace(kind="analyzer", name=name, steps=[SimpleNamespace(id=f"s.{name}", result=res)])
        section = SECTIONS[("analyzer", name)](group, run)
        assert section.figures and (tmp_path / section.figures[0][1]).exists()
        assert run.summary[name.replace(".", "_")]
    with pytest.raises(ParameterError, match="fill"):
        A2EInpainting(fill="black")
    with pytest.raises(ParameterError, match="eta"):
        A2EGeneration(eta=0)
    with pytest.raises(ParameterError, match="blur"):
        A2EManipulation(blur=4)
