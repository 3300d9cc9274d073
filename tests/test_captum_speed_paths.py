"""advinterp-captum's one-forward paths (issue 18, part 1): one forward per chunk for every
target vector and method, no backward below the explained layer, maps equal to Captum's own
LayerGradCam / LayerActivation computations to 1e-6, the channels-last fallback, the model
left as it was."""
import warnings

import pytest
import torch
from torch import nn

captum = pytest.importorskip("captum")
import advinterp_captum  # noqa: E402,F401

import advinterp  # noqa: E402
from advinterp import IncompatibleModelError, ModelAdapter, ParameterError  # noqa: E402
from advinterp.api import channels_last  # noqa: E402
from advinterp.testing import assert_model_unchanged  # noqa: E402
from advinterp_captum.explainers import gradcampp_map  # noqa: E402

METHODS = ["cam", "gradcam", "gradcampp"]


def _close(a, b, rel=1e-6, peak_of=None):
    """|a - b| <= rel * max|peak_of| per image (``peak_of`` default ``b``). Maps after a ReLU
    are compared relative to the raw map's peak: the ReLU can make the positive peak
    arbitrarily small, so float rounding relative to it is unbounded."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    p = b if peak_of is None else torch.as_tensor(peak_of, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    peak = p.abs().flatten(1).amax(1).clamp_min(1e-12)
    err = ((a - b).abs().flatten(1).amax(1) / peak).max()
    assert err <= rel, f"max relative deviation {float(err):.3g} > {rel}"


@pytest.fixture(scope="module")
def shipped():
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=8, split="test").tensors()
    return model, x, y


@pytest.fixture(scope="module")
def resnet18():
    tv = pytest.importorskip("torchvision")  # noqa: F841
    torch.manual_seed(0)
    rn = advinterp.get_model("torchvision:resnet18", weights="random")
    model = ModelAdapter(rn.module, mean=rn.mean, std=rn.std, input_shape=(3, 64, 64), name="resnet18")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 64, 64, generator=g)
    return model, x


def _targets(model, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, model.nb_classes, (n,), generator=g) for _ in range(k)]


def _reference(name, model, layer, x, t, **kw):
    """Captum's own computation of one raw map ``(N, h, w)`` before any final ReLU (one
    Captum pass per target)."""
    from captum._utils.gradient import compute_layer_gradients_and_eval
    from captum.attr import LayerActivation, LayerGradCam

    module = model.layer(layer)
    with model.preserved(freeze=True):
        if name == "gradcam":
            return LayerGradCam(model.logits, module).attribute(x, target=t, relu_attributions=False).detach()[:, 0]
        if name == "cam":
            a = LayerActivation(model.logits, module).attribute(x).detach()
            w, _ = model.classifier_weights()
            return torch.einsum("nkhw,nk->nhw", a, w[t])
        grads, acts = compute_layer_gradients_and_eval(model.logits, module, x, target_ind=t)
        return gradcampp_map(acts[0].detach(), grads[0].detach(), kw.get("eps", 0.0))


def _check_against_captum(name, model, x, ts, batch_size, channels_last=(True, False), rel=1e-6):
    """Ours with and without the final ReLU against Captum, for two target vectors from one
    forward per chunk; ``channels_last``: the settings to check."""
    refs = [_reference(name, model, "layer4", x, t) for t in ts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CAM on resnet18's layer4: not what is pooled
        for cl in channels_last:
            for relu in (False, True):
                ex = advinterp.get_explainer(name, batch_size=batch_size, relu=relu, channels_last=cl)
                for attr, ref in zip(ex.explain_many(model, x, ts), refs):
                    _close(attr.layer_maps, torch.relu(ref) if relu else ref, rel, peak_of=ref)


class _Counter:
    """Counts forward calls (and batch sizes) of a module, and backward calls of another."""

    def __init__(self, fwd: nn.Module, bwd: nn.Module | None = None):
        self.forwards: list[int] = []
        self.backwards = 0
        self.grad_below: list[bool] = []
        self.handles = [fwd.register_forward_hook(lambda m, i, o: self.forwards.append(len(o)))]
        if bwd is not None:
            self.handles.append(bwd.register_full_backward_hook(self._bwd))
            self.handles.append(bwd.register_forward_hook(lambda m, i, o: self.grad_below.append(o.requires_grad)))

    def _bwd(self, *_):
        self.backwards += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------ passes
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("k", [1, 3])
def test_one_forward_per_chunk_whatever_the_number_of_targets(shipped, name, k):
    model, x, _ = shipped
    ex = advinterp.get_explainer(name, batch_size=5)
    ex.explain(model, x[:2], 0)  # the adapter's one-time layer discovery is not counted
    with _Counter(model.module.layer4) as layer, _Counter(model.module) as whole:
        out = ex.explain_many(model, x, _targets(model, len(x), k))
    assert len(out) == k
    assert layer.forwards == [5, 3] and whole.forwards == [5, 3]  # no probe forwards either


@pytest.mark.parametrize("name", METHODS)
def test_explain_pair_is_one_forward_of_the_stacked_batch(shipped, name):
    model, x, y = shipped
    t = advinterp.random_targets(y, model.nb_classes, torch.Generator().manual_seed(0))
    batch = advinterp.AdversarialBatch.from_pair(x, (x + 0.01).clamp(0, 1), y, y_target=t)
    ex = advinterp.get_explainer(name)
    ex.explain(model, x[:2], 0)
    with _Counter(model.module.layer4) as layer, _Counter(model.module) as whole:
        pair = ex.explain_pair(model, batch)
    assert layer.forwards == [16] and whole.forwards == [16]
    assert pair.x0_t0.shape == (8, 64, 64)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_no_backward_below_the_layer(shipped, name, x_requires_grad):
    """Grad-CAM(++)'s backward runs through the modules after the layer only: an early conv
    records no graph and its backward hook never fires (also when the user's x requires grad)."""
    model, x, y = shipped
    xx = x.clone().requires_grad_(x_requires_grad)
    with _Counter(model.module.layer4, bwd=model.module.layer1.conv) as c:
        advinterp.get_explainer(name, batch_size=5).explain_many(model, xx, [y, (y + 1) % model.nb_classes])
    assert c.backwards == 0 and c.grad_below and not any(c.grad_below)
    assert xx.grad is None


# ------------------------------------------------------------------------------ equal to Captum
@pytest.mark.parametrize("name", METHODS)
def test_maps_equal_captum_on_the_shipped_model(shipped, name):
    model, x, _ = shipped
    _check_against_captum(name, model, x, _targets(model, len(x), 2), 5)


@pytest.mark.parametrize("name", METHODS)
def test_maps_equal_captum_on_resnet18(resnet18, name):
    """Channels-first (``channels_last=False``): equal to Captum to 1e-6 (bit for bit here)."""
    model, x = resnet18
    _check_against_captum(name, model, x, _targets(model, len(x), 2, seed=1), 4, channels_last=(False,))


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_rounding_on_resnet18(resnet18, name):
    """Channels-last (the default) on ResNet-18 is NOT within 1e-6 of Captum's channels-first
    maps: its convolutions round differently, ~1e-5 of the raw map's peak (measured 9.9e-6
    Grad-CAM, 1.1e-5 CAM; Captum's own maps differ by 5.7e-6 between a batch of 6 and one
    image at a time). This pins that size; ``channels_last=False`` gives the 1e-6 maps."""
    model, x = resnet18
    _check_against_captum(name, model, x, _targets(model, len(x), 2, seed=1), 4, channels_last=(True,), rel=3e-5)


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_opt_out_gives_the_same_maps(shipped, name):
    model, x, y = shipped
    a = advinterp.get_explainer(name, relu=False).explain(model, x, y).layer_maps
    b = advinterp.get_explainer(name, relu=False, channels_last=False).explain(model, x, y).layer_maps
    _close(a, b)


class _BnInplace(nn.Module):
    """conv -> bn -> ReLU(inplace) -> GAP -> linear: an in-place op right after the bn layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("name", ["gradcam", "gradcampp"])
def test_in_place_op_after_the_layer(name):
    """The network gets a clone of the layer's output: the in-place ReLU after bn does not
    overwrite the activation the map is computed from (equal to Captum's maps)."""
    ad = ModelAdapter(_BnInplace(), input_shape=(3, 8, 8))
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 2, 3, 0])
    out = advinterp.get_explainer(name, layer="bn", relu=False).explain(ad, x, t).layer_maps
    with ad.preserved(freeze=True):
        a = ad.activations(x, ["bn"], copy=True)["bn"]
    assert (a < 0).any()  # the layer's own output has negatives the ReLU would have zeroed
    if name == "gradcam":
        from captum.attr import LayerGradCam

        with ad.preserved(freeze=True):
            ref = LayerGradCam(ad.logits, ad.layer("bn")).attribute(x, target=t, relu_attributions=False)[:, 0]
        _close(out, ref.detach())
    else:
        _close(out, _reference(name, ad, "bn", x, t))


