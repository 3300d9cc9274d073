"""filter_scaling (B7, Ding et al. Tables 10-13): exactly the chosen output channels of the conv
are scaled by the factor inside the context, all others unchanged; the weights are restored bit
for bit afterwards, also when the body or the analyzer raises; the channel choice follows the
ranking; errors name the value and the fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import advinterp
from advinterp.analyzers.confidence_change import top1
from advinterp.analyzers.feature_rmse import FeatureRMSEAnalyzer
from advinterp.analyzers.filter_scaling import FilterScalingAnalyzer, scaled_filters, target_convs
from advinterp.exceptions import ParameterError
from advinterp.model import model_fingerprint
from advinterp.testing import ToyModelFailure, toy_batch, toy_data, toy_model


def test_exactly_the_chosen_output_channels_are_scaled_and_restored_bit_for_bit():
    model = toy_model()
    x, _ = toy_data(n=3)
    before = model_fingerprint(model)
    raw = {k: v.clone() for k, v in model.module.state_dict().items()}
    conv = model.layer("features.conv1")
    ref = model.activations(x, ["features.conv1"], copy=True)["features.conv1"]
    with scaled_filters(model, {"features.conv1": [1, 6]}, 1.8):
        got = model.activations(x, ["features.conv1"], copy=True)["features.conv1"]
        assert not torch.equal(conv.weight, raw["features.conv1.weight"])
    chosen = torch.zeros(8, dtype=torch.bool)
    chosen[[1, 6]] = True
    torch.testing.assert_close(got[:, chosen], 1.8 * ref[:, chosen], rtol=1e-5, atol=1e-6)
    assert torch.equal(got[:, ~chosen], ref[:, ~chosen])
    assert model_fingerprint(model) == before
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, raw[k]), k


def test_restored_when_the_body_raises_and_bad_arguments_change_nothing():
    model = toy_model()
    before = model_fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        with scaled_filters(model, {"features.conv1": [0], "features.conv2": [7]}, 3.0):
            raise RuntimeError("boom")
    assert model_fingerprint(model) == before
    with pytest.raises(ParameterError, match="features.conv1:8"):
        with scaled_filters(model, {"features.conv2": [0], "features.conv1": [8]}, 2.0):
            pass
    with pytest.raises(ParameterError, match="BatchNorm2d"):
        with scaled_filters(model, {"features.bn1": [0]}, 2.0):
            pass
    with pytest.raises(ParameterError, match="factor"):
        with scaled_filters(model, {"features.conv1": [0]}, float("nan")):
            pass
    assert model_fingerprint(model) == before


def test_restored_when_the_model_raises_inside_the_analyzer():
    model = toy_model()
    batch = toy_batch(model, n=4)
    before = model_fingerprint(model)
    net = model.module
    net.calls = 0
    FilterScalingAnalyzer(k=3, batch_size=4).analyze(model, batch)
    last = net.calls  # the last forward is the 'after' measurement of x', with the filters scaled
    seen = []
    conv = model.layer("features.conv1")
    orig = conv.weight.clone()
    hook = conv.register_forward_pre_hook(lambda m, i: seen.append(not torch.equal(m.weight, orig)))
    net.calls, net.fail_at = 0, last
    try:
        with pytest.raises(ToyModelFailure):
            FilterScalingAnalyzer(k=3, batch_size=4).analyze(model, batch)
    finally:
        net.fail_at = 0
        hook.remove()
    assert seen and seen[-1], "the failure did not happen while the filters were scaled"
    assert model_fingerprint(model) == before


def test_analyzer_scales_the_most_and_least_different_filters_of_the_target():
    model = toy_model()
    batch = toy_batch(model, n=8)
    rmse = FeatureRMSEAnalyzer().analyze(model, batch)
    most = FilterScalingAnalyzer(k=3).analyze(model, batch, rmse=rmse)
    want = [e["name"] for e in rmse.most(3, layers=["features.conv1"])]
    assert most.channels == tuple(want) and most.layers == ("features.conv1",) and most.source == "context"
    alone = FilterScalingAnalyzer(k=3).analyze(model, batch)
    assert alone.channels == most.channels and alone.source == "batch"
    np.testing.assert_allclose(alone.rmse, most.rmse, rtol=1e-6)
    least = FilterScalingAnalyzer(k=2, target="last", which="least").analyze(model, batch, rmse=rmse)
    assert least.channels == tuple(e["name"] for e in rmse.least(2, layers=["features.conv2"]))
    # the after-state equals the model with the filters scaled by hand
    chans = [int(c.split(":")[1]) for c in most.channels]
    with scaled_filters(model, {"features.conv1": chans}, 1.8):
        lab, conf = top1(model, batch.x_adv)
    np.testing.assert_array_equal(most.change.adv_label_after, lab)
    np.testing.assert_allclose(most.change.adv_conf_after, conf)
    assert most.rows()[0]["factor"] == 1.8 and most.rows()[0]["k"] == 3
    ex = FilterScalingAnalyzer(channels=["features.conv2:0"], factor=0.0).analyze(model, batch)
    assert ex.which == "explicit" and np.isnan(ex.rmse).all()


def test_targets_and_errors():
    model = toy_model()
    batch = toy_batch(model, n=4)
    assert target_convs("t", model, "first") == ("features.conv1",)
    assert target_convs("t", model, "last") == ("features.conv2",)
    net = advinterp.get_model("synthetic-cnn")
    assert target_convs("t", net, "first") == ("layer1.conv",) and target_convs("t", net, "last") == ("layer4.conv",)
    with pytest.raises(ParameterError, match="BatchNorm2d"):
        FilterScalingAnalyzer(target="features.bn1").analyze(model, batch)
    with pytest.raises(ParameterError, match="features.conv1:8"):
        FilterScalingAnalyzer(channels=["features.conv1:8"]).analyze(model, batch)
    with pytest.raises(ParameterError, match="features.conv2"):
        FilterScalingAnalyzer().analyze(model, batch, rmse=FeatureRMSEAnalyzer(layers=["features.conv2"]).analyze(
            model, batch))
    with pytest.raises(ParameterError, match="which"):
        FilterScalingAnalyzer(which="middle")
