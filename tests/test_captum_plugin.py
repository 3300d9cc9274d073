"""advinterp-captum: CAM, Grad-CAM and Grad-CAM++ checked against Captum, hand computations,
pytorch-grad-cam and each other; explain_many / explain_pair in shared passes; errors."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

captum = pytest.importorskip("captum")
import advinterp_captum  # noqa: E402  (shipped: a failed import is an error, not a skip)

import advinterp  # noqa: E402
from advinterp import Explainer, IncompatibleModelError, ModelAdapter, PairMaps, ParameterError  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=8, split="test").tensors()
    return model, x, y


def _close(a, b, rel=1e-5):
    """|a - b| <= rel * max|b| per image (maps of different magnitudes per image)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    peak = b.abs().flatten(1).amax(1).clamp_min(1e-12)
    err = ((a - b).abs().flatten(1).amax(1) / peak).max()
    assert err <= rel, f"max relative deviation {float(err):.3g} > {rel}"


# ------------------------------------------------------------------------------ tiny models
class TinyGap(nn.Module):
    """conv(1->2, 3x3) -> ReLU -> GAP -> linear(2->3), weights set by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1., 0, -1], [2, 0, -2], [1, 0, -1]]],
                                                 [[[0.5, 1, 0.5], [0, 0, 0], [-0.5, -1, -0.5]]]]))
            self.conv.bias.copy_(torch.tensor([0.1, 0.2]))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]]))
            self.fc.bias.copy_(torch.tensor([0.3, -0.1, 0.2]))

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class Tiny1x1(nn.Module):
    """1x1 conv(3->2) (no ReLU: activations of both signs) -> GAP -> linear(2->3)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -0.5, 0.25], [0.3, 0.8, -0.6]])[:, :, None, None])
            self.conv.bias.copy_(torch.tensor([0.05, -0.1]))
            self.fc.weight.copy_(torch.tensor([[0.7, -1.2], [2.0, 0.4], [-0.9, 1.5]]))
            self.fc.bias.copy_(torch.tensor([0.0, 0.1, -0.2]))

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class NoGap(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


# ------------------------------------------------------------------------------ plugin
def test_registered_and_lazy():
    assert {"cam", "gradcam", "gradcampp"} <= {i.name for i in advinterp.list_components("explainer")}
    code = "import sys, advinterp_captum; print('captum' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr or r.stdout


# ------------------------------------------------------------------------------ Grad-CAM
@pytest.mark.parametrize("relu", [True, False])
def test_gradcam_equals_captum_layergradcam(shipped, relu):
    from captum.attr import LayerAttribution, LayerGradCam

    model, x, y = shipped
    ours = advinterp.get_explainer("gradcam", relu=relu, batch_size=3).explain(model, x, y)
    with model.preserved(freeze=True):
        ref = LayerGradCam(model.logits, model.layer("layer4")).attribute(x, target=y, relu_attributions=relu)
    up = LayerAttribution.interpolate(ref, (64, 64), interpolate_mode="bilinear")
    assert ours.layer == "layer4" and ours.layer_maps.shape == (8, 16, 16) and ours.maps.shape == (8, 64, 64)
    _close(ours.layer_maps, ref[:, 0].detach(), 1e-6)
    _close(ours.maps, up[:, 0].detach(), 1e-6)


# ------------------------------------------------------------------------------ CAM
def test_cam_equals_hand_computation():
    m = TinyGap()
    ad = ModelAdapter(m, input_shape=(1, 6, 6))
    assert ad.cam_layer == "relu"  # the pooled tensor is found automatically
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 2])
    with warnings_as_errors():  # exact GAP + linear: no decomposition warning
        out = advinterp.get_explainer("cam").explain(ad, x, t)
    a = torch.relu(_conv3x3_by_hand(x, m))
    w = m.fc.weight.detach()
    hand = torch.stack([w[t[n], 0] * a[n, 0] + w[t[n], 1] * a[n, 1] for n in range(3)])
    _close(out.layer_maps, hand, 1e-6)
    # the CAM identity: mean of the map + bias = the logit
    logits = m(x).detach()
    assert torch.allclose(out.layer_maps.mean((1, 2)) + m.fc.bias.detach()[t], logits[torch.arange(3), t], atol=1e-5)


