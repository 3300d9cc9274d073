"""The CAM-based interpretability score ``is`` (PSE paper, eqs. 5-6, Table 2)."""
import math

import numpy as np
import pytest
import torch

import advinterp
from advinterp import AdversarialBatch, Explainer, PairMaps, ParameterError, UnknownComponentError
from advinterp.data import PAIR_KEYS
from advinterp.analyzers.interpretability_score import (InterpretabilityScore, discriminative_region,
                                                        interpretability_score, table2, table2_text)
from advinterp.testing import toy_batch, toy_model


class MeanExplainer(Explainer):
    """F(x, c) = mean of x over channels (independent of c): a map we can predict."""

    name = "test-mean"

    def _explain(self, model, x, target):
        return x.mean(1), "input"


class ClassExplainer(Explainer):
    """F(x, c) = (c + 1) * channel (c mod C) of x, 2x2-average-pooled (class-dependent, half
    resolution so the upsampling is exercised); counts the ``_explain`` calls."""

    name = "test-class"

    def __init__(self, **params):
        super().__init__(**params)
        self.calls = 0

    def _explain(self, model, x, target):
        self.calls += 1
        pooled = torch.nn.functional.avg_pool2d(x, 2)
        return pooled[torch.arange(len(x)), target % x.shape[1]] * (target + 1.0)[:, None, None], "pool"


def _registered(name):
    return advinterp.get_registry().has("explainer", name)


# ------------------------------------------------------------------------ the pure function
def test_is_exactly_one_inside_and_zero_outside():
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[:, :2] = True
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, :, :2] = torch.randn(3, 2, 4)  # inside B
    delta[1, :, 2:] = torch.randn(3, 2, 4)  # outside B
    s = interpretability_score(region, delta)
    assert s.shape == (2,) and s.dtype == np.float64
    assert s[0] == 1.0 and s[1] == 0.0


def test_is_partial_overlap_by_hand():
    # energy 3 inside (three entries of 1), 1 outside: IS = sqrt(3/4)
    region = torch.tensor([[[1, 1], [0, 0]]])
    delta = torch.zeros(1, 2, 2, 2)
    delta[0, 0, 0, 0] = 1.0
    delta[0, 1, 0, 0] = -1.0  # second channel, same pixel: B is broadcast over channels
    delta[0, 0, 0, 1] = 1.0
    delta[0, 1, 1, 1] = 1.0   # outside
    np.testing.assert_allclose(interpretability_score(region, delta), [math.sqrt(0.75)], rtol=1e-12)
    # the same region as (N, 1, H, W) and (N, C, H, W) masks
    np.testing.assert_allclose(interpretability_score(region[:, None], delta), [math.sqrt(0.75)], rtol=1e-12)
    np.testing.assert_allclose(interpretability_score(region[:, None].expand(1, 2, 2, 2), delta),
                               [math.sqrt(0.75)], rtol=1e-12)


def test_is_is_nan_for_zero_delta():
    region = torch.ones(2, 3, 3, dtype=torch.bool)
    delta = torch.zeros(2, 3, 3, 3)
    delta[1, 0, 0, 0] = 0.1
    s = interpretability_score(region, delta)
    assert math.isnan(s[0]) and s[1] == 1.0


def test_is_rejects_bad_inputs():
    with pytest.raises(ParameterError, match="region"):
        interpretability_score(torch.full((1, 2, 2), 0.5), torch.ones(1, 3, 2, 2))  # not 0/1
    with pytest.raises(ParameterError, match="region"):
        interpretability_score(torch.ones(1, 3, 3), torch.ones(1, 3, 2, 2))  # wrong size
    with pytest.raises(ParameterError, match="delta"):
        interpretability_score(torch.ones(1, 2, 2), torch.ones(3, 2, 2))


