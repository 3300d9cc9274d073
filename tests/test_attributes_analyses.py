"""advinterp-attributes: the analyzers attributes.grounding (Figs. 6-7) and attributes.distances
(Fig. 5) -- on the toy model (model unchanged, shapes) and on the embedded world with an oracle
detector (precision 1 by construction; a wrong-box detector: precision 0)."""
import numpy as np
import pytest
import torch

import advinterp
from advinterp.api import AdversarialBatch, ParameterError
from advinterp.testing import assert_model_unchanged, toy_batch, toy_model
from advinterp_attributes import grounding_analysis
from advinterp_attributes.detector import Detections, world_vocabulary
from advinterp_attributes.distances_analysis import DistancesResult
from advinterp_attributes.grounding_analysis import GroundingResult, to_grounding


class _Oracle:
    """Detects exactly the scene's true boxes with their true attributes (or shifted boxes)."""

    def __init__(self, scenes, shift=0):
        self.scenes, self.shift = scenes, shift
        self.classes, self.attributes = world_vocabulary()

    def detect(self, x, score_threshold=0.5):
        out = []
        for img in x:
            j = int(np.argmin([float((torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 - img).abs().mean())
                               for s in self.scenes]))  # the scene (clean or attacked)
            boxes = self.scenes[j].boxes
            att = np.array([[1.0 if a in b.attributes else 0.0 for a in self.attributes] for b in boxes])
            xyxy = np.array([b.xyxy for b in boxes], np.float32) + self.shift
            out.append(Detections(xyxy, tuple(b.name for b in boxes), np.ones(len(boxes)), att, self.attributes))
        return out


@pytest.fixture(scope="module")
def world_batch():
    from advinterp.datasets.synthetic import SyntheticWorld

    model = advinterp.get_model("synthetic-cnn")
    scenes = SyntheticWorld().generate(10, "test")
    x, y = scenes.tensors()
    batch = advinterp.get_attack("ifgsm", eps=0.03, eps_step=0.01, max_iter=5).generate(model, x, y)
    return model, batch, [scenes[i] for i in range(len(scenes))]


def test_grounding_with_an_oracle_detector(world_batch, monkeypatch):
    model, batch, scenes = world_batch
    monkeypatch.setattr(grounding_analysis, "load_detector", lambda path="": (_Oracle(scenes), "oracle"))
    an = advinterp.get_analyzer("attributes.grounding", n_images=3, top_k=3, n_train=48, sje_epochs=10)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    assert isinstance(res, GroundingResult) and res.detector_source == "oracle"
    flipped = np.flatnonzero(((model.predict(batch.x0) == batch.y_true) &
                              (model.predict(batch.x_adv) != batch.y_true)).numpy())
    np.testing.assert_array_equal(res.images, flipped[:3])
    assert res.n_true == len(res.images)  # the batch images are world test scenes 0..9
    for i, g in enumerate(res.groundings):
        truth = scenes[int(res.images[i])].boxes
        for side in ("clean", "adversarial"):
            gr = to_grounding(g[side])
            assert len(gr.attributes) == 3
            for a, idx in zip(gr.attributes, gr.boxes):  # grounded exactly on the true boxes carrying it
                expect = tuple(j for j, b in enumerate(truth) if (b.name == a[5:] if a.startswith("part:")
                                                                  else a in b.attributes))
                assert idx == expect, (a, idx, expect)
    for side in ("clean", "adversarial", "all"):
        if res.precision[side]["pairs"]:
            assert res.precision[side]["precision"] == 1.0
    assert len(res.rows()) == 2 * 3 * len(res.images)
    monkeypatch.setattr(grounding_analysis, "load_detector", lambda path="": (_Oracle(scenes, shift=40), "off"))
    off = an.analyze(model, batch)
    assert off.precision["all"]["pairs"] == res.precision["all"]["pairs"]
    assert off.precision["all"]["precision"] == 0.0 or off.precision["all"]["pairs"] == 0


