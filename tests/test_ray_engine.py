"""The Ray engine (plugins/advinterp-ray): a study's shards on Ray give the local engine's
results; runs resume across engines; a killed actor is restarted and its shard rerun; a
shard that keeps failing stops the study naming it, keeping the finished shards; a bad
address or a missing ray is an error naming the fix.

Ray is started once for the module (``ray.init(num_cpus=2)``), and a two-node cluster
(``ray.cluster_utils.Cluster``) for the last test. Equality is bitwise: every step here
(PGD, PSE, feature RMSE, dissection) is deterministic on CPU for a fixed input, whatever the
process or the number of threads, which the tests check rather than assume.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

import advinterp  # noqa: E402
from advinterp.study import Study  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import study_fixtures  # noqa: E402

from advinterp_ray import RayExecutor  # noqa: E402

STUDY = """
title = "ray engine"
seed = 0
shard_size = 8

[models.m]
model = "counting-toy"

[models.s]
model = "synthetic-cnn"

[data.d]
dataset = "toy-data"
params = { n = 24 }

[data.b]
broden = "broden"

[[steps]]
id = "attack"
attack = "pgd"
model = "m"
data = "d"
params = { targeted = true, eps = 0.0627, eps_step = 0.0157, max_iter = 5, num_random_init = 0 }

[[steps]]
id = "pse"
analyzer = "pse"
model = "m"
batch = "attack"
params = { size = 4, max_batch = 64 }

[[steps]]
id = "rmse"
analyzer = "feature_rmse"
model = "m"
batch = "attack"
params = { batch_size = 5 }

[[steps]]
id = "dissection"
probe = "dissection"
model = "s"
data = "b"
params = { layers = ["layer2"], bins = 64, batch_size = 2 }
shard_size = 2
"""

FLAKY_STEP = """
[[steps]]
id = "flaky"
analyzer = "flaky_metrics"
model = "m"
batch = "attack"
"""

DRIVER_PID = os.getpid()


class FlakyMetrics(advinterp.get_registry().info("analyzer", "attack_metrics").obj):
    """``attack_metrics`` defined only in this test file (registered in-process, so the Ray
    engine ships it by value); in any process but the driver its second call raises."""

    name = "flaky_metrics"
    calls = 0

    def analyze(self, model, batch, **context):
        type(self).calls += 1
        if os.getpid() != DRIVER_PID and type(self).calls > 1:
            raise RuntimeError("flaky_metrics fails on its second shard in a worker")
        return super().analyze(model, batch, **context)


class DyingMetrics(FlakyMetrics):
    """``attack_metrics`` whose worker process dies (``os._exit``) in any process but the driver."""

    name = "dying_metrics"

    def analyze(self, model, batch, **context):
        if os.getpid() != DRIVER_PID:
            os._exit(3)
        return super().analyze(model, batch, **context)


class FlakyPlugin:
    @advinterp.hookimpl
    def advinterp_register_analyzers(self, register):
        register(FlakyMetrics)
        register(DyingMetrics)


def _register():
    study_fixtures.register()
    if not advinterp.get_registry().has("analyzer", "flaky_metrics"):
        advinterp.register_plugin_object(FlakyPlugin(), "ray-test-flaky")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The study file beside a 6-image Broden export."""
    from advinterp.datasets.broden import export_broden
    from advinterp.datasets.synthetic import SyntheticWorld

    root = tmp_path_factory.mktemp("ray_study")
    export_broden(root / "broden", SyntheticWorld(size=64, seed=0), n=6, split="val")
    (root / "study.toml").write_text(STUDY)
    return root


@pytest.fixture(scope="module")
def ray_local():
    """Ray on this machine with 2 CPUs, for the module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def plugins():
    _register()
    yield
    advinterp.registry.reload_plugins()


def _run(folder, out, engine="local", text=STUDY, logs=None):
    log = (logs.append if logs is not None else (lambda _: None))
    return Study.from_text(text, folder / "study.toml").run(out, engine=engine, log=log, report=False)


@pytest.fixture(scope="module")
def local_run(folder):
    _register()
    return _run(folder, folder / "local")


def _same(a, b, where=""):
    """Bitwise equality of two results (dataclass fields, dicts, tensors, arrays)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert type(a).__name__ == type(b).__name__, where
        _same(vars(a), vars(b), where)
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_equal_runs(got, want, steps=("attack", "pse", "rmse", "dissection")):
    for s in steps:
        _same(got.steps[s].result, want.steps[s].result, s)


