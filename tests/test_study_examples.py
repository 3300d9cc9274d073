"""The shipped studies: the demo study checks; the torchvision example runs end to end on a
tiny ImageNet-style fixture folder with a random-weight resnet18 saved as a state_dict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from advinterp.cli import main
from advinterp.demo import DEMO_STUDY, demo_vars
from advinterp.study import Study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "studies" / "torchvision_imagenet.toml"


def test_demo_study_checks_with_every_shipped_plugin():
    study = Study.from_file(DEMO_STUDY, demo_vars(n=48, n_attack=24)).check()
    ids = [s.id for s in study.steps]
    for sid in ("pgd.standard", "accuracy.robust", "attack.cw_l2", "cam.str", "is.gradcampp.ead", "pse.cw_l2",
                "refine.cw_l2", "dissection", "unit_sensitivity", "detector_views"):
        assert sid in ids
    assert ids.index("cam.cw_l2") < ids.index("pse.cw_l2")  # report inputs run first


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "images" / wnid).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "images" / wnid / f"{k}.png")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    return tmp_path


def test_torchvision_example_runs_on_an_image_folder(image_folder):
    out = image_folder / "run"
    args = ["run", str(EXAMPLE), "--out", str(out), "--set", f"weights={image_folder / 'resnet18.pth'}",
            "--set", f"images={image_folder / 'images'}", "--set", "arch=resnet18", "--set", "n=4",
            "--set", "n_pse=1", "--set", "pse_size=112", "--set", "max_iter=2"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"]["accuracy"]["rows"][0]["n"] == 4
    assert summary["steps"]["pse"]["rows"][0]["grids"] == 4  # 224 / 112 = 2 x 2
    html = (out / "index.html").read_text()
    for title in ("Attacks (Table A1 view)", "Interpretability score", "Promotion-suppression", "gradcampp"):
        assert title in html
    assert (out / "psr_pse.png").is_file()
    # the same command again reuses every step
    assert main(args) == 0
    assert all(s["cached"] for s in json.loads((out / "run.json").read_text())["steps"].values())
