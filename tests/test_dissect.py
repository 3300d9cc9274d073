"""advinterp-dissect: network dissection (A8), unit sensitivity and significance (A9), detector
views (A10), the streaming quantile and the Broden reader's error reporting. The probe's
sharding, its conformance and the report sections: tests/test_dissect_probe.py."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import advinterp  # noqa: E402
from advinterp.datasets.broden import BrodenDataset, encode_segmentation, export_broden  # noqa: E402
from advinterp.datasets.synthetic import SyntheticWorld  # noqa: E402
from advinterp.exceptions import DatasetFormatError, IncompatibleModelError, ParameterError  # noqa: E402
from advinterp.model import ModelAdapter  # noqa: E402
from advinterp.testing import assert_model_unchanged  # noqa: E402
from advinterp_dissect import (DetectorViews, Dissection, SensitivityAnalysis, StreamingQuantile,  # noqa: E402
                               detector_views, dissect, dissection_section, sensitivity_analysis,
                               significance_test, unit_masks, unit_sensitivity)
from advinterp_dissect.dissection import threshold_as  # noqa: E402
from advinterp_dissect.reference import dissect_reference  # noqa: E402

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


# ---------------------------------------------------------------------------- a hand-built Broden set
def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _png(path, labels):
    Image.fromarray(encode_segmentation(np.asarray(labels))).save(path)


def _hand_broden(root):
    """Two 4x4 images, labels at 4x4.

    Image 0: colour rows 0-1 red (1), rows 2-3 green (2); object columns 0-1 cat (3); part
    in two PNGs of one cell: head (5) at (0,0), leg (6) at (0,0) and (1,0); no scene.
    Image 1: no pixel-level label at all, scene field (7).
    The images' R channel (unit 0 of :class:`_PixelNet`) is 255 at (0,0), (0,1), (2,2) on
    image 0 and at (3,2), (3,3) on image 1; G (unit 1) only at (0,0) of image 1.
    """
    d = root / "images" / "h"
    d.mkdir(parents=True)
    img0 = np.zeros((4, 4, 3), np.uint8)
    for r, c in [(0, 0), (0, 1), (2, 2)]:
        img0[r, c, 0] = 255
    img1 = np.zeros((4, 4, 3), np.uint8)
    for r, c in [(3, 2), (3, 3)]:
        img1[r, c, 0] = 255
    img1[0, 0, 1] = 255
    Image.fromarray(img0).save(d / "a.png")
    Image.fromarray(img1).save(d / "b.png")
    color = np.array([[1] * 4] * 2 + [[2] * 4] * 2)
    obj = np.zeros((4, 4), int)
    obj[:, :2] = 3
    head = np.zeros((4, 4), int)
    head[0, 0] = 5
    leg = np.zeros((4, 4), int)
    leg[0, 0] = leg[1, 0] = 6
    _png(d / "a_color.png", color)
    _png(d / "a_object.png", obj)
    _png(d / "a_part1.png", head)
    _png(d / "a_part2.png", leg)
    _write_csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "scene"], [
        ["h/a.png", "train", 4, 4, 4, 4, "h/a_color.png", "h/a_object.png", "h/a_part1.png;h/a_part2.png", ""],
        ["h/b.png", "train", 4, 4, 4, 4, "", "", "", "7"],
    ])
    labels = [(1, "red", "color", 0.5), (2, "green", "color", 0.5), (3, "cat", "object", 0.5),
              (4, "dog", "object", 0.0), (5, "head", "part", 1 / 16), (6, "leg", "part", 2 / 16),
              (7, "field", "scene", 1.0)]
    _write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
               [[n, name, f"{cat}(1)", 1, cov, ""] for n, name, cat, cov in labels])
    cats = ["color", "object", "part", "scene"]
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
               [[c, min(n for n, _, cc, _ in labels if cc == c), max(n for n, _, cc, _ in labels if cc == c),
                 sum(cc == c for _, _, cc, _ in labels), 1] for c in cats])
    for c in cats:
        _write_csv(root / f"c_{c}.csv", ["code", "number", "name", "frequency", "coverage"],
                   [[k + 1, n, name, 1, cov] for k, (n, name, _, cov) in
                    enumerate(lab for lab in labels if lab[2] == c)])
    return root


class _PixelNet(nn.Module):
    """``features``: unit 0 = the R channel, unit 1 = the G channel (1x1 conv); GAP + linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1, bias=False)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.weight[1, 1] = 1.0

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _pixel_model():
    return ModelAdapter(_PixelNet(), nb_classes=2, input_shape=(3, 4, 4), name="pixelnet")