def _cached(out):
    return {k: v["cached"] for k, v in json.loads((out / "run.json").read_text())["steps"].items()}


def test_ray_engine_equals_the_local_engine(folder, ray_local, local_run):
    ex = RayExecutor(num_workers=2)
    try:
        run = _run(folder, folder / "ray", engine=ex)
        assert len(ex.actors) == 2
    finally:
        ex.close()
    assert json.loads((folder / "ray" / "run.json").read_text())["engine"] == "ray"
    assert not any(_cached(folder / "ray").values())
    _assert_equal_runs(run, local_run)
    # the local engine's result files and the Ray engine's are the same bytes' worth of results
    for s in ("attack", "pse", "rmse", "dissection"):
        assert run.steps[s].path.name == local_run.steps[s].path.name == "result.pt"
        assert run.steps[s].path.parent.name == local_run.steps[s].path.parent.name  # same step key


def test_cli_engine_ray_resumes_a_run_the_local_engine_started(folder, ray_local, local_run, capsys):
    from advinterp.cli import main

    out = folder / "local-then-ray"
    first_two = STUDY.split('[[steps]]\nid = "rmse"')[0]
    (folder / "first_two.toml").write_text(first_two)
    assert main(["run", str(folder / "first_two.toml"), "--out", str(out)]) == 0
    assert main(["run", str(folder / "study.toml"), "--out", str(out), "--engine", "ray"]) == 0
    assert _cached(out) == {"attack": True, "pse": True, "rmse": False, "dissection": False}
    again = Study.resume(out).run(out, log=lambda _: None, report=False)
    assert all(_cached(out).values())
    _assert_equal_runs(again, local_run)


def test_a_shard_that_keeps_failing_stops_the_study_and_the_local_engine_resumes(folder, ray_local, local_run):
    """A component defined in this file (shipped by value) fails on its second shard in a
    worker: the study stops naming the shard and the worker's error, the first shard is kept,
    and the local engine finishes the step from it."""
    out = folder / "ray-then-local"
    text = STUDY + FLAKY_STEP
    FlakyMetrics.calls = 0
    ex = RayExecutor(num_workers=1)
    try:
        with pytest.raises(advinterp.AdvinterpError, match=r"step 'flaky': shard 1 \(images 8:16\) failed on the "
                           r"Ray engine: RuntimeError: flaky_metrics fails on its second shard in a worker"):
            _run(folder, out, engine=ex, text=text)
    finally:
        ex.close()
    shards = sorted(p.name for p in out.glob("steps/flaky-*/shards/*.pt"))
    assert shards == ["00000.pt"]
    logs: list[str] = []
    run = _run(folder, out, text=text, logs=logs)
    assert any("flaky: 1 of 3 shards done before (reused)" in line for line in logs)
    _assert_equal_runs(run, local_run)
    want = advinterp.get_analyzer("attack_metrics").analyze(study_fixtures.counting_toy(),
                                                            local_run.steps["attack"].result)
    _same(run.steps["flaky"].result.l2, want.l2, "flaky.l2")


def test_a_shard_whose_worker_keeps_dying_stops_the_study_naming_it(folder, ray_local, local_run):
    import shutil

    out = folder / "dying"
    shutil.copytree(folder / "local", out)  # the study's steps are done: only "dying" runs
    text = STUDY + FLAKY_STEP.replace('"flaky"', '"dying"').replace("flaky_metrics", "dying_metrics")
    ex = RayExecutor(num_workers=1, max_retries=1)
    try:
        with pytest.raises(advinterp.AdvinterpError, match=r"step 'dying': shard 0 \(images 0:8\) failed on the Ray "
                           r"engine: its worker died, and kept dying on the 1 retries"):
            _run(folder, out, engine=ex, text=text)
    finally:
        ex.close()
    assert all(_cached(out).values())  # what was done before is still there


