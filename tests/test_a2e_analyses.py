"""advinterp-a2e analyzers: ``a2e.transfer`` (C4: target confidence of other models for p) and
``a2e.regions`` (C3: p recomputed with an obstructed region, Fig. 4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import advinterp
from advinterp.data import AdversarialBatch
from advinterp.exceptions import ParameterError
from advinterp.testing import assert_model_unchanged, toy_model

pytest.importorskip("advinterp_a2e")
from advinterp_a2e import attack_to_explain  # noqa: E402
from advinterp_a2e.regions import A2ERegions, default_patch, obstruct, patch_energy  # noqa: E402
from advinterp_a2e.transfer import A2ETransfer, held_out_index, rescale, transfer_confidence  # noqa: E402

torch.set_num_threads(2)


def hand_probs(adapter, x, target):
    """Softmax of the raw module on the normalised images (the toy adapter: mean 0.5, std 0.25)."""
    with torch.no_grad():
        pr = torch.softmax(adapter.module((x - 0.5) / 0.25).double(), 1)
    return float(pr[:, target].mean()), float((pr.argmax(1) == target).double().mean())


def test_rescale_is_the_min_max_formula():
    p = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    r = rescale(p)
    for i in range(2):
        want = (p[i] - p[i].min()) / (p[i].max() - p[i].min())
        assert torch.allclose(r[i], want, atol=1e-6)
    assert float(r.min()) == 0.0 and float(r.max()) == 1.0
    assert torch.equal(rescale(torch.full((3, 4, 4), 0.3)), torch.zeros(3, 4, 4))  # constant p: zeros
    assert torch.allclose(rescale(p[0]), r[0])


def test_transfer_confidence_equals_a_hand_computation():
    a, b = toy_model(seed=0), toy_model(seed=1)
    g = torch.Generator().manual_seed(3)
    p = (torch.rand(3, 16, 16, generator=g) - 0.5) * 0.6
    held = torch.rand(5, 3, 16, 16, generator=g)
    out = transfer_confidence(p, 2, {"a": a, "b": b}, held)
    assert set(out) == {"a", "b"}
    pa = (p - p.min()) / (p.max() - p.min())
    for name, m in (("a", a), ("b", b)):
        want_h = hand_probs(m, (held + p).clamp(0, 1), 2)
        want_a = hand_probs(m, pa[None], 2)
        want_b = hand_probs(m, held, 2)
        got = out[name]
        assert got["held_out"] == pytest.approx(want_h[0], abs=1e-6)
        assert got["held_out_top1"] == pytest.approx(want_h[1])
        assert got["alone"] == pytest.approx(want_a[0], abs=1e-6)
        assert got["alone_top1"] == pytest.approx(want_a[1])
        assert got["baseline"] == pytest.approx(want_b[0], abs=1e-6)
        assert got["baseline_top1"] == pytest.approx(want_b[1])
    # several perturbations at once: one entry each, same numbers
    many = transfer_confidence(torch.stack([p, -p]), torch.tensor([2, 1]), {"a": a}, held)
    assert many["a"]["held_out"][0] == pytest.approx(out["a"]["held_out"], abs=1e-9)
    assert many["a"]["held_out"][1] == pytest.approx(hand_probs(a, (held - p).clamp(0, 1), 1)[0], abs=1e-6)
    with pytest.raises(ParameterError):
        transfer_confidence(p, 2, {"a": a}, held[:, :, :8])  # wrong size
    with pytest.raises(ParameterError):
        transfer_confidence(p, 7, {"a": a}, held)  # target outside the model's classes
    with pytest.raises(ParameterError):
        transfer_confidence(p, 2, {}, held)


def toy_targeted_batch(n=5, seed=0):
    model = toy_model()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1][:n])
    t = torch.tensor([2, 2, 3, 0, 0][:n])
    xa = (x + (torch.rand(n, 3, 16, 16, generator=g) - 0.5) * 0.2).clamp(0, 1)
    return model, AdversarialBatch.from_pair(x, xa, y, model=model, y_target=t, attack="a2e")


def test_transfer_analyzer_rows_are_the_hand_numbers_per_image_and_model():
    model, batch = toy_targeted_batch()
    other = toy_model(seed=1)
    res = advinterp.get_analyzer("a2e.transfer", models=[]).analyze(model, batch, models={"mine": other})
    assert res.models == ("source", "mine")
    rows = res.rows()
    assert len(rows) == 5 * 2
    for i in range(5):
        t = int(batch.y_target[i])
        idx = held_out_index(batch.y_true, t, i)
        assert all(int(batch.y_true[j]) != t and j != i for j in idx.tolist())
        assert res.n_held_out[i] == len(idx)
        p = batch.x_adv[i] - batch.x0[i]
        held = batch.x0[idx]
        for k, m in enumerate((model, other)):
            row = rows[2 * i + k]
            assert row["image"] == i and row["model"] == res.models[k] and row["target"] == t
            assert row["p_on_held_out"] == pytest.approx(hand_probs(m, (held + p).clamp(0, 1), t)[0], abs=1e-6)
            assert row["p_alone"] == pytest.approx(hand_probs(m, rescale(p)[None], t)[0], abs=1e-6)
            assert row["baseline"] == pytest.approx(hand_probs(m, held, t)[0], abs=1e-6)
    assert torch.allclose(res.p_alone, rescale(batch.x_adv - batch.x0))
    # held_out limits the images; the user's held-out images replace the batch's
    lim = A2ETransfer(models=[], held_out=1).analyze(model, batch)
    assert (lim.n_held_out <= 1).all()
    hx, hy = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    own = A2ETransfer(models=[]).analyze(model, batch, held_out_images=hx, held_out_labels=hy)
    assert (own.n_held_out == 3).all()
    # an untargeted batch without y_adv has no target
    with pytest.raises(ParameterError):
        A2ETransfer(models=[]).analyze(model, AdversarialBatch(x0=batch.x0, x_adv=batch.x_adv, y_true=batch.y_true))


def test_obstruct_writes_exactly_the_patch_and_leaves_the_rest():
    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    col = torch.tensor([0.1, 0.5, 0.9])
    out = obstruct(x, 4, (3, 5), col)
    inside = torch.zeros(10, 12, dtype=torch.bool)
    inside[3:7, 5:9] = True
    assert torch.equal(out[:, :, inside], col[None, :, None].expand(2, 3, 16))
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
    assert torch.equal(x, torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(0)))  # input untouched
    assert torch.equal(obstruct(x[0], (2, 3), (0, 0), 0.25)[:, :2, :3], torch.full((3, 2, 3), 0.25))
    for bad in ((7, 5), (3, 9), (-1, 0)):
        with pytest.raises(ParameterError):
            obstruct(x, 4, bad, col)
    with pytest.raises(ParameterError):
        obstruct(x, 4, (0, 0), [0.1, 0.2])
    assert default_patch(224) == 64 and default_patch(64) == 18
    p = torch.zeros(3, 10, 12)
    p[:, 3:7, 5:9] = 1.0
    p[:, 0, 0] = 1.0
    assert patch_energy(p, 4, (3, 5)) == pytest.approx(48 / 51)


@pytest.fixture(scope="module")
def world():
    from advinterp.datasets.synthetic import SyntheticWorld

    x, y = SyntheticWorld(size=64, seed=0).generate(8, "test").tensors()
    return x, y


def test_regions_on_the_shipped_model_recomputes_p_on_the_obstructed_images(world):
    """eta = 40 (the default scaled eta 2.86 does not reach gamma on the 64-px world)."""
    x, y = world
    model = advinterp.get_model("synthetic-cnn")
    x, y = x[:5], y[:5]
    t = torch.tensor([3 if int(v) != 3 else 5 for v in y])
    settings = dict(eta=40.0, max_iter=4, refine=False, batch=4)
    att = advinterp.get_attack("a2e", **settings)
    batch = att.generate(model, x, y, t)
    assert batch.attack == "a2e" and batch.params["eta"] == 40.0
    ana = A2ERegions(positions=[[0, 0], [30, 40]], images=2)
    res = [None]
    assert_model_unchanged(model, lambda: res.__setitem__(0, ana.analyze(model, batch)))
    res = res[0]
    assert len(res.target) == 2
    assert res.patch == (18, 18) and res.attack_params["eta"] == 40.0 and res.attack_params["max_iter"] == 4
    n = len(res.target)
    for i in range(n):
        ti = int(t[i])
        others = [j for j in range(len(x)) if j != i and int(y[j]) != ti]
        colour = x[others].mean((0, 2, 3))
        assert torch.allclose(res.colour[i], colour, atol=1e-6)
        for j, (r, c) in enumerate(((0, 0), (30, 40))):
            assert tuple(res.positions[i, j]) == (r, c)
            patch = res.obstructed[i, j][:, r:r + 18, c:c + 18]
            assert torch.allclose(patch, colour[:, None, None].expand_as(patch), atol=1e-6)
            mask = torch.ones(64, 64, dtype=torch.bool)
            mask[r:r + 18, c:c + 18] = False
            assert torch.equal(res.obstructed[i, j][:, mask], x[i][:, mask])
            # the perturbation is recomputed on the obstructed seed and samples (same settings and seed)
            ref = attack_to_explain(model, obstruct(x[i], 18, (r, c), colour), obstruct(x[others], 18, (r, c), colour),
                                    ti, seed=i, progress=False, **settings)
            assert torch.allclose(res.p[i, j], ref.p, atol=1e-5)
            assert res.energy_in[i, j] == pytest.approx(patch_energy(ref.p, 18, (r, c)), abs=1e-6)
            assert res.energy_in_clean[i, j] == pytest.approx(
                patch_energy(batch.x_adv[i] - batch.x0[i], 18, (r, c)), abs=1e-6)
    # random positions: seeded, inside the image, three by default
    a = A2ERegions(attack_params={"max_iter": 1}, images=1).analyze(model, batch)
    b = A2ERegions(attack_params={"max_iter": 1}, images=1).analyze(model, batch)
    assert a.positions.shape == (1, 3, 2) and np.array_equal(a.positions, b.positions)
    assert (a.positions >= 0).all() and (a.positions <= 64 - 18).all()
    with pytest.raises(ParameterError):
        A2ERegions(positions=[[50, 0]], images=1).analyze(model, batch)
    with pytest.raises(ParameterError):
        A2ERegions(attack_params={"nope": 1}, images=1).analyze(model, batch)


def test_tiny_study_builds_the_report_with_both_figures(tmp_path):
    from advinterp.study import Study

    text = """
title = "a2e analyses"
seed = 0

[models.cnn]
model = "synthetic-cnn"

[data.test]
dataset = "synthetic"
params = { n = 5, split = "test" }

[[steps]]
id = "a2e"
attack = "a2e"
params = { eta = 40.0, max_iter = 4, refine = false, batch = 3, targeted = true }
n = 3

[[steps]]
id = "transfer"
analyzer = "a2e.transfer"
batch = "a2e"

[[steps]]
id = "regions"
analyzer = "a2e.regions"
batch = "a2e"
params = { positions = 1, attack_params = { max_iter = 2 } }
"""
    out = tmp_path / "run"
    Study.from_text(text).run(out, log=lambda m: None)
    html = (out / "index.html").read_text()
    for fig in ("transfer_a2e_transfer.png", "regions_a2e_regions.png"):
        assert (out / fig).is_file() and fig in html, fig
    assert "transfer of p to other models" in html and "obstructed regions" in html
    assert "synthetic-cnn-robust" in html