# ------------------------------------------------------------------------------ channels-last fallback
class _ViewNet(nn.Module):
    """Flattens its input with ``.view`` (needs channels-first strides), then a small CNN."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        flat = x.view(len(x), -1)  # raises on a channels-last batch
        x = flat.view(x.shape)
        return self.fc(self.conv(x).mean((2, 3)))  # GAP + linear of conv: exact CAM


def test_channels_last_helper():
    x = torch.rand(2, 3, 4, 4)
    y = channels_last(x)
    assert torch.equal(x, y) and y.is_contiguous(memory_format=torch.channels_last)
    one = x[:1]
    assert channels_last(one) is one and channels_last(x[0]) is not None


@pytest.mark.parametrize("name", METHODS)
def test_a_model_that_needs_channels_first_still_works(name):
    ad = ModelAdapter(_ViewNet(), input_shape=(3, 6, 6))
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="view"):
        ad.logits(channels_last(x))  # the premise
    t = torch.tensor([0, 1, 2, 0])
    assert ad.channels_last_ok is None
    first = advinterp.get_explainer(name, batch_size=2).explain(ad, x, t).layer_maps
    assert ad.channels_last_ok is False  # remembered on the adapter
    ref = advinterp.get_explainer(name, batch_size=2, channels_last=False).explain(ad, x, t).layer_maps
    _close(first, ref)
    with _Counter(ad.module.conv) as c:  # remembered: no channels-last attempt any more
        advinterp.get_explainer(name, batch_size=2).explain(ad, x, t)
    assert c.forwards == [2, 2]
    assert torch.allclose(ad.logits_channels_last(x), ad.logits(x))


def test_model_errors_are_not_retried_channels_first():
    class Fails(_ViewNet):
        calls = 0

        def forward(self, x):
            self.calls += 1
            raise ValueError("the model's own failure")

    ad = ModelAdapter(Fails(), input_shape=(3, 6, 6))
    with pytest.raises(ValueError, match="own failure"):
        ad.logits_channels_last(torch.rand(3, 3, 6, 6))
    assert ad.module.calls == 1 and ad.channels_last_ok is None


def test_a_model_that_takes_channels_last_is_remembered(shipped):
    model = ModelAdapter(advinterp.get_model("synthetic-cnn").module, input_shape=(3, 64, 64))
    x = shipped[1]
    assert torch.allclose(model.logits_channels_last(x), model.logits(x), rtol=1e-5, atol=1e-5)
    assert model.channels_last_ok is True


# ------------------------------------------------------------------------------ checks without probes
@pytest.mark.parametrize("name", METHODS)
def test_non_spatial_layer_error_without_a_probe_forward(shipped, name):
    model, x, y = shipped
    with _Counter(model.module) as whole:
        with pytest.raises(ParameterError, match=r"layer='fc'.*\(N, C, h, w\) feature map.*\(N, 12\)"):
            advinterp.get_explainer(name, layer="fc").explain(model, x, y)
    # the real forward of the first chunk, no probe before it (the error's hint then lists
    # model.feature_layers(), which traces the model once)
    assert whole.forwards[0] == 8


def test_cam_head_error_keeps_its_wording_without_a_probe():
    class NoGap(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 2)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    ad = ModelAdapter(NoGap(), input_shape=(3, 8, 8))
    assert (ad.cam_layer, ad.classifier_name) == ("conv", "fc")  # the adapter's one-time discovery
    with _Counter(ad.module) as whole:
        with pytest.raises(IncompatibleModelError,
                           match=r"the CAM layer 'conv' has 4 channels but the classifier 'fc' takes 256 features"):
            advinterp.get_explainer("cam").explain(ad, torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 0]))
    assert whole.forwards == [3]
    # the default classifier_weights() still probes and raises the same error
    with pytest.raises(IncompatibleModelError, match="has 4 channels"):
        ad.classifier_weights()
    w, b = ad.classifier_weights(probe=False)
    assert w.shape == (2, 256)


# ------------------------------------------------------------------------------ model state
@pytest.mark.parametrize("name", METHODS)
def test_model_unchanged(shipped, name):
    model, x, y = shipped
    t = (y + 1) % model.nb_classes
    batch = advinterp.AdversarialBatch.from_pair(x, (x + 0.01).clamp(0, 1), y, y_target=t)
    ex = advinterp.get_explainer(name, batch_size=5)
    assert_model_unchanged(model, lambda: ex.explain_pair(model, batch))
    assert_model_unchanged(model, lambda: advinterp.get_explainer(name, layer="fc").explain(model, x, y),
                           ParameterError)
    ad = ModelAdapter(_ViewNet(), input_shape=(3, 6, 6))
    assert_model_unchanged(ad, lambda: ex.explain(ad, torch.rand(4, 3, 6, 6), torch.tensor([0, 1, 2, 0])))


# ------------------------------------------------------------------------------ Grad-CAM++ closed form
def _gradcampp_alpha_form(a, g, eps=0.0):
    """The alphas spelled out (pytorch-grad-cam's GradCAMPlusPlus; the plugin's form before issue 18)."""
    g2 = g * g
    den = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + eps
    ok = (den != 0) & (g != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(g))
    return torch.einsum("nkhw,nk->nhw", a, (alpha * torch.relu(g)).sum((2, 3)))


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_gradcampp_map_equals_the_alpha_form(shipped, eps):
    from advinterp_captum.explainers import layer_forward

    model, x, y = shipped
    with model.preserved(freeze=True):
        a, _, (g,) = layer_forward(model, model.layer("layer4"), x, [y])
    _close(gradcampp_map(a, g, eps), _gradcampp_alpha_form(a, g, eps))
    gen = torch.Generator().manual_seed(0)
    ar, gr = torch.randn(6, 8, 5, 5, generator=gen), torch.randn(6, 8, 5, 5, generator=gen) * 1e-2
    gr[gr.abs() < 3e-3] = 0  # zero gradients give alpha 0
    _close(gradcampp_map(ar, gr, eps), _gradcampp_alpha_form(ar, gr, eps))
    # a zero denominator (2 + S g = 0) gives 0, as in the alpha form
    a1 = torch.full((1, 1, 1, 2), -1.0)
    g1 = torch.tensor([[[[1.0, 0.5]]]])  # S = -2: den = 0 at g = 1
    assert torch.equal(gradcampp_map(a1, g1), _gradcampp_alpha_form(a1, g1))
