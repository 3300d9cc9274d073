"""Exact incremental inference (advinterp.incremental): logits equal full forwards of the
ablated images for every window, boxes contain every changed position, unsupported ops fall
back, and pse / occlusion run on it (equal to their full paths and to Captum's Occlusion)."""
import warnings

import pytest
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter
from advinterp.analyzers.pse import PSEAnalyzer, ablated_class_logits, pse_grids
from advinterp.explainers.occlusion import occlusion_windows
from advinterp.incremental import (IncrementalModel, IncrementalUnavailable, RunInfo, _Boxed, conv_box,
                                   spatial_fallbacks, union_box)
from advinterp.models.synthetic_cnn import SyntheticCNN
from advinterp.testing import assert_model_unchanged

torchvision = pytest.importorskip("torchvision")


def _tv(arch, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval().to(dtype)
    return net


def _windows(x_ref, x_fill, boxes):
    """(index, patch, corners, the ablated images) for every box of every image."""
    n = len(x_ref)
    idx = torch.arange(n).repeat_interleave(len(boxes))
    bb = boxes.repeat(n, 1)
    patch = torch.stack([x_fill[i][:, b[0]:b[2], b[1]:b[3]] for i, b in zip(idx.tolist(), bb.tolist())])
    imgs = x_ref[idx].clone()
    for j, b in enumerate(bb.tolist()):
        imgs[j, :, b[0]:b[2], b[1]:b[3]] = patch[j]
    return idx, patch, bb[:, :2].clone(), imgs


def _check_model(net, size, win, stride, dtype, n=1, threshold=0.6, tol=1e-4, chunk=64, boxes_check=False):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g, dtype=dtype)
    x0 = torch.rand(n, 3, size, size, generator=g, dtype=dtype)
    boxes = pse_grids(size, size, win, stride)
    idx, patch, off, imgs = _windows(x, x0, boxes)
    im = IncrementalModel(net, threshold=threshold)
    with torch.no_grad():
        cache = im.prepare(x)
        for j0 in range(0, len(idx), chunk):
            sl = slice(j0, j0 + chunk)
            info = RunInfo()
            out = im.run(cache, idx[sl], patch[sl], off[sl], keep=boxes_check, info=info)
            ref = net(imgs[sl])
            scale = ref.abs().amax(1, keepdim=True).clamp(min=1e-12)
            assert float(((out - ref).abs() / scale).max()) <= tol
            if boxes_check:
                _check_boxes(im, cache, info, idx[sl], imgs[sl])
    return im, info


def _check_boxes(im, cache, info, idx, imgs):
    """Brute force: the positions where a full forward of the ablated images differs from x''s
    feature maps lie inside each node's box, and the boxed values equal the full maps."""
    full = im.prepare(imgs)
    # x' at the same batch size: a convolution's rounding may depend on the batch size
    base = im.prepare(cache.values[im.nodes[0].name][idx])
    n_boxed = 0
    for node in im.nodes:
        st = info.states.get(node.name)
        if not isinstance(st, _Boxed):
            continue
        n_boxed += 1
        changed = full.values[node.name] != base.values[node.name]
        h, w = st.patch.shape[-2:]
        inside = torch.zeros_like(changed)
        for j, (oy, ox) in enumerate(st.off.tolist()):
            assert 0 <= oy <= changed.shape[-2] - h and 0 <= ox <= changed.shape[-1] - w
            inside[j, :, oy:oy + h, ox:ox + w] = True
        assert not bool((changed & ~inside).any()), node.name
        got = im._full(cache, node.name, dict(info.states), idx)
        ref = full.values[node.name]
        assert float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max())), node.name
    assert n_boxed > 3


# ---------------------------------------------------------------------------- box arithmetic
def test_conv_box_hand_computed():
    # 3x3 conv, stride 1, padding 1, map 10: rows 4..5 changed reach outputs 3..6
    s, n = conv_box(torch.tensor([4]), 2, 3, 1, 1, 1, 10)
    assert (int(s[0]), n) == (3, 4)
    # 7x7 stride 2 padding 3 (ResNet stem) on 224: rows 13..25 -> outputs ceil((13+3-6)/2)=5 .. floor((25+3)/2)=14
    s, n = conv_box(torch.tensor([13]), 13, 7, 2, 3, 1, 112)
    assert (int(s[0]), n) == (5, 10)
    # clamped at the border: a box reaching past the map is moved back inside
    # (rows 5..6 reach 4..7, size 4; rows 8..9 reach 7..9, size 3: one size 4, corner 7 -> 6)
    s, n = conv_box(torch.tensor([5, 8]), 2, 3, 1, 1, 1, 10)
    assert n == 4 and s.tolist() == [4, 6]
    # a 1x1 stride-2 conv that skips the changed row: a box of one position (never empty)
    s, n = conv_box(torch.tensor([3]), 1, 1, 2, 0, 1, 5)
    assert n == 1
    # dilation 2, kernel 3: span 5
    s, n = conv_box(torch.tensor([10]), 1, 3, 1, 2, 2, 20)
    assert (int(s[0]), n) == (8, 5)