def test_region_is_the_top_30_percent_of_distinct_values():
    g = torch.Generator().manual_seed(0)
    maps = torch.stack([torch.randperm(256, generator=g).float().reshape(16, 16) for _ in range(3)])
    b = discriminative_region(maps, 0.7)
    assert b.dtype == torch.bool and b.shape == (3, 16, 16)
    # nu interpolates between the 179th and 180th smallest of 256: the top 77 pixels are kept
    assert b.flatten(1).sum(1).tolist() == [77, 77, 77]
    assert (maps[b] >= 179).all() and (maps[~b] < 179).all()
    assert discriminative_region(maps, 0.5).flatten(1).sum(1).tolist() == [128, 128, 128]
    # ties at nu are kept: a constant map is one region
    assert discriminative_region(torch.zeros(1, 4, 4), 0.7).all()
    # B is invariant to a positive per-image scaling (normalised maps)
    assert torch.equal(discriminative_region(maps * torch.tensor([2.0, 0.5, 7.0])[:, None, None]), b)


# ------------------------------------------------------------------------ the analyzer
@pytest.fixture(scope="module")
def toy():
    model = toy_model()
    return model, toy_batch(model)


def test_analyzer_with_an_explainer_instance(toy):
    model, batch = toy
    res = advinterp.get_analyzer("is").analyze(model, batch, explainer=MeanExplainer())
    assert isinstance(res, InterpretabilityScore)
    n, _, h, w = batch.x0.shape
    assert res.is_x0_t0.shape == (n,) and res.is_xadv_t.shape == (n,)
    assert res.region_x0_t0.shape == (n, h, w) and res.region_x0_t0.dtype == bool
    # the regions are B of the hand-made maps; the quantile keeps about 30% of the pixels
    b0 = discriminative_region(batch.x0.mean(1), 0.7)
    ba = discriminative_region(batch.x_adv.mean(1), 0.7)
    assert np.array_equal(res.region_x0_t0, b0.numpy()) and np.array_equal(res.region_xadv_t, ba.numpy())
    frac = res.region_x0_t0.reshape(n, -1).mean(1)
    assert np.all(np.abs(frac - 0.3) < 0.02), frac
    # per image, IS is the pure function on the regions
    np.testing.assert_array_equal(res.is_x0_t0, interpretability_score(b0, batch.delta))
    np.testing.assert_array_equal(res.is_xadv_t, interpretability_score(ba, batch.delta))
    assert np.all((res.is_x0_t0 >= 0) & (res.is_x0_t0 <= 1))
    assert res.explainer == "test-mean" and res.model == model.name and res.attack == batch.attack
    row = res.rows()[0]
    assert set(row) >= {"attack", "model", "explainer", "is_x0_t0", "is_xadv_t"}
    ok = np.ones(n, bool) if res.success is None else np.asarray(res.success, bool)
    assert row["n_dropped"] == int((~ok).sum()) and row["n"] == int(ok.sum())   # successful pairs only
    want = float(np.nanmean(res.is_x0_t0[ok])) if ok.any() else float("nan")
    assert row["is_x0_t0"] == pytest.approx(want, nan_ok=True)
    every = table2([res], success_only=False)[0]
    assert every["n"] == n and every["is_x0_t0"] == pytest.approx(float(np.nanmean(res.is_x0_t0)))
    res.table()


def test_quantile_parameter_and_precomputed_maps(toy):
    model, batch = toy
    res = advinterp.get_analyzer("is", quantile=0.5).analyze(model, batch, explainer=MeanExplainer())
    frac = res.region_x0_t0.reshape(len(batch), -1).mean(1)
    assert np.all(np.abs(frac - 0.5) < 0.02)
    # precomputed (normalised) maps give the same result as running the explainer
    maps = {"x0_t0": batch.x0.mean(1) / 3.0, "xadv_t": batch.x_adv.mean(1) * 2.0}
    res2 = advinterp.get_analyzer("is", quantile=0.5).analyze(model, batch, maps=maps)
    np.testing.assert_array_equal(res.is_x0_t0, res2.is_x0_t0)
    np.testing.assert_array_equal(res.is_xadv_t, res2.is_xadv_t)
    with pytest.raises(ParameterError, match="maps"):
        advinterp.get_analyzer("is").analyze(model, batch, maps={"x0_t0": maps["x0_t0"]})
    with pytest.raises(ParameterError, match="explainer"):
        advinterp.get_analyzer("is").analyze(model, batch, explainer=object())


