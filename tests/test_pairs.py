"""Paired datasets (B1): ``build_pairs`` exports clean/adversarial pairs of the embedded world,
``PairsFolder`` reads them back and reads DAmageNet-style folders (flat PNGs beside the
ILSVRC JPEGs, a val.txt labels file), the CLI builds and checks, a study reads pairs data."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import advinterp
from advinterp.cli import main
from advinterp.datasets.pairs import PairsFolder, read_pair_labels
from advinterp.datasets.pairs_writer import build_pairs, quantize
from advinterp.exceptions import DatasetFormatError, ParameterError
from advinterp.params import Param

sys.path.insert(0, str(Path(__file__).parent))
import study_fixtures  # noqa: E402


class Noise(advinterp.Attack):
    """``x + eps * sign(randn)`` from torch's global generator (so the seed matters); records
    every call's input size and output; fails on call ``fail_at`` (a build killed mid-way)."""

    name = "noise"
    params = {"eps": Param.number(0.1, low=0.0, high=1.0)}
    calls: list[int] = []
    outputs: list[torch.Tensor] = []
    fail_at: int | None = None

    def _generate(self, model, x, y, target):
        if Noise.fail_at is not None and len(Noise.calls) == Noise.fail_at:
            raise RuntimeError("simulated crash")
        Noise.calls.append(len(x))
        out = (x + self.eps * torch.randn(x.shape).sign()).clamp(0, 1)
        Noise.outputs.append(out.clone())
        return out


@pytest.fixture
def noise():
    Noise.calls, Noise.outputs, Noise.fail_at = [], [], None
    yield Noise(eps=0.1)
    Noise.fail_at = None


@pytest.fixture(scope="module")
def world():
    """The embedded world's test scenes and the shipped CNN."""
    return advinterp.get_dataset("synthetic", n=12, split="test"), advinterp.get_model("synthetic-cnn")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_built_pairs_round_trip_exactly(tmp_path, world, noise):
    data, model = world
    before = advinterp.model_fingerprint(model)
    pairs = build_pairs(noise, model, data, tmp_path / "p", shard_size=5, seed=3, progress=False)
    assert advinterp.model_fingerprint(model) == before, "build_pairs changed the model"
    assert Noise.calls == [5, 5, 2]
    # the layout: class folders named after the dataset's classes, <index>.png on both sides
    x, y = data.tensors()
    names = data.classes
    for i in range(12):
        rel = Path(names[int(y[i])]) / f"{i:06d}.png"
        assert (tmp_path / "p" / "clean" / rel).is_file() and (tmp_path / "p" / "adversarial" / rel).is_file()
    # read back: x0 and x_adv are the 8-bit images exactly, labels are the dataset's
    x_adv = torch.cat(Noise.outputs)
    assert len(pairs) == 12
    x0_r, xa_r, y_r = pairs.tensors()
    order = [int(c.stem) for c, _, _ in pairs.pairs]
    assert sorted(order) == list(range(12))
    assert torch.equal(x0_r, quantize(x[order])) and torch.equal(xa_r, quantize(x_adv[order]))
    assert torch.equal(y_r, y[order])
    assert not torch.equal(xa_r, x0_r)
    # the manifest: identity and success measured on the saved (quantised) images
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["attack"] == "noise" and m["params"] == {"eps": 0.1} and m["seed"] == 3
    assert m["model_fingerprint"] == before["weights"] and m["size"] == [3, 64, 64]
    assert m["classes"] == list(names) and m["data"]["split"] == "test"
    assert [s["count"] for s in m["shards"].values()] == [5, 5, 2]
    fooled = int((model.predict(xa_r) != y_r).sum())
    assert m["success"] == fooled == sum(s["success"] for s in m["shards"].values()) and m["n"] == 12
    assert m["success_rate"] == pytest.approx(fooled / 12)
    # a plain PairsFolder of the folder labels by the manifest's classes, not sorted folder names
    again = PairsFolder(tmp_path / "p", size="original")
    assert again.targets == pairs.targets and again.skipped == {"clean": [], "adversarial": []}