#: IoU(k, c) by hand for the fixture with T = 0.5 (labels red, green, cat, dog, head, leg, field).
#: Unit 0, image 0: |M| = 3 touching colour, object and part (gates open), no scene label;
#: image 1: |M| = 2, only the scene gate is open (a stale gate would also open colour/object/part).
HAND_IOU = np.array([
    [2 / (3 + 8 - 2), 1 / (3 + 8 - 1), 2 / (3 + 8 - 2), 0.0, 1 / (3 + 1 - 1), 1 / (3 + 2 - 1), 2 / (2 + 16 - 2)],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1 / (1 + 16 - 1)],
])


@pytest.fixture()
def hand(tmp_path):
    return _hand_broden(tmp_path / "hand")


@pytest.mark.parametrize("batch_size", [1, 2])
def test_iou_on_a_hand_built_broden_set_equals_the_hand_computation(hand, batch_size):
    model = _pixel_model()
    d = assert_model_unchanged(model, lambda: dissect(model, hand, ["features"], batch_size=batch_size,
                                                      thresholds={"features": [0.5, 0.5]}))
    ld = d["features"]
    assert list(ld.vocabulary.names) == ["red", "green", "cat", "dog", "head", "leg", "field"]
    assert ld.vocabulary.categories == ("color", "object", "part", "scene")
    np.testing.assert_allclose(ld.iou(), HAND_IOU, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ld.truth, [8, 8, 8, 0, 1, 2, 16])
    np.testing.assert_array_equal(ld.activation, [[3, 3, 3, 2], [0, 0, 0, 1]])
    np.testing.assert_array_equal(ld.unit_pixels, [5, 1])
    np.testing.assert_allclose(ld.unit_iou(), HAND_IOU.mean(1))
    col, cat, score = ld.best()
    assert [ld.vocabulary.names[c] for c in col] == ["head", "field"]
    np.testing.assert_allclose(score, [1 / 3, 1 / 16])
    assert ld.detectors(0.04).tolist() == [True, True] and ld.detectors(0.1).tolist() == [True, False]
    assert ld.detector_counts(0.04) == {"color": 0, "object": 0, "part": 1, "scene": 1}
    cols, scores = ld.best_per_category()                       # (G, U): per category, unit 0
    assert [ld.vocabulary.names[c] for c in cols[:, 0]] == ["red", "cat", "head", "field"]
    np.testing.assert_allclose(scores[:, 0], [2 / 9, 2 / 9, 1 / 3, 1 / 8])
    # the per-unit loop reference (NetDissect-Lite's algorithm, gate recomputed per image) agrees
    ref = dissect_reference(model, hand, ["features"], thresholds={"features": [0.5, 0.5]})["features"]
    np.testing.assert_array_equal(ref.intersection, ld.intersection)
    np.testing.assert_array_equal(ref.activation, ld.activation)


def _hand_iou_oracle(T):
    """IoU(k, c) of the :func:`_hand_broden` fixture and :class:`_PixelNet`, by plain loops over
    the pixels (independent of the plugin): ``M_k = S_k > T_k`` (strict, NetDissect), label
    masks written out again from the fixture's description, a category's activation counted on
    an image only when ``M_k`` meets one of its labels there (NetDissect-Lite's gate)."""
    names = ["red", "green", "cat", "dog", "head", "leg", "field"]
    cat_of = ["color", "color", "object", "object", "part", "part", "scene"]
    lab = [np.zeros((7, 4, 4), bool), np.zeros((7, 4, 4), bool)]       # per image: label c at (r, c)
    lab[0][0, :2, :] = True                                           # red rows 0-1
    lab[0][1, 2:, :] = True                                           # green rows 2-3
    lab[0][2, :, :2] = True                                           # cat columns 0-1
    lab[0][4, 0, 0] = True                                            # head
    lab[0][5, 0, 0] = lab[0][5, 1, 0] = True                          # leg
    lab[1][6] = True                                                  # scene 'field': every pixel
    act = [np.zeros((2, 4, 4)), np.zeros((2, 4, 4))]                  # unit 0 = R, unit 1 = G, in [0, 1]
    for r, c in [(0, 0), (0, 1), (2, 2)]:
        act[0][0, r, c] = 1.0
    for r, c in [(3, 2), (3, 3)]:
        act[1][0, r, c] = 1.0
    act[1][1, 0, 0] = 1.0
    inter = np.zeros((2, 7))
    act_cat = {(k, g): 0.0 for k in range(2) for g in set(cat_of)}
    truth = np.zeros(7)
    for i in range(2):
        for c in range(7):
            truth[c] += lab[i][c].sum()
        for k in range(2):
            mask = np.zeros((4, 4), bool)
            for r in range(4):
                for cc in range(4):
                    mask[r, cc] = act[i][k, r, cc] > T[k]
            per_cat = {}
            for c in range(7):
                n = 0
                for r in range(4):
                    for cc in range(4):
                        n += bool(mask[r, cc] and lab[i][c, r, cc])
                inter[k, c] += n
                per_cat[cat_of[c]] = per_cat.get(cat_of[c], 0) + n
            for g, n in per_cat.items():
                if n > 0:
                    act_cat[k, g] += mask.sum()
    iou = np.zeros((2, 7))
    for k in range(2):
        for c in range(7):
            den = act_cat[k, cat_of[c]] + truth[c] - inter[k, c]
            iou[k, c] = inter[k, c] / den if den > 0 else 0.0
    return names, iou