def test_pair_maps_from_explain_pair_are_accepted(toy):
    model, batch = toy
    exp = ClassExplainer()
    pair = exp.explain_pair(model, batch)
    res = advinterp.get_analyzer("is").analyze(model, batch, maps=pair)
    ref = advinterp.get_analyzer("is").analyze(model, batch, explainer=ClassExplainer())
    assert res.explainer == ref.explainer == "test-class"
    np.testing.assert_array_equal(res.region_x0_t0, ref.region_x0_t0)
    np.testing.assert_array_equal(res.region_xadv_t, ref.region_xadv_t)
    np.testing.assert_array_equal(res.is_x0_t0, ref.is_x0_t0)
    # a dict of the pair's maps works too; anything else with a maps() method does not
    res2 = advinterp.get_analyzer("is").analyze(model, batch, maps=pair.maps(), explainer="test-class")
    np.testing.assert_array_equal(res2.is_xadv_t, ref.is_xadv_t)

    class DuckMaps:
        def maps(self):
            return pair.maps()

    with pytest.raises(ParameterError, match="maps"):
        advinterp.get_analyzer("is").analyze(model, batch, maps=DuckMaps())


# ------------------------------------------------------------------------ Explainer.explain_many / explain_pair
def test_explain_many_equals_explain_per_target_vector(toy):
    model, batch = toy
    exp = ClassExplainer()
    many = exp.explain_many(model, batch.x0, [batch.y_true, 2])
    assert exp.calls == 2 and len(many) == 2
    for attr, t in zip(many, [batch.y_true, 2]):
        one = exp.explain(model, batch.x0, t)
        assert torch.equal(attr.maps, one.maps) and torch.equal(attr.layer_maps, one.layer_maps)
        assert torch.equal(attr.target, one.target) and (attr.method, attr.layer) == ("test-class", "pool")
        assert attr.maps.shape == (len(batch), 16, 16) and attr.layer_maps.shape == (len(batch), 8, 8)
    assert not torch.equal(many[0].maps, many[1].maps)  # the maps depend on the class
    assert exp.explain_many(model, batch.x0, []) == []
    with pytest.raises(ParameterError, match=r"targets\[1\]"):
        exp.explain_many(model, batch.x0, [batch.y_true, batch.y_true + 100])
    with pytest.raises(ParameterError, match="targets"):
        exp.explain_many(model, batch.x0, batch.y_true)
    with pytest.raises(ParameterError, match="x"):
        exp.explain_many(model, batch.x0[0], [0])