def test_grounding_figure_and_untrained_default(world_batch):
    from advinterp_attributes.report import plot_grounding

    model, batch, _ = world_batch
    res = advinterp.get_analyzer("attributes.grounding", n_images=2, n_train=24, sje_epochs=5).analyze(model, batch)
    assert res.detector_source in ("shipped",) or res.detector_source.startswith("untrained")
    fig = plot_grounding(res, advinterp.get_dataset("synthetic", n=1).classes)
    assert len(fig.axes) >= 2 * len(res.groundings)
    none = advinterp.get_analyzer("attributes.grounding").analyze(
        model, AdversarialBatch.from_pair(batch.x0, batch.x0, batch.y_true))
    assert none.groundings == [] and none.n_flipped == 0
    assert len(plot_grounding(none).axes) == 1
    with pytest.raises(ParameterError, match="attribute_names"):
        advinterp.get_analyzer("attributes.grounding", n_train=24, sje_epochs=2).analyze(
            model, batch, attribute_names=["a", "b"])


def test_distances_on_the_toy_model():
    model = toy_model()
    batch = toy_batch(model, n=8)
    an = advinterp.get_analyzer("attributes.distances", epochs=1, at_max_iter=1, max_iter=2, sje_epochs=3)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    assert isinstance(res, DistancesResult) and set(res.cases) == {"a", "b", "c", "d"}
    rows = {r["case"]: r for r in res.rows()}
    assert rows["a"]["equations"] == "8-9" and rows["d"]["equations"] == "14-15"
    y = batch.y_true.numpy()
    p, pa = model.predict(batch.x0).numpy(), model.predict(batch.x_adv).numpy()
    np.testing.assert_array_equal(res.cases["a"]["images"], np.flatnonzero((p == y) & (pa != y)))
    assert res.accuracy["clean"] == pytest.approx(float(np.mean(p == y)))


def test_distances_figure():
    from advinterp_attributes.report import plot_distances

    c = {"d1": np.array([0.1, 0.5]), "d2": np.array([0.3, 0.2]), "images": np.array([0, 1]),
         "attributes": np.array([2]), "equations": "8-9"}
    res = DistancesResult(cases={"a": c}, accuracy={}, n=2)
    assert res.rows()[0]["d1_lt_d2"] == 0.5 and res.rows()[0]["mean_d1"] == pytest.approx(0.3)
    assert len(plot_distances(res).axes) == 4


def test_class_attributes_and_names_from_an_awa2_folder(world_batch, tmp_path, monkeypatch):
    """dataset = "awa2": the class-attribute matrix and the names come from the folder (the
    world exported in the AwA2 layout, so both equal the world's)."""
    from advinterp.datasets.awa2 import export_awa2
    from advinterp.datasets.synthetic import ATTRIBUTES, SyntheticWorld

    export_awa2(tmp_path / "awa2", n_per_class=1)
    model, batch, scenes = world_batch
    params = {"dataset": "awa2", "dataset_params": {"root": str(tmp_path / "awa2"), "size": 64}}
    rob = advinterp.get_analyzer("attributes.robustness", eps=[0.05], modes=["untargeted"], max_iter=2,
                                 n_train=24, sje_epochs=5, adversarial_training=False, **params).analyze(model, batch)
    assert rob.attributes_from == "dataset awa2"
    monkeypatch.setattr(grounding_analysis, "load_detector", lambda path="": (_Oracle(scenes), "oracle"))
    g = advinterp.get_analyzer("attributes.grounding", n_images=1, n_train=24, sje_epochs=5, **params).analyze(
        model, batch)
    assert g.attributes_from == "dataset awa2"
    assert set(g.groundings[0]["clean"]["attributes"]) <= set(ATTRIBUTES)
    np.testing.assert_array_equal(advinterp.get_dataset("awa2", **params["dataset_params"]).class_attributes,
                                  SyntheticWorld().class_attributes)
