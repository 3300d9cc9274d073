import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("ADVINTERP_PROGRESS", "0")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def fresh_registry(monkeypatch):
    """Rebuild the global registry for a test and again afterwards."""
    import advinterp.registry as reg

    yield reg
    monkeypatch.undo()
    reg.reload_plugins()


@pytest.fixture(scope="session")
def synthetic_model():
    import advinterp

    return advinterp.get_model("synthetic-cnn")


@pytest.fixture(scope="session")
def synthetic_test_data():
    from advinterp.datasets.synthetic import SyntheticWorld

    return SyntheticWorld(size=64, seed=0).generate(1000, "test").tensors()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The shipped demo study, small (48 test scenes, 24 attacked), run once per session by
    ``advinterp demo``: the CLI test checks its files, the browser test its report."""
    from advinterp.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), "--n", "48", "--n-attack", "24"]) == 0
    return out