@pytest.mark.parametrize("normalize", [True, False])
def test_explain_pair_of_any_explainer_equals_four_explain_calls(toy, normalize):
    model, batch = toy
    exp = ClassExplainer()
    pair = exp.explain_pair(model, batch, normalize=normalize)
    assert exp.calls == 2  # one _explain_many over [x0; x'] with [t0; t0] and [t; t]
    assert isinstance(pair, PairMaps) and pair.normalized is normalize
    assert (pair.method, pair.layer) == ("test-class", "pool") and len(pair) == len(batch)
    assert torch.equal(pair.t0, batch.y_true) and torch.equal(pair.t, batch.target)
    four = {"x0_t0": exp.explain(model, batch.x0, batch.y_true), "xadv_t0": exp.explain(model, batch.x_adv, batch.y_true),
            "x0_t": exp.explain(model, batch.x0, batch.target), "xadv_t": exp.explain(model, batch.x_adv, batch.target)}
    scale = torch.ones(len(batch))
    if normalize:  # the common per-image maximum of |map| over the four maps at input resolution
        scale = torch.stack([a.maps.abs().flatten(1).amax(1) for a in four.values()]).amax(0)
    assert torch.allclose(pair.scale, scale)
    assert list(pair.maps()) == list(PAIR_KEYS) == list(PairMaps.KEYS)
    for k, a in four.items():
        torch.testing.assert_close(pair.maps()[k], a.maps / scale[:, None, None], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(pair.layer_maps[k], a.layer_maps / scale[:, None, None], rtol=1e-6, atol=1e-7)
    with pytest.raises(ParameterError, match="batch"):
        exp.explain_pair(model, (batch.x0, batch.y_true))


def test_pair_maps_slicing(toy):
    model, batch = toy
    pair = ClassExplainer().explain_pair(model, batch)
    n = len(pair)
    for idx, rows in [(1, [1]), (-1, [n - 1]), (slice(1, 3), [1, 2]), (torch.tensor([3, 0]), [3, 0]),
                      (torch.tensor([True, False, True, False]), [0, 2])]:
        sub = pair[idx]
        assert isinstance(sub, PairMaps) and len(sub) == len(rows)
        assert (sub.method, sub.layer, sub.normalized) == (pair.method, pair.layer, pair.normalized)
        for k in PAIR_KEYS:
            assert torch.equal(getattr(sub, k), getattr(pair, k)[rows])
            assert torch.equal(sub.layer_maps[k], pair.layer_maps[k][rows])
        for f in ("scale", "t0", "t"):
            assert torch.equal(getattr(sub, f), getattr(pair, f)[rows])
    assert n == len(batch) and len(pair[n:]) == 0
    assert torch.equal(pair[[2, 1]].layer_maps["xadv_t"], pair.layer_maps["xadv_t"][[2, 1]])
    # pieces merge back into the pair (Result.merge over per_image)
    merged = PairMaps.merge([pair[:1], pair[1:]])
    assert all(torch.equal(getattr(merged, k), getattr(pair, k)) for k in (*PAIR_KEYS, "scale", "t0", "t"))
    # slices of a pair are slices of the batch's pair
    torch.testing.assert_close(ClassExplainer().explain_pair(model, batch[1:3]).x0_t, pair[1:3].x0_t)


def test_zero_delta_images_get_nan_and_are_left_out_of_the_means(toy):
    model, batch = toy
    x_adv = batch.x_adv.clone()
    x_adv[0] = batch.x0[0]
    b = AdversarialBatch(batch.x0, x_adv, batch.y_true, y_target=batch.y_target, y_adv=batch.y_adv,
                         attack="partial")
    res = advinterp.get_analyzer("is").analyze(model, b, explainer=MeanExplainer())
    assert math.isnan(res.is_x0_t0[0]) and math.isnan(res.is_xadv_t[0])
    assert np.isfinite(res.is_x0_t0[1:]).all()
    assert res.mean("x0_t0") == pytest.approx(float(res.is_x0_t0[1:].mean()))
    assert res.rows()[0]["n_valid"] == len(b) - 1


def test_save_load_round_trip(toy, tmp_path):
    model, batch = toy
    res = advinterp.get_analyzer("is").analyze(model, batch, explainer=MeanExplainer())
    back = InterpretabilityScore.load(res.save(tmp_path / "is.pt"))
    assert isinstance(back, InterpretabilityScore)
    for f in ("is_x0_t0", "is_xadv_t", "region_x0_t0", "region_xadv_t"):
        np.testing.assert_array_equal(getattr(back, f), getattr(res, f))
    assert back.region_x0_t0.dtype == bool
    assert (back.attack, back.model, back.explainer, back.quantile) == (res.attack, res.model, res.explainer,
                                                                      res.quantile)


def test_region_is_a_refinement_support(toy):
    from advinterp.supports import support_from_region

    model, batch = toy
    res = advinterp.get_analyzer("is").analyze(model, batch, explainer=MeanExplainer())
    s = support_from_region(res.region_x0_t0, tuple(batch.x0.shape[-2:]))
    assert s.shape == (len(batch), 1, *batch.x0.shape[-2:]) and s.dtype == torch.bool


def _result(attack, explainer, a, b, model="m"):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    r = np.zeros((len(a), 2, 2), dtype=bool)
    return InterpretabilityScore(a, b, r, r, attack=attack, model=model, explainer=explainer)


def test_table2_aggregates_attack_model_explainer_rows():
    results = [_result("pgd", "cam", [0.2, 0.4], [0.5, 0.7]),
               _result("str", "cam", [0.9, float("nan")], [1.0, float("nan")]),
               _result("pgd", "cam", [0.6], [0.9]),  # pooled with the first one image-wise
               _result("pgd", "gradcam", [0.1], [0.3])]
    rows = table2(results)
    assert [(r["attack"], r["explainer"]) for r in rows] == [("pgd", "cam"), ("str", "cam"), ("pgd", "gradcam")]
    assert rows[0]["n"] == 3 and rows[0]["is_x0_t0"] == pytest.approx(0.4) and rows[0]["is_xadv_t"] == pytest.approx(0.7)
    assert rows[1]["n"] == 2 and rows[1]["n_valid"] == 1 and rows[1]["is_x0_t0"] == pytest.approx(0.9)
    assert rows[2]["is_xadv_t"] == pytest.approx(0.3)
    assert "gradcam" in table2_text(results)
    with pytest.raises(ParameterError):
        table2([{"attack": "pgd"}])


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, "x", True])
def test_bad_quantile_raises(bad):
    with pytest.raises(ParameterError, match="quantile"):
        advinterp.get_analyzer("is", quantile=bad)


