"""advinterp-dissect as a study sees it: the ``dissection`` probe (conformance, exact sharding
by any shard size, partial results saved and merged), the ``detector_views`` analyzer and the
report sections built from saved results."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import advinterp  # noqa: E402
from advinterp.datasets.broden import BrodenDataset, export_broden  # noqa: E402
from advinterp.datasets.synthetic import SyntheticWorld  # noqa: E402
from advinterp.exceptions import ParameterError  # noqa: E402
from advinterp.results import Result  # noqa: E402
from advinterp.study.views import ReportGroup, Run, StepView  # noqa: E402
from advinterp.testing import assert_model_unchanged, check_component, toy_model  # noqa: E402
from advinterp_dissect import (DetectorViews, DetectorViewsAnalyzer, Dissection, DissectionProbe,  # noqa: E402
                               GridSchedule, SensitivityAnalysis, StreamingQuantile, dissect)
from advinterp_dissect.dissection import images_to_tensor  # noqa: E402
from advinterp_dissect.reference import dissect_reference  # noqa: E402

LAYERS = ["layer1", "layer2", "layer3", "layer4"]
TALLIES = ("intersection", "activation", "truth", "unit_pixels")


@pytest.fixture(scope="module")
def small_broden(tmp_path_factory):
    """9 val scenes (labels at 32x32): with batch_size 4, batches of 4, 4 and 1."""
    return export_broden(tmp_path_factory.mktemp("small_broden"), SyntheticWorld(size=64, seed=0), n=9, split="val",
                         seg_size=32)


def _assert_same(a: Dissection, b: Dissection, layers=LAYERS) -> None:
    for name in layers:
        for f in ("thresholds", "threshold_tolerance") + TALLIES:
            np.testing.assert_array_equal(getattr(a[name], f), getattr(b[name], f), err_msg=f"{name} {f}")
        np.testing.assert_array_equal(a[name].iou(), b[name].iou())
        assert a[name].label_size == b[name].label_size and a[name].activation_size == b[name].activation_size


def _sequential_thresholds(model, root, layers, batch_size, quantile, bins):
    """The quantile pass of ``dissect`` before it was sharded: one StreamingQuantile per layer
    fed the whole dataset batch after batch. Also returns whether any range had to double."""
    sketches, first_width = {}, {}
    for images in BrodenDataset(root).image_batches(batch_size):
        acts = model.activations(images_to_tensor(images, model.device, model.dtype), layers)
        for name in layers:
            a = acts[name]
            sq = sketches.setdefault(name, StreamingQuantile(a.shape[1], bins=bins))
            sq.update(a.transpose(0, 1).reshape(a.shape[1], -1))
            first_width.setdefault(name, sq.width.clone())
    doubled = any(bool((sq.width > first_width[n]).any()) for n, sq in sketches.items())
    return {n: sq.quantile(1 - quantile).numpy() for n, sq in sketches.items()}, doubled


# ---------------------------------------------------------------------------- the quantile sketch
def test_sharded_sketches_merge_into_the_sequential_histogram_bit_for_bit(tmp_path):
    g = torch.Generator().manual_seed(1)
    U, bins = 5, 32
    batches = []
    for i in range(12):
        v = torch.relu(torch.randn(U, 40, generator=g)) * (1 + i) ** 2 - 2.0 * i * (i % 3 == 0)
        v[1] = torch.round(v[1])                     # ties
        v[2] = 0.0 if i < 4 else v[2]                # a constant start, widened later from a tiny width
        batches.append(v * (0.01 if i == 0 else 1))  # a narrow first batch: many doublings
    seq = StreamingQuantile(U, bins)
    for v in batches:
        seq.update(v)
    schedule = GridSchedule.replay(torch.stack([StreamingQuantile.range_of(v)[0] for v in batches]),
                                   torch.stack([StreamingQuantile.range_of(v)[1] for v in batches]), bins)
    assert sum(len(ops) for ops in schedule.doublings) > 3
    for cuts in ([0, 12], [0, 1, 12], [0, 5, 6, 11, 12], list(range(13))):
        parts = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            sq = schedule.sketch(a)
            for t in range(a, b):
                if t > a:
                    schedule.advance(sq, t - 1, t)
                sq.add(batches[t][:, 3:] if t % 2 else batches[t])  # a shard may hold part of a batch...
            parts.append(schedule.advance(sq, b - 1).state())
        rest = [schedule.advance(schedule.sketch(t).add(batches[t][:, :3]), t).state()  # ...the rest elsewhere
                for t in range(1, 12, 2)]
        merged = StreamingQuantile.merge([Result.load(p.save(tmp_path / f"s{k}.pt"))  # saved, weights_only
                                          for k, p in enumerate(parts + rest)])
        assert torch.equal(merged.counts, seq.counts) and merged.count == seq.count
        for f in ("lo", "width", "min", "max", "n_min"):
            assert torch.equal(getattr(merged, f), getattr(seq, f)), f
        for p in (0.0, 0.05, 0.5, 0.9, 0.995, 1.0):
            assert torch.equal(merged.quantile(p), seq.quantile(p))
    with pytest.raises(ParameterError, match="sketches"):
        StreamingQuantile.merge([seq, schedule.sketch(0).add(batches[0])])   # not on one grid


# ---------------------------------------------------------------------------- exact sharding
def test_probe_is_exact_for_any_shard_size_and_equals_dissect_before_sharding(small_broden, synthetic_model):
    model = synthetic_model
    kw = dict(batch_size=4, quantile=0.05, bins=256)
    whole = dissect(model, small_broden, LAYERS, **kw)
    probe = advinterp.get_probe("dissection", layers=LAYERS, **kw)
    for shard_size in (None, 7, 1):
        _assert_same(probe.run(model, small_broden, shard_size=shard_size), whole)
    _assert_same(dissect(model, small_broden, LAYERS, shard_size=4, **kw), whole)      # aligned with the batches
    # equal to the algorithm before it was sharded: the sequential streaming quantile ...
    expected, doubled = _sequential_thresholds(model, small_broden, LAYERS, 4, 0.05, 256)
    assert doubled, "the data should make some histogram ranges double (the carried-forward path)"
    for name in LAYERS:
        np.testing.assert_array_equal(whole[name].thresholds, expected[name])
    # ... and NetDissect-Lite's per-unit loop given those thresholds
    ref = dissect_reference(model, small_broden, LAYERS, thresholds=whole.thresholds())
    for name in LAYERS:
        for f in TALLIES:
            np.testing.assert_array_equal(getattr(whole[name], f), getattr(ref[name], f), err_msg=f"{name} {f}")


def _protocol(probe, model, data, shards, tmp_path):
    """The sharded protocol as a study drives it: every partial saved and loaded back
    (weights_only) before the merge; shards of a pass computed in reverse order."""
    adapter = advinterp.model.as_adapter(model)
    with adapter.preserved(freeze=True):
        state = probe._start(adapter, data)
        for step in range(probe.passes):
            parts = {}
            for k in reversed(range(len(shards))):
                part = probe._partial(adapter, data, shards[k], state, step)
                assert isinstance(part, Result)
                parts[k] = Result.load(part.save(tmp_path / f"p{step}-{k}.pt"))
                assert type(parts[k]) is type(part)
            state = probe._merge([parts[k] for k in range(len(shards))], state, step)
        return probe._finish(adapter, state)


def test_saved_partials_merge_exactly_and_a_subset_and_own_data_work(small_broden, synthetic_model, tmp_path):
    model = synthetic_model
    probe = advinterp.get_probe("dissection", layers=["layer1", "layer4"], batch_size=3, bins=128)
    whole = probe.run(model, small_broden)
    shards = [list(range(0, 4)), list(range(4, 5)), list(range(5, 9))]
    _assert_same(_protocol(probe, model, BrodenDataset(small_broden), shards, tmp_path), whole, ["layer1", "layer4"])
    _assert_same(_protocol(probe, model, str(small_broden), shards, tmp_path), whole, ["layer1", "layer4"])
    # a study step without data: the probe's own (the broden parameter), one shard per pass
    own = advinterp.get_probe("dissection", broden=str(small_broden), layers=["layer1", "layer4"], batch_size=3,
                              bins=128)
    _assert_same(_protocol(own, model, None, [[]], tmp_path), whole, ["layer1", "layer4"])

    # a study's start/n selection (advinterp.api.Subset): items 2..7
    from advinterp.api import Subset

    # and the probe's own data as a study shards it (default_data: the broden parameter)
    _assert_same(_protocol(own, model, own.default_data(), shards, tmp_path), whole, ["layer1", "layer4"])
    sub = Subset(BrodenDataset(small_broden), list(range(2, 8)))
    part = _protocol(probe, model, sub, [[0, 1], [2, 3, 4, 5]], tmp_path)
    assert part.n_images == 6
    _assert_same(part, probe.run(model, sub, shard_size=5), ["layer1", "layer4"])


# ---------------------------------------------------------------------------- conformance
def test_probe_conformance(tmp_path):
    """advinterp.testing's probe checks (params, output, sharding, determinism, model
    unchanged, save/load), and what they do not look at: the embedded world's name, the
    layers, a saved result's tallies, the model after a failing run."""
    assert "check_sharded" in check_component(DissectionProbe)
    model = toy_model()
    probe = DissectionProbe(**DissectionProbe.conformance_params)
    d = assert_model_unchanged(model, lambda: probe.run(model))           # the embedded world, no data
    assert isinstance(d, Dissection) and d.n_images == 8 and "embedded world" in d.dataset
    assert set(d.layers) == set(model.feature_layers())
    _assert_same(Dissection.load(d.save(tmp_path / "d.pt")), d, list(d.layers))
    assert_model_unchanged(model, lambda: probe.run(model, tmp_path / "no-such-folder"), Exception)
    with pytest.raises(ParameterError, match="layers"):
        DissectionProbe(layers="layer4")


