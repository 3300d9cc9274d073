"""advinterp-a2e analyzer ``a2e.saliency``: the paper's claim (p alone, rescaled, is classified as
the target) measured against single-image PGD-l2 / C&W-l2 perturbations of the same l2 norm."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp.data import AdversarialBatch
from advinterp.exceptions import ParameterError
from advinterp.model import ModelAdapter
from advinterp.testing import assert_model_unchanged, toy_batch, toy_data, toy_model

pytest.importorskip("advinterp_a2e")
from advinterp_a2e.saliency import A2ESaliency, A2ESaliencyResult, alone_confidence, match_l2  # noqa: E402
from advinterp_a2e.transfer import rescale  # noqa: E402


FAST = {"pgd": {"max_iter": 10},
        "cw_l2": {"max_iter": 20, "binary_search_steps": 2, "learning_rate": 0.1, "initial_const": 1.0}}


def channel_model() -> ModelAdapter:
    """logits = the mean of each channel (3 classes): a rescaled image whose channel c is 1 and
    the others 0 has logits one-hot at c, so P(c) = e / (e + 2)."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        net[2].weight.copy_(torch.eye(3))
        net[2].bias.zero_()
    net.eval()
    return ModelAdapter(net, nb_classes=3, input_shape=(3, 8, 8), name="channels")


def one_channel(c: int, scale: float = 0.1) -> torch.Tensor:
    p = torch.full((3, 8, 8), -scale)
    p[c] = scale
    return p


def test_match_l2_gives_the_requested_norm_inside_the_box():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g)
    d = (torch.rand(4, 3, 8, 8, generator=g) - 0.5) * 0.01
    want = torch.tensor([0.5, 1.0, 2.0, 3.0])
    out = match_l2(d, x0, want)
    assert torch.allclose(out.double().flatten(1).norm(dim=1), want.double(), rtol=1e-4)
    assert float((x0 + out).min()) >= -1e-6 and float((x0 + out).max()) <= 1 + 1e-6
    # no clipping needed (x0 = 0.5, a small norm): a pure rescaling of delta
    mid = torch.full((1, 3, 8, 8), 0.5)
    small = match_l2(d[:1], mid, 0.4)
    assert torch.allclose(small, d[:1] * 0.4 / d[:1].norm(), atol=1e-7)
    # a zero delta stays zero; a bad norm is refused
    assert torch.equal(match_l2(torch.zeros(1, 3, 8, 8), mid, 1.0), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ParameterError):
        match_l2(d, x0, -1.0)
    with pytest.raises(ParameterError):
        match_l2(d[0], x0[0], 1.0)


def test_rescale_invariance_of_p_alone():
    """The classified image depends only on delta's shape, not its scale or offset."""
    model = toy_model()
    g = torch.Generator().manual_seed(1)
    d = torch.randn(3, 3, 16, 16, generator=g) * 0.05
    t = torch.tensor([0, 1, 2])
    for s, c in ((7.0, 0.0), (0.3, 0.2), (2.0, -1.0)):
        assert torch.allclose(rescale(d * s + c), rescale(d), atol=1e-6)
        a = alone_confidence(d, t, {"m": model})["m"]
        b = alone_confidence(d * s + c, t, {"m": model})["m"]
        assert np.allclose(a[0], b[0], atol=1e-6) and np.array_equal(a[1], b[1])


def test_rates_against_a_hand_computed_model():
    """The channel-mean model: p_i with channel c_i up classifies as c_i alone. Targets 0, 1, 2, 0
    against p channels 0, 1, 0, 2: hits on images 0 and 1, so rate 2/4 and probability
    (2 e/(e+2) + 2/(e+2)) / 4."""
    model = channel_model()
    x0 = torch.full((4, 3, 8, 8), 0.5)
    p = torch.stack([one_channel(0), one_channel(1), one_channel(0), one_channel(2)])
    t = torch.tensor([0, 1, 2, 0])
    y = torch.tensor([1, 2, 1, 1])
    batch = AdversarialBatch(x0=x0, x_adv=x0 + p, y_true=y, y_target=t, attack="a2e")
    res = A2ESaliency(baselines=[], models=[]).analyze(model, batch)
    assert res.methods == ("a2e",) and res.models == ("source",)
    e = math.e
    hit, miss = e / (e + 2), 1 / (e + 2)
    assert np.array_equal(res.top1[:, 0, 0], [1, 1, 0, 0])
    assert np.allclose(res.prob[:, 0, 0], [hit, hit, miss, miss], atol=1e-6)
    (row,) = res.summary_rows()
    assert row["target_top1"] == 2 and row["images"] == 4 and row["target_rate"] == pytest.approx(0.5)
    assert row["mean_target_prob"] == pytest.approx((2 * hit + 2 * miss) / 4, abs=1e-6)
    assert np.allclose(res.l2, p.flatten(1).norm(dim=1).numpy(), atol=1e-6)
    # x0 + p: channel means 0.6 / 0.4 -> the analysed model predicts channel c too
    assert np.array_equal(res.success[:, 0], [1, 1, 0, 0])
    # images = k: the first k pairs only
    first = A2ESaliency(baselines=[], models=[], images=2).analyze(model, batch)
    assert np.array_equal(first.top1[:, 0, 0], [1, 1]) and len(first.rows()) == 2
    # a zero perturbation (a failed baseline) has nothing to classify: left out of the rates
    p0 = p.clone()
    p0[3] = 0
    zero = A2ESaliency(baselines=[], models=[]).analyze(
        model, AdversarialBatch(x0=x0, x_adv=x0 + p0, y_true=y, y_target=t, attack="a2e"))
    assert np.isnan(zero.top1[3]).all() and np.isnan(zero.prob[3]).all()
    assert zero.summary_rows()[0]["images"] == 3 and zero.summary_rows()[0]["target_rate"] == pytest.approx(2 / 3)
    # an image whose target is its own label (untargeted batch, y_adv = y) is skipped (NaN)
    un = AdversarialBatch(x0=x0, x_adv=x0 + p, y_true=torch.tensor([0, 2, 1, 1]), y_adv=torch.tensor([0, 1, 0, 2]))
    skipped = A2ESaliency(baselines=[], models=[]).analyze(model, un)
    assert np.isnan(skipped.top1[0]).all() and skipped.summary_rows()[0]["images"] == 3


