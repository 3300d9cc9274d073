import json
import subprocess
import sys

import advinterp
from advinterp.cli import main


def test_list_shows_plugins_and_components(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "builtins" in out and "loaded" in out
    for name in ("pgd", "activation_distance", "synthetic-cnn", "torchvision:resnet50", "synthetic"):
        assert name in out
    assert main(["list", "attack"]) == 0
    out = capsys.readouterr().out
    assert "pgd" in out and "synthetic-cnn" not in out


def test_errors_exit_2_with_message(capsys, monkeypatch):
    def boom(**kw):
        raise advinterp.ParameterError("demo", "n", -1, "a positive integer")

    monkeypatch.setattr("advinterp.demo.run_demo", boom)
    assert main(["demo", "--n", "-1"]) == 2
    assert "n=-1 is invalid" in capsys.readouterr().err


def test_demo_writes_a_run_directory(demo_run):
    out = demo_run
    for f in ("scenes.png", "activation_distance.png", "perturbations.png", "cam_pairs.png", "is_scores.png",
              "pse_sensitivity.png", "psr_cw_l2.png", "index.html", "summary.json", "run.json", "study.toml",
              "table_a1.txt", "table1.txt", "table2.txt", "table_a1_refined.txt"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    summary = json.loads((out / "summary.json").read_text())
    models = {r["model"]: r for r in summary["models"]}
    assert models["synthetic-cnn"]["clean_accuracy"] > 0.9
    assert models["synthetic-cnn-robust"]["adv_accuracy"] > models["synthetic-cnn"]["adv_accuracy"]
    assert {r["attack"] for r in summary["attacks"]} >= {"pgd", "cw_l2", "ead", "str"}
    html = (out / "index.html").read_text()
    assert "data:image/png;base64" in html and "Models: accuracy" in html and "About this run" in html
    # the dissect plugin's sections and NetDissect-Lite tally files
    assert (out / "dissection" / "dissection" / "tally_layer4.csv").is_file()
    assert summary["dissection"] and summary["unit_sensitivity"]


def test_print_study_is_the_shipped_file(capsys):
    from advinterp.demo import DEMO_STUDY

    assert main(["demo", "--print-study"]) == 0
    assert capsys.readouterr().out == DEMO_STUDY.read_text()


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "advinterp", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and advinterp.__version__ in r.stdout
