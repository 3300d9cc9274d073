"""Fig. A8 on every layer (``layers = "all"``, ``ModelAdapter.leaf_layers``), the
``activation_maps`` analyzer (Fig. 9 / A9) and the report sections of both."""
import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter
from advinterp.analyzers.activation_maps import ActivationMaps, ActivationMapsResult
from advinterp.exceptions import ParameterError
from advinterp.sections import SECTIONS, builtin_section
from advinterp.study.views import ReportGroup, Run, StepView
from advinterp.testing import assert_model_unchanged, check_component, toy_batch, toy_model


class OneConv(nn.Module):
    """A 1x1 conv 2 -> 3 channels with known weights, then GAP and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [3.0, -2.0]]).reshape(3, 2, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.3, -0.6, 0.9]))

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _pair():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 4, 5, generator=g)
    xa = (x0 + 0.1 * torch.rand(3, 2, 4, 5, generator=g)).clamp(0, 1)
    return AdversarialBatch(x0, xa, torch.tensor([0, 1, 0]), y_adv=torch.tensor([1, 1, 0]))


def test_channel_mean_map_is_hand_computed():
    m = ModelAdapter(OneConv(), input_shape=(2, 4, 5))
    batch = _pair()
    r = advinterp.get_analyzer("activation_maps", n_images=2).analyze(m, batch)
    assert isinstance(r, ActivationMapsResult) and r.layers == ("conv",)
    # mean over the 3 output channels: (1 - 1 + 3)/3 * x_0 + (2 + 0.5 - 2)/3 * x_1 + (0.3 - 0.6 + 0.9)/3
    hand = lambda x: 1.0 * x[:, 0] + (0.5 / 3) * x[:, 1] + 0.2  # noqa: E731
    np.testing.assert_allclose(r.clean["conv"], hand(batch.x0[:2]).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.adv["conv"], hand(batch.x_adv[:2]).numpy(), rtol=1e-5, atol=1e-6)
    assert r.clean["conv"].dtype == np.float32 and r.clean["conv"].shape == (2, 4, 5)
    assert r.y_true.tolist() == [0, 1] and r.y_adv.tolist() == [1, 1]
    assert [row["layer"] for row in r.rows()] == ["conv"] and r.rows()[0]["height"] == 4
    # fewer images than n_images: all of them; no y_adv recorded: -1
    r3 = advinterp.get_analyzer("activation_maps", n_images=10).analyze(
        m, AdversarialBatch(batch.x0, batch.x_adv, batch.y_true))
    assert r3.clean["conv"].shape == (3, 4, 5) and r3.y_adv.tolist() == [-1, -1, -1]


def test_result_takes_merges_saves(tmp_path):
    m = ModelAdapter(OneConv(), input_shape=(2, 4, 5))
    r = advinterp.get_analyzer("activation_maps", n_images=3).analyze(m, _pair())
    parts = [r.take(slice(0, 1)), r.take(slice(1, 3))]
    merged = ActivationMapsResult.merge(parts)
    np.testing.assert_array_equal(merged.clean["conv"], r.clean["conv"])
    np.testing.assert_array_equal(merged.y_adv, r.y_adv)
    back = ActivationMapsResult.load(r.save(tmp_path / "maps.pt"))
    np.testing.assert_array_equal(back.adv["conv"], r.adv["conv"])
    assert back.layers == r.layers


def test_leaf_layers_of_a_hand_built_sequential_in_forward_order():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    m = ModelAdapter(net, input_shape=(3, 8, 8))
    assert m.leaf_layers() == ["0", "1", "2.0", "2.1", "3", "4", "5"]
    b = AdversarialBatch(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    r = advinterp.get_analyzer("activation_distance", layers="all").analyze(m, b)
    assert r.layers == ("0", "1", "2.0", "2.1", "3", "4", "5") and r.distance.shape == (2, 7)
    maps = advinterp.get_analyzer("activation_maps", layers="all").analyze(m, b)
    assert maps.layers == ("0", "1", "2.0", "2.1", "3")  # only the spatial ones


def test_leaf_layers_of_the_shipped_models_and_a_shared_module():
    m = advinterp.get_model("synthetic-cnn")
    leaves = m.leaf_layers()
    assert len(leaves) == 4 * 4 + 2 and leaves[:4] == ["layer1.pool", "layer1.conv", "layer1.bn", "layer1.relu"]
    assert leaves[-2:] == ["avgpool", "fc"]

    class Shared(nn.Module):  # one ReLU called twice: listed once, at its first call
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.act, self.fc = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.act(self.c2(self.act(self.c1(x)))).mean((2, 3)))

    assert ModelAdapter(Shared(), input_shape=(1, 4, 4)).leaf_layers() == ["c1", "act", "c2", "fc"]


def test_all_layers_copy_outputs_before_an_inplace_relu():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(2, 2)).eval()
    m = ModelAdapter(net, input_shape=(1, 4, 4))
    x0, xa = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        bn0, bna = net[1](net[0](x0)), net[1](net[0](xa))
    r = advinterp.get_analyzer("activation_distance", layers="all").analyze(m, AdversarialBatch(x0, xa, torch.tensor([0, 1])))
    np.testing.assert_allclose(r.distance[:, 1], (bn0 - bna).flatten(1).norm(dim=1).numpy(), rtol=1e-5)
    maps = advinterp.get_analyzer("activation_maps", layers="all").analyze(m, AdversarialBatch(x0, xa, torch.tensor([0, 1])))
    np.testing.assert_allclose(maps.clean["1"], bn0.mean(1).numpy(), rtol=1e-5, atol=1e-6)


def test_params_and_errors_leave_the_model_unchanged():
    with pytest.raises(ParameterError, match="layers"):
        ActivationMaps(layers="every")
    with pytest.raises(ParameterError, match="n_images"):
        ActivationMaps(n_images=0)
    model = toy_model()
    batch = toy_batch(model)
    assert_model_unchanged(model, lambda: ActivationMaps(layers=["features.conv1", "features.conv2"]).analyze(model, batch))
    with pytest.raises(ParameterError, match="head"):
        ActivationMaps(layers=["head"]).analyze(model, batch)  # not spatial
    assert_model_unchanged(model, lambda: ActivationMaps(layers=["features.conv1", "head"]).analyze(model, batch),
                           ParameterError)


def test_conformance():
    names = check_component(ActivationMaps)
    assert "check_model_unchanged" in names and "check_save_load" in names
    assert advinterp.get_registry().info("analyzer", "activation_maps").obj is ActivationMaps


def _run_with_two_models_two_attacks(tmp_path):
    run = Run(out=tmp_path / "run", title="t")
    saved = tmp_path / "saved"
    models = {"standard": toy_model(seed=0), "robust": toy_model(seed=1)}

    def step(sid, kind, name, result, model="", refs=None):
        view = StepView(sid, kind, name, {}, {"model": model} if model else {}, dict(refs or {}), run,
                        path=result.save(saved / f"{sid}.pt"))
        run.steps[sid] = view
        return view

    dist, maps = [], []
    for mid, model in models.items():
        for attack, seed in (("pgd", 0), ("fgsm", 1)):
            batch = toy_batch(model, n=3, seed=seed)
            step(f"{attack}.{mid}", "attack", attack, batch, mid)
            r = advinterp.get_analyzer("activation_distance", layers="all").analyze(model, batch)
            dist.append(step(f"ad.{attack}.{mid}", "analyzer", "activation_distance", r, mid,
                             {"batch": f"{attack}.{mid}"}))
            if attack == "pgd":
                r = advinterp.get_analyzer("activation_maps", n_images=2).analyze(model, batch)
                maps.append(step(f"am.{mid}", "analyzer", "activation_maps", r, mid, {"batch": f"{attack}.{mid}"}))
    return run, ReportGroup("analyzer", "activation_distance", dist), ReportGroup("analyzer", "activation_maps", maps)


def test_sections_two_models_two_attacks(tmp_path):
    run, dist, maps = _run_with_two_models_two_attacks(tmp_path)
    assert SECTIONS[("analyzer", "activation_maps")] is not None
    sec = builtin_section(dist, run)
    assert [rel for _, rel in sec.figures] == ["activation_distance.png"]
    assert (run.out / "activation_distance.png").stat().st_size > 1000
    jump = dict(sec.tables)["Jump at deep layers (mean relative distance)"]
    assert [(r["model"], r["attack"]) for r in jump] == [("standard", "pgd"), ("standard", "fgsm"),
                                                         ("robust", "pgd"), ("robust", "fgsm")]
    assert all(r["first_layer"] == "features.conv1" and r["last_layer"] == "head" and r["layers"] == 4 for r in jump)
    res = run.steps["ad.fgsm.robust"].result
    assert jump[3]["middle"] == pytest.approx(float(res.relative[:, 2].mean()))
    assert jump[3]["last/first"] == pytest.approx(jump[3]["last"] / jump[3]["first"])
    assert run.summary["activation_distance_jump"] == jump
    assert len(dict(sec.tables)["Distance per layer"]) == 4 * 4

    sec = builtin_section(maps, run)
    assert [rel for _, rel in sec.figures] == ["activation_maps.png"]
    assert (run.out / "activation_maps.png").stat().st_size > 1000
    rows = sec.tables[0][1]
    layers = ["features.conv1", "features.bn1", "features.conv2"]  # the toy model's feature stages
    assert [(r["model"], r["layer"]) for r in rows] == [(m, l) for m in ("standard", "robust") for l in layers]
    assert run.summary["activation_maps"] == rows


def test_plot_layer_distances_panels_and_activation_maps_figure():
    from advinterp.viz import normalize_map, plot_activation_maps, plot_layer_distances

    model = toy_model()
    batch = toy_batch(model, n=2)
    r = advinterp.get_analyzer("activation_distance", layers="all").analyze(model, batch)
    fig = plot_layer_distances({"natural": {"pgd": r, "fgsm": r}, "robust": {"pgd": r}})
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) >= 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(r.layers)
    m = advinterp.get_analyzer("activation_maps", layers="all", n_images=2).analyze(model, batch)
    fig = plot_activation_maps({"natural": m, "robust": m}, batches={"natural": batch, "robust": batch})
    assert len(fig.axes) == 2 * 4 * (1 + len(m.layers))
    np.testing.assert_allclose(normalize_map(np.array([[1.0, 3.0]])), [[0.0, 1.0]])
    assert normalize_map(np.ones((2, 2))).max() == 0
