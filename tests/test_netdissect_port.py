"""benchmarks/netdissect_lite.py: the NetDissect-Lite port agrees with advinterp_dissect.dissect
given the same thresholds, takes exact np.percentile thresholds, and writes NetDissect-Lite's
tally.csv header."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import advinterp
from advinterp.datasets.broden import BrodenDataset, export_broden
from advinterp.datasets.synthetic import SyntheticWorld

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from netdissect_lite import netdissect_lite  # noqa: E402

pytest.importorskip("advinterp_dissect")
from advinterp_dissect import dissect  # noqa: E402

SIZE = 32      # synthetic-cnn is fully convolutional with global pooling: 32 px works (layer1 32x32, layer4 8x8)
N = 12
B = 4          # feature batch of both implementations: the model sees the same batches
WORKERS = 2


@pytest.fixture(scope="module")
def model():
    return advinterp.get_model("synthetic-cnn")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("nd_port")
    world = SyntheticWorld(size=SIZE)
    return {None: export_broden(base / "full", world, n=N, split="val"),
            SIZE // 2: export_broden(base / "half", world, n=N, split="val", seg_size=SIZE // 2)}


def _compare(model, root, layer):
    d = dissect(model, root, [layer], batch_size=B, progress=False)[layer]
    r = netdissect_lite(model, root, [layer], batch_size=B, thresholds={layer: d.thresholds}, workers=WORKERS)[layer]
    labels = d.vocabulary.labels
    # every tally at the vocabulary's label numbers, then the IoU itself (same float64 formula, same order)
    np.testing.assert_array_equal(r["tally_labels"][labels], d.truth)
    np.testing.assert_array_equal(r["tally_units"], d.unit_pixels)
    np.testing.assert_array_equal(r["tally_both"][:, labels], d.intersection)
    np.testing.assert_array_equal(r["tally_units_cat"][:, labels], d.activation[:, d.vocabulary.category])
    np.testing.assert_array_equal(r["iou"][:, labels], d.iou())
    assert d.iou().max() > 0  # not a vacuous comparison


@pytest.mark.parametrize("layer", ["layer1", "layer4"])
def test_same_thresholds_same_iou_labels_at_image_size(model, roots, layer):
    _compare(model, roots[None], layer)


def test_same_thresholds_same_iou_upsampled_to_smaller_labels(model, roots):
    # layer4 is 8x8, labels 16x16: maps are upsampled (plain bilinear in PIL and torch)
    _compare(model, roots[SIZE // 2], "layer4")


def test_same_thresholds_same_iou_downsampled_maps(model, roots):
    # layer1 is 32x32, labels 16x16: maps are shrunk (PIL's antialiased bilinear)
    _compare(model, roots[SIZE // 2], "layer1")


def test_quantile_thresholds_are_np_percentile(model, tmp_path):
    n, q = 6, 0.005
    root = export_broden(tmp_path / "b", SyntheticWorld(size=SIZE), n=n, split="val")
    ds = BrodenDataset(root)
    images = np.stack([ds.image(i) for i in range(n)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    acts = model.activations(x, ["layer1", "layer4"])            # one batch of all n images
    r = netdissect_lite(model, root, ["layer1", "layer4"], quantile=q, batch_size=n, workers=WORKERS)
    for layer in ("layer1", "layer4"):
        a = acts[layer].double().numpy()                          # (n, U, h, w)
        U = a.shape[1]
        expected = np.array([np.percentile(a[:, u].ravel(), 100 * (1 - q)) for u in range(U)])
        assert r[layer]["thresholds"].dtype == np.float64
        np.testing.assert_array_equal(r[layer]["thresholds"], expected)
        assert r[layer]["seconds"]["quantile"] > 0
        # the thresholds mark the top 0.5 % of each unit's values (to one value: interpolation)
        count = a.shape[0] * a.shape[2] * a.shape[3]
        frac = (a > expected[None, :, None, None]).mean(axis=(0, 2, 3))
        assert np.all(np.abs(frac - q) <= 1.0 / count + 1e-12)


def test_tally_csv_has_netdissect_lite_header(model, roots, tmp_path):
    root = roots[None]
    ds = BrodenDataset(root)
    out = tmp_path / "tally_{layer}.csv"
    r = netdissect_lite(model, root, ["layer4"], batch_size=B, tally_csv=out, workers=WORKERS)["layer4"]
    path = tmp_path / "tally_layer4.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    expected = ["unit", "category", "label", "score"] + [
        f"{cat}-{k}" for cat in ds.categories for k in ("label", "truth", "activation", "intersect", "iou")]
    assert rows[0] == expected
    body = rows[1:]
    U = len(r["thresholds"])
    assert sorted(int(row[0]) for row in body) == list(range(1, U + 1))
    scores = [float(row[3]) for row in body]
    assert scores == sorted(scores, reverse=True)               # NetDissect-Lite's ordering
    assert body[0][1] in ds.categories
    # the score of a row is the best per-category IoU of its unit
    best = r["score_pciou"].max(axis=0)
    for row in body:
        assert float(row[3]) == pytest.approx(best[int(row[0]) - 1], abs=1e-12)


@pytest.mark.parametrize("seg, layer", [(None, "layer1"), (None, "layer4"), (SIZE // 2, "layer1"),
                                        (SIZE // 2, "layer4")])
def test_tally_csv_equals_netdissect_lites_file_byte_for_byte(model, roots, tmp_path, seg, layer):
    """dissect's tally.csv is NetDissect-Lite's: same rows in the same order (ties broken by
    numpy's default argsort), and a category with IoU 0 for every label names label 0
    (empty label, truth 0, the last category's gated activation, intersect 0, IoU 0)."""
    root = roots[seg]
    d = dissect(model, root, [layer], batch_size=B, progress=False)
    ours = d[layer].write_tally(tmp_path / "ours.csv")
    netdissect_lite(model, root, [layer], batch_size=B, thresholds={layer: d[layer].thresholds},
                    tally_csv=tmp_path / "theirs.csv", workers=WORKERS)
    assert ours.read_bytes() == (tmp_path / "theirs.csv").read_bytes()
    rows = d[layer].tally_rows()
    zero_cells = [(r, c) for r in rows for c in d[layer].vocabulary.categories if r[f"{c}-iou"] == 0]
    if zero_cells:  # the label-0 convention is exercised (4 of the 4 cases at the time of writing)
        r, c = zero_cells[0]
        assert r[f"{c}-label"] == "" and r[f"{c}-truth"] == 0 and r[f"{c}-intersect"] == 0
        last = d[layer].vocabulary.categories[-1]
        assert r[f"{c}-activation"] == d[layer].activation[r["unit"] - 1, -1], last


def test_iou_by_label_is_indexed_by_broden_label_number(model, roots):
    d = dissect(model, roots[None], ["layer4"], batch_size=B, progress=False)["layer4"]
    by_number = d.iou_by_label()
    labels = d.vocabulary.labels
    assert by_number.shape == (d.units, labels.max() + 1)
    np.testing.assert_array_equal(by_number[:, labels], d.iou())
    others = np.setdiff1d(np.arange(by_number.shape[1]), labels)
    assert (by_number[:, others] == 0).all()