def test_detector_views_analyzer_conforms_and_uses_its_context(small_broden, synthetic_model):
    assert check_component(DetectorViewsAnalyzer)
    model = synthetic_model
    d = dissect(model, small_broden, ["layer1", "layer4"], batch_size=9)
    x = torch.cat([images_to_tensor(im, torch.device("cpu"), torch.float32)
                   for im in BrodenDataset(small_broden).image_batches(9)])[:5]
    batch = advinterp.get_attack("pgd", eps=4 / 255, eps_step=2 / 255, max_iter=2).generate(model, x)
    an = advinterp.get_analyzer("detector_views", per_layer=1, n_images=3)
    views = assert_model_unchanged(model, lambda: an.analyze(model, batch, dissection=d))
    assert isinstance(views, DetectorViews) and views.layers == ("layer1", "layer4") and views.x0.shape[0] == 3
    sens = {"layer1": np.arange(d["layer1"].units, dtype=float), "layer4": np.arange(d["layer4"].units, dtype=float)}
    ranked = an.analyze(model, batch, dissection=d, sensitivity=sens)
    for layer, unit in zip(ranked.layers, ranked.units):   # the most sensitive detector: the highest index
        det = np.flatnonzero(d[layer].detectors(d.iou_threshold))
        assert unit == (det.max() if len(det) else unit)
    with pytest.raises(ParameterError, match="dissection"):
        an.analyze(model, batch)
    with pytest.raises(ParameterError, match="sensitivity"):
        an.analyze(model, batch, dissection=d, sensitivity=3)


