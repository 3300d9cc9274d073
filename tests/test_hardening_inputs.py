"""Issue 11 (hardening): empty batches, channels-last / mis-shaped inputs, masks, failed
attacks, hand-built labels and NaN pixels end in advinterp's own messages, never in a
traceback from inside torch or numpy, and the model is left unchanged."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, IncompatibleModelError, ModelAdapter, ParameterError
from advinterp.components import check_images, check_mask
from advinterp.testing import assert_model_unchanged, toy_batch, toy_data, toy_model

EXPLAINERS = ("cam", "gradcam", "gradcampp")
SIZE = 16


def refused(model, fn, match):
    """``fn()`` raises ParameterError matching ``match`` and leaves ``model`` unchanged."""
    def call():
        with pytest.raises(ParameterError, match=match):
            fn()
    assert_model_unchanged(model, call)


def empty_batch(c=3, size=SIZE):
    x = torch.rand(0, c, size, size)
    y = torch.zeros(0, dtype=torch.long)
    return AdversarialBatch(x0=x, x_adv=x.clone(), y_true=y, y_target=y + 1, success=torch.zeros(0, dtype=torch.bool),
                            y_adv=y + 1, attack="test")


def hand_batch(model, y_true, y_target, n=3, success=None):
    x, _ = toy_data(n, SIZE, model.nb_classes)
    xa = (x + 0.05).clamp(0, 1)
    return AdversarialBatch(x0=x, x_adv=xa, y_true=torch.as_tensor(y_true), y_target=torch.as_tensor(y_target),
                            success=success, y_adv=torch.as_tensor(y_target), attack="hand")


# ---------------------------------------------------------------------------- item 2: N = 0
@pytest.mark.parametrize("name", EXPLAINERS)
def test_explainers_on_an_empty_batch(name):
    model = toy_model(size=SIZE)
    exp = advinterp.get_explainer(name)
    x = torch.rand(0, 3, SIZE, SIZE)
    att = assert_model_unchanged(model, lambda: exp.explain(model, x, torch.zeros(0, dtype=torch.long)))
    assert att.maps.shape == (0, SIZE, SIZE)
    assert att.layer_maps.shape == (0, SIZE, SIZE)  # the toy model's CAM layer keeps the input size
    assert att.layer
    many = exp.explain_many(model, x, [0, 1])
    assert [a.maps.shape for a in many] == [(0, SIZE, SIZE)] * 2
    pair = exp.explain_pair(model, empty_batch())
    assert pair.x0_t0.shape == pair.xadv_t.shape == (0, SIZE, SIZE)
    assert pair.scale.shape == (0,)


@pytest.mark.parametrize("name, params", [("pse", {"size": 4}), ("is", {}), ("is", {"explainer": "gradcampp"}),
                                          ("attack_metrics", {}), ("activation_distance", {})])
def test_analyzers_on_an_empty_batch(name, params):
    model = toy_model(size=SIZE)
    an = advinterp.get_analyzer(name, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy "mean of empty slice" either
        res = assert_model_unchanged(model, lambda: an.analyze(model, empty_batch()))
        rows = res.rows()
    assert rows and all(r.get("n", 0) == 0 for r in rows)
    assert all(r["n_valid"] == 0 for r in rows)
    if name == "pse":
        assert res.d0.shape == (0, res.n_grids) and res.n_grids == 16
        assert res.s1_mask().shape == (0, 1, SIZE, SIZE)
    if name == "is":
        assert res.is_x0_t0.shape == (0,) and res.region_x0_t0.shape == (0, SIZE, SIZE)
    if name == "activation_distance":
        assert res.distance.shape == (0, len(res.layers))


# ---------------------------------------------------------------------------- item 3: shapes
@pytest.mark.parametrize("name", EXPLAINERS)
def test_channels_last_batch_is_named(name):
    model = toy_model(size=SIZE)
    x = torch.rand(2, SIZE, SIZE, 3)
    refused(model, lambda: advinterp.get_explainer(name).explain(model, x, 0),
            r"channels-last.*x\.permute\(0, 3, 1, 2\)")


def test_channels_last_in_analyzer_and_attack():
    model = toy_model(size=SIZE)
    x = torch.rand(2, SIZE, SIZE, 3)
    b = AdversarialBatch(x0=x, x_adv=x.clone(), y_true=torch.tensor([0, 1]), y_target=torch.tensor([1, 2]))
    with pytest.raises(ParameterError, match=r"batch\.x0.*channels-last.*permute\(0, 3, 1, 2\)"):
        advinterp.get_analyzer("attack_metrics").analyze(model, b)
    with pytest.raises(ParameterError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        advinterp.get_attack("pgd", max_iter=1).generate(model, x.numpy())


@pytest.mark.parametrize("shape", [(2, 1, SIZE, SIZE), (2, 3, 8, 8), (2, 4, SIZE, SIZE)])
def test_input_shape_mismatch_names_both_shapes(shape):
    model = toy_model(size=SIZE)
    x = torch.rand(*shape)
    got = str(tuple(shape[1:])).replace("(", r"\(").replace(")", r"\)")
    msg = r"input_shape \(C, H, W\) = \(3, 16, 16\)\. Got images of shape " + got
    refused(model, lambda: advinterp.get_explainer("gradcam").explain(model, x, 0), msg)
    b = AdversarialBatch(x0=x, x_adv=x.clone(), y_true=torch.tensor([0, 1]), y_target=torch.tensor([1, 2]))
    refused(model, lambda: advinterp.get_analyzer("pse", size=4).analyze(model, b), msg)


@pytest.mark.parametrize("as_pair", [True, False], ids=["tensors", "dataset"])
def test_probe_data_is_held_to_the_model_input_shape(as_pair):
    """A probe that feeds its items to the model refuses images of another size than the
    model's input_shape, for an (x, y) pair and for a dataset (checked on its first item)."""
    model = toy_model(size=SIZE)
    x, y = toy_data(3, 8)

    class Items:
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i], int(y[i])

    data = (x, y) if as_pair else Items()
    msg = r"input_shape \(C, H, W\) = \(3, 16, 16\)\. Got images of shape \(3, 8, 8\)"
    refused(model, lambda: advinterp.get_probe("accuracy").run(model, data), msg)
    xs, ys = toy_data(3, SIZE)
    good = (xs, ys) if as_pair else type("Good", (), {"__len__": lambda s: 3,
                                                       "__getitem__": lambda s, i: (xs[i], int(ys[i]))})()
    assert advinterp.get_probe("accuracy").run(model, good).table()


