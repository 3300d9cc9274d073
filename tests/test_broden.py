"""Broden format: export/read round trip, CSV bookkeeping, hand-made fixtures, errors."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from advinterp.datasets.broden import (
    INDEX_COLUMNS,
    BrodenDataset,
    decode_segmentation,
    encode_segmentation,
    export_broden,
    resize_nearest,
)
from advinterp.datasets.synthetic import CATEGORIES, CONCEPTS, PIXEL_CATEGORIES, SyntheticWorld
from advinterp.exceptions import DatasetFormatError, ParameterError

N = 12


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(size=64, seed=0)


@pytest.fixture(scope="module")
def batch(world):
    return world.generate(N, "train")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, world):
    return export_broden(tmp_path_factory.mktemp("broden_full"), world, n=N, split="train")


@pytest.fixture(scope="module")
def exported32(tmp_path_factory, world):
    return export_broden(tmp_path_factory.mktemp("broden_32"), world, n=N, split="train", seg_size=32)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- round trip
def test_round_trip_full_resolution(exported, batch):
    ds = BrodenDataset(exported)
    assert len(ds) == N
    assert ds.categories == list(CATEGORIES)
    for i, item in enumerate(ds):
        assert item.index == i and item.split == "train"
        assert item.image.dtype == np.uint8
        np.testing.assert_array_equal(item.image, batch.images[i])
        for cat in PIXEL_CATEGORIES:
            stack = item.pixel_labels[cat]
            assert stack.dtype == np.int32 and stack.shape[0] in (0, 1) and stack.shape[1:] == (64, 64)
            np.testing.assert_array_equal(item.label_map(cat), batch.masks[cat][i])
        assert item.image_labels["scene"] == [int(batch.scenes[i])]
        assert item.pixel_labels["scene"].shape == (0, 64, 64)
        assert all(item.image_labels[c] == [] for c in PIXEL_CATEGORIES)


def test_round_trip_downsampled_segmentation(exported32, batch):
    rows = _rows(exported32 / "index.csv")
    assert {(r["ih"], r["iw"], r["sh"], r["sw"]) for r in rows} == {("64", "64", "32", "32")}
    ds = BrodenDataset(exported32, categories=["object", "part", "scene"])
    assert ds.categories == ["object", "part", "scene"]
    for i, item in enumerate(ds):
        np.testing.assert_array_equal(item.image, batch.images[i])  # images stay full size
        assert set(item.pixel_labels) == {"object", "part", "scene"}
        for cat in ("object", "part"):
            # nearest neighbour at pixel centres: halving keeps rows/cols 1, 3, 5, ...
            np.testing.assert_array_equal(item.label_map(cat), batch.masks[cat][i][1::2, 1::2])
        assert item.image_labels["scene"] == [int(batch.scenes[i])]


def test_index_layout_and_paths(exported):
    with open(exported / "index.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == INDEX_COLUMNS
    rows = _rows(exported / "index.csv")
    assert rows[3]["image"] == "synthetic/train_000003.png"
    assert rows[3]["object"] == "synthetic/train_000003_object.png"
    assert rows[3]["material"] == ""
    assert rows[3]["scene"].isdigit()
    for r in rows:
        assert (exported / "images" / r["image"]).is_file()


def test_label_category_and_code_csvs(exported, batch):
    labels = _rows(exported / "label.csv")
    assert [int(r["number"]) for r in labels] == [c.id for c in CONCEPTS]  # no row 0
    assert [r["name"] for r in labels] == [c.name for c in CONCEPTS]
    # frequency / coverage recomputed from the world's masks
    for r, c in zip(labels, CONCEPTS):
        if c.category == "scene":
            hits = batch.scenes == c.id
            fracs = np.ones(int(hits.sum()))
        else:
            frac = (batch.masks[c.category] == c.id).mean(axis=(1, 2))
            hits = frac > 0
            fracs = frac[hits]
        assert int(r["frequency"]) == int(hits.sum()), c
        assert r["category"] == f"{c.category}({int(hits.sum())})"
        assert float(r["coverage"]) == pytest.approx(fracs.mean() if len(fracs) else 0.0, abs=1e-6)
    # one by hand: "head" is in every image that has a head box
    n_heads = sum(any(b.name == "head" for b in boxes) for boxes in batch.boxes)
    head = next(r for r in labels if r["name"] == "head")
    assert int(head["frequency"]) == n_heads
    cats = {r["name"]: r for r in _rows(exported / "category.csv")}
    assert list(cats) == list(CATEGORIES)
    part_ids = [c.id for c in CONCEPTS if c.category == "part"]
    assert (int(cats["part"]["first"]), int(cats["part"]["last"]), int(cats["part"]["count"])) == (
        min(part_ids), max(part_ids), 3)
    assert int(cats["part"]["frequency"]) == int((batch.masks["part"] != 0).any(axis=(1, 2)).sum())
    assert int(cats["scene"]["frequency"]) == N
    codes = _rows(exported / "c_part.csv")
    assert [(int(r["code"]), int(r["number"]), r["name"]) for r in codes] == [
        (k + 1, c.id, c.name) for k, c in enumerate(c for c in CONCEPTS if c.category == "part")]

    ds = BrodenDataset(exported)
    assert [lab.number for lab in ds.labels] == [c.id for c in CONCEPTS]
    assert ds.category_of == {c.id: c.category for c in CONCEPTS}
    assert ds.label(head_id := int(head["number"])).frequency == n_heads and ds.label(head_id).id == head_id
    assert ds.category_info["part"].count == 3
    assert [c.number for c in ds.codes["part"]] == part_ids


def test_batches_resolution_and_split(exported, batch):
    ds = BrodenDataset(exported, split="train", resolution=32)
    sizes, seen = [], 0
    for images, items in ds.batches(5):
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        assert images.shape[0] == len(items)
        sizes.append(len(items))
        for item in items:
            assert item.pixel_labels["object"].shape == (1, 32, 32)
            np.testing.assert_array_equal(item.label_map("object"), batch.masks["object"][item.index][1::2, 1::2])
            seen += 1
    assert sizes == [5, 5, 2] and seen == N
    with pytest.raises(ParameterError, match="train"):
        BrodenDataset(exported, split="val")
    with pytest.raises(ParameterError):
        BrodenDataset(exported, categories=["nope"])
    with pytest.raises(ParameterError):
        next(ds.batches(0))
    assert ds[-1].index == N - 1
    with pytest.raises(IndexError):
        ds[N]


def test_segmentation_codec_and_resize():
    lab = np.array([[0, 1, 255], [256, 300, 65535]])
    rgb = encode_segmentation(lab)
    assert rgb.dtype == np.uint8 and rgb[1, 1].tolist() == [44, 1, 0]
    np.testing.assert_array_equal(decode_segmentation(rgb), lab)
    with pytest.raises(ParameterError):
        encode_segmentation(np.array([[70000]]))
    a = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(a, 2), a[1::2, 1::2])
    assert resize_nearest(a, (8, 2)).shape == (8, 2)


# ---------------------------------------------------------------------------- hand-made fixture
def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _hand_made(root):
    """Two 8x8 images (one JPEG), one with two part PNGs in one cell, a label > 255."""
    (root / "images" / "d").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "images/d/x.png")
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(root / "images/d/y.jpg", quality=95)
    a = np.zeros((4, 4), np.int32)
    a[:2] = 300                 # R=44, G=1
    b = np.zeros((4, 4), np.int32)
    b[:, :2] = 2
    Image.fromarray(encode_segmentation(a)).save(root / "images/d/a.png")
    Image.fromarray(encode_segmentation(b)).save(root / "images/d/b.png")
    _write_csv(root / "index.csv", INDEX_COLUMNS, [
        ["d/x.png", "train", 8, 8, 4, 4, "", "", "d/a.png;d/b.png", "", "1", ""],
        ["d/y.jpg", "val", 8, 8, 4, 4, "", "", "", "", "", ""],
    ])
    _write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], [
        [1, "field", "scene(1)", 1, 1.0, ""],
        [2, "wing", "part(1)", 1, 0.5, ""],
        [300, "beak", "part(1);object(0)", 1, 0.5, "bill;neb"],
    ])
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
               [["part", 2, 300, 2, 1], ["scene", 1, 1, 1, 1]])
    _write_csv(root / "c_part.csv", ["code", "number", "name", "frequency", "coverage"],
               [[1, 2, "wing", 1, 0.5], [2, 300, "beak", 1, 0.5]])
    _write_csv(root / "c_scene.csv", ["code", "number", "name", "frequency", "coverage"],
               [[1, 1, "field", 1, 1.0]])
    return a, b


def test_several_pngs_per_cell_and_large_labels(tmp_path):
    a, b = _hand_made(tmp_path)
    ds = BrodenDataset(tmp_path)
    assert ds.categories == ["part", "scene"] and len(ds) == 2
    item = ds[0]
    stack = item.pixel_labels["part"]
    assert stack.shape == (2, 4, 4)
    np.testing.assert_array_equal(stack[0], a)
    np.testing.assert_array_equal(stack[1], b)
    assert stack.max() == 300
    np.testing.assert_array_equal(item.label_map("part"), np.where(a != 0, a, b))
    assert item.image_labels["scene"] == [1]
    assert ds.label(300).category == "part" and ds.label(300).syns == ("bill", "neb")
    # JPEG images are read too
    val = BrodenDataset(tmp_path, split="val")
    assert len(val) == 1 and val[0].image.shape == (8, 8, 3)
    assert abs(int(val[0].image.astype(int).mean()) - 120) <= 2
    assert val[0].pixel_labels["part"].shape == (0, 4, 4)
    # an explicitly requested column absent from category.csv
    assert BrodenDataset(tmp_path, categories=["material"])[0].pixel_labels["material"].shape == (0, 4, 4)


# ---------------------------------------------------------------------------- errors
def test_truncated_index_row(tmp_path):
    _hand_made(tmp_path)
    lines = (tmp_path / "index.csv").read_text().splitlines()
    lines[2] = "d/y.jpg,val,8,8"
    (tmp_path / "index.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"index\.csv line 3: expected 12 columns"):
        BrodenDataset(tmp_path)


def test_non_integer_in_index(tmp_path):
    _hand_made(tmp_path)
    text = (tmp_path / "index.csv").read_text().replace("d/x.png,train,8,8", "d/x.png,train,eight,8")
    (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DatasetFormatError) as e:
        BrodenDataset(tmp_path)
    msg = str(e.value)
    assert "index.csv line 2" in msg and "'ih'" in msg and "'eight'" in msg


def test_missing_csv_and_unknown_label(tmp_path):
    _hand_made(tmp_path)
    text = (tmp_path / "index.csv").read_text().replace(",1,\n", ",999,\n")
    (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match=r"line 2, column 'scene': label number 999"):
        BrodenDataset(tmp_path)
    (tmp_path / "label.csv").unlink()
    with pytest.raises(DatasetFormatError, match=r"label\.csv is missing"):
        BrodenDataset(tmp_path)


def test_missing_png(tmp_path):
    _hand_made(tmp_path)
    (tmp_path / "images/d/b.png").unlink()
    ds = BrodenDataset(tmp_path)  # images are read lazily
    with pytest.raises(DatasetFormatError) as e:
        ds[0]
    msg = str(e.value)
    assert str(tmp_path / "images/d/b.png") in msg and "missing" in msg and "index.csv line 2" in msg


def test_corrupt_image(tmp_path):
    _hand_made(tmp_path)
    (tmp_path / "images/d/x.png").write_bytes(b"this is not a png")
    ds = BrodenDataset(tmp_path)
    with pytest.raises(DatasetFormatError) as e:
        ds[0]
    assert str(tmp_path / "images/d/x.png") in str(e.value) and "unreadable" in str(e.value)
    assert len(ds[1].image)  # other items still load


def test_size_mismatch(tmp_path):
    _hand_made(tmp_path)
    text = (tmp_path / "index.csv").read_text().replace("d/x.png,train,8,8,4,4", "d/x.png,train,8,8,5,4")
    (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match=r"a\.png is 4x4 .* sh=5"):
        BrodenDataset(tmp_path)[0]
