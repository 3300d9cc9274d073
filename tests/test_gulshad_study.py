"""``examples/studies/gulshad.toml`` reduced: Gulshad et al.'s protocol runs end to end on the
embedded world and its report has the Fig. 4, Fig. 5 and Figs. 6-7 sections and figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from advinterp.study import Study

ROOT = Path(__file__).resolve().parents[1]
GULSHAD = ROOT / "examples" / "studies" / "gulshad.toml"
#: a few images, one eps pair, short training: well under a minute on two CPUs
TINY = {"n": 8, "n_train": 24, "epochs": 1, "eps": [0.01, 0.12], "max_iter": 3, "grounded": 2}


@pytest.fixture(scope="module")
def gulshad_run(tmp_path_factory):
    pytest.importorskip("advinterp_attributes")
    out = tmp_path_factory.mktemp("gulshad") / "run"
    run = Study.from_file(GULSHAD, TINY).run(out, log=lambda m: None)
    return out, run


def test_the_study_runs_every_step_with_its_report_section(gulshad_run):
    out, run = gulshad_run
    assert len(run.steps) == len(Study.from_file(GULSHAD, TINY).steps) == 4
    html = (out / "index.html").read_text()
    for title in ("softmax vs SJE under attack", "distances d1 / d2", "grounding the selected attributes"):
        assert title in html, title
    for fig in ("robustness_attributes_robustness.png", "distances_attributes_distances.png",
                "grounding_attributes_grounding.png"):
        assert (out / fig).is_file() and fig in html, fig
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["attributes_robustness"]["robustness"]
    assert [(r["mode"], r["eps"]) for r in rows] == [("untargeted", 0.01), ("untargeted", 0.12),
                                                    ("targeted", 0.01), ("targeted", 0.12)]
    assert set(summary["attributes_distances"]["distances"]["accuracy"]) >= {"clean", "adversarial"}


def test_the_studys_numbers_are_consistent(gulshad_run):
    _, run = gulshad_run
    res = run.steps["robustness"].result
    batch = run.steps["ifgsm"].result
    import advinterp

    clean = advinterp.get_model("synthetic-cnn").accuracy(batch.x0, batch.y_true)
    assert (res.accuracy[:, :, 0] == clean).all()
    # eps 0.12 leaves the softmax model no more accurate than eps 0.01
    assert (res.accuracy[:, 1, 1] <= res.accuracy[:, 0, 1]).all()
    assert run.steps["grounding"].result.n_true == len(run.steps["grounding"].result.groundings)


def test_the_same_file_runs_on_an_awa2_folder(tmp_path):
    """The study's [vars] switch it to an AwA2 folder (the embedded world exported in AwA2's
    format stands in for the real one): the attack reads the folder and the SJE uses the
    folder's class-attribute matrix."""
    pytest.importorskip("advinterp_attributes")
    import numpy as np

    from advinterp.datasets.awa2 import export_awa2
    from advinterp.datasets.synthetic import SyntheticWorld

    root = export_awa2(tmp_path / "AwA2", n_per_class=2)
    over = {**TINY, "n": 6, "eps": [0.06], "dataset": "awa2",
            "data_params": {"root": str(root), "size": 64},
            "attributes_from": "awa2", "attributes_params": {"root": str(root)}}
    study = Study.from_file(GULSHAD, over)
    run = study.run(tmp_path / "run", log=lambda m: None)
    batch = run.steps["ifgsm"].result
    assert len(batch.x0) == 6
    res = run.steps["robustness"].result
    assert res.attributes_from == "dataset awa2"
    # the folder's matrix is the world's (exported), read back from predicate-matrix-binary.txt
    import advinterp

    ds = advinterp.get_dataset("awa2", root=str(root))
    np.testing.assert_array_equal(np.asarray(ds.class_attributes), SyntheticWorld().class_attributes)