def _conv3x3_by_hand(x, m):
    """3x3 'same' convolution with explicit loops over the kernel (independent of F.conv2d)."""
    xp = np.pad(x.numpy()[:, 0], ((0, 0), (1, 1), (1, 1)))
    wt, b = m.conv.weight.detach().numpy(), m.conv.bias.detach().numpy()
    out = np.zeros((x.shape[0], 2, 6, 6))
    for k in range(2):
        for di in range(3):
            for dj in range(3):
                out[:, k] += wt[k, 0, di, dj] * xp[:, di:di + 6, dj:dj + 6]
        out[:, k] += b[k]
    return torch.from_numpy(out).float()


class warnings_as_errors:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_cam_over_hw_equals_gradcam_before_relu(shipped):
    """Paper, Sec. 4: on GAP + linear, Grad-CAM's weights are w_k^c / (h w), so
    CAM / (h w) == Grad-CAM without the ReLU (and relu(CAM)/(h w) == Grad-CAM with it)."""
    model, x, y = shipped
    cam = advinterp.get_explainer("cam", relu=False).explain(model, x, y).layer_maps
    gc = advinterp.get_explainer("gradcam", relu=False).explain(model, x, y).layer_maps
    h, w = cam.shape[-2:]
    _close(cam / (h * w), gc, 1e-5)
    gc_relu = advinterp.get_explainer("gradcam").explain(model, x, y).layer_maps
    _close(torch.relu(cam) / (h * w), gc_relu, 1e-5)


# ------------------------------------------------------------------------------ Grad-CAM++
def test_gradcampp_equals_closed_form_by_hand():
    """1x1 conv + GAP + linear: g^k = W[c, k] / (h w) is constant over (i, j), so
    alpha^k = 1 / (2 + S_k g^k) (g != 0), w_k = h w alpha^k relu(g^k), M = relu(sum_k w_k A^k)."""
    m = Tiny1x1()
    ad = ModelAdapter(m, input_shape=(3, 5, 5))
    assert ad.cam_layer == "conv"
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2, 1])
    xn = x.double().numpy()
    wc, bc = m.conv.weight.detach().double().numpy()[:, :, 0, 0], m.conv.bias.detach().double().numpy()
    wf = m.fc.weight.detach().double().numpy()
    a = np.einsum("kc,nchw->nkhw", wc, xn) + bc[None, :, None, None]  # (N, 2, 5, 5)
    hw = 25
    for relu in (True, False):
        out = advinterp.get_explainer("gradcampp", relu=relu).explain(ad, x, t).layer_maps
        for n in range(4):
            g = wf[t[n]] / hw  # (2,)
            s = a[n].sum((1, 2))
            alpha = np.where(g != 0, 1.0 / (2.0 + s * g), 0.0)
            wk = hw * alpha * np.maximum(g, 0)
            hand = np.einsum("k,khw->hw", wk, a[n])
            hand = np.maximum(hand, 0) if relu else hand
            np.testing.assert_allclose(out[n].double().numpy(), hand, rtol=1e-5, atol=1e-6)


def test_gradcampp_agrees_with_pytorch_grad_cam(shipped):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, y = shipped
    layer = model.module.layer4
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    with model.preserved(), pgc.GradCAMPlusPlus(model=model.as_module(), target_layers=[layer]) as lib:
        final = lib(input_tensor=x, targets=targets)  # (N, 64, 64): min-max scaled, cv2-resized
        acts = [a.cpu().numpy() for a in lib.activations_and_grads.activations]
        grads = [g.cpu().numpy() for g in lib.activations_and_grads.gradients]
        raw = np.maximum(lib.get_cam_image(x, layer, targets, acts[0], grads[0], False), 0)  # (N, 16, 16)
    ours = advinterp.get_explainer("gradcampp", eps=1e-6).explain(model, x, y)
    # (1) the raw layer-resolution maps relu(sum_k w_k A^k), before any scaling: equal to
    #     1e-5 of each image's maximum (pytorch-grad-cam adds eps=1e-6 to the alpha denominator)
    _close(ours.layer_maps, torch.from_numpy(raw), 1e-5)
    # (2) its final output, reproducing its post-processing (scale_cam_image twice: per image
    #     m - min, / (1e-7 + max); cv2.resize INTER_LINEAR == bilinear, align_corners=False)
    def scale(m):
        m = m - m.flatten(1).amin(1)[:, None, None]
        return m / (1e-7 + m.flatten(1).amax(1)[:, None, None])
    up = nn.functional.interpolate(scale(ours.layer_maps)[:, None], size=(64, 64), mode="bilinear",
                                   align_corners=False)[:, 0]
    np.testing.assert_allclose(scale(up).numpy(), final, atol=1e-5)
    # the paper's formula (eps = 0) differs visibly on this model (g ~ 1e-3, so g^2 ~ eps)
    exact = advinterp.get_explainer("gradcampp").explain(model, x, y).layer_maps
    assert not torch.allclose(exact, ours.layer_maps, rtol=1e-3)