def test_bad_explainer_params_and_unknown_explainer(toy):
    model, batch = toy
    with pytest.raises(ParameterError, match="explainer_params"):
        advinterp.get_analyzer("is", explainer_params="cam")
    with pytest.raises(UnknownComponentError):
        advinterp.get_analyzer("is", explainer="no-such-explainer").analyze(model, batch)


# ------------------------------------------------------------------------ figures
def test_plot_cam_overlays_and_is_table(toy):
    from matplotlib.figure import Figure

    from advinterp.viz import plot_cam_overlays, plot_is_table

    model, batch = toy
    exp = MeanExplainer()
    maps = {"x0_t0": exp.explain(model, batch.x0, batch.y_true),
            "xadv_t0": exp.explain(model, batch.x_adv, batch.y_true).maps,
            "x0_t": exp.explain(model, batch.x0, batch.target).maps,
            "xadv_t": exp.explain(model, batch.x_adv, batch.target)}
    fig = plot_cam_overlays(batch.x0, batch.x_adv, maps, n=3, classes=["a", "b", "c", "d"])
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 4
    fig = plot_cam_overlays(batch.x0, batch.x_adv, {"x0_t0": maps["x0_t0"], "xadv_t": maps["xadv_t"]}, n=10,
                            titles=["one", "two"])
    assert len(fig.axes) == len(batch) * 2
    with pytest.raises(ParameterError, match="maps"):
        plot_cam_overlays(batch.x0, batch.x_adv, {"bad": maps["x0_t"]})
    results = [_result("pgd", "cam", [0.2], [0.5]), _result("str", "cam", [0.6], [0.9])]
    fig = plot_is_table(results)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(plot_is_table(table2(results)).axes) == 1


# ------------------------------------------------------------------------ with the captum plugin
@pytest.mark.skipif(not _registered("cam"), reason="the advinterp-captum plugin (explainer 'cam') is not installed")
def test_default_cam_on_the_shipped_model(synthetic_model, synthetic_test_data):
    x, y = synthetic_test_data
    x, y = x[:8], y[:8]
    batch = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=5).generate(synthetic_model, x, y)
    res = advinterp.get_analyzer("is").analyze(synthetic_model, batch)
    assert res.explainer == "cam" and res.model == "synthetic-cnn"
    assert res.region_x0_t0.shape == (8, 64, 64)
    frac = res.region_x0_t0.reshape(8, -1).mean(1)
    assert np.all((frac > 0.25) & (frac < 0.4)), frac
    valid = np.isfinite(res.is_x0_t0)
    assert valid.any() and np.all((res.is_x0_t0[valid] >= 0) & (res.is_x0_t0[valid] <= 1))
    assert np.all((res.is_xadv_t[valid] >= 0) & (res.is_xadv_t[valid] <= 1))