# ---------------------------------------------------------------------------- report sections
def test_report_sections_from_saved_results(small_broden, synthetic_model, tmp_path):
    import advinterp_dissect

    model = synthetic_model
    saved = tmp_path / "saved"
    d1 = dissect(model, small_broden, ["layer1", "layer4"], batch_size=9)
    d2 = dissect(model, small_broden, ["layer2"], batch_size=9, quantile=0.05)
    x = torch.cat([images_to_tensor(im, torch.device("cpu"), torch.float32)
                   for im in BrodenDataset(small_broden).image_batches(9)])[:6]
    batch = advinterp.get_attack("pgd", eps=4 / 255, eps_step=2 / 255, max_iter=2).generate(model, x)
    sens = advinterp.get_analyzer("unit_sensitivity", ns=[2, 4], n_draws=50).analyze(model, batch, dissection=d1)
    views = advinterp.get_analyzer("detector_views").analyze(model, batch, dissection=d1, sensitivity=sens)
    assert isinstance(sens, SensitivityAnalysis)
    run = Run(out=tmp_path / "run", title="t")

    def step(sid, kind, name, result, refs=None):
        view = StepView(sid, kind, name, {}, {}, dict(refs or {}), run, path=result.save(saved / f"{sid}.pt"))
        run.steps[sid] = view
        return view

    groups = {
        "probe": ReportGroup("probe", "dissection", [step("dissection.a", "probe", "dissection", d1),
                                                     step("dissection.b", "probe", "dissection", d2)]),
        "sens": ReportGroup("analyzer", "unit_sensitivity", [
            step("sens", "analyzer", "unit_sensitivity", sens, {"dissection": "dissection.a"})]),
        "views": ReportGroup("analyzer", "detector_views", [
            step("views", "analyzer", "detector_views", views, {"dissection": "dissection.a", "sensitivity": "sens"})]),
    }
    sections = {k: advinterp_dissect.advinterp_report_section(group=g, run=run) for k, g in groups.items()}
    for sec in sections.values():
        assert sec.tables and sec.figures and all(rows for _, rows in sec.tables)
        assert all((run.out / rel).is_file() and (run.out / rel).stat().st_size > 1000 for _, rel in sec.figures)
    assert {rel for _, rel in sections["probe"].figures} == {f"dissection.{s}_{n}.png" for s in "ab"
                                                             for n in ("detectors", "top_units")}
    assert {rel for _, rel in sections["sens"].figures} == {f"sens_{n}.png" for n in (
        "pvalues", "detectors_top", "sensitivity_vs_iou")}
    assert [rel for _, rel in sections["views"].figures] == ["views_views.png"]
    assert len(sections["probe"].tables) == 4 and len(sections["sens"].tables) == 3
    # tally files of each dissection step, and the headline numbers
    assert sorted(p.name for p in (run.out / "dissection" / "dissection.a").glob("*.csv")) == [
        "tally_layer1.csv", "tally_layer4.csv"]
    assert [p.name for p in (run.out / "dissection" / "dissection.b").glob("*.csv")] == ["tally_layer2.csv"]
    assert run.summary["dissection"]["dissection.a"]["layers"] == d1.rows()
    assert run.summary["dissection"]["dissection.b"]["tally"] == {"layer2": "dissection/dissection.b/tally_layer2.csv"}
    assert run.summary["unit_sensitivity"]["sens"]["p_values"] == sens.rows()
    assert run.summary["unit_sensitivity"]["sens"]["detectors_top_n"] == sens.detector_rows()
    assert run.summary["detector_views"]["views"] == views.rows()
    json.dumps(run.summary)
    # other groups are left to the core and other plugins
    assert advinterp_dissect.advinterp_report_section(group=ReportGroup("analyzer", "pse", []), run=run) is None
    assert advinterp_dissect.advinterp_report_section(group=ReportGroup("analyzer", "dissection", []), run=run) is None