def test_hand_oracle_reproduces_the_hand_table():
    assert np.allclose(_hand_iou_oracle([0.5, 0.5])[1], HAND_IOU, rtol=0, atol=1e-15)


@pytest.mark.parametrize("T", [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.5]],
                         ids=["relu-zero", "at-max", "max-and-zero", "zero-and-half"])
def test_iou_with_thresholds_equal_to_activations_is_strict(hand, T):
    """M_k = S_k > T_k is strict: a threshold equal to an activation (T = 0 under a ReLU, the
    docs' case; T = 1 the maximum here) leaves the pixels at T out."""
    model = _pixel_model()
    ld = dissect(model, hand, ["features"], thresholds={"features": T})["features"]
    names, oracle = _hand_iou_oracle(T)
    assert list(ld.vocabulary.names) == names
    np.testing.assert_allclose(ld.iou(), oracle, rtol=1e-9, atol=1e-12)
    pixels = [sum(int((a > t).sum()) for a in arr) for arr, t in
              zip(([np.array([[1, 1, 0, 0], [0] * 4, [0, 0, 1, 0], [0] * 4]), np.array([[0] * 4] * 3 + [[0, 0, 1, 1]])],
                   [np.zeros((4, 4)), np.array([[1, 0, 0, 0]] + [[0] * 4] * 3)]), T)]
    np.testing.assert_array_equal(ld.unit_pixels, pixels)
    # the plugin's per-unit loop reference is strict too
    ref = dissect_reference(model, hand, ["features"], thresholds={"features": T})["features"]
    np.testing.assert_allclose(ref.iou(), oracle, rtol=1e-9, atol=1e-12)


def test_tally_csv_has_netdissect_lites_columns_and_rows(hand, tmp_path):
    model = _pixel_model()
    d = dissect(model, hand, ["features"], thresholds={"features": [0.5, 0.5]})
    path = d.write_tallies(tmp_path / "out")["features"]
    assert path.name == "tally_features.csv"
    text = path.read_text()
    header = text.splitlines()[0]
    fields = ["unit", "category", "label", "score"] + [f"{c}-{k}" for c in ("color", "object", "part", "scene")
                                                       for k in ("label", "truth", "activation", "intersect", "iou")]
    assert header == ",".join(fields)
    assert b"\r\n" in path.read_bytes()  # csv.DictWriter's excel dialect, as NetDissect-Lite writes it
    rows = list(csv.DictReader(open(path, newline="")))
    assert [r["unit"] for r in rows] == ["1", "2"]  # 1-based, by decreasing score
    r = rows[0]
    assert (r["category"], r["label"]) == ("part", "head") and float(r["score"]) == pytest.approx(1 / 3)
    assert (r["color-label"], r["color-truth"], r["color-activation"], r["color-intersect"]) == (
        "red", "8.0", "3.0", "2.0")
    assert float(r["color-iou"]) == pytest.approx(2 / 9)
    assert (r["scene-label"], r["scene-truth"], r["scene-activation"], r["scene-intersect"]) == (
        "field", "16.0", "2.0", "2.0")
    assert (rows[1]["category"], rows[1]["label"]) == ("scene", "field")


def test_streaming_thresholds_on_the_hand_set(hand):
    model = _pixel_model()
    d = dissect(model, hand, ["features"], quantile=0.1, bins=64)
    x = torch.stack([torch.from_numpy(np.array(Image.open(hand / "images/h" / f))).permute(2, 0, 1).float() / 255
                     for f in ("a.png", "b.png")])
    exact = torch.quantile(x[:, :2].transpose(0, 1).reshape(2, -1).double(), 0.9, dim=1).numpy()
    ld = d["features"]
    assert (np.abs(ld.thresholds - exact) <= ld.threshold_tolerance + 1e-12).all()


