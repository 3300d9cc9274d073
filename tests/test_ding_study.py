"""``examples/studies/ding.toml`` reduced: Ding et al.'s protocol runs end to end on the embedded
world, every finding of the ``ding2023`` comparison is measured, the paper's figures are in the
report, and the findings the embedded world settles come out as docs/ding.md says."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advinterp.study import Study

ROOT = Path(__file__).resolve().parents[1]
DING = ROOT / "examples" / "studies" / "ding.toml"
#: a few pairs per analysis: about a minute on two CPUs
REDUCED = {"n_pairs": 24, "n_train": 48, "sizes": [16, 48], "n_detector": 48}


@pytest.fixture(scope="module")
def ding_run(tmp_path_factory):
    pytest.importorskip("advinterp_art")
    out = tmp_path_factory.mktemp("ding") / "run"
    run = Study.from_file(DING, REDUCED).run(out, log=lambda m: None)
    findings = {r["finding"]: r for r in json.loads((out / "summary.json").read_text())["papers"]["ding2023"]}
    return out, run, findings


def test_the_study_runs_every_step_and_measures_every_finding(ding_run):
    out, run, findings = ding_run
    assert len(run.steps) == len(Study.from_file(DING, REDUCED).steps)
    html = (out / "index.html").read_text()
    assert "Reproducing Ding et al." in html
    for fig in ("pixel_histograms.png", "prediction_cams.png", "cam_replacement.png", "paper_ding2023.png"):
        assert (out / fig).is_file() and fig in html, fig
    assert all(f["verdict"] != "not measured" for f in findings.values()), [
        k for k, f in findings.items() if f["verdict"] == "not measured"]
    # both adversarial datasets are judged
    for d in ("pgd", "transfer"):
        assert any(k.startswith(f"{d}: ") for k in findings), d


def test_findings_the_embedded_world_settles(ding_run):
    _, _, findings = ding_run
    # Fig. 2: an 8/255 PGD set keeps the pixel histograms nearly equal
    assert findings["pgd: pixel histograms of clean and adversarial images nearly equal (pooled TV < 0.1)"][
        "verdict"] == "reproduced"
    # Tables 8-9: masking the ten most different channels is no defence
    assert findings["pgd: masking the ten most different feature maps does not defend (adversarial accuracy "
                    "gains < 0.1)"]["verdict"] == "reproduced"
    # Tables 4-7: on this CNN the difference grows with depth -- the paper's ordering is reversed
    assert findings["pgd: the most different feature maps lie in earlier layers than the least different ones"][
        "verdict"] == "not reproduced"


def test_transfer_set_is_made_without_the_model_under_study(ding_run):
    """The stand-in for DAmageNet is attacked on the robust model, yet it fools the natural one."""
    _, run, _ = ding_run
    import advinterp

    batch = run.steps["transfer"].result
    assert run.steps["transfer"].spec["model"] == "robust"
    natural = advinterp.get_model("synthetic-cnn")
    acc = float((natural.predict(batch.x_adv) == batch.y_true).float().mean())
    assert acc < 0.3 and np.isfinite(acc)


def test_the_same_file_runs_on_pairs_folders(tmp_path):
    """The user's variant: the transfer set comes from pairs folders on disk (DAmageNet-style
    data tables) instead of an attack step; everything downstream runs unchanged."""
    pytest.importorskip("advinterp_art")
    import re

    from advinterp.datasets.pairs_writer import build_pairs

    for part, split, n in (("val", "test", 24), ("train", "train", 16)):
        build_pairs("pgd", "synthetic-cnn-robust", "synthetic", tmp_path / part,
                    params={"eps": 16 / 255, "eps_step": 4 / 255, "max_iter": 5},
                    data_params={"n": n, "split": split}, shard_size=16, progress=False)
    text = DING.read_text()
    start = text.index('[[steps]]\nid = "transfer${part}"')
    end = text.index("[[steps]]", start + 10)
    text = text[:start] + text[end:]  # the attack step goes ...
    text = text.replace("# --- the two adversarial datasets", f"""[data.transfer]
pairs = "{tmp_path / 'val'}"
params = {{ size = "original" }}

[data."transfer.train"]
pairs = "{tmp_path / 'train'}"
params = {{ size = "original" }}

# --- the two adversarial datasets""")  # ... and pairs folders take its ids
    assert not re.search(r'attack = "pgd"\nparams = \{ eps = "\$\{eps_transfer\}"', text)
    study = Study.from_text(text, DING, {"n_pairs": 8, "n_train": 16, "sizes": [8, 16], "n_detector": 16})
    run = study.run(tmp_path / "run", log=lambda m: None)
    findings = {r["finding"]: r for r in json.loads((tmp_path / "run" / "summary.json").read_text())["papers"]["ding2023"]}
    assert all(f["verdict"] != "not measured" for f in findings.values())
    assert any(k.startswith("transfer: ") for k in findings)
    assert run.steps["rmse.transfer"].result.n == 8