def test_union_box():
    s, n = union_box([(torch.tensor([2, 5]), 3), (torch.tensor([4, 1]), 2)], 10)
    # sample 0: [2,5) u [4,6) = [2,6); sample 1: [5,8) u [1,3) = [1,8): one size, 7
    assert n == 7 and s.tolist() == [2, 1]
    s, n = union_box([(torch.tensor([6]), 3), (torch.tensor([0]), 2)], 8)
    assert n == 8 and s.tolist() == [0]  # [0, 9) clipped to the map


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("arch,size,win,stride", [
    ("resnet18", 96, 13, 13),   # stride = window, border windows flush (cover)
    ("resnet18", 80, 9, 6),     # overlapping windows
    ("vgg11", 64, 7, 5),
])
def test_torchvision_logits_equal_full_forwards_fp32(arch, size, win, stride):
    _check_model(_tv(arch), size, win, stride, torch.float32)


def test_resnet50_logits_equal_full_forwards_fp32():
    _check_model(_tv("resnet50"), 80, 13, 11, torch.float32, chunk=49)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
def test_torchvision_logits_equal_full_forwards_fp64(arch):
    _check_model(_tv(arch, torch.float64), 64, 10, 7, torch.float64, tol=1e-10)


def test_resnet50_logits_equal_full_forwards_fp64():
    _check_model(_tv("resnet50", torch.float64), 64, 9, 9, torch.float64, tol=1e-10, chunk=32)


def test_shipped_model_random_weights_fp32_fp64_two_images():
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        torch.manual_seed(0)
        net = SyntheticCNN().to(dtype).eval()  # the shipped architecture, random weights
        _check_model(net, 64, 4, 3, dtype, n=2, tol=tol, chunk=200)


@pytest.mark.parametrize("threshold", [0.3, 1.0])
def test_threshold_only_moves_the_switch_to_full_maps(threshold):
    im, info = _check_model(_tv("resnet18"), 64, 8, 8, torch.float32, threshold=threshold)
    assert info.full  # the head always runs on full maps
    first_full = next(n for n in (node.name for node in im.nodes) if n in info.full)
    if threshold == 1.0:
        assert not first_full.startswith(("conv1", "bn1", "relu", "maxpool", "layer1"))


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
def test_changed_positions_lie_inside_every_box(arch):
    _check_model(_tv(arch), 64, 7, 5, torch.float32, chunk=36, boxes_check=True, threshold=1.0)


def test_changed_positions_lie_inside_every_box_shipped_model():
    torch.manual_seed(1)
    net = SyntheticCNN().eval()
    _check_model(net, 64, 4, 4, torch.float32, chunk=64, boxes_check=True, threshold=1.0)


def test_flops_fraction_resnet_is_a_fraction():
    """13x13 windows on ResNet-18 at 224: far fewer multiply-adds than full forwards (the
    issue's measurement: about a third), counted from the boxes actually run."""
    net = _tv("resnet18")
    x = torch.rand(1, 3, 224, 224)
    boxes = pse_grids(224, 224, 13, 13)[::37][:8]
    idx, patch, off, imgs = _windows(x, torch.rand(1, 3, 224, 224), boxes)
    im = IncrementalModel(net)
    with torch.no_grad():
        info = RunInfo()
        out = im.run(im.prepare(x), idx, patch, off, info=info)
        ref = net(imgs)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    assert 0.15 < info.flops_fraction < 0.6


# ---------------------------------------------------------------------------- fallbacks
class _Roll(nn.Module):
    """An op the executor does not know (torch.roll) on a spatial map, between two convs."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        x = torch.roll(torch.relu(self.c1(x)), 1, dims=3)
        return self.head(self.c2(x).mean((2, 3)))


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        y = self.c(x)
        if y.sum() > 0:
            y = y * 2
        return y.mean((2, 3))


class _Aliased(nn.Module):
    """An in-place ReLU on a value another op also reads: out-of-place execution would differ."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.r = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.c(x)
        b = a * 1.0
        self.r(a)
        return (a + b).mean((2, 3))