# ---------------------------------------------------------------------------- streaming quantile
def test_streaming_quantile_matches_torch_quantile_within_one_bin():
    g = torch.Generator().manual_seed(0)
    U, bins = 6, 256
    sq = StreamingQuantile(U, bins=bins)
    chunks = []
    for i in range(40):
        v = torch.relu(torch.randn(U, 500, generator=g)) ** 2 * torch.arange(1, U + 1)[:, None]
        v[1] = v[1] * (1 + i) - 3 * i              # the range keeps extending down and up
        v[2] = 0.0 if i < 20 else v[2]             # constant at first, then widened from a tiny width
        v[3] = torch.round(v[3])                   # many ties
        if i == 0:
            v = v * 0.01                           # a narrow first batch: many doublings later
        chunks.append(v)
        sq.update(v)
    allv = torch.cat(chunks, 1).double()
    assert sq.count == allv.shape[1] and sq.counts.shape == (U, bins) and int(sq.counts.sum()) == U * sq.count
    for p in (0.0, 0.005, 0.5, 0.9, 0.99, 0.995, 1.0):
        exact = torch.quantile(allv, p, dim=1)
        est = sq.quantile(p)
        assert (est - exact).abs().le(sq.width + 1e-9).all(), (p, est - exact, sq.width)
    span = allv.amax(1) - allv.amin(1)
    assert (sq.width <= 4 * span / bins).all()      # the stated size of the tolerance
    np.testing.assert_array_equal(sq.quantile(1.0), allv.amax(1))
    np.testing.assert_array_equal(sq.quantile(0.0), allv.amin(1))


def test_streaming_quantile_is_exact_on_relu_zeros_and_rejects_nan():
    sq = StreamingQuantile(2, bins=16)
    v = torch.zeros(2, 1000)
    v[:, :3] = torch.tensor([[5.0, 6.0, 7.0], [1.0, 2.0, 3.0]])
    sq.update(v[:, :500]).update(v[:, 500:])
    assert sq.quantile(0.995).tolist() == [0.0, 0.0]   # > 99.5 % zeros: T = 0 exactly, M = S > 0
    with pytest.raises(ParameterError, match="values"):
        sq.update(torch.full((2, 3), float("nan")))
    with pytest.raises(ParameterError, match="bins"):
        StreamingQuantile(2, bins=3)
    with pytest.raises(ParameterError, match="count"):
        StreamingQuantile(2).quantile(0.5)


def test_threshold_rounding_keeps_the_strict_test_exact():
    t = torch.tensor([0.1, 1 / 3, 2.0, -0.7], dtype=torch.float64)
    t32 = threshold_as(t, torch.float32)
    v = torch.stack([torch.nextafter(t.float(), torch.tensor(-1.0)), t.float(),
                     torch.nextafter(t.float(), torch.tensor(9.0))])
    assert torch.equal(v > t32, v.double() > t)


# ---------------------------------------------------------------------------- the embedded world
@pytest.fixture(scope="module")
def world_broden(tmp_path_factory):
    return export_broden(tmp_path_factory.mktemp("world_broden"), SyntheticWorld(size=64, seed=0), n=120, split="val")


@pytest.fixture(scope="module")
def world_dissection(world_broden, synthetic_model):
    return dissect(synthetic_model, world_broden, LAYERS, batch_size=40)


def test_shipped_model_has_colour_detectors_early_and_object_detectors_last(world_dissection):
    """The world's ground truth: colour concepts are detected in the first stage only, and the
    last stage is made of object detectors. (Part concepts are top concepts of a few early
    units only — the head — never of the last stage's.)"""
    counts = {name: ld.detector_counts(0.04) for name, ld in world_dissection.layers.items()}
    units = {name: ld.units for name, ld in world_dissection.layers.items()}
    assert counts["layer1"]["color"] >= 2
    assert counts["layer3"]["color"] == counts["layer4"]["color"] == 0
    assert counts["layer4"]["object"] >= 0.8 * units["layer4"]
    frac_object = [counts[n]["object"] / units[n] for n in LAYERS]
    assert frac_object[-1] > frac_object[0]
    best_object = [max(r["iou"] for r in world_dissection[n].top_units(units[n]) if r["category"] == "object")
                   for n in LAYERS]
    assert best_object[-1] > 2 * best_object[0]
    assert counts["layer1"]["part"] >= 1 and counts["layer4"]["part"] == 0  # what the world shows (see docstring)
    # colour detectors of layer 1 are about object colours, e.g. red
    colour_units = [r for r in world_dissection["layer1"].top_units(units["layer1"]) if r["category"] == "color"
                    and r["detector"]]
    assert {"red", "blue", "yellow", "green"} & {r["label"] for r in colour_units}


def test_thresholds_are_within_their_tolerance_of_the_exact_quantile(world_dissection, synthetic_model, world_broden):
    ds = BrodenDataset(world_broden)
    x = torch.cat([torch.from_numpy(im).permute(0, 3, 1, 2).float() / 255 for im, _ in ds.batches(80)])
    acts = synthetic_model.activations(x, ["layer1", "layer4"])
    for name in ("layer1", "layer4"):
        a = acts[name].transpose(0, 1).reshape(acts[name].shape[1], -1).double()
        exact = np.quantile(a.numpy(), 1 - 0.005, axis=1)
        ld = world_dissection[name]
        assert (np.abs(ld.thresholds - exact) <= ld.threshold_tolerance + 1e-9).all()
        assert (ld.threshold_tolerance <= 4 * (a.amax(1) - a.amin(1)).numpy() / 2048).all()


