"""Issue 12 (fidelity): activation maps reach the label resolution exactly as NetDissect-Lite
resizes them -- ``scipy.misc.imresize(mode='F')``, i.e. PIL's bilinear ``resize`` -- in both
directions, and the IoUs follow when a map is *larger* than its labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advinterp.datasets.broden import encode_segmentation
from advinterp.model import ModelAdapter
from advinterp_dissect import dissect
from advinterp_dissect.reference import dissect_reference
from advinterp_dissect.resize import resize_maps

from test_dissect import _PixelNet, _write_csv  # noqa: E402  (tests/ is on sys.path under pytest)


def _pil(a: np.ndarray, size) -> np.ndarray:
    """The reference: a float32 PIL image resized with Image.BILINEAR (NetDissect-Lite's imresize)."""
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR))


@pytest.mark.parametrize("src, dst", [((64, 64), (32, 32)), ((63, 65), (32, 17)), ((17, 13), (5, 29)),
                                      ((33, 33), (7, 7)), ((7, 9), (112, 112)), ((5, 5), (3, 11)),
                                      ((14, 14), (112, 112)), ((113, 57), (56, 56)), ((4, 4), (1, 1)),
                                      ((9, 9), (9, 9))])
def test_resize_maps_equals_pils_bilinear_on_odd_sizes(src, dst):
    """Shrinking (antialiased: the filter's support grows with the factor), enlarging (plain
    bilinear, align_corners=False) and mixed: equal to PIL to 1e-6 on maps in [0, 1] (float32
    rounding; PIL accumulates in double)."""
    g = np.random.default_rng(sum(src) * 7 + sum(dst))
    maps = g.random((2, 3, *src)).astype(np.float32)
    got = resize_maps(torch.from_numpy(maps), dst).numpy()
    assert got.shape == (2, 3, *dst) and got.dtype == np.float32
    want = np.stack([np.stack([_pil(m, dst) for m in img]) for img in maps])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_shrinking_is_not_plain_bilinear():
    """The old resize (no antialiasing) differs from PIL by far more than rounding when shrinking."""
    a = torch.zeros(1, 1, 8, 8)
    a[..., :2, :2] = 1.0
    plain = torch.nn.functional.interpolate(a, size=(4, 4), mode="bilinear", align_corners=False)
    ours = resize_maps(a, (4, 4))
    assert float((plain - ours).abs().max()) > 0.2
    aa = torch.nn.functional.interpolate(a, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(ours, aa, rtol=0, atol=1e-6)  # the same filter as torch's antialias


# ---------------------------------------------------------------------------- a map larger than its labels
def _large_map_broden(root):
    """One 8x8 image, labels at 4x4 (the map of a 1x1 conv is twice the label size).

    The image's R channel (unit 0 of _PixelNet) is 1 on the 2x2 block rows 0-1, cols 0-1.
    Colour labels at 4x4: red (1) at (0, 1) and (1, 0), green (2) at (3, 3).
    """
    d = root / "images" / "h"
    d.mkdir(parents=True)
    img = np.zeros((8, 8, 3), np.uint8)
    img[:2, :2, 0] = 255
    Image.fromarray(img).save(d / "a.png")
    color = np.zeros((4, 4), int)
    color[0, 1] = color[1, 0] = 1
    color[3, 3] = 2
    Image.fromarray(encode_segmentation(color)).save(d / "a_color.png")
    _write_csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "color"],
               [["h/a.png", "val", 8, 8, 4, 4, "h/a_color.png"]])
    _write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
               [[1, "red", "color(1)", 1, 0.125, ""], [2, "green", "color(1)", 1, 0.0625, ""]])
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"], [["color", 1, 2, 2, 1]])
    _write_csv(root / "c_color.csv", ["code", "number", "name", "frequency", "coverage"],
               [[1, 1, "red", 1, 0.125], [2, 2, "green", 1, 0.0625]])
    return root


def test_iou_where_the_map_is_larger_than_the_labels(tmp_path):
    """By hand: shrinking 8 -> 4, PIL's bilinear weighs input rows (0, 1, 2) by (3, 3, 1)/7 for
    output row 0 and rows (1, 2, 3, 4) by (1, 3, 3, 1)/8 for row 1 (same for columns). So unit
    0's map at 4x4 is (6/7)^2 at (0, 0), 6/7 * 1/8 at (0, 1) and (1, 0), 1/64 at (1, 1), 0
    elsewhere. With T = 0.05: M = {(0,0), (0,1), (1,0)}, |M| = 3, red = {(0,1), (1,0)}:
    IoU(red) = 2 / (3 + 2 - 2) = 2/3, IoU(green) = 0. (Plain bilinear samples between input
    pixels 2i and 2i+1: M = {(0,0)} and IoU(red) = 0.)"""
    root = _large_map_broden(tmp_path / "b")
    model = ModelAdapter(_PixelNet(), nb_classes=2, input_shape=(3, 8, 8), name="pixelnet")
    T = {"features": [0.05, 0.5]}
    ld = dissect(model, root, ["features"], thresholds=T)["features"]
    assert ld.activation_size == (8, 8) and ld.label_size == (4, 4)
    np.testing.assert_allclose(ld.iou(), [[2 / 3, 0.0], [0.0, 0.0]], rtol=1e-9)  # IoU = I / (U + 1e-10)
    np.testing.assert_array_equal(ld.unit_pixels, [3, 0])
    np.testing.assert_array_equal(ld.intersection, [[2, 0], [0, 0]])
    # the threshold between 1/64 and 6/56 decides (1,1): lowering T below 1/64 adds it
    low = dissect(model, root, ["features"], thresholds={"features": [0.01, 0.5]})["features"]
    np.testing.assert_array_equal(low.unit_pixels, [4, 0])
    # the per-unit loop reference resizes with PIL itself
    ref = dissect_reference(model, root, ["features"], thresholds=T)["features"]
    np.testing.assert_array_equal(ref.intersection, ld.intersection)
    np.testing.assert_array_equal(ref.unit_pixels, ld.unit_pixels)
