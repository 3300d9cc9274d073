"""channel_masking (B6, Ding et al. Tables 8-9): masking equals zeroing the channel by hand, the
sweep at fraction 0 is the unmasked accuracy, the mask follows the ranking, hooks go away also
on errors, and bad channel lists are refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from advinterp.analyzers.channel_masking import ChannelMaskingAnalyzer, masked_channels
from advinterp.analyzers.confidence_change import top1
from advinterp.analyzers.feature_rmse import FeatureRMSEAnalyzer
from advinterp.exceptions import ParameterError
from advinterp.model import ModelAdapter, model_fingerprint
from advinterp.testing import toy_batch, toy_data, toy_model


def _edited(model: ModelAdapter, layer: str, channels: list[int]) -> ModelAdapter:
    """A copy of the model whose conv ``layer`` has the weight and bias rows of ``channels`` zeroed."""
    net = copy.deepcopy(model.module)
    conv = dict(net.named_modules())[layer]
    with torch.no_grad():
        conv.weight[channels] = 0
        conv.bias[channels] = 0
    return ModelAdapter(net, mean=model.mean, std=model.std, nb_classes=model.nb_classes,
                        input_shape=model.input_shape)


def test_masking_equals_zeroing_the_filters_by_hand():
    model = toy_model()
    x, _ = toy_data(n=6)
    want = _edited(model, "features.conv1", [2, 5]).logits(x)
    before = model_fingerprint(model)
    with torch.no_grad(), masked_channels(model, {"features.conv1": [5, 2]}):
        got = model.logits(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert model_fingerprint(model) == before
    assert not torch.allclose(model.logits(x), want)  # the mask is gone after the block


def test_masking_equals_a_hand_written_hook_on_a_later_layer():
    model = toy_model()
    x, _ = toy_data(n=4)
    conv2 = model.layer("features.conv2")

    def hook(_m, _i, o):
        o = o.clone()
        o[:, 3] = 0
        return o

    h = conv2.register_forward_hook(hook)
    try:
        want = model.logits(x).detach()
    finally:
        h.remove()
    with torch.no_grad(), masked_channels(model, {"features.conv2": [3]}):
        torch.testing.assert_close(model.logits(x), want, rtol=0, atol=0)


def test_hooks_are_removed_when_the_block_raises_and_bad_channels_are_refused():
    model = toy_model()
    x, _ = toy_data(n=2)
    before = model_fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        with masked_channels(model, {"features.conv1": [0]}):
            raise RuntimeError("boom")
    assert model_fingerprint(model) == before
    with pytest.raises(ParameterError, match="features.conv1:8"):
        with masked_channels(model, {"features.conv1": [8]}):
            model.logits(x)
    assert model_fingerprint(model) == before
    with pytest.raises(ParameterError, match="nope"):
        with masked_channels(model, {"nope": [0]}):
            pass


def test_analyzer_masks_the_top_k_of_the_ranking_and_the_sweep_starts_at_the_unmasked_accuracy():
    model = toy_model()
    batch = toy_batch(model, n=8)
    rmse = FeatureRMSEAnalyzer().analyze(model, batch)
    res = ChannelMaskingAnalyzer(k=3, fractions=[0, 0.25, 1]).analyze(model, batch, rmse=rmse)
    top = rmse.most(3)
    assert res.channels == tuple(e["name"] for e in top) and res.source == "context"
    np.testing.assert_allclose(res.rmse, [e["rmse"] for e in top])
    y = batch.y_true.numpy()
    assert res.clean_accuracy[0] == (top1(model, batch.x0)[0] == y).mean()
    assert res.adv_accuracy[0] == (top1(model, batch.x_adv)[0] == y).mean()
    assert res.n_ranked == sum(rmse.channels) and res.n_masked == (0, 4, 16)
    # the after-state equals the masked model evaluated by hand
    with torch.no_grad(), masked_channels(model, {"features.conv2": [e["channel"] for e in top
                                                                     if e["layer"] == "features.conv2"],
                                                  "features.conv1": [e["channel"] for e in top
                                                                     if e["layer"] == "features.conv1"]}):
        lab, conf = top1(model, batch.x_adv)
    np.testing.assert_array_equal(res.change.adv_label_after, lab)
    np.testing.assert_allclose(res.change.adv_conf_after, conf)
    np.testing.assert_array_equal(res.change.clean_label_before, top1(model, batch.x0)[0])
    # the same ranking computed on the batch when there is no context
    alone = ChannelMaskingAnalyzer(k=3, fractions=[0, 0.25, 1]).analyze(model, batch)
    assert alone.channels == res.channels and alone.source == "batch"
    np.testing.assert_array_equal(alone.adv_accuracy, res.adv_accuracy)
    assert res.statistics()["k"] == 3 and len(res.sweep_rows()) == 3


def test_explicit_channels_and_their_errors():
    model = toy_model()
    batch = toy_batch(model, n=4)
    res = ChannelMaskingAnalyzer(channels=["features.conv1:2", "features.conv1:5"], fractions=[]).analyze(model, batch)
    assert res.channels == ("features.conv1:2", "features.conv1:5") and res.source == "explicit"
    assert np.isnan(res.rmse).all() and res.fractions == ()
    want = _edited(model, "features.conv1", [2, 5])
    np.testing.assert_array_equal(res.change.clean_label_after, top1(want, batch.x0)[0])
    with pytest.raises(ParameterError, match="features.conv1:9"):
        ChannelMaskingAnalyzer(channels=["features.conv1:9"], fractions=[]).analyze(model, batch)
    with pytest.raises(ParameterError, match="nope"):
        ChannelMaskingAnalyzer(channels=["nope:1"], fractions=[]).analyze(model, batch)
    with pytest.raises(ParameterError, match="channels"):
        ChannelMaskingAnalyzer(channels=["features.conv1"])
    with pytest.raises(ParameterError, match="rmse"):
        ChannelMaskingAnalyzer().analyze(model, batch, rmse="not a result")
    with pytest.raises(ParameterError, match="at least one pair"):
        ChannelMaskingAnalyzer().analyze(model, batch[:0])