def test_ratio_rows_are_rate_over_rate():
    n, m, k = 4, 3, 1
    top1 = np.zeros((n, m, k))
    top1[:, 0, 0] = [1, 1, 1, 0]      # a2e 3/4
    top1[:, 1, 0] = [1, 0, 0, 0]      # pgd 1/4
    prob = np.full((n, m, k), 0.1)
    prob[:, 0, 0] = 0.6
    res = A2ESaliencyResult(methods=("a2e", "pgd", "cw_l2"), models=("m",), target=np.zeros(n, dtype=np.int64),
                            l2=np.ones(n), norms=np.ones((n, m)), success=np.ones((n, m)), prob=prob, top1=top1,
                            x0=torch.zeros(n, 3, 2, 2), alone=torch.zeros(n, m, 3, 2, 2))
    rows = {r["baseline"]: r for r in res.ratio_rows()}
    assert rows["pgd"]["p_rate"] == pytest.approx(0.75) and rows["pgd"]["rate_ratio"] == pytest.approx(3.0)
    assert rows["pgd"]["prob_ratio"] == pytest.approx(6.0)
    assert rows["cw_l2"]["baseline_rate"] == 0 and rows["cw_l2"]["rate_ratio"] == math.inf


def test_baselines_have_the_batch_norm_and_the_model_is_unchanged():
    model = toy_model(seed=1)  # predicts class 0; C&W reaches the runner-up class 3 (norms 0.3-1.0)
    x, _ = toy_data(4, seed=1)
    y = model.predict(x)
    with torch.no_grad():
        t = model.logits(x).argsort(1)[:, -2]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    x_adv = (x + 1.5 * noise / noise.flatten(1).norm(dim=1)[:, None, None, None]).clamp(0, 1)
    batch = AdversarialBatch.from_pair(x, x_adv, y, model=model, y_target=t, attack="a2e")
    ana = A2ESaliency(models=[], baseline_params=FAST)
    out = [None]
    assert_model_unchanged(model, lambda: out.__setitem__(0, ana.analyze(model, batch)))
    res = out[0]
    assert res.methods == ("a2e", "pgd", "cw_l2")
    l2 = (batch.x_adv - batch.x0).double().flatten(1).norm(dim=1).numpy()
    assert np.allclose(res.l2, l2) and np.allclose(res.norms[:, 0], l2)
    assert np.allclose(res.norms[:, 1], l2, rtol=1e-3)                 # PGD: eps = ||p_i||
    cw = res.norms[:, 2]
    assert (cw > 0).any(), "C&W failed on every toy image: the test says nothing"
    assert np.allclose(cw[cw > 0], l2[cw > 0], rtol=1e-3)              # C&W scaled up to ||p_i||
    # the classified images are the rescaled perturbations
    assert float(res.alone.min()) >= 0 and float(res.alone.max()) <= 1
    assert torch.allclose(res.alone[:, 0], rescale(batch.x_adv - batch.x0).float(), atol=1e-6)
    # without matching, PGD is still within its eps and C&W keeps its own (smaller) norm
    raw = A2ESaliency(models=[], baselines=["cw_l2"], baseline_params={"cw_l2": FAST["cw_l2"]},
                      match_norm=False).analyze(model, batch)
    assert (raw.norms[:, 1] < res.norms[:, 2] - 0.1)[cw > 0].all()   # C&W's minimal delta was scaled up
    assert (raw.success[:, 1] == 1)[cw > 0].all() and (res.success[:, 1:] == 1).mean() > 0.5
    # a batch of the same attack as a baseline is named apart
    same = A2ESaliency(models=[], baselines=["pgd"], baseline_params={"pgd": {"max_iter": 2}}).analyze(
        model, toy_batch(model, n=2))
    assert same.methods == ("pgd (batch)", "pgd")
    assert res.to_dict() and res.table()


@pytest.mark.parametrize("params", [
    {"baselines": "pgd"}, {"baselines": ["pgd", "pgd"]}, {"baseline_params": {"pgd": 3}},
    {"baseline_params": {"fgsm": {}}}, {"step_fraction": 0.0}, {"models": "synthetic-cnn"}])
def test_bad_params_raise(params):
    with pytest.raises(ParameterError):
        A2ESaliency(**params)


def test_bad_baseline_settings_raise_before_any_work():
    model = toy_model()
    batch = toy_batch(model, n=2)
    for params in ({"baselines": ["no-such-attack"]}, {"baseline_params": {"pgd": {"nope": 1}}},
                   {"baseline_params": {"pgd": {"max_iter": -1}}}):
        assert_model_unchanged(model, lambda: A2ESaliency(models=[], **params).analyze(model, batch),
                               ParameterError)
    with pytest.raises(ParameterError):
        A2ESaliency(models=[], include_source=False).analyze(model, batch)  # no model to classify with


def test_registered_with_a_report_section():
    assert "a2e.saliency" in {i.name for i in advinterp.list_components("analyzer")}
    from advinterp_a2e.report import SECTIONS

    assert ("analyzer", "a2e.saliency") in SECTIONS