def test_gradcam_agrees_with_torchcam(shipped):
    tc = pytest.importorskip("torchcam.methods")
    model, x, y = shipped
    net = model.as_module()
    with model.preserved():
        with tc.GradCAM(net, target_layer="net.layer4", input_shape=(3, 64, 64)) as ext:
            scores = net(x)
            ref = ext(class_idx=y.tolist(), scores=scores, normalized=False)[0].detach()
    ours = advinterp.get_explainer("gradcam").explain(model, x, y).layer_maps
    _close(ours, ref, 1e-5)


# ------------------------------------------------------------------------------ explain_many / explain_pair
@pytest.fixture(scope="module")
def adv_batch(shipped):
    model, x, y = shipped
    t = advinterp.random_targets(y, model.nb_classes, torch.Generator().manual_seed(0))
    return advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=3, targeted=True).generate(
        model, x, y, t)


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcampp"])
def test_shared_passes_equal_the_default_explain_many(shipped, adv_batch, name):
    """The override (layer_maps_multi: all targets in one pass for CAM) gives the maps of the
    base-class default (one _explain per target vector)."""
    model = shipped[0]
    ex = advinterp.get_explainer(name, batch_size=5)
    b = adv_batch
    x = torch.cat([b.x0, b.x_adv])
    targets = [torch.cat([b.y_true, b.y_true]), torch.cat([b.target, b.target])]
    with model.preserved(freeze=True):
        shared, layer = ex._explain_many(model, x, targets)
        default, layer_d = Explainer._explain_many(ex, model, x, targets)
    assert layer == layer_d == "layer4" and len(shared) == len(default) == 2
    for s, d in zip(shared, default):
        assert s.shape == (16, 16, 16)
        torch.testing.assert_close(s, d, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcampp"])
def test_explain_pair_passes(shipped, adv_batch, name):
    """explain_pair runs [x0; x'] through the layer once for both target vectors, every
    method, and nothing else (no 1-image probes)."""
    model = shipped[0]
    seen = []
    hook = model.module.layer4.register_forward_hook(lambda mod, inp, out: seen.append(len(out)))
    try:
        advinterp.get_explainer(name, batch_size=64).explain_pair(model, adv_batch)
    finally:
        hook.remove()
    assert seen == [2 * len(adv_batch)]


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcampp"])
def test_explain_many_equals_explain_calls(shipped, adv_batch, name):
    model, x, _ = shipped
    ex = advinterp.get_explainer(name, batch_size=5)
    many = ex.explain_many(model, x, [adv_batch.y_true, adv_batch.target])
    for attr, t in zip(many, [adv_batch.y_true, adv_batch.target]):
        one = ex.explain(model, x, t)
        assert (attr.method, attr.layer) == (one.method, one.layer) and torch.equal(attr.target, one.target)
        _close(attr.maps, one.maps, 1e-6)
        _close(attr.layer_maps, one.layer_maps, 1e-6)


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcampp"])
def test_explain_pair_matches_four_explain_calls(shipped, adv_batch, name):
    model = shipped[0]
    ex = advinterp.get_explainer(name, batch_size=5)
    b = adv_batch
    pair = ex.explain_pair(model, b)
    assert isinstance(pair, PairMaps) and pair.normalized and pair.layer == "layer4" and pair.method == name
    four = {"x0_t0": ex.explain(model, b.x0, b.y_true), "xadv_t0": ex.explain(model, b.x_adv, b.y_true),
            "x0_t": ex.explain(model, b.x0, b.target), "xadv_t": ex.explain(model, b.x_adv, b.target)}
    maps = pair.maps()
    for k, a in four.items():
        assert maps[k].shape == (8, 64, 64) and pair.layer_maps[k].shape == (8, 16, 16)
        _close(maps[k] * pair.scale[:, None, None], a.maps, 1e-5)
        _close(pair.layer_maps[k] * pair.scale[:, None, None], a.layer_maps, 1e-5)
    # normalisation: the largest |value| over the four maps of each image is 1
    peak = torch.stack([m.abs().flatten(1).amax(1) for m in maps.values()]).amax(0)
    assert torch.allclose(peak, torch.ones(8), atol=1e-6)
    raw = ex.explain_pair(model, b, normalize=False)
    assert not raw.normalized and torch.equal(raw.scale, torch.ones(8))
    for k, a in four.items():
        _close(raw.maps()[k], a.maps, 1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_compatibility_explain_pair_equals_the_method(shipped, adv_batch, normalize):
    model = shipped[0]
    ex = advinterp.get_explainer("gradcampp")
    old = advinterp_captum.explain_pair(ex, model, adv_batch, normalize=normalize)
    new = ex.explain_pair(model, adv_batch, normalize=normalize)
    assert advinterp_captum.PairMaps is PairMaps and type(old) is PairMaps
    assert (old.method, old.layer, old.normalized) == (new.method, new.layer, new.normalized)
    for f in ("x0_t0", "xadv_t0", "x0_t", "xadv_t", "scale", "t0", "t"):
        assert torch.equal(getattr(old, f), getattr(new, f)), f
    assert all(torch.equal(old.layer_maps[k], new.layer_maps[k]) for k in PairMaps.KEYS)


def test_explain_pair_untargeted_and_errors(shipped):
    model, x, y = shipped
    b = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=2).generate(model, x[:3], y[:3])
    pair = advinterp.get_explainer("gradcam").explain_pair(model, b)
    assert torch.equal(pair.t, b.y_adv) and torch.equal(pair.t0, b.y_true)
    with pytest.raises(ParameterError, match="batch"):
        advinterp.get_explainer("gradcam").explain_pair(model, (x, y))
    with pytest.raises(ParameterError, match="batch"):
        advinterp_captum.explain_pair(advinterp.get_explainer("gradcam"), model, (x, y))
    with pytest.raises(ParameterError, match="explainer"):
        advinterp_captum.explain_pair("gradcam", model, b)


# ------------------------------------------------------------------------------ errors
def test_cam_needs_gap_linear_head():
    ad = ModelAdapter(NoGap(), input_shape=(3, 8, 8))
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(IncompatibleModelError, match=r"'conv'.*'fc'.*256 features"):
        advinterp.get_explainer("cam").explain(ad, x, torch.tensor([0, 1]))
    # Grad-CAM works on that model
    assert advinterp.get_explainer("gradcam").explain(ad, x, torch.tensor([0, 1])).maps.shape == (2, 8, 8)


def test_cam_warns_when_the_layer_is_not_what_is_pooled():
    from advinterp.testing import toy_data, toy_model

    m = toy_model()  # cam_layer 'features.conv2' is followed by a functional ReLU before the pooling
    x, y = toy_data()
    with pytest.warns(RuntimeWarning, match="features.conv2"):
        advinterp.get_explainer("cam").explain(m, x, y)


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcampp"])
def test_bad_targets_and_params(shipped, name):
    model, x, y = shipped
    ex = advinterp.get_explainer(name)
    with pytest.raises(ParameterError, match="target"):
        ex.explain(model, x, y + 100)
    with pytest.raises(ParameterError, match="target"):
        ex.explain(model, x, y[:3])
    with pytest.raises(ParameterError, match="batch_size"):
        advinterp.get_explainer(name, batch_size=0)
    with pytest.raises(IncompatibleModelError, match="layer9"):
        advinterp.get_explainer(name, layer="layer9").explain(model, x, y)
    # an explicit layer other than the default (CAM warns: layer3 is not what is pooled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = advinterp.get_explainer(name, layer="layer3").explain(model, x[:2], y[:2])
    assert out.layer == "layer3" and out.layer_maps.shape == (2, 16, 16)
