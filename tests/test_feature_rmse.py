"""feature_rmse (B5, Ding et al. eq. 4, Tables 4-7): per-channel RMSE equals a hand computation,
the streaming ranking equals a brute-force one, the batch size does not change the result, and
the layer choice / errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter
from advinterp.analyzers.feature_rmse import FeatureRMSE, FeatureRMSEAnalyzer, rmse_layers
from advinterp.exceptions import ParameterError
from advinterp.model import model_fingerprint
from advinterp.testing import toy_batch, toy_model


class TwoLayer(nn.Module):
    """conv(1 -> 2, 1x1) -> ReLU -> GAP -> linear: every feature value is computable by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.5]))
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def _two_layer_batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4, generator=g)
    xa = (x0 + 0.3 * (torch.rand(3, 1, 4, 4, generator=g) - 0.5)).clamp(0, 1)
    return x0, xa


def test_rmse_equals_a_hand_computation_on_a_two_layer_model():
    model = ModelAdapter(TwoLayer(), nb_classes=2, input_shape=(1, 4, 4))
    x0, xa = _two_layer_batch()
    res = FeatureRMSEAnalyzer().analyze(model, AdversarialBatch.from_pair(x0, xa, torch.zeros(3, dtype=torch.long)))
    assert res.layers == ("conv", "relu") and res.channels == (2, 2) and res.n == 3
    a, b = x0.double().numpy()[:, 0], xa.double().numpy()[:, 0]
    w, bias = np.array([2.0, -1.0]), np.array([0.0, 0.5])
    conv_a = w[None, :, None, None] * a[:, None] + bias[None, :, None, None]
    conv_b = w[None, :, None, None] * b[:, None] + bias[None, :, None, None]
    for layer, fa, fb in (("conv", conv_a, conv_b), ("relu", np.maximum(conv_a, 0), np.maximum(conv_b, 0))):
        want = np.sqrt(((fa - fb) ** 2).mean((2, 3))).mean(0)  # eq. 4 per channel, mean over pairs
        np.testing.assert_allclose(res.layer_rmse(layer), want, rtol=1e-5, atol=1e-7)
    # the relu of channel 1 (-x + 0.5) clips part of the map: it differs from the conv's
    assert not np.allclose(res.layer_rmse("relu")[1], res.layer_rmse("conv")[1])


def _brute_force(model, batch, layers):
    """All pairs at once, one forward per layer (the obvious implementation)."""
    out = {}
    for l in layers:
        a = model.activations(batch.x0, [l], copy=True)[l].double()
        b = model.activations(batch.x_adv, [l], copy=True)[l].double()
        out[l] = ((a - b) ** 2).mean((2, 3)).sqrt().mean(0).numpy()
    return out


def test_streaming_ranking_equals_a_brute_force_one():
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=10).tensors()
    xa = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=3, num_random_init=0).generate(model, x, y).x_adv
    batch = AdversarialBatch.from_pair(x, xa, y)
    res = FeatureRMSEAnalyzer(batch_size=4).analyze(model, batch)
    assert res.layers[0] == "layer1.conv" and "layer1.pool" not in res.layers  # Identity is no feature layer
    assert {"layer2.pool", "layer4.relu", "avgpool"} <= set(res.layers)
    want = _brute_force(model, batch, res.layers)
    for l in res.layers:
        np.testing.assert_allclose(res.layer_rmse(l), want[l], rtol=1e-4, atol=1e-6)
    brute = sorted(((l, c, v) for l in res.layers for c, v in enumerate(want[l])), key=lambda t: -t[2])
    got = res.ranking()
    assert len(got) == len(brute) == sum(res.channels)
    assert [(e["layer"], e["channel"]) for e in got[:10]] == [(l, c) for l, c, _ in brute[:10]]
    assert [(e["layer"], e["channel"]) for e in res.least(5)] == [(l, c) for l, c, _ in brute[::-1][:5]]
    assert [e["rmse"] for e in got] == sorted((e["rmse"] for e in got), reverse=True)
    # Fig. 4: the maps of the globally most different channels, first pair
    top = res.most(4)
    assert res.map_layers == tuple(e["layer"] for e in top) and res.map_channels == tuple(e["channel"] for e in top)
    acts = model.activations(torch.cat([x[:1], xa[:1]]), [top[0]["layer"]], copy=True)[top[0]["layer"]]
    np.testing.assert_allclose(res.maps_clean[0], acts[0, top[0]["channel"]].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.maps_adv[0], acts[1, top[0]["channel"]].numpy(), rtol=1e-5, atol=1e-6)