def test_vectorised_tallies_equal_the_per_unit_loop_reference(world_broden, synthetic_model, tmp_path):
    small = export_broden(tmp_path / "small", SyntheticWorld(size=64, seed=0), n=8, split="val", seg_size=32)
    ref = dissect_reference(synthetic_model, small, LAYERS)
    # same thresholds, tiny unit chunks (max_elements) and an odd batch size: identical tallies
    got = dissect(synthetic_model, small, LAYERS, batch_size=5, thresholds=ref.thresholds(), max_elements=5000)
    for name in LAYERS:
        for f in ("intersection", "activation", "truth", "unit_pixels"):
            np.testing.assert_array_equal(getattr(got[name], f), getattr(ref[name], f), err_msg=f"{name} {f}")
        assert got[name].label_size == (32, 32)
    # and the streaming thresholds are within tolerance of the reference's exact ones
    streamed = dissect(synthetic_model, small, LAYERS, batch_size=5)
    for name in LAYERS:
        ld = streamed[name]
        assert (np.abs(ld.thresholds - ref[name].thresholds) <= ld.threshold_tolerance + 1e-9).all()


def test_dissection_result_save_load_rows_and_categories(world_dissection, tmp_path, synthetic_model, world_broden):
    back = Dissection.load(world_dissection.save(tmp_path / "d.pt"))
    np.testing.assert_array_equal(back["layer4"].iou(), world_dissection["layer4"].iou())
    assert back["layer4"].vocabulary.categories == world_dissection["layer4"].vocabulary.categories
    rows = world_dissection.rows()
    assert [r["layer"] for r in rows] == LAYERS and all(r["units"] > 0 for r in rows)
    assert "det_object" in rows[0] and world_dissection.table()
    only = dissect(synthetic_model, world_broden, ["layer4"], categories=["object", "part"],
                   thresholds={"layer4": world_dissection["layer4"].thresholds})
    assert only["layer4"].vocabulary.categories == ("object", "part")
    keep = np.isin(world_dissection["layer4"].vocabulary.category, [1, 2])
    np.testing.assert_array_equal(only["layer4"].intersection, world_dissection["layer4"].intersection[:, keep])


# ---------------------------------------------------------------------------- sensitivity
def test_unit_sensitivity_equals_the_hand_computation():
    model = _pixel_model()
    th = {"features": [0.5, 0.5]}
    x0 = torch.zeros(2, 3, 4, 4)
    xa = torch.zeros(2, 3, 4, 4)
    x0[0, 0, :2, :2] = 1.0          # pair 0, unit 0: clean mask 4 pixels, adversarial none -> ||.||_2 = 2
    xa[1, 0, :3, :3] = 1.0          # pair 1, unit 0: 9 pixels appear -> 3
    x0[1, 1, 0, 0] = xa[1, 1, 0, 0] = 1.0
    xa[1, 1, 3, 3] = 1.0            # pair 1, unit 1: one pixel differs -> 1; pair 0: none -> 0
    xa[0, 1, 2, 2] = 0.4            # below the threshold: no change
    v = assert_model_unchanged(model, lambda: unit_sensitivity(model, th, x0, xa))
    np.testing.assert_allclose(v["features"], [(2 + 3) / 2, (0 + 1) / 2])
    m = unit_masks(model, th, x0)["features"]
    assert m.dtype == torch.bool and m.shape == (2, 2, 4, 4) and int(m[0, 0].sum()) == 4
    # at a larger mask size the maps are upsampled bilinearly before thresholding
    v8 = unit_sensitivity(model, th, x0, xa, size=8)
    up = torch.nn.functional.interpolate(torch.stack([x0[:, 0], xa[:, 0]], 1), size=8, mode="bilinear",
                                         align_corners=False) > 0.5
    np.testing.assert_allclose(v8["features"][0], (up[:, 0] != up[:, 1]).flatten(1).sum(1).double().sqrt().mean())
    with pytest.raises(ParameterError, match="x_adv"):
        unit_sensitivity(model, th, x0, xa[:1])
    with pytest.raises(ParameterError, match="layers"):
        unit_sensitivity(model, th, x0, xa, layers=["nope"])


