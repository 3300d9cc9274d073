"""Image-level views of paired datasets (Ding et al.): ``pixel_histogram`` (Fig. 2) and
``cam_replacement`` (Tables 2-3, Fig. 3), checked against hand computations."""
import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter
from advinterp.analyzers.cam_replacement import CamReplacementAnalyzer, region_pixels, replace_pixels
from advinterp.analyzers.confidence_change import change_statistics
from advinterp.analyzers.pixel_histogram import PixelHistogramAnalyzer, channel_histograms
from advinterp.exceptions import ParameterError
from advinterp.testing import assert_model_unchanged


class Brightness(nn.Module):
    """logits = 4 * [m, 1 - m], m = mean over pixels of the channel-mean brightness (GAP + linear)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1 / 3] * 3, [-1 / 3] * 3]).view(2, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
            self.fc.weight.copy_(4 * torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def _brightness_model(size=8):
    return ModelAdapter(Brightness().double(), mean=(0, 0, 0), std=(1, 1, 1), nb_classes=2,
                        input_shape=(3, size, size), cam_layer="conv", classifier="fc", name="brightness")


def _softmax_conf(x: np.ndarray) -> tuple[int, float]:
    m = x.mean()
    logits = 4 * np.array([m, 1 - m])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return int(p.argmax()), float(p.max())


# ------------------------------------------------------------------------------ histograms
def test_channel_histograms_equal_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 5, 7, generator=g, dtype=torch.float64)
    h = channel_histograms(x).numpy()
    for i in range(3):
        for c in range(3):
            lv = np.clip(np.round(x[i, c].numpy() * 255), 0, 255).astype(int)
            assert np.array_equal(h[i, c], np.bincount(lv.ravel(), minlength=256))


def test_pixel_histogram_hand_values():
    model = _brightness_model(4)
    x0 = torch.full((2, 3, 4, 4), 100 / 255, dtype=torch.float64)
    xa = x0.clone()
    xa[0, 0, 0, 0] = 103 / 255          # one level moved by 3 in one channel of image 0
    xa[1, :, :2, :] = 110 / 255         # half of every channel moved by 10 in image 1
    res = PixelHistogramAnalyzer().analyze(model, AdversarialBatch.from_pair(x0, xa, torch.zeros(2, dtype=torch.long)))
    assert res.mean_abs_diff == pytest.approx([3 / 48, 10 * 24 / 48])
    # TV of image 0, channel 0: one of 16 pixels moved bin; image 1: half of each channel moved
    assert res.tv[0] == pytest.approx([1 / 16, 0, 0])
    assert res.tv[1] == pytest.approx([0.5, 0.5, 0.5])
    assert res.hist_clean[0, 0, 100] == 16 and res.hist_adv[0, 0, 103] == 1
    s = res.summary()
    assert s["mean_abs_diff"] == pytest.approx((3 / 48 + 5) / 2) and s["n"] == 2
    # shards merge into the whole
    parts = [PixelHistogramAnalyzer().analyze(model, AdversarialBatch.from_pair(x0[i:i + 1], xa[i:i + 1],
                                                                                torch.zeros(1, dtype=torch.long)))
             for i in range(2)]
    merged = type(res).merge(parts)
    assert np.array_equal(merged.hist_adv, res.hist_adv) and np.allclose(merged.tv, res.tv)


# ------------------------------------------------------------------------------ replacement
def test_region_pixels_lie_in_the_top_region_and_are_seeded():
    cam = torch.arange(100, dtype=torch.float64).view(10, 10)
    pos, r = region_pixels(cam, 0.2, 7, torch.Generator().manual_seed(3))
    assert r == 20 and len(pos) == 7 and len({tuple(p) for p in pos.tolist()}) == 7
    assert all(cam[i, j] >= 80 for i, j in pos.tolist())
    again, _ = region_pixels(cam, 0.2, 7, torch.Generator().manual_seed(3))
    other, _ = region_pixels(cam, 0.2, 7, torch.Generator().manual_seed(4))
    assert torch.equal(pos, again) and not torch.equal(pos, other)
    everything, r = region_pixels(cam, 0.2, 50, torch.Generator().manual_seed(3))
    assert len(everything) == 20 == r  # a small region: all of it


def test_cam_replacement_confidence_change_equals_hand_computation():
    model = _brightness_model(8)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 3, 8, 8, generator=g, dtype=torch.float64) * 0.6
    xa = (x0 + 0.2 * torch.rand(5, 3, 8, 8, generator=g, dtype=torch.float64)).clamp(0, 1)
    y = model.predict(x0)
    batch = AdversarialBatch.from_pair(x0, xa, y, model=model)
    an = CamReplacementAnalyzer(k=6, values=[0, 255], top=0.25, seed=2)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    assert res.values == (0, 255) and res.positions.shape == (5, 6, 2)
    for vi, v in enumerate(res.values):
        ch = res.changes[vi]
        for i in range(5):
            pos = res.positions[i]
            for img, lab_b, conf_b, lab_a, conf_a in (
                    (x0[i], ch.clean_label_before, ch.clean_conf_before, ch.clean_label_after, ch.clean_conf_after),
                    (xa[i], ch.adv_label_before, ch.adv_conf_before, ch.adv_label_after, ch.adv_conf_after)):
                a = img.numpy().copy()
                lb, cb = _softmax_conf(a)
                a[:, pos[:, 0], pos[:, 1]] = v / 255
                la, ca = _softmax_conf(a)
                assert (lab_b[i], lab_a[i]) == (lb, la)
                assert conf_b[i] == pytest.approx(cb, abs=1e-6) and conf_a[i] == pytest.approx(ca, abs=1e-6)
        # the change-statistics row: mean over label-unchanged images, the others counted
        st = res.statistics()[vi]
        exp, n_changed = change_statistics(ch.clean_label_before, ch.clean_conf_before, ch.clean_label_after,
                                           ch.clean_conf_after)
        assert st["clean_change"] == pytest.approx(exp, nan_ok=True) and st["clean_n_changed"] == n_changed
    # the positions lie in the top quarter of the clean image's CAM for its prediction
    cam = advinterp.get_explainer("cam").explain(model, x0, torch.as_tensor(res.pred_clean)).maps
    for i in range(5):
        nu = torch.quantile(cam[i].flatten(), 0.75)
        assert all(cam[i, r, c] >= nu - 1e-12 for r, c in res.positions[i])


def test_cam_replacement_known_change_direction():
    """Setting pixels to 0 darkens the image: class 0 (bright) loses confidence, by the amount
    the brightness formula gives; the change-statistics row is that mean."""
    model = _brightness_model(8)
    x0 = torch.full((3, 3, 8, 8), 0.9, dtype=torch.float64)  # bright: class 0
    batch = AdversarialBatch.from_pair(x0, x0.clone(), torch.zeros(3, dtype=torch.long))
    res = CamReplacementAnalyzer(k=4, values=[0], top=1.0).analyze(model, batch)
    m_after = 0.9 * (64 - 4) / 64
    _, c_before = _softmax_conf(np.full((3, 8, 8), 0.9))
    expected = 1 / (1 + np.exp(-4 * (2 * m_after - 1)))
    st = res.statistics()[0]
    assert st["clean_change"] == pytest.approx(expected - c_before) and st["clean_n_changed"] == 0
    assert st["adv_change"] == pytest.approx(expected - c_before)


def test_replace_pixels_sets_every_channel_and_copies():
    x = torch.zeros(3, 4, 4)
    out = replace_pixels(x, torch.tensor([[1, 2], [3, 0]]), 0.5)
    assert out[:, 1, 2].tolist() == [0.5] * 3 and out[:, 3, 0].tolist() == [0.5] * 3
    assert out.sum() == pytest.approx(3.0) and x.sum() == 0


@pytest.mark.parametrize("params", [{"values": [300]}, {"values": []}, {"top": 0}, {"k": 0}])
def test_cam_replacement_refuses_bad_parameters(params):
    with pytest.raises(ParameterError):
        CamReplacementAnalyzer(**params)


def test_cam_replacement_table_layout():
    model = _brightness_model(8)
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batch = AdversarialBatch.from_pair(x0, x0.clone(), model.predict(x0))
    res = CamReplacementAnalyzer(k=3, values=[0, 127]).analyze(model, batch)
    rows = res.paper_rows(classes=["bright", "dark"])
    assert len(rows) == 2 * 2 * 2  # images x values x (before, after)
    assert [r["when"] for r in rows[:2]] == ["before", "after"] and rows[0]["clean_label"] in ("bright", "dark")
    assert res.change(127) is res.changes[1]
    with pytest.raises(ParameterError):
        res.change(5)