# ------------------------------------------------------------------------ independent oracles (issue 11)
class ChannelMixExplainer(Explainer):
    """F(x, c) = x[0] + c * x[1] + (3 - c) * x[2] (full resolution): the region depends on the
    class, not only by a positive scaling."""

    name = "test-channel-mix"

    def _explain(self, model, x, target):
        c = target.to(x.dtype)[:, None, None]
        return x[:, 0] + c * x[:, 1] + (3.0 - c) * x[:, 2], "input"


def _oracle_is(x, c, delta, q=0.7):
    """IS of eq. (6) by hand: numpy map, numpy quantile (linear interpolation), plain norms."""
    x, delta = np.asarray(x, np.float32), np.asarray(delta, np.float64)
    out = []
    for i in range(len(x)):
        f = x[i, 0] + np.float32(c[i]) * x[i, 1] + np.float32(3 - c[i]) * x[i, 2]
        nu = np.float32(np.quantile(f.astype(np.float64).ravel(), q))
        b = f >= nu
        inside = 0.0
        total = 0.0
        for ch in range(delta.shape[1]):
            for r in range(delta.shape[2]):
                for col in range(delta.shape[3]):
                    v = delta[i, ch, r, col] ** 2
                    total += v
                    inside += v if b[r, col] else 0.0
        out.append(math.sqrt(inside) / math.sqrt(total) if total > 0 else math.nan)
    return np.array(out)


@pytest.mark.filterwarnings("ignore:.*the attack failed")
@pytest.mark.parametrize("quantile", [0.7, 0.5])
def test_analyzer_equals_an_independent_oracle_with_a_class_dependent_explainer(toy, quantile):
    model, batch = toy
    t0, t = batch.y_true.numpy(), batch.target.numpy()
    assert (t0 != t).all()
    res = advinterp.get_analyzer("is", quantile=quantile).analyze(model, batch, explainer=ChannelMixExplainer())
    delta = (batch.x_adv.double() - batch.x0.double()).numpy()
    want0 = _oracle_is(batch.x0.numpy(), t0, delta, quantile)
    wanta = _oracle_is(batch.x_adv.numpy(), t, delta, quantile)
    np.testing.assert_allclose(res.is_x0_t0, want0, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.is_xadv_t, wanta, rtol=1e-6, atol=1e-9)
    # the wrong (image, class) pairs give other values: the oracle tells them apart
    assert not np.allclose(want0, _oracle_is(batch.x0.numpy(), t, delta, quantile), rtol=1e-3)
    assert not np.allclose(want0, _oracle_is(batch.x_adv.numpy(), t0, delta, quantile), rtol=1e-3)
    assert not np.allclose(wanta, _oracle_is(batch.x_adv.numpy(), t0, delta, quantile), rtol=1e-3)
    assert not np.allclose(wanta, _oracle_is(batch.x0.numpy(), t, delta, quantile), rtol=1e-3)


def test_region_keeps_ties_at_nu_by_hand():
    """B = F >= nu (eq. 5): values equal to nu are in the region."""
    m = torch.tensor([[[0.0, 0.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 3.0, 3.0]]])
    # quantile 0.25 of 10 values: position 2.25 between the 3rd and 4th smallest, both 1 -> nu = 1
    assert np.quantile(m.numpy().ravel(), 0.25) == 1.0
    b = discriminative_region(m, 0.25)
    assert b.tolist() == [[[False, False, True, True, True], [True, True, True, True, True]]]
    # nu = 2 exactly (position 5.4 between 2 and 2): the three 2s and the two 3s
    assert discriminative_region(m, 0.6).flatten().sum().item() == 5
    # nu strictly between values (position 7.2: 2 + 0.2): only the 3s
    assert discriminative_region(m, 0.8).flatten().tolist() == [False] * 8 + [True, True]


def test_table2_standard_errors(toy):
    model, batch = toy
    res = advinterp.get_analyzer("is").analyze(model, batch, explainer=MeanExplainer())
    row = table2([res], success_only=False)[0]
    v = res.is_x0_t0[np.isfinite(res.is_x0_t0)]
    assert row["se_is_x0_t0"] == pytest.approx(np.std(v, ddof=1) / np.sqrt(len(v)), rel=1e-12)