def test_same_seed_same_files_other_seed_other_files(tmp_path, world, noise):
    data, model = world
    build_pairs(noise, model, data, tmp_path / "a", n=6, shard_size=3, seed=1, progress=False)
    build_pairs(noise, model, data, tmp_path / "b", n=6, shard_size=3, seed=1, progress=False)
    build_pairs(noise, model, data, tmp_path / "c", n=6, shard_size=3, seed=2, progress=False)
    a, b, c = (_files(tmp_path / k / "adversarial") for k in "abc")
    assert a == b and a.keys() == c.keys() and a != c


def test_resume_skips_done_shards(tmp_path, world, noise):
    data, model = world
    out = tmp_path / "p"
    # a build killed in its second shard: the first is recorded, the second is not
    Noise.fail_at = 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_pairs(noise, model, data, out, n=6, shard_size=3, progress=False)
    assert list(json.loads((out / "manifest.json").read_text())["shards"]) == ["0"]
    first = _files(out)
    Noise.fail_at = None
    build_pairs(noise, model, data, out, n=6, shard_size=3, progress=False)
    assert Noise.calls == [3, 3], "the recorded shard was attacked again"
    # n then 2n: only the new shards are attacked; the files of the done ones stay as they were
    pairs = build_pairs(noise, model, data, out, n=12, shard_size=3, progress=False)
    assert Noise.calls == [3, 3, 3, 3] and len(pairs) == 12
    now = _files(out)
    assert all(now[k] == v for k, v in first.items())
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["shards"]) == ["0", "1", "2", "3"] and m["n"] == 12
    # a rerun of a complete build attacks nothing
    build_pairs(noise, model, data, out, n=12, shard_size=3, progress=False)
    assert len(Noise.calls) == 4


def test_manifest_of_another_build_is_refused(tmp_path, world, noise):
    data, model = world
    build_pairs(noise, model, data, tmp_path / "p", n=3, shard_size=3, progress=False)
    with pytest.raises(DatasetFormatError, match=r"seed: folder 0 vs now 1.*another folder"):
        build_pairs(noise, model, data, tmp_path / "p", n=3, shard_size=3, seed=1, progress=False)
    with pytest.raises(DatasetFormatError, match=r"params: folder \{'eps': 0.1\} vs now \{'eps': 0.2\}"):
        build_pairs(Noise(eps=0.2), model, data, tmp_path / "p", n=3, shard_size=3, progress=False)
    robust = advinterp.get_model("synthetic-cnn-robust")
    with pytest.raises(DatasetFormatError, match="model_fingerprint"):
        build_pairs(noise, robust, data, tmp_path / "p", n=3, shard_size=3, progress=False)
    with pytest.raises(DatasetFormatError, match="classes: folder"):
        build_pairs(noise, model, data, tmp_path / "p", n=3, shard_size=3, progress=False,
                    classes=[f"c{i}" for i in range(12)])
    assert Noise.calls == [3]


def test_build_pairs_rejects_bad_arguments(tmp_path, world, noise):
    data, model = world
    with pytest.raises(ParameterError, match="shard_size=0"):
        build_pairs(noise, model, data, tmp_path / "p", shard_size=0)
    with pytest.raises(ParameterError, match="params="):
        build_pairs(noise, model, data, tmp_path / "p", params={"eps": 0.2})
    with pytest.raises(ParameterError, match="n=0"):
        build_pairs(noise, model, data, tmp_path / "p", n=0)


