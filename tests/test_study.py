"""The study layer: a study equals the components called from Python; resuming recomputes
nothing that is done (counted in forwards), a changed parameter only its dependents, a
corrupt file is recomputed, a SIGKILLed run resumes at its last shard; sharding merges
exactly; bad study files get errors naming file, line and fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import advinterp
from advinterp.study import Study, StudyError
from advinterp.study.report import report_from_folder

sys.path.insert(0, str(Path(__file__).parent))
import study_fixtures  # noqa: E402

STUDY = """
title = "toy study"
seed = 0
shard_size = {shard}

[models.m]
model = "counting-toy"

[data.d]
dataset = "toy-data"
params = {{ n = 40 }}

[[steps]]
id = "attack"
attack = "pgd"
params = {{ targeted = true, eps = 0.0627, eps_step = 0.0157, max_iter = 5, num_random_init = 0 }}

[[steps]]
id = "pse"
analyzer = "pse"
batch = "attack"
params = {{ size = {size}, max_batch = 64 }}

[[steps]]
id = "metrics"
analyzer = "attack_metrics"
batch = "attack"

[[steps]]
id = "acc"
probe = "accuracy"
data = "d"
context = {{ batch = "attack" }}
"""


@pytest.fixture(autouse=True)
def fixtures_plugin(fresh_registry):
    study_fixtures.register()
    yield


def _text(shard=64, size=4):
    return STUDY.format(shard=shard, size=size)


def _run(tmp_path, text, name="run", **kw):
    logs = []
    run = Study.from_text(text, tmp_path / "study.toml").run(tmp_path / name, log=logs.append, **kw)
    return run, logs


def _cached(out):
    return {k: v["cached"] for k, v in json.loads((out / "run.json").read_text())["steps"].items()}


def test_study_equals_the_components_called_from_python(tmp_path):
    run, _ = _run(tmp_path, _text())
    model = study_fixtures.counting_toy()
    x, y = study_fixtures.toy_dataset().x, study_fixtures.toy_dataset().y
    t = advinterp.random_targets(y, 4, torch.Generator().manual_seed(0))
    batch = advinterp.get_attack("pgd", targeted=True, eps=0.0627, eps_step=0.0157, max_iter=5,
                                 num_random_init=0).generate(model, x, y, t)
    got = run.steps["attack"].result
    assert torch.equal(got.x_adv, batch.x_adv) and torch.equal(got.y_target, t) and torch.equal(got.success, batch.success)
    pse = advinterp.get_analyzer("pse", size=4, max_batch=64).analyze(model, batch)
    for f in ("d0", "dt", "s", "r", "category", "grid_l2"):
        np.testing.assert_array_equal(getattr(run.steps["pse"].result, f), getattr(pse, f))
    metrics = advinterp.get_analyzer("attack_metrics").analyze(model, batch)
    np.testing.assert_array_equal(run.steps["metrics"].result.l2, metrics.l2)
    acc = run.steps["acc"].result
    assert acc.clean_accuracy == model.accuracy(x, y) and acc.adv_n == 40
    assert acc.adv_accuracy == float((batch.y_adv == y).float().mean())


def test_rerun_recomputes_nothing_and_a_changed_parameter_only_its_dependents(tmp_path):
    run, _ = _run(tmp_path, _text())
    out = run.out
    before = study_fixtures.FORWARDS["images"]
    _run(tmp_path, _text())
    assert study_fixtures.FORWARDS["images"] == before, "a finished study forwarded images again"
    assert all(_cached(out).values())
    # pse's window changes: pse alone is recomputed (attack, metrics, acc are reused)
    _run(tmp_path, _text(size=8))
    assert _cached(out) == {"attack": True, "pse": False, "metrics": True, "acc": True}
    pse_forwards = study_fixtures.FORWARDS["images"] - before
    assert pse_forwards == 40 * (4 + 1)  # 16x16 image, 8x8 grids: 4 ablated images + x' per image
    # the attack's budget changes: the attack and everything reading it is recomputed
    _run(tmp_path, _text(size=8).replace("max_iter = 5", "max_iter = 4"))
    assert _cached(out) == {"attack": False, "pse": False, "metrics": False, "acc": False}


def test_resume_with_the_same_study_via_cli(tmp_path):
    from advinterp.cli import main

    run, _ = _run(tmp_path, _text())
    before = study_fixtures.FORWARDS["images"]
    assert main(["run", "--resume", str(run.out)]) == 0
    assert study_fixtures.FORWARDS["images"] == before and all(_cached(run.out).values())


def test_corrupt_or_truncated_results_are_recomputed_never_loaded(tmp_path, monkeypatch):
    run, _ = _run(tmp_path, _text())
    out = run.out
    index = json.loads((out / "run.json").read_text())
    attack_file = out / index["steps"]["attack"]["path"]
    good = attack_file.read_bytes()
    attack_file.write_bytes(good[: len(good) // 2])  # truncated
    (out / index["steps"]["pse"]["path"]).write_bytes(b"")  # emptied
    loaded = []
    real_load = advinterp.Result.load.__func__
    monkeypatch.setattr(advinterp.Result, "load",
                        classmethod(lambda cls, p: loaded.append(Path(p).stat().st_size) or real_load(cls, p)))
    _, logs = _run(tmp_path, _text())
    assert _cached(out) == {"attack": False, "pse": False, "metrics": True, "acc": True}
    assert sum("does not match its checksum" in line for line in logs) == 2
    assert attack_file.read_bytes() == good  # recomputed bit for bit
    assert loaded and 0 not in loaded  # the emptied file was never handed to torch.load


def test_sharded_steps_merge_to_the_unsharded_result(tmp_path):
    whole, _ = _run(tmp_path, _text(shard=64), "whole")
    parts, _ = _run(tmp_path, _text(shard=7), "parts")
    a, b = whole.steps, parts.steps
    assert torch.equal(a["attack"].result.x_adv, b["attack"].result.x_adv)
    for f in ("d0", "dt", "s", "category", "grid_l2"):
        np.testing.assert_allclose(getattr(a["pse"].result, f), getattr(b["pse"].result, f), rtol=0, atol=1e-9)
    assert a["acc"].result == b["acc"].result
    np.testing.assert_array_equal(a["metrics"].result.l0, b["metrics"].result.l0)


def _per_shard_forwards(tmp_path) -> int:
    text = _text(shard=8).split("[[steps]]\nid = \"pse\"")[0]
    before = study_fixtures.FORWARDS["images"]
    _run(tmp_path, text, "count")
    total = study_fixtures.FORWARDS["images"] - before
    assert total % 5 == 0
    return total // 5


def test_sigkill_mid_step_then_resume_recomputes_only_the_unfinished_shards(tmp_path):
    per_shard = _per_shard_forwards(tmp_path)  # 40 images in 5 shards of 8
    text = _text(shard=8)
    (tmp_path / "study.toml").write_text(text)
    out = tmp_path / "killed"
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import study_fixtures
        study_fixtures.register()
        from advinterp.study import Study
        Study.from_file({str(tmp_path / 'study.toml')!r}).run({str(out)!r}, log=lambda s: None)
    """)
    env = {**os.environ, "ADVINTERP_TEST_KILL_AT": str(2 * per_shard + per_shard // 2), "ADVINTERP_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # killed in the middle of the third shard
    shard_dir = next((out / "steps").glob("attack-*")) / "shards"
    assert sorted(p.name for p in shard_dir.glob("*.pt")) == ["00000.pt", "00001.pt"]
    assert not list((out / "steps").rglob("result.pt"))
    before = study_fixtures.FORWARDS["images"]
    _, logs = _run(tmp_path, text, "killed")
    attack_forwards = study_fixtures.FORWARDS["images"] - before - 40 * (16 + 1) - 40  # minus pse and accuracy
    assert attack_forwards == 3 * per_shard
    assert any("2 of 5 shards done before" in line for line in logs)
    fresh, _ = _run(tmp_path, text, "fresh")
    assert torch.equal(fresh.steps["attack"].result.x_adv, Study.from_text(text, tmp_path / "study.toml").run(
        out, log=lambda s: None).steps["attack"].result.x_adv)


def test_report_is_rebuilt_from_the_folder(tmp_path):
    run, _ = _run(tmp_path, _text())
    html = (run.out / "index.html").read_text()
    (run.out / "index.html").unlink()
    summary = json.loads((run.out / "summary.json").read_text())
    assert set(summary["steps"]) == {"attack", "pse", "metrics", "acc"}
    assert summary["steps"]["acc"]["rows"][0]["n"] == 40
    path = report_from_folder(run.out)
    again = path.read_text()
    for title in ("Attacks (Table A1 view)", "Promotion-suppression effect", "Models: accuracy", "About this run"):
        assert title in html and title in again
    assert "table1.txt" in {p.name for p in run.out.iterdir()}


class _Recording:
    name = "record"

    def __init__(self):
        self.seen = []

    def run(self, tasks, done):
        for t in tasks:
            self.seen.append((t.step, t.index, t.label))
            done(t, t())


def test_shards_go_through_the_executor_a_plugin_returns(tmp_path):
    rec = _Recording()

    class EnginePlugin:
        @advinterp.hookimpl
        def advinterp_study_executor(self, engine):
            return rec if engine == "record" else None

    advinterp.register_plugin_object(EnginePlugin(), "engine-record")
    _run(tmp_path, _text(shard=16), engine="record")
    assert [s for s in rec.seen if s[0] == "attack"] == [("attack", 0, "images 0:16"), ("attack", 1, "images 16:32"),
                                                       ("attack", 2, "images 32:40")]
    with pytest.raises(advinterp.ParameterError, match="engine='nope'.*plugin that provides it"):
        _run(tmp_path, _text(), "other", engine="nope")


def test_matrix_and_variables():
    text = """
    title = "m"
    [vars]
    n = 5
    [models.a]
    model = "counting-toy"
    [models.b]
    model = "counting-toy"
    [data.d]
    dataset = "toy-data"
    params = { n = "${n}" }
    [[steps]]
    id = "atk.${m}.${eps}"
    attack = "pgd"
    model = "${m}"
    data = "d"
    params = { eps = "${eps}" }
    matrix = { m = ["a", "b"], eps = [0.01, 0.02] }
    """
    study = Study.from_text(textwrap.dedent(text), vars={"n": 7})
    assert [s.id for s in study.steps] == ["atk.a.0.01", "atk.a.0.02", "atk.b.0.01", "atk.b.0.02"]
    assert study.steps[1].params == {"eps": 0.02} and isinstance(study.steps[1].params["eps"], float)
    assert study.spec.data["d"].params == {"n": 7}


def test_matrix_as_a_list_of_combinations():
    text = """
    title = "m"
    [vars]
    n_a = 5
    n_b = 3
    [models.a]
    model = "counting-toy"
    [models.b]
    model = "counting-toy"
    [data.d]
    dataset = "toy-data"
    [[steps]]
    id = "atk.${m}"
    attack = "pgd"
    model = "${m}"
    data = "d"
    n = "${k}"
    params = "${p}"
    matrix = [{ m = "a", k = "${n_a}", p = { eps = 0.01 } }, { m = "b", k = "${n_b}", p = { eps = 0.02, max_iter = 2 } }]
    """
    study = Study.from_text(textwrap.dedent(text), vars={"n_b": 4})
    assert [(s.id, s.model, s.n) for s in study.steps] == [("atk.a", "a", 5), ("atk.b", "b", 4)]
    assert study.steps[1].params == {"eps": 0.02, "max_iter": 2}
    bad = textwrap.dedent(text).replace('{ m = "b", k', '{ m = "b", kk')
    with pytest.raises(StudyError, match=r"steps\[0\].matrix\[1\]: this combination sets \['kk', 'm', 'p'\], the "
                                         r"first one \['k', 'm', 'p'\]; every combination must set the same variables"):
        Study.from_text(bad)
    with pytest.raises(StudyError, match=r"matrix: \[\] is invalid; expected a table of lists"):
        Study.from_text(textwrap.dedent(text).replace(text.strip().splitlines()[-1].strip(), "matrix = []"))


BAD = {
    "toml": ('id = "x\n', r"study.toml: invalid TOML: .*line 1"),
    "top": ('titel = "x"\n', r"study.toml:1: titel: unknown top-level key. Did you mean 'title'"),
    "component": ('[models.m]\nmodel = "counting-toy"\n[[steps]]\nid = "a"\nanalyzer = "pes"\nbatch = "b"\n'
                  '[[steps]]\nid = "b"\nattack = "pgd"\ndata = "d"\n[data.d]\ndataset = "toy-data"\n',
                  r"study.toml:5: steps\[0\].analyzer: unknown analyzer 'pes'. Did you mean 'pse'"),
    "param type": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a"\n'
                   'attack = "pgd"\nparams = { eps = "big" }\n',
                   r"study.toml:8: steps\[0\].params: step 'a': PGD: eps='big' is invalid; expected a finite number"),
    "unknown ref": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "attack"\n'
                    'attack = "pgd"\n[[steps]]\nid = "p"\nanalyzer = "pse"\nbatch = "atack"\n',
                    r"study.toml:11: steps\[1\].batch: step 'p' refers to an unknown step 'atack'. Did you mean "
                    r"'attack'"),
    "cycle": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a"\n'
              'attack = "pgd"\n[[steps]]\nid = "p"\nanalyzer = "is"\nbatch = "a"\ncontext = { maps = "q" }\n'
              '[[steps]]\nid = "q"\nanalyzer = "is"\nbatch = "a"\ncontext = { maps = "p" }\n',
              r"study.toml:8: steps\[1\]: the steps form a cycle: p -> q -> p"),
    "weights": ('[models.m]\nmodel = "torchvision:resnet18"\nweights = "missing.pt"\n[data.d]\ndataset = "toy-data"\n'
                '[[steps]]\nid = "a"\nattack = "pgd"\n',
                r"study.toml:3: models.m.weights: weights = 'missing.pt': no such file or folder \(.*missing.pt\). "
                r"Relative paths are resolved against the study file's folder"),
    "duplicate": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a"\n'
                  'attack = "pgd"\n[[steps]]\nid = "a"\nattack = "pgd"\n',
                  r"study.toml:9: steps\[1\].id: the id 'a' is used twice"),
    "model id": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a"\n'
                 'attack = "pgd"\nmodel = "n"\n',
                 r"study.toml:8: steps\[0\].model: step 'a': unknown model id 'n'. .*Models: m"),
    "no batch": ('[models.m]\nmodel = "counting-toy"\n[[steps]]\nid = "p"\nanalyzer = "pse"\n',
                 r"study.toml:3: steps\[0\]: analyzer step 'p' needs batch"),
    "context": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a"\n'
                'attack = "pgd"\n[[steps]]\nid = "p"\nanalyzer = "pse"\nbatch = "a"\ncontext = { maps = "a" }\n',
                r"study.toml:12: steps\[1\].context: pse takes no context keyword 'maps'. It accepts: none"),
    "variable": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a.${atk}"\n'
                 'attack = "pgd"\n', r"study.toml:6: steps\[0\].id: unknown variable \$\{atk\}"),
    "step key": ('[models.m]\nmodel = "counting-toy"\n[data.d]\ndataset = "toy-data"\n[[steps]]\nid = "a"\n'
                 'attack = "pgd"\nparms = {}\n', r"study.toml:8: steps\[0\].parms: unknown step key. Did you mean 'params'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_files_name_file_line_and_fix(tmp_path, case):
    text, pattern = BAD[case]
    path = tmp_path / "study.toml"
    path.write_text(text)
    from advinterp.cli import main

    with pytest.raises(StudyError, match=pattern):
        Study.from_file(path).check()
    # the command line says the same, exits 2, runs nothing
    assert main(["run", str(path), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never" / "run.json").exists()


def test_pairs_folder_data_is_a_batch(tmp_path):
    """``pairs = PATH``: clean/adversarial image pairs from disk analysed like an attack's batch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for side in ("clean", "adversarial"):
        for cls in ("a", "b"):
            (tmp_path / "pairs" / side / cls).mkdir(parents=True)
    for cls in ("a", "b"):
        for k in range(3):
            img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "pairs" / "clean" / cls / f"{k}.png")
            noisy = np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(tmp_path / "pairs" / "adversarial" / cls / f"{k}.png")
    text = textwrap.dedent("""
        [models.m]
        model = "counting-toy"
        [data.pairs]
        pairs = "pairs"
        params = { size = 16 }
        [[steps]]
        id = "metrics"
        analyzer = "attack_metrics"
        batch = "pairs"
        params = { average_over = "all" }
    """)
    run, _ = _run(tmp_path, text)
    res = run.steps["metrics"].result
    from advinterp.datasets.pairs import PairsFolder

    x0, xa, y = PairsFolder(tmp_path / "pairs", size=16).tensors()
    np.testing.assert_allclose(res.linf, (xa - x0).flatten(1).abs().amax(1).numpy())
    assert len(res.success) == 6 and res.attack == "pairs:pairs"


def test_broden_folder_data_feeds_the_dissection_probe_in_shards(tmp_path):
    from advinterp.datasets.broden import export_broden
    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp_dissect import dissect

    export_broden(tmp_path / "broden", SyntheticWorld(size=64, seed=0), n=6, split="val")
    text = textwrap.dedent("""
        [models.m]
        model = "synthetic-cnn"
        [data.b]
        broden = "broden"
        [[steps]]
        id = "dissection"
        probe = "dissection"
        data = "b"
        params = { layers = ["layer2"], bins = 64, batch_size = 2 }
        shard_size = 2
    """)
    run, logs = _run(tmp_path, text)
    got = run.steps["dissection"].result.layers["layer2"]
    want = dissect(advinterp.get_model("synthetic-cnn"), tmp_path / "broden", layers=["layer2"], bins=64,
                   batch_size=2).layers["layer2"]
    np.testing.assert_array_equal(got.thresholds, want.thresholds)
    np.testing.assert_array_equal(got.intersection, want.intersection)


def test_source_attacks_only_the_images_of_one_class(tmp_path):
    """``source = K``: the step attacks the first ``n`` images (from ``start``) whose label is
    ``K``, in data order; the same examples as attacking those indices from Python."""
    text = _text().replace('id = "attack"\n', 'id = "attack"\nsource = 2\nstart = 1\nn = 3\n', 1)
    run, _ = _run(tmp_path, text)
    ds = study_fixtures.toy_dataset()
    of_class = [i for i in range(len(ds.y)) if int(ds.y[i]) == 2]
    assert len(of_class) >= 4  # the fixture has enough images of class 2 for the selection to matter
    got = run.steps["attack"].result
    assert torch.equal(got.x0, ds.x[of_class[1:4]]) and torch.equal(got.y_true, torch.full((3,), 2))
    model = study_fixtures.counting_toy()
    t = advinterp.random_targets(got.y_true, 4, torch.Generator().manual_seed(0))
    ref = advinterp.get_attack("pgd", targeted=True, eps=0.0627, eps_step=0.0157, max_iter=5,
                               num_random_init=0).generate(model, ds.x[of_class[1:4]], got.y_true, t)
    assert torch.equal(got.x_adv, ref.x_adv)
    # a source that no image has, or that is not a class of the model, is an error naming it
    for bad, msg in ((3, "no item of data"), (9, "not a class of its model")):
        if bad == 3 and any(int(c) == 3 for c in ds.y):
            continue
        with pytest.raises(advinterp.AdvinterpError, match=msg):
            _run(tmp_path, text.replace("source = 2", f"source = {bad}"), name=f"bad{bad}")


def test_source_must_be_a_class_index_and_only_on_attacks(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(_text().replace('id = "attack"\n', 'id = "attack"\nsource = "cat"\n', 1))
    with pytest.raises(StudyError, match=r"steps\[0\].source: 'cat' is invalid; expected a class index"):
        Study.from_file(path).check()
    path.write_text(_text().replace('id = "metrics"\n', 'id = "metrics"\nsource = 1\n', 1))
    with pytest.raises(StudyError, match=r"source applies to attack steps only"):
        Study.from_file(path).check()
