"""ModelAdapter: normalisation, layers of any module tree, one-forward activations, CAM
head discovery, ART interop, and the guarantee that an analysis leaves the model unchanged."""
import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import ModelAdapter, model_fingerprint
from advinterp.exceptions import IncompatibleModelError, ParameterError
from advinterp.testing import toy_data, toy_model


class Branchy(nn.Module):
    """Not a Sequential: two branches in a ModuleDict, a nested block, a functional merge."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.branches = nn.ModuleDict({"a": nn.Conv2d(4, 4, 1), "b": nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())})
        self.head = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = torch.relu(self.stem(x))
        h = self.branches["a"](h) + self.branches["b"](h)
        return self.head(h.mean((2, 3)))


def test_normalisation_inside_adapter():
    m = Branchy()
    ad = ModelAdapter(m, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5), input_shape=(3, 8, 8))
    x = torch.rand(2, 3, 8, 8)
    ref = m((x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5)
    assert torch.allclose(ad.logits(x), ref)
    assert ad.nb_classes == 3 and ad.mean == pytest.approx((0.1, 0.2, 0.3))
    with pytest.raises(ParameterError, match="std"):
        ModelAdapter(m, mean=(0.1, 0.2, 0.3), std=(0.0, 1, 1))


def test_layers_of_a_non_sequential_model_by_name():
    m = Branchy()
    ad = ModelAdapter(m, input_shape=(3, 8, 8))
    assert ad.layer("branches.b.0") is m.branches["b"][0]
    assert "branches.a" in ad.layer_names()
    x = torch.rand(2, 3, 8, 8)
    m.calls = 0
    acts = ad.activations(x, ["stem", "branches.a", "branches.b.1"], with_logits=True)
    assert m.calls == 1, "activations of several layers must come from one forward"
    h = torch.relu(m.stem(x))
    assert torch.allclose(acts["stem"], m.stem(x))
    assert torch.allclose(acts["branches.a"], m.branches["a"](h))
    assert torch.allclose(acts["branches.b.1"], m.branches["b"](h))
    assert acts["logits"].shape == (2, 3)
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules()), "hooks left behind"
    with pytest.raises(IncompatibleModelError, match="branches.b"):
        ad.layer("branches.c")


def test_cam_layer_and_classifier_discovery(synthetic_model):
    ad = ModelAdapter(Branchy(), input_shape=(3, 8, 8))
    assert ad.cam_layer == "branches.b"  # the outermost module whose output is the last spatial map...
    # ...is not what feeds the head here (a functional sum does), so CAM must refuse:
    assert ad.classifier_name == "head"
    # on the shipped model everything is found and consistent
    m = advinterp.get_model("synthetic-cnn")
    auto = ModelAdapter(m.module, mean=m.mean, std=m.std, input_shape=(3, 64, 64))
    assert auto.cam_layer == "layer4" and auto.classifier_name == "fc"
    w, b = auto.classifier_weights()
    assert w.shape == (12, 96) and b.shape == (12,)
    assert auto.feature_layers() == ["layer1", "layer2", "layer3", "layer4"]


def test_cam_head_is_checked():
    class NoGap(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 2)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    ad = ModelAdapter(NoGap(), input_shape=(3, 8, 8))
    with pytest.raises(IncompatibleModelError, match="256 features"):
        ad.classifier_weights()


def test_torchvision_resnet_discovery():
    tv = pytest.importorskip("torchvision")
    ad = ModelAdapter(tv.models.resnet18(weights=None, num_classes=10), input_shape=(3, 64, 64))
    assert ad.cam_layer == "layer4" and ad.classifier_name == "fc" and ad.nb_classes == 10
    assert ad.classifier_weights()[0].shape == (10, 512)


def test_model_unchanged_after_exception_inside_analysis():
    ad = toy_model()
    m = ad.module
    m.train()
    m.features.conv1.weight.requires_grad_(False)  # a user's partial freeze must survive
    m.head.weight.grad = torch.ones_like(m.head.weight)
    before = model_fingerprint(ad)
    grad_before = m.head.weight.grad.clone()
    with pytest.raises(RuntimeError, match="analysis failed"):
        with ad.preserved(freeze=True, weights=True):
            assert not m.training and not m.features.bn1.training
            assert not any(p.requires_grad for p in m.parameters())
            m.features.register_forward_hook(lambda *a: None)
            m.head.register_forward_pre_hook(lambda *a: None)
            torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
            with torch.no_grad():
                m.head.weight.mul_(1.8)  # e.g. a filter-scaling experiment
                m.features.bn1.running_mean.add_(3.0)
            m.train()
            m(torch.rand(2, 3, 16, 16))  # a forward in training mode would update BN stats
            raise RuntimeError("analysis failed")
    after = model_fingerprint(ad)
    assert before == after
    assert m.training and m.features.bn1.training
    assert not m.features.conv1.weight.requires_grad and m.head.weight.requires_grad
    assert torch.equal(m.head.weight.grad, grad_before)
    assert len(torch.nn.modules.module._global_forward_hooks) == 0


def test_fingerprint_detects_changes():
    ad = toy_model()
    a = model_fingerprint(ad)
    with torch.no_grad():
        ad.module.head.bias[0] += 1e-6
    assert model_fingerprint(ad)["weights"] != a["weights"]
    ad.module.train()
    assert model_fingerprint(ad)["modes"] != a["modes"]


def test_predict_and_accuracy_leave_training_mode():
    ad = toy_model()
    ad.module.train()
    x, y = toy_data(8)
    ad.predict(x)
    ad.accuracy(x, y)
    assert ad.module.training


def test_to_art_and_back():
    art = pytest.importorskip("art")
    ad = toy_model()
    clf = ad.to_art()
    x, _ = toy_data(5)
    with torch.no_grad():
        ref = ad.logits(x).numpy()
    np.testing.assert_allclose(clf.predict(x.numpy()), ref, rtol=1e-5, atol=1e-5)
    back = ModelAdapter(clf)
    assert back.module is ad.module and back.nb_classes == 4 and back.input_shape == (3, 16, 16)
    assert back.mean == pytest.approx(ad.mean) and back.std == pytest.approx(ad.std)
    with torch.no_grad():
        assert torch.allclose(back.logits(x), torch.from_numpy(ref), atol=1e-5)
    # components accept the ART estimator directly
    batch = advinterp.get_attack("pgd", eps=0.05, eps_step=0.02, max_iter=2).generate(clf, x)
    assert batch.x_adv.shape == x.shape


def test_art_clip_values_must_be_unit_range():
    pytest.importorskip("art")
    from art.estimators.classification import PyTorchClassifier

    ad = toy_model()
    clf = PyTorchClassifier(ad.module, nn.CrossEntropyLoss(), (3, 16, 16), 4, clip_values=(0, 255))
    with pytest.raises(IncompatibleModelError, match="clip_values"):
        ModelAdapter(clf)


def test_bad_model_type():
    with pytest.raises(ParameterError, match="nn.Module"):
        ModelAdapter("resnet50")


def test_as_module_takes_pixels_and_shares_weights():
    from advinterp.testing import toy_model

    ad = toy_model()
    mod = ad.as_module()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mod(x), ad.logits(x))
    # normalisation is inside: the raw module on raw pixels gives different logits
    assert not torch.allclose(ad.module(x), ad.logits(x))
    assert mod.net is ad.module and dict(mod.named_modules())["net.features.conv2"] is ad.layer("features.conv2")


# ---------------------------------------------------------------------------- truncated forwards (issue 12)
def _count_leaf_calls(module):
    """Forward hooks counting the calls of every leaf module; returns (counter, handles)."""
    counter = {"n": 0}
    handles = [m.register_forward_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
               for m in module.modules() if not list(m.children())]
    return counter, handles


@pytest.mark.parametrize("layers", [["layer1"], ["layer2", "layer1"], ["layer1.0.relu"], ["layer4"]],
                         ids=["layer1", "two", "shared-relu", "last-stage"])
def test_truncated_forward_gives_the_full_forwards_activations_and_runs_fewer_modules(layers):
    """ResNet-18's BasicBlock calls its one ReLU twice: the truncated forward must return its
    *second* output, as the full forward does. Module calls counted with hooks on every leaf."""
    model = advinterp.get_model("torchvision:resnet18", weights="random", seed=0)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    full = model.activations(x, layers, truncate=False)
    counter, handles = _count_leaf_calls(model.module)
    try:
        model.activations(x, layers)             # first call: the plan (a full forward)
        counter["n"] = 0
        cut = model.activations(x, layers)
        n_cut = counter["n"]
        counter["n"] = 0
        model.activations(x, layers, truncate=False)
        n_full = counter["n"]
    finally:
        for h in handles:
            h.remove()
    for n in layers:
        assert torch.equal(cut[n], full[n]), n
    assert n_cut < n_full
    if layers == ["layer1"]:
        # the stem (conv1, bn1, relu, maxpool) + 2 blocks x (conv1, bn1, relu, conv2, bn2, relu again)
        assert n_cut == 4 + 2 * 6
        # the full forward adds layer2..4 (2 blocks x 6 calls + a downsample conv and bn each), avgpool, fc
        assert n_full == n_cut + 3 * (2 * 6 + 2) + 2
    assert all(len(m._forward_hooks) == 0 for m in model.module.modules())


def test_truncated_forward_of_the_shipped_model_and_input_sizes():
    model = advinterp.get_model("synthetic-cnn")
    for size in (64, 32):  # a plan per input size
        x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
        full = model.activations(x, ["layer2"], truncate=False)["layer2"]
        for _ in range(2):
            torch.testing.assert_close(model.activations(x, ["layer2"])["layer2"], full, rtol=0, atol=0)


class _Swallowing(nn.Module):
    """A model whose forward catches everything around its first stage (the stop included)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        try:
            h = self.a(x)
        except BaseException:  # noqa: BLE001 - deliberately hostile
            h = self.a._conv_forward(x, self.a.weight, self.a.bias)
        return self.fc(self.b(h).mean((2, 3)))


def test_a_model_that_swallows_the_stop_runs_whole_and_says_so():
    model = ModelAdapter(_Swallowing(), nb_classes=2, input_shape=(3, 8, 8), name="swallow")
    x = torch.rand(2, 3, 8, 8)
    want = model.activations(x, ["a"], truncate=False)["a"]
    model.activations(x, ["a"])  # the plan
    with pytest.warns(RuntimeWarning, match=r"swallow: the forward could not be stopped after \['a'\]"):
        got = model.activations(x, ["a"])["a"]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_with_logits_runs_the_whole_forward():
    model = advinterp.get_model("synthetic-cnn")
    x = torch.rand(2, 3, 64, 64)
    out = model.activations(x, ["layer1"], with_logits=True)
    torch.testing.assert_close(out["logits"], model.logits(x), rtol=0, atol=0)