def test_n_below_the_width_and_width_fractions_for_narrow_layers():
    """Fig. 7a/7b on layers narrower than the paper's (issue 13, item 5), by hand."""
    from advinterp_dissect.analysis import detector_top_n
    from advinterp_dissect.significance import choose_ns

    assert choose_ns((10, 20, 30, 50, 80, 100), 96)[0].tolist() == [10, 20, 30, 50, 80]
    # 24 units: only 10 and 20 are below -> still two requested values
    assert choose_ns((10, 20, 30, 50, 80, 100), 24) == (pytest.approx([10, 20]), "requested")
    # 16 units: one requested value below the width -> fractions 0.1 .. 0.8 of 16 = 2, 3, 5, 8, 13
    ns, rule = choose_ns((10, 20, 30, 50, 80, 100), 16)
    assert ns.tolist() == [2, 3, 5, 8, 13] and rule == "fraction of width"
    iou = np.linspace(0.0, 0.1, 16)
    t = significance_test(iou, iou, n_draws=50)
    assert t.ns.tolist() == [2, 3, 5, 8, 13] and t.rows()[0]["N from"] == "fraction of width"
    assert (t.p_values < 1).all()
    # Fig. 7b: top-100 of a 64-unit layer would be every unit -> a quarter of the width
    assert detector_top_n(100, 512) == 100 and detector_top_n(100, 64) == 16 and detector_top_n(100, 100) == 25
    with pytest.raises(ParameterError, match="at least 2 units"):
        significance_test(np.array([0.1]), np.array([0.2]))


def test_significance_small_for_interpretable_choices_and_uniform_for_random_ones():
    rng = np.random.default_rng(0)
    iou = rng.gamma(2.0, 0.01, size=100)
    # sensitivity ranking = IoU ranking: the top units are the most interpretable ones
    t = significance_test(iou, iou + 0.001 * rng.random(100), ns=(10, 20, 30, 50, 80, 100, 500), n_draws=2000)
    # N >= U (100, 500) is dropped: N = U selects every unit, p = 1 by construction (issue 13, item 5)
    assert t.ns.tolist() == [10, 20, 30, 50, 80] and t.ns_rule == "requested"
    assert (t.p_values < 0.01).all() and {r["N from"] for r in t.rows()} == {"requested"}
    assert t.p_values.min() == pytest.approx(1 / 2001)
    # random sensitivities: p-values are (super-)uniform
    ps = np.array([significance_test(iou, rng.random(100), ns=(10,), n_draws=200, seed=s).p_values[0]
                   for s in range(200)])
    assert 0.01 <= (ps <= 0.1).mean() <= 0.2
    assert 0.4 <= ps.mean() <= 0.6
    from scipy.stats import kstest

    assert kstest(ps, "uniform").pvalue > 0.001
    # deterministic under a seed
    v = rng.random(100)
    a, b = (significance_test(iou, v, seed=3, n_draws=300) for _ in range(2))
    assert a.p_values.tolist() == b.p_values.tolist() and a.null_mean.tolist() == b.null_mean.tolist()
    assert significance_test(iou, v, seed=4, n_draws=300).null_mean.tolist() != a.null_mean.tolist()
    with pytest.raises(ParameterError, match="sensitivity"):
        significance_test(iou, iou[:5])
    with pytest.raises(ParameterError, match="ns"):
        significance_test(iou, iou, ns=[0])