def test_models_without_input_shape_still_work_and_name_channels_last():
    ref = toy_model(size=SIZE)
    model = ModelAdapter(ref.module, mean=ref.mean, std=ref.std, nb_classes=4, cam_layer="features.conv2",
                         classifier="head")
    x, _ = toy_data(2, 24)  # another size: nothing declared, nothing refused
    assert advinterp.get_explainer("gradcam").explain(model, x, 0).maps.shape == (2, 24, 24)
    with pytest.raises(ParameterError, match=r"channels-last.*x\.permute\(0, 3, 1, 2\)"):
        model.logits(x.permute(0, 2, 3, 1))
    with pytest.raises(ParameterError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        advinterp.get_explainer("gradcam").explain(model, x.permute(0, 2, 3, 1), 0)


def test_check_images_channels_last_numpy():
    x = np.random.rand(2, 8, 8, 3).astype(np.float32)
    with pytest.raises(ParameterError, match=r"transpose\(0, 3, 1, 2\)"):
        check_images("f", x, input_shape=(3, 8, 8))
    assert check_images("f", x.transpose(0, 3, 1, 2), input_shape=(3, 8, 8)).shape == (2, 3, 8, 8)


def test_art_channels_last_classifier_refused():
    pytest.importorskip("art")
    from art.estimators.classification import PyTorchClassifier

    ad = toy_model(size=SIZE)
    clf = PyTorchClassifier(ad.module, nn.CrossEntropyLoss(), (SIZE, SIZE, 3), 4, clip_values=(0, 1),
                            channels_first=False)
    with pytest.raises(IncompatibleModelError, match=r"channels_first=False.*channels_first=True"):
        ModelAdapter(clf)


# ---------------------------------------------------------------------------- item 5: masks
@pytest.mark.parametrize("mask_shape", [(8, 8), (SIZE, 8), (5, SIZE, SIZE), (2, SIZE, 8), (2, 2, SIZE, SIZE),
                                        (3, 1, SIZE, SIZE), (SIZE,), (), (2, 1, 1, SIZE, SIZE)])
def test_check_mask_wrong_shapes(mask_shape):
    with pytest.raises(ParameterError, match=r"a 0/1 mask of shape \(16, 16\)"):
        check_mask("f", torch.ones(mask_shape), (2, 3, SIZE, SIZE))


def test_cw_l2_wrong_mask_shape():
    model = toy_model(size=SIZE)
    x, y = toy_data(2, SIZE)
    attack = advinterp.get_attack("cw_l2", max_iter=2, binary_search_steps=1)
    for bad in (torch.ones(8, 8), torch.ones(3, SIZE, SIZE), torch.ones(2, 2, SIZE, SIZE)):
        refused(model, lambda: attack.generate(model, x, y, mask=bad), r"mask=.*a 0/1 mask of shape \(16, 16\)")


# ---------------------------------------------------------------------------- item 9: failed attacks
@pytest.mark.parametrize("name, params", [("pse", {"size": 4}), ("is", {})])
def test_failed_pairs_warn_once_with_their_number(name, params):
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 1, 2], [1, 2, 3], success=torch.tensor([False, True, False]))
    with pytest.warns(UserWarning, match=r"failed on 2 of 3 pairs") as rec:
        res = advinterp.get_analyzer(name, **params).analyze(model, b)
    assert sum("failed on" in str(w.message) for w in rec) == 1
    assert "n_valid" in res.rows()[0]