# ------------------------------------------------------------------ DAmageNet layout
def _damagenet(root: Path, n: int = 5, labels: str | None = None) -> list[np.ndarray]:
    """ILSVRC-style flat clean JPEGs + flat DAmageNet-style PNGs of the same names + val.txt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "val").mkdir(parents=True)
    (root / "damagenet").mkdir()
    adv = []
    for i in range(1, n + 1):
        img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", quality=95)
        a = np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / "damagenet" / f"ILSVRC2012_val_{i:08d}.png")
        adv.append(a)
    (root / "val.txt").write_text(labels if labels is not None else
                                  "# ILSVRC2012 validation labels\n\n" +
                                  "".join(f"ILSVRC2012_val_{i:08d}.JPEG {(7 * i) % 4}\n" for i in range(1, n + 1)))
    return adv


def test_damagenet_layout_pairs_png_with_jpeg_by_stem(tmp_path):
    adv = _damagenet(tmp_path)
    pairs = PairsFolder(clean=tmp_path / "val", adversarial=tmp_path / "damagenet", labels=tmp_path / "val.txt",
                        size="original")
    assert len(pairs) == 5 and pairs.classes is None
    assert pairs.targets == [(7 * i) % 4 for i in range(1, 6)]
    assert [(c.name, a.name) for c, a, _ in pairs.pairs][0] == ("ILSVRC2012_val_00000001.JPEG",
                                                                "ILSVRC2012_val_00000001.png")
    x0, xa, y = pairs.tensors()
    assert x0.shape == xa.shape == (5, 3, 16, 16)
    assert torch.equal(xa, torch.from_numpy(np.stack(adv)).permute(0, 3, 1, 2).float() / 255)
    # relative clean/adversarial/labels are taken inside root; size=224 is the ImageNet transform
    same = PairsFolder(tmp_path, clean="val", adversarial="damagenet", labels="val.txt", size=32)
    assert same.targets == pairs.targets and same[0][1].shape == (3, 32, 32)
    # the registered factory takes the same keywords
    reg = advinterp.get_dataset("pairs-folder", root=str(tmp_path), clean="val", adversarial="damagenet",
                                labels="val.txt", match="name", size="original")
    assert reg.targets == pairs.targets and torch.equal(reg.tensors()[1], xa)
    # match="path" keeps the extension, so nothing pairs: the promised error, with the fix
    with pytest.raises(DatasetFormatError, match=r"5 clean image\(s\) without an adversarial partner "
                                                 r"\(ILSVRC2012_val_00000001.JPEG.*unmatched=\"skip\""):
        PairsFolder(clean=tmp_path / "val", adversarial=tmp_path / "damagenet", labels=tmp_path / "val.txt",
                    match="path")


def test_missing_partner_is_named_and_skip_keeps_the_rest(tmp_path):
    _damagenet(tmp_path)
    (tmp_path / "damagenet" / "ILSVRC2012_val_00000003.png").unlink()
    kw = dict(clean=tmp_path / "val", adversarial=tmp_path / "damagenet", labels=tmp_path / "val.txt")
    with pytest.raises(DatasetFormatError, match=r"1 clean image\(s\) without an adversarial partner "
                                                 r"\(ILSVRC2012_val_00000003.JPEG\) and 0 adversarial"):
        PairsFolder(**kw)
    with pytest.warns(UserWarning, match="skipped 1 clean and 0 adversarial"):
        pairs = PairsFolder(**kw, unmatched="skip", size="original")
    assert len(pairs) == 4 and pairs.skipped == {"clean": ["ILSVRC2012_val_00000003.JPEG"], "adversarial": []}
    assert "ILSVRC2012_val_00000003.JPEG" not in [c.name for c, _, _ in pairs.pairs]
    # the CLI check lists it and exits 1
    assert main(["pairs", "check", str(tmp_path), "--clean", "val", "--adversarial", "damagenet",
                 "--labels", "val.txt"]) == 1


def test_labels_file_errors_name_file_and_line(tmp_path):
    bad = "ILSVRC2012_val_00000001.JPEG 1\n# comment\nILSVRC2012_val_00000002.JPEG 2 extra\n"
    _damagenet(tmp_path, labels=bad)
    with pytest.raises(DatasetFormatError, match=r"val.txt line 3: expected 2 fields .* found 3.*'#' starts"):
        PairsFolder(clean=tmp_path / "val", adversarial=tmp_path / "damagenet", labels=tmp_path / "val.txt")
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 1\n")
    with pytest.raises(DatasetFormatError, match=r"no label for 4 of 5 pair\(s\).*ILSVRC2012_val_00000002"):
        PairsFolder(clean=tmp_path / "val", adversarial=tmp_path / "damagenet", labels=tmp_path / "val.txt")
    # CSV with a header and class names, mapped by classes=
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(
        f"ILSVRC2012_val_{i:08d},{'cat' if i % 2 else 'dog'}\n" for i in range(1, 6)))
    pairs = PairsFolder(clean=tmp_path / "val", adversarial=tmp_path / "damagenet", labels=tmp_path / "labels.csv",
                        classes=["dog", "cat"])
    assert pairs.targets == [1, 0, 1, 0, 1] and pairs.classes == ["dog", "cat"]
    assert read_pair_labels(tmp_path / "labels.csv")["ILSVRC2012_val_00000002"] == "dog"
    (tmp_path / "dup.csv").write_text("a.png,1\nb.png,2\na.png,3\n")
    with pytest.raises(DatasetFormatError, match=r"dup.csv line 3: 'a.png' already has a label \(line 1\)"):
        read_pair_labels(tmp_path / "dup.csv")


def test_flat_clean_side_without_labels_says_what_to_pass(tmp_path):
    _damagenet(tmp_path)
    with pytest.raises(DatasetFormatError, match="flat .* Pass labels="):
        PairsFolder(clean=tmp_path / "val", adversarial=tmp_path / "damagenet")
    with pytest.raises(ParameterError, match="match='suffix'"):
        PairsFolder(tmp_path, match="suffix")


def test_cli_builds_and_checks(tmp_path, capsys):
    out = tmp_path / "p"
    args = ["pairs", "build", "--attack", "fgsm", "--params", '{"eps": 0.03}', "--model", "synthetic-cnn",
            "--data", "synthetic", "--data-params", '{"n": 6, "split": "test"}', "--out", str(out),
            "--shard-size", "4", "--no-progress"]
    assert main(args) == 0
    assert "6 pairs" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["attack"] == "fgsm" and m["params"]["eps"] == 0.03 and list(m["shards"]) == ["0", "1"]
    assert main(["pairs", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6 matched pair(s)" in text and "0 clean and 0 adversarial" in text and "attack fgsm" in text
    assert main(args[:5] + ['{"eps": 0.05}'] + args[6:]) == 2
    assert "different build" in capsys.readouterr().err
    assert main(args[:5] + ["{eps"] + args[6:]) == 2


# ------------------------------------------------------------------ the study's data table
@pytest.fixture
def fixtures_plugin(fresh_registry):
    study_fixtures.register()


def test_study_pairs_table_takes_the_new_params(tmp_path, fixtures_plugin):
    from advinterp.study import Study, StudyError

    _damagenet(tmp_path / "dn")
    text = textwrap.dedent("""
        [models.m]
        model = "counting-toy"
        [data.dn]
        pairs = "dn"
        params = { clean = "val", adversarial = "damagenet", labels = "val.txt", match = "stem", size = "original" }
        [[steps]]
        id = "metrics"
        analyzer = "attack_metrics"
        batch = "dn"
        params = { average_over = "all" }
    """)
    run = Study.from_text(text, tmp_path / "study.toml").run(tmp_path / "run", log=lambda *_: None)
    res = run.steps["metrics"].result
    x0, xa, y = PairsFolder(tmp_path / "dn", clean="val", adversarial="damagenet", labels="val.txt",
                            size="original").tensors()
    np.testing.assert_allclose(res.linf, (xa - x0).flatten(1).abs().amax(1).numpy())
    assert len(res.success) == 5
    with pytest.raises(StudyError, match=r"data.dn.params.mach: unknown parameter of pairs data. Did you mean 'match'"):
        Study.from_text(text.replace("match =", "mach ="), tmp_path / "study.toml")
    with pytest.raises(StudyError, match=r"'suffix' is not one of 'stem', 'path', 'name'"):
        Study.from_text(text.replace('"stem"', '"suffix"'), tmp_path / "study.toml")
