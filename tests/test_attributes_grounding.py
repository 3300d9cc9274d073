"""The attribute detector (Faster R-CNN + attribute head), its metrics and attribute grounding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
det_mod = pytest.importorskip("advinterp_attributes.detector")

from advinterp.api import ParameterError  # noqa: E402
from advinterp.datasets.synthetic import SyntheticWorld  # noqa: E402
from advinterp_attributes.detection_metrics import attribute_accuracy, average_precision, box_iou  # noqa: E402
from advinterp_attributes.detector import (AttributeDetector, Detections, load_attribute_detector,  # noqa: E402
                                           scene_targets, world_vocabulary)
from advinterp_attributes.grounding import (draw_grounding, ground, grounding_precision,  # noqa: E402
                                            parse_attribute)


@pytest.fixture(scope="module")
def scenes():
    world = SyntheticWorld(size=64, seed=0)
    return world.generate(8, split="train")


def _detector(seed=0):
    torch.manual_seed(seed)
    classes, attributes = world_vocabulary()
    return AttributeDetector.build(classes, attributes)


# ---------------------------------------------------------------------------- the detector
def test_vocabulary_covers_every_box_attribute(scenes):
    classes, attributes = world_vocabulary()
    for boxes in scenes.boxes:
        t = scene_targets(boxes, classes, attributes)
        assert t["boxes"].shape == (len(boxes), 4) and t["attributes"].shape == (len(boxes), len(attributes))
        for b, lab, att in zip(boxes, t["labels"], t["attributes"]):
            assert classes[int(lab) - 1] == b.name
            assert {attributes[j] for j in att.nonzero().flatten().tolist()} == set(b.attributes)


def test_attribute_loss_is_bce_of_positive_proposals():
    det = _detector()
    heads = det.model.roi_heads
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0], [1.0, 1.0]])
    labels = [torch.tensor([3, 0]), torch.tensor([0, 1])]           # positives: row 0 (image 0), row 3 (image 1)
    matched = [torch.tensor([1, 0]), torch.tensor([0, 0])]
    targets = [{"attributes": torch.tensor([[0.0, 0.0], [1.0, 0.0]])}, {"attributes": torch.tensor([[0.0, 1.0]])}]
    got = heads.attribute_loss(logits, labels, matched, targets)

    def bce(z, y):
        return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))

    want = (bce(2.0, 1) + bce(-1.0, 0) + bce(1.0, 0) + bce(1.0, 1)) / 4
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(heads.attribute_loss(logits, [torch.tensor([0, 0]), torch.tensor([0, 0])], matched, targets)) == 0.0


def test_training_lowers_the_losses_and_eval_outputs_have_the_shapes(scenes):
    det = _detector()
    classes, attributes = det.classes, det.attributes
    x, _ = scenes.tensors()
    tg = [scene_targets(b, classes, attributes) for b in scenes.boxes]
    model = det.model
    model.train()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    history = []
    for _ in range(8):
        losses = model(list(x), tg)
        loss = sum(losses.values())
        assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_attributes", "loss_objectness"}
        history.append({k: float(v.detach()) for k, v in losses.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(history[-1].values()) < sum(history[0].values())
    assert history[-1]["loss_attributes"] < history[0]["loss_attributes"]
    model.train()
    out = det.detect(x[:3], score_threshold=0.0)
    assert model.training  # the mode is given back
    assert len(out) == 3
    for d in out:
        n = len(d)
        assert d.boxes.shape == (n, 4) and d.scores.shape == (n,) and d.attributes.shape == (n, len(attributes))
        assert set(d.labels) <= set(classes)
        assert ((d.attributes >= 0) & (d.attributes <= 1)).all()


def test_save_load_round_trip_weights_only(tmp_path, scenes):
    det = _detector(1)
    path = det.save(tmp_path / "det.pt")
    torch.load(path, weights_only=True)  # a plain, weights_only checkpoint
    back = AttributeDetector.load(path)
    x, _ = scenes.tensors()
    a, b = det.detect(x[:2], 0.0), back.detect(x[:2], 0.0)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.boxes, v.boxes, atol=1e-5)
        np.testing.assert_allclose(u.attributes, v.attributes, atol=1e-6)
    with pytest.raises(ParameterError, match="train_attribute_detector"):
        AttributeDetector.load(tmp_path / "missing.pt")


def test_bad_inputs():
    det = _detector()
    with pytest.raises(ParameterError, match="x"):
        det.detect(torch.zeros(3, 64, 64))
    with pytest.raises(ParameterError, match="n_attributes"):
        det_mod.build_detector(3, 0)
    with pytest.raises(ParameterError, match="widht"):
        det_mod.build_detector(3, 2, widht=8)
    classes, attributes = world_vocabulary()
    box = SyntheticWorld().generate(1, split="test").boxes[0][0]
    with pytest.raises(ParameterError, match="vocabulary"):
        scene_targets([box], classes, attributes[:3])


def test_shipped_detector_finds_the_boxes():
    det = load_attribute_detector()
    assert det.meta["map50"] > 0.5 and det.meta["attribute_accuracy"] > 0.8
    world = SyntheticWorld(size=64, seed=0)
    batch = world.generate(24, split="test")
    x, _ = batch.tensors()
    truth = [{"boxes": [b.xyxy for b in bx], "labels": [b.name for b in bx],
              "attributes": scene_targets(bx, det.classes, det.attributes)["attributes"].numpy()} for bx in batch.boxes]
    ap = average_precision(det.detect(x, 0.0), truth)
    # the object box of every scene: the class is right and the box overlaps
    objects = [{"boxes": t["boxes"][:1], "labels": t["labels"][:1], "attributes": t["attributes"][:1]} for t in truth]
    acc = attribute_accuracy(det.detect(x, 0.5), objects)
    assert ap["map"] > 0.4
    assert acc["found"] > 0.6 and acc["accuracy"] > 0.8


# ---------------------------------------------------------------------------- metrics
def test_average_precision_by_hand():
    truth = [{"boxes": [[0, 0, 10, 10]], "labels": ["a"]}, {"boxes": [[0, 0, 10, 10]], "labels": ["a"]}]
    dets = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": ["a", "a"], "scores": [0.9, 0.8]},
            {"boxes": [[1, 0, 10, 10]], "labels": ["a"], "scores": [0.7]}]
    # ranks: TP (p 1, r .5), FP (p .5, r .5), TP (p 2/3, r 1): AP = .5 * 1 + .5 * 2/3
    assert average_precision(dets, truth)["map"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a duplicate of an already matched box is a false positive
    dup = [{"boxes": [[0, 0, 10, 10], [0, 0, 10, 10]], "labels": ["a", "a"], "scores": [0.9, 0.8]},
           {"boxes": np.zeros((0, 4)), "labels": [], "scores": []}]
    assert average_precision(dup, truth)["ap"]["a"] == pytest.approx(0.5)
    assert box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3]]))[0, 0] == pytest.approx(1 / 7)
    with pytest.raises(ParameterError, match="iou"):
        average_precision(dets, truth, iou=0)


def test_attribute_accuracy_by_hand():
    truth = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": ["a", "b"],
              "attributes": [[1, 0, 1], [0, 0, 1]]}]
    dets = [{"boxes": [[0, 0, 10, 10], [0, 0, 10, 9]], "labels": ["a", "a"], "scores": [0.6, 0.9],
             "attributes": [[0.9, 0.9, 0.9], [0.9, 0.1, 0.2]]}]
    # box "a": the higher-scoring match (0.9) predicts 1,0,0 vs 1,0,1 -> 2 of 3 right; box "b" is not found
    got = attribute_accuracy(dets, truth)
    assert got["accuracy"] == pytest.approx(2 / 3) and got["exact"] == 0.0 and got["found"] == 0.5


# ---------------------------------------------------------------------------- grounding
def test_parse_attribute():
    assert parse_attribute("has_wing_color::blue") == ("wing", "color", "blue")
    assert parse_attribute("has_upper_tail_color::grey") == ("upper_tail", "color", "grey")
    assert parse_attribute("has_size::small_(5_-_9_in)") == (None, "size", "small_(5_-_9_in)")
    assert parse_attribute("color:red") == (None, "color", "red")
    assert parse_attribute("stripes") == (None, None, "stripes")
    with pytest.raises(ParameterError):
        parse_attribute("")


def _hand_scene():
    names = ("color:red", "color:yellow", "texture:striped", "has_wing_color::blue")
    dets = Detections(boxes=np.array([[0, 0, 40, 40], [30, 0, 40, 10], [5, 30, 15, 40]], np.float32),
                      labels=("kite", "head", "wing"), scores=np.array([0.9, 0.8, 0.7]),
                      attributes=np.array([[0.9, 0.1, 0.7, 0.2],
                                           [0.8, 0.2, 0.1, 0.9],     # blue, but a head is not a wing
                                           [0.1, 0.6, 0.1, 0.95]]), attribute_names=names)
    return dets


def test_ground_on_a_hand_made_scene():
    g = ground(["color:red", "texture:striped", "has_wing_color::blue", "part:head", "part:legs",
                "color:purple", "color:yellow"], _hand_scene())
    assert g.boxes == ((0, 1), (0,), (2,), (1,), (), (), (2,))
    assert g.ungrounded == ["part:legs", "color:purple"]
    assert g.reasons[4] == "no box carries it" and g.reasons[5] == "not in the detector's vocabulary"
    assert g.rows()[0]["boxes"] == "kite@0,0,40,40; head@30,0,40,10"
    assert ground(["color:red"], _hand_scene(), threshold=0.85).boxes == ((0,),)
    with pytest.raises(ParameterError, match="threshold"):
        ground(["color:red"], _hand_scene(), threshold=2)


def test_grounding_precision_against_true_boxes():
    from advinterp.datasets.synthetic import Box

    truth = [Box((0, 0, 40, 40), "kite", "object", ("color:red", "texture:striped")),
             Box((30, 0, 40, 10), "head", "part", ("color:yellow",)),
             Box((5, 30, 15, 40), "wing", "part", ("has_wing_color::blue",))]
    g = ground(["color:red", "texture:striped", "has_wing_color::blue", "part:head"], _hand_scene())
    # pairs: red@kite right, red@head wrong (the true head is yellow), striped@kite right,
    # blue@wing right, head@head right -> 4 of 5
    got = grounding_precision([g], [truth])
    assert got["pairs"] == 5 and got["right"] == 4 and got["precision"] == pytest.approx(0.8)
    assert got["grounded_fraction"] == 1.0


def test_draw_grounding_draws_one_rectangle_per_grounded_box():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    g = ground(["color:red", "part:legs"], _hand_scene())
    draw_grounding(ax, np.zeros((40, 40, 3)), g, title="clean")
    assert len(ax.patches) == 2
    assert any("part:legs" in t.get_text() for t in ax.texts)
    plt.close(fig)