class KillingExecutor(RayExecutor):
    """Kills (``ray.kill``, restart allowed) the actor of a running shard when the first
    shard of a step is done."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.killed: list[str] = []

    def run(self, tasks, done):
        first = [True]

        def done_and_kill(task, result):
            done(task, result)
            busy = self.in_flight()
            if first[0] and busy:
                first[0] = False
                t, actor = busy[0]
                ray.kill(actor, no_restart=False)
                self.killed.append(f"{t.step}:{t.index}")

        super().run(tasks, done_and_kill)


def test_killing_an_actor_mid_run_still_completes_with_identical_results(folder, ray_local, local_run):
    ex = KillingExecutor(num_workers=2, max_retries=2)
    try:
        run = _run(folder, folder / "killed", engine=ex)
    finally:
        ex.close()
    # an actor was killed while running a shard, in each sharded step (which shard: the one in
    # flight when the step's first shard came back)
    assert {k.split(":")[0] for k in ex.killed} == {"attack", "pse", "dissection"}, ex.killed
    _assert_equal_runs(run, local_run)


def test_a_module_the_workers_cannot_import_is_an_error_naming_the_fix(folder, ray_local, monkeypatch):
    """Without the by-value shipping of driver-only modules, the workers cannot unpickle the
    test's model (its class lives in tests/study_fixtures.py, in no installed package)."""
    import advinterp_ray.executor as rex

    for name in ("study_fixtures", __name__):
        if name in ray.cloudpickle.list_registry_pickle_by_value():
            ray.cloudpickle.unregister_pickle_by_value(sys.modules[name])
    monkeypatch.setattr(rex, "_driver_only_modules", lambda objects: set())
    ex = RayExecutor(num_workers=1)
    try:
        with pytest.raises(advinterp.AdvinterpError, match=r"step 'attack': shard 0 \(images 0:8\): the Ray workers "
                           r"cannot import a module the shard needs .*No module named 'study_fixtures'.*Make the "
                           r"component a plugin installed on every node"):
            _run(folder, folder / "unimportable", engine=ex)
    finally:
        ex.close()


def test_bad_address_and_missing_ray_name_the_fix(folder, ray_local, monkeypatch, capsys):
    from advinterp.cli import main

    assert main(["run", str(folder / "study.toml"), "--out", str(folder / "bad"), "--engine", "ray",
                 "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers at address='127.0.0.1:1'" in err and "ray start --head" in err
    assert main(["run", str(folder / "study.toml"), "--out", str(folder / "bad"), "--address", "x:1"]) == 2
    assert "engine 'local': address='x:1' is invalid" in capsys.readouterr().err
    with pytest.raises(advinterp.ParameterError, match="HOST:PORT"):
        advinterp.registry.get_executor("ray", address="nowhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(advinterp.MissingDependencyError, match=r"needs the package 'ray'.*pip install -e "
                       r"plugins/advinterp-ray"):
        advinterp.registry.get_executor("ray")
    monkeypatch.setenv("ADVINTERP_DISABLE_PLUGINS", "ray")
    advinterp.registry.reload_plugins()
    with pytest.raises(advinterp.ParameterError, match="pip install -e plugins/advinterp-ray"):
        advinterp.registry.get_executor("ray")


def test_a_two_node_cluster_gives_the_same_results(folder, ray_local, local_run):
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ex = RayExecutor(address=cluster.address, num_workers=2, device="cpu")  # results via torch.save
        try:
            run = _run(folder, folder / "cluster", engine=ex)
            nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            assert len(nodes) == 2
            pids = ray.get([a.ping.remote() for a in ex.actors])
            assert len(set(pids)) == 2
        finally:
            ex.close()
        _assert_equal_runs(run, local_run)
    finally:
        ray.shutdown()
        cluster.shutdown()