def test_no_warning_when_every_pair_succeeded():
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 1, 2], [1, 2, 3], success=torch.ones(3, dtype=torch.bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        advinterp.get_analyzer("is", explainer="gradcam").analyze(model, b)


def test_n_valid_in_attack_metrics_and_activation_distance_rows():
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 1, 2], [1, 2, 3], success=torch.tensor([False, True, True]))
    row = advinterp.get_analyzer("attack_metrics").analyze(model, b).rows()[0]
    assert row["n"] == 3 and row["n_valid"] == 2
    assert advinterp.get_analyzer("attack_metrics", average_over="all").analyze(model, b).rows()[0]["n_valid"] == 3
    rows = advinterp.get_analyzer("activation_distance").analyze(model, b).rows()
    assert rows and all(r["n"] == 3 and r["n_valid"] == 3 for r in rows)


def test_cam_figure_marks_failed_pairs():
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 1, 2], [1, 2, 3], success=torch.tensor([True, False, True]))
    pair = advinterp.get_explainer("cam").explain_pair(model, b)
    fig = advinterp.viz.plot_cam_overlays(b.x0, b.x_adv, pair, n=3, success=b.success)
    labels = [ax.get_ylabel() for ax in fig.axes[::4]]
    assert labels == ["0 \u2192 1", "1 \u2192 2 (failed)", "2 \u2192 3"]
    labels = [ax.get_ylabel() for ax in advinterp.viz.plot_cam_overlays(b.x0, b.x_adv, pair, n=3).axes[::4]]
    assert not any("failed" in s for s in labels)


# ---------------------------------------------------------------------------- item 10: labels
@pytest.mark.parametrize("name, params", [("pse", {"size": 4}), ("is", {}), ("attack_metrics", {}),
                                          ("activation_distance", {})])
def test_target_equal_to_true_label_refused(name, params):
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 1, 2], [1, 1, 3])
    refused(model, lambda: advinterp.get_analyzer(name, **params).analyze(model, b),
            r"batch\.y_target.*image 1 has y_true=1\)\. 1 of 3 images have y_target == y_true")


@pytest.mark.parametrize("name, params", [("pse", {"size": 4}), ("is", {}), ("attack_metrics", {}),
                                          ("activation_distance", {})])
def test_true_label_out_of_range_refused(name, params):
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 7, 2], [1, 2, 3])
    with pytest.raises(ParameterError, match=r"batch\.y_true.*class indices in \[0, 4\)"):
        advinterp.get_analyzer(name, **params).analyze(model, b)


# ---------------------------------------------------------------------------- item 11: NaN / inf
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_inf_pixels_say_so(bad):
    model = toy_model(size=SIZE)
    x, y = toy_data(4, SIZE)
    x[2, 0, 3, 3] = bad
    x[3, 1, 0, 0] = bad
    msg = r"contains NaN or inf in 2 of 4 images \(first: image 2\)"
    with pytest.raises(ParameterError, match=msg):
        advinterp.get_explainer("cam").explain(model, x, y)
    with pytest.raises(ParameterError, match=msg):
        advinterp.get_attack("pgd", max_iter=1).generate(model, x, y)
    b = toy_batch(model)
    xa = b.x_adv.clone()
    xa[1, 0, 0, 0] = bad
    with pytest.raises(ParameterError, match=r"batch\.x_adv.*NaN or inf in 1 of 4 images \(first: image 1\)"):
        advinterp.get_analyzer("is").analyze(model, AdversarialBatch(x0=b.x0, x_adv=xa, y_true=b.y_true,
                                                                     y_target=b.y_target))


def test_target_out_of_range_refused():
    model = toy_model(size=SIZE)
    b = hand_batch(model, [0, 1, 2], [1, 9, 3])
    with pytest.raises(ParameterError, match=r"batch\.target.*class indices in \[0, 4\)"):
        advinterp.get_analyzer("activation_distance").analyze(model, b)


def test_attack_metrics_holds_images_to_input_shape_only_when_it_runs_the_model():
    model = toy_model(size=SIZE)
    x = torch.zeros(2, 1, 2, 2)
    with_success = AdversarialBatch(x, x + 0.1, torch.tensor([0, 1]), success=torch.tensor([True, False]))
    assert advinterp.get_analyzer("attack_metrics").analyze(model, with_success).rows()[0]["n_valid"] == 1
    without = AdversarialBatch(x, x + 0.1, torch.tensor([0, 1]))
    refused(model, lambda: advinterp.get_analyzer("attack_metrics").analyze(model, without),
            r"batch\.x0.*input_shape \(C, H, W\) = \(3, 16, 16\)")


def test_refine_rows_report_n_valid():
    from advinterp.analyzers.attack_metrics import AttackMetrics
    from advinterp.analyzers.refine import Refinement

    ok = np.array([True, False, True])
    m = AttackMetrics("pgd", "toy", ok, *(np.ones(3),) * 4)
    rows = Refinement(attack="pgd", model="toy", original=m, refined={"S1": m}, support_share={"S1": np.ones(3)},
                      batches={}).rows()
    assert rows[0]["n_valid_original"] == rows[0]["n_valid_refined"] == 2