def _pair(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 3, size, size, generator=g)
    return x0, (x0 + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


def test_unsupported_op_falls_back_and_says_so():
    torch.manual_seed(0)
    model = ModelAdapter(_Roll().eval(), nb_classes=5, input_shape=(3, 16, 16), name="roll")
    x0, xa = _pair()
    boxes = pse_grids(16, 16, 4, 4)
    cls = torch.tensor([[0, 1], [2, 3]])
    full, adv_full = ablated_class_logits(model, x0, xa, boxes, cls, incremental=False)
    auto_report, forced_report = {}, {}
    auto, _ = ablated_class_logits(model, x0, xa, boxes, cls, incremental=None, report=auto_report)
    forced, adv_forced = ablated_class_logits(model, x0, xa, boxes, cls, incremental=True, report=forced_report)
    assert auto_report["path"] == "full" and "unsupported" in auto_report["note"] and "roll" in auto_report["note"]
    assert forced_report["path"] == "incremental" and forced_report["fallbacks"] == ["roll"]
    assert "full maps from roll" in forced_report["note"]
    torch.testing.assert_close(forced, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(auto, full, rtol=0, atol=0)
    torch.testing.assert_close(adv_forced, adv_full, rtol=1e-5, atol=1e-5)
    im = IncrementalModel(model.module)
    assert "roll" in im.unsupported
    with torch.no_grad():
        assert spatial_fallbacks(im, im.prepare(model.normalize(xa))) == ["roll"]


def test_untraceable_model_takes_the_full_path():
    model = ModelAdapter(_Branchy().eval(), nb_classes=5, input_shape=(3, 16, 16), name="branchy")
    x0, xa = _pair()
    boxes = pse_grids(16, 16, 4, 4)
    cls = torch.tensor([[0, 1], [2, 3]])
    report = {}
    with pytest.warns(RuntimeWarning, match="incremental=True, but torch.fx cannot trace"):
        got, _ = ablated_class_logits(model, x0, xa, boxes, cls, incremental=True, report=report)
    assert report["path"] == "full" and "cannot trace" in report["note"]
    ref, _ = ablated_class_logits(model, x0, xa, boxes, cls, incremental=False)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_inplace_op_on_a_shared_value_is_refused():
    with pytest.raises(IncrementalUnavailable, match="overwrites .* in place"):
        IncrementalModel(_Aliased().eval())


def test_threshold_is_checked():
    with pytest.raises(advinterp.ParameterError, match="threshold"):
        IncrementalModel(_Roll(), threshold=0)


# ---------------------------------------------------------------------------- pse and occlusion
def test_pse_incremental_equals_full_and_reports_the_path(synthetic_model):
    x, y = advinterp.get_dataset("synthetic", n=3, split="test").tensors()
    g = torch.Generator().manual_seed(0)
    xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 8 / 255).clamp(0, 1)
    batch = AdversarialBatch(x0=x, x_adv=xa, y_true=y, y_target=(y + 1) % 12, attack="noise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inc = assert_model_unchanged(synthetic_model,
                                     lambda: PSEAnalyzer(size=4, stride=3).analyze(synthetic_model, batch))
        full = PSEAnalyzer(size=4, stride=3, incremental=False).analyze(synthetic_model, batch)
    assert inc.inference == "incremental" and "multiply-adds" in inc.inference_note
    assert full.inference == "full"
    scale = abs(full.logit_t0).max()
    assert abs(inc.logit_t0 - full.logit_t0).max() <= 1e-5 * scale
    assert abs(inc.logit_t - full.logit_t).max() <= 1e-5 * scale
    assert abs(inc.adv_logit_t - full.adv_logit_t).max() <= 1e-5 * scale


def test_occlusion_windows_are_captums():
    # (64 - 5) / 3 -> ceil 20, + 1 = 21 corners 0..60; the last window clipped to 60..64
    b = occlusion_windows(64, 64, 5, 3)
    assert len(b) == 21 * 21 and b[20].tolist() == [0, 60, 5, 64] and b[-1].tolist() == [60, 60, 64, 64]
    assert occlusion_windows(8, 8, 4, 4).tolist()[:2] == [[0, 0, 4, 4], [0, 4, 4, 8]]


@pytest.mark.parametrize("size,stride,incremental", [(5, 3, None), (5, 3, False), (6, 6, None)])
def test_occlusion_equals_captum(synthetic_model, size, stride, incremental):
    from captum.attr import Occlusion as CaptumOcclusion

    x, y = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    t2 = (y + 5) % 12
    ex = advinterp.get_explainer("occlusion", size=size, stride=stride, baseline=0.25, incremental=incremental)
    a, b = assert_model_unchanged(synthetic_model, lambda: ex.explain_many(synthetic_model, x, [y, t2]))
    assert ex.last_path == ("full" if incremental is False else "incremental")
    occ = CaptumOcclusion(synthetic_model.logits)
    for att, t in ((a, y), (b, t2)):
        with torch.no_grad():
            ref = occ.attribute(x, sliding_window_shapes=(3, size, size), strides=(3, stride, stride), baselines=0.25,
                                target=t, perturbations_per_eval=128)
        assert att.maps.shape == (2, 64, 64) and att.layer == "input"
        torch.testing.assert_close(att.maps, ref[:, 0], rtol=0, atol=1e-5 * float(ref.abs().max()))


class _ViewHead(nn.Module):
    """A head that needs channels-first strides: ``.view`` of a spatial map."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        h = torch.relu(self.c(x))
        return self.head(h.view(h.shape[0], -1))


def test_channels_first_model_falls_back_from_channels_last():
    torch.manual_seed(0)
    model = ModelAdapter(_ViewHead().eval(), nb_classes=5, input_shape=(3, 16, 16), name="view")
    x0, xa = _pair()
    boxes = pse_grids(16, 16, 4, 4)
    cls = torch.tensor([[0, 1], [2, 3]])
    report = {}
    got, adv = ablated_class_logits(model, x0, xa, boxes, cls, incremental=True, report=report)
    ref, adv_ref = ablated_class_logits(model, x0, xa, boxes, cls, incremental=False)
    assert report["path"] == "incremental" and report["fallbacks"]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adv, adv_ref, rtol=1e-5, atol=1e-5)