def test_sensitivity_analysis_views_figures_and_report(world_dissection, synthetic_model, world_broden, tmp_path):
    ds = BrodenDataset(world_broden)
    x = torch.cat([torch.from_numpy(im).permute(0, 3, 1, 2).float() / 255 for im, _ in ds.batches(40)])[:12]
    model = synthetic_model
    res = assert_model_unchanged(model, lambda: sensitivity_analysis(model, world_dissection, x, n_draws=300))
    assert isinstance(res, SensitivityAnalysis) and res.attack == "pgd" and res.n_pairs == 12
    assert res.success_rate > 0.5
    for name, ls in res.layers.items():
        assert ls.sensitivity.shape == (world_dissection[name].units,) and (ls.sensitivity >= 0).all()
        U = world_dissection[name].units
        assert ls.detector_n == (100 if U > 100 else U // 4) < U          # never every unit (issue 13)
        assert sum(ls.detector_counts.values()) <= ls.detector_n
    assert {r["layer"] for r in res.rows()} == set(LAYERS)
    assert [r["N"] for r in res.rows() if r["layer"] == "layer1"] == [10, 20]  # N < U = 24 only
    assert all(r["N"] < world_dissection[r["layer"]].units for r in res.rows())
    back = SensitivityAnalysis.load(res.save(tmp_path / "s.pt"))
    np.testing.assert_array_equal(back["layer4"].sensitivity, res["layer4"].sensitivity)
    # the same with given pairs (any attack) and as the registered analyzer
    batch = advinterp.get_attack("pgd", eps=4 / 255, eps_step=1 / 255, max_iter=3).generate(model, x[:6])
    direct = sensitivity_analysis(model, world_dissection, batch.x0, batch.x_adv, n_draws=50)
    an = advinterp.get_analyzer("unit_sensitivity", n_draws=50).analyze(model, batch, dissection=world_dissection)
    for name in LAYERS:
        np.testing.assert_allclose(an[name].sensitivity, direct[name].sensitivity)
    views = assert_model_unchanged(model, lambda: detector_views(model, world_dissection, x[:3], batch.x_adv[:3],
                                                                 units={"layer1": [0, 5], "layer4": [2]}))
    assert isinstance(views, DetectorViews) and views.masks_x0.shape == (3, 3, 64, 64)
    assert views.layers == ("layer1", "layer1", "layer4") and views.units.tolist() == [0, 5, 2]
    np.testing.assert_array_equal(views.masks_x0[1], unit_masks(model, world_dissection, x[:3], "layer1")["layer1"][:, 5])
    assert len(views.rows()) == 3
    section = dissection_section(tmp_path / "run", world_dissection, res, views)
    assert {rel for _, rel in section.figures} == {f"dissection_{n}.png" for n in (
        "detectors", "top_units", "pvalues", "detectors_top", "sensitivity_vs_iou", "views")}
    assert all((tmp_path / "run" / rel).stat().st_size > 1000 for _, rel in section.figures)
    assert len(section.tables) == 6


def test_registered_dissection_probe(hand, synthetic_model):
    model = _pixel_model()
    probe = advinterp.get_probe("dissection", layers=["features"], quantile=0.1, bins=64)
    assert (probe.needs_data, probe.context_keys, probe.shardable, probe.passes) == (False, (), True, 3)
    d = assert_model_unchanged(model, lambda: probe.run(model, hand))
    ref = dissect(model, hand, ["features"], quantile=0.1, bins=64)
    for got in (d, probe.run(model, BrodenDataset(hand)), probe.run(model, hand, shard_size=1),
                advinterp.get_probe("dissection", broden=str(hand), layers=["features"], quantile=0.1, bins=64).run(model)):
        np.testing.assert_array_equal(got["features"].intersection, ref["features"].intersection)
        np.testing.assert_array_equal(got["features"].thresholds, ref["features"].thresholds)
        assert got.dataset == str(hand)
    emb = advinterp.get_probe("dissection", layers=["layer1"], synthetic_n=6).run(synthetic_model)
    assert emb.n_images == 6 and "embedded world" in emb.dataset and emb["layer1"].label_size == (64, 64)
    assert "dissection" not in {i.name for i in advinterp.list_components("analyzer")}
    with pytest.raises(ParameterError, match="data"):
        probe.run(model, 3)
    with pytest.raises(ParameterError, match="data"):
        probe.run(model, (torch.rand(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)))   # not Broden data
    with pytest.raises(ParameterError, match="nope"):
        probe.run(model, hand, nope=1)
    with pytest.raises(ParameterError, match="shard_size"):
        probe.run(model, hand, shard_size=0)
    with pytest.raises(ParameterError, match="quantile"):
        advinterp.get_probe("dissection", quantile=1.5)


def test_dissect_rejects_bad_arguments(hand):
    model = _pixel_model()
    with pytest.raises(ParameterError, match="quantile"):
        dissect(model, hand, ["features"], quantile=0)
    with pytest.raises(ParameterError, match="categories"):
        dissect(model, hand, ["features"], categories=["texture"])
    with pytest.raises(ParameterError, match="broden"):
        dissect(model, 42, ["features"])
    with pytest.raises(IncompatibleModelError, match="nope"):
        dissect(model, hand, ["nope"])
    with pytest.raises(IncompatibleModelError, match="spatial"):
        dissect(model, hand, ["head"])
    with pytest.raises(ParameterError, match="thresholds"):
        dissect(model, hand, ["features"], thresholds={"features": [0.5, 0.5, 0.5]})


# ---------------------------------------------------------------------------- Broden format errors
def test_corrupt_csv_rows_name_the_file_and_line(hand):
    lines = (hand / "label.csv").read_text().splitlines()
    lines[3] = "3,cat,object(1),1"                              # truncated row on line 4
    (hand / "label.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"label\.csv line 4: expected 6 columns"):
        BrodenDataset(hand)
    _hand_broden(hand.parent / "h2")
    text = (hand.parent / "h2" / "c_part.csv").read_text().replace("2,6,leg", "two,6,leg")
    (hand.parent / "h2" / "c_part.csv").write_text(text)
    with pytest.raises(DatasetFormatError) as e:
        BrodenDataset(hand.parent / "h2")
    assert "c_part.csv line 3" in str(e.value) and "'code'" in str(e.value)
    _hand_broden(hand.parent / "h3")
    text = (hand.parent / "h3" / "category.csv").read_text().replace("part,5,6,2,1", "part,5,6,2,x")
    (hand.parent / "h3" / "category.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match=r"category\.csv line 4, column 'frequency'"):
        BrodenDataset(hand.parent / "h3")


def test_undecodable_and_unclosed_csv_rows_name_the_line(hand):
    data = (hand / "label.csv").read_bytes().replace(b"3,cat,", b"3,c\xffat,")
    (hand / "label.csv").write_bytes(data)
    with pytest.raises(DatasetFormatError, match=r"label\.csv line 4: not UTF-8"):
        BrodenDataset(hand)
    _hand_broden(hand.parent / "q")
    text = (hand.parent / "q" / "index.csv").read_text().replace("h/a.png,train", '"h/a.png,train')
    (hand.parent / "q" / "index.csv").write_text(text)   # the quote swallows the next line
    with pytest.raises(DatasetFormatError, match=r"index\.csv lines 2-3 \(an unclosed quote\?\)"):
        BrodenDataset(hand.parent / "q")


def test_unreadable_segmentation_png_names_the_file_and_the_index_line(hand):
    (hand / "images/h/a_part2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = BrodenDataset(hand)
    with pytest.raises(DatasetFormatError) as e:
        ds[0]
    msg = str(e.value)
    assert str(hand / "images/h/a_part2.png") in msg and "unreadable" in msg
    assert "index.csv line 2" in msg and "'part'" in msg
    model = _pixel_model()
    with pytest.raises(DatasetFormatError, match="a_part2.png"):
        dissect(model, hand, ["features"], thresholds={"features": [0.5, 0.5]})


def test_label_number_missing_from_label_csv_is_reported(hand):
    _png(hand / "images/h/a_object.png", np.full((4, 4), 99))
    with pytest.raises(DatasetFormatError, match=r"a\.png.*99.*label\.csv"):
        dissect(_pixel_model(), hand, ["features"], thresholds={"features": [0.5, 0.5]})


def test_paletted_segmentation_pngs_decode_their_colours(hand):
    """Broden labels are R + 256 G of the pixel colour; a paletted PNG must not give palette indices."""
    leg = np.zeros((4, 4), np.uint8)
    leg[0, 0] = leg[1, 0] = 1
    im = Image.fromarray(leg, mode="P")
    im.putpalette([0, 0, 0, 6, 0, 0] + [0, 0, 0] * 254)       # index 1 -> colour (6, 0, 0) = label 6
    im.save(hand / "images/h/a_part2.png")
    stack = BrodenDataset(hand)[0].pixel_labels["part"]
    assert stack[1].tolist() == [[6, 0, 0, 0], [6, 0, 0, 0], [0] * 4, [0] * 4]


def test_image_only_streaming_reads_no_segmentation(hand):
    ds = BrodenDataset(hand)
    (hand / "images/h/a_part2.png").unlink()           # pass 1 never opens a segmentation
    stacks = list(ds.image_batches(1))
    assert [s.shape for s in stacks] == [(1, 4, 4, 3), (1, 4, 4, 3)]
    np.testing.assert_array_equal(ds.image(-1), stacks[1][0])
    assert int(ds.image(0)[0, 0, 0]) == 255
    with pytest.raises(DatasetFormatError, match="a_part2.png"):
        ds[0]
    with pytest.raises(ParameterError, match="batch_size"):
        next(ds.image_batches(0))
    with pytest.raises(IndexError):
        ds.image(2)


def test_primary_categories_follow_netdissects_coverage_rule(hand):
    # list "cat" (3) in c_part.csv too, with a larger coverage there: its primary category becomes part
    rows = (hand / "c_part.csv").read_text().splitlines() + ["3,3,cat,1,0.9"]
    (hand / "c_part.csv").write_text("\n".join(rows) + "\n")
    ds = BrodenDataset(hand)
    prim = ds.primary_categories()
    assert prim[3] == "part" and prim[1] == "color" and prim[7] == "scene"
    assert ds.label(3).category == "object"                   # label.csv's own (most images) view
    assert ds.primary_categories(["color", "object"]) == {1: "color", 2: "color", 3: "object", 4: "object"}
    with pytest.raises(ParameterError, match="categories"):
        ds.primary_categories(["texture"])


@pytest.mark.parametrize("T", [[0.0, 0.0], [1.0, 0.5], [0.5, 1.0]])
def test_unit_masks_are_strict_at_ties_by_hand(T):
    """M_k(x) = S_k(x) > T_k in unit_masks too (the A9 masks): pixels equal to T are out."""
    model = _pixel_model()
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 1, 2] = 1.0          # unit 0 = R: 1 at two pixels, 0.5 at one
    x[0, 0, 3, 3] = 0.5
    x[1, 1, 2, 1] = 1.0                          # unit 1 = G: 1 at one pixel of image 1
    m = unit_masks(model, {"features": torch.tensor(T, dtype=torch.float64)}, x)["features"]
    want = np.zeros((2, 2, 4, 4), bool)
    for i in range(2):
        for k in range(2):
            for r in range(4):
                for c in range(4):
                    want[i, k, r, c] = float(x[i, k, r, c]) > T[k]
    np.testing.assert_array_equal(m.numpy(), want)