def test_batch_size_does_not_change_the_result():
    model = toy_model()
    batch = toy_batch(model, n=7)
    one = FeatureRMSEAnalyzer(batch_size=1).analyze(model, batch)
    whole = FeatureRMSEAnalyzer(batch_size=7).analyze(model, batch)
    three = FeatureRMSEAnalyzer(batch_size=3).analyze(model, batch)
    for other in (whole, three):
        assert other.layers == one.layers and other.n == one.n == 7
        for a, b in zip(one.rmse, other.rmse):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        assert [e["name"] for e in other.ranking()] == [e["name"] for e in one.ranking()]
        for a, b in zip(one.maps_clean, other.maps_clean):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_streaming_keeps_no_activation_of_earlier_batches():
    """Structural memory check: the hooks hold only the current batch's (B, C) reductions."""
    from advinterp.analyzers import feature_rmse as fr

    model = toy_model()
    batch = toy_batch(model, n=6)
    seen = []
    real = torch.mean

    def spy(t, *a, **k):
        out = real(t, *a, **k)
        if k.get("dtype") == torch.float64:
            seen.append(tuple(out.shape))
        return out

    fr.torch.mean = spy
    try:
        sums, n, first = fr.feature_rmse_sums(model, batch.x0, batch.x_adv, ("features.conv1",), batch_size=2)
    finally:
        fr.torch.mean = real
    assert n == 6 and seen == [(2, 8)] * 3 and first == {}
    assert sums["features.conv1"].shape == (8,) and sums["features.conv1"].dtype == torch.float64


def test_layers_all_list_and_errors():
    model = toy_model()
    batch = toy_batch(model)
    assert rmse_layers(model, "all") == ("features.conv1", "features.bn1", "features.conv2")
    res = FeatureRMSEAnalyzer(layers=["features.conv2"], n_maps=0).analyze(model, batch)
    assert res.layers == ("features.conv2",) and res.maps_clean == ()
    with pytest.raises(ParameterError, match="head"):
        FeatureRMSEAnalyzer(layers=["head"]).analyze(model, batch)  # 2-d output
    with pytest.raises(ParameterError, match="nope"):
        FeatureRMSEAnalyzer(layers=["nope"]).analyze(model, batch)
    with pytest.raises(ParameterError, match="layer"):
        res.layer_rmse("features.conv1")


def test_empty_batch_gives_nan_and_model_unchanged():
    model = toy_model()
    before = model_fingerprint(model)
    res = FeatureRMSEAnalyzer().analyze(model, toy_batch(model)[:0])
    assert res.n == 0 and res.channels == (8, 8) and all(np.isnan(r).all() for r in res.rmse)
    res.table()
    assert model_fingerprint(model) == before
    back = FeatureRMSE.load(FeatureRMSEAnalyzer().analyze(model, toy_batch(model)).save(
        __import__("tempfile").mkdtemp() + "/r.pt"))
    assert back.ranking()[0]["name"]


STUDY = """
title = "feature maps"
seed = 0

[models.m]
model = "counting-toy"

[data.d]
dataset = "toy-data"
params = { n = 12 }

[[steps]]
id = "pgd"
attack = "pgd"
params = { eps = 0.0627, eps_step = 0.0157, max_iter = 5, num_random_init = 0 }

[[steps]]
id = "rmse"
analyzer = "feature_rmse"
batch = "pgd"
params = { batch_size = 5 }

[[steps]]
id = "mask"
analyzer = "channel_masking"
batch = "pgd"
context = { rmse = "rmse" }
params = { k = 3, fractions = [0, 0.25, 0.5] }

[[steps]]
id = "scale.first"
analyzer = "filter_scaling"
batch = "pgd"
context = { rmse = "rmse" }
params = { k = 3 }

[[steps]]
id = "scale.last"
analyzer = "filter_scaling"
batch = "pgd"
context = { rmse = "rmse" }
params = { k = 3, target = "last", which = "least" }
"""


def test_study_chains_rmse_into_masking_and_scaling_and_builds_the_report(tmp_path, fresh_registry):
    import json
    import sys
    from pathlib import Path

    from advinterp.study import Study

    sys.path.insert(0, str(Path(__file__).parent))
    import study_fixtures

    study_fixtures.register()
    run = Study.from_text(STUDY, tmp_path / "study.toml").run(tmp_path / "run", log=lambda *_: None)
    rmse = run.steps["rmse"].result
    mask = run.steps["mask"].result
    assert mask.source == "context" and mask.channels == tuple(e["name"] for e in rmse.most(3))
    first, last = run.steps["scale.first"].result, run.steps["scale.last"].result
    assert first.channels == tuple(e["name"] for e in rmse.most(3, layers=["inner.features.conv1"]))
    assert last.channels == tuple(e["name"] for e in rmse.least(3, layers=["inner.features.conv2"]))
    html = (run.out / "index.html").read_text()
    for title in ("Feature-map differences", "Masking the most different feature maps",
                  "Scaling the filters of sensitive"):
        assert title in html
    names = {p.name for p in run.out.rglob("*.png")}
    assert {"feature_rmse_layers.png", "feature_maps_rmse.png", "channel_masking_sweep.png"} <= names
    summary = json.loads((run.out / "summary.json").read_text())
    assert [r["step"] for r in summary["filter_scaling"]] == ["scale.first", "scale.last"]
    assert summary["feature_rmse"][0]["n"] == 12
