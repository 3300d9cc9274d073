"""Issue 11 (hardening), attack side: gradients under no_grad / inference_mode, l_inf budgets
in pixel units, exact ``x`` from ``cw_l2`` where nothing changed, ``str`` in ART's
AdversarialTrainer, spatial layers for the Captum explainers, seeded random torchvision models."""
import copy
import importlib.util

import numpy as np
import pytest
import torch

import advinterp
from advinterp import ParameterError
from advinterp.attacks.cw import CarliniL2
from advinterp.attacks.pgd import PGD
from advinterp.attacks.str_attack import StrAttack
from advinterp.testing import toy_data, toy_model

HAS_ART = importlib.util.find_spec("art") is not None and importlib.util.find_spec("advinterp_art") is not None
HAS_CAPTUM = importlib.util.find_spec("captum") is not None and importlib.util.find_spec("advinterp_captum") is not None
needs_art = pytest.mark.skipif(not HAS_ART, reason="needs ART and plugins/advinterp-art")
needs_captum = pytest.mark.skipif(not HAS_CAPTUM, reason="needs Captum and plugins/advinterp-captum")

CHEAP = {
    "pgd": {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 3},
    "cw_l2": {"max_iter": 5, "binary_search_steps": 2, "learning_rate": 0.05, "initial_const": 10.0},
    "ead": {"max_iter": 3, "binary_search_steps": 2, "learning_rate": 0.05, "initial_const": 1.0},
    "str": {"targeted": False, "max_iter": 3, "binary_search_steps": 2},
    "art.pgd": {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 3},
    "art.fgsm": {"eps": 8 / 255},
}
MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


# ------------------------------------------------------------------ 1. grad modes
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", sorted(CHEAP))
def test_attacks_run_under_no_grad_and_inference_mode(name, mode):
    if name.startswith("art.") and not HAS_ART:
        pytest.skip("needs ART")
    model, (x, _) = toy_model(), toy_data()
    y = model.predict(x)
    attack = advinterp.get_attack(name, **CHEAP[name])
    ref = attack.generate(model, x, y)
    with MODES[mode]():
        xm, ym = x.clone(), y.clone()  # created in the mode: inference tensors under inference_mode
        out = attack.generate(model, xm, ym)
    assert torch.equal(out.x_adv, ref.x_adv) and torch.equal(out.success, ref.success)
    if name in ("pgd", "art.pgd", "art.fgsm"):  # the optimisation attacks keep x on this toy model
        assert (out.x_adv != x).any(), "the attack did nothing"
    assert all(p.requires_grad for p in model.module.parameters())


@needs_art
@pytest.mark.parametrize("mode", sorted(MODES))
def test_native_attack_as_art_evasion_attack_under_no_grad(mode):
    from advinterp_art import art_attack

    model, (x, y) = toy_model(), toy_data()
    attack = art_attack("pgd", model.to_art(), **CHEAP["pgd"])
    ref = attack.generate(x.numpy(), y=y.numpy())
    with MODES[mode]():
        out = attack.generate(x.numpy(), y=y.numpy())
    np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------------ 8. budgets
@pytest.mark.parametrize("name", ["pgd", "str", "art.pgd", "art.fgsm", "art.bim"])
def test_linf_eps_above_one_suggests_255(name):
    if name.startswith("art.") and not HAS_ART:
        pytest.skip("needs ART")
    with pytest.raises(ParameterError, match=r"eps=8 is invalid; expected a number <= 1 \(pixels are in \[0, 1\]\)"
                                             r"\. Did you mean 8/255 = 0\.0314\?"):
        advinterp.get_attack(name, eps=8)
    attack = advinterp.get_attack(name, eps=8 / 255)
    with pytest.raises(ParameterError, match="8/255"):
        attack.set_params(eps=8)
    with pytest.raises(ParameterError, match="8/255"):
        attack.set_params(eps=8.0, **({"norm": "inf"} if "norm" in attack.params else {}))


def test_linf_eps_of_one_is_accepted_and_bad_kinds_still_refused():
    assert PGD(eps=1.0).eps == 1.0
    for bad in (-1.0, float("nan"), "x", 1.5):
        with pytest.raises(ParameterError, match="eps="):
            PGD(eps=bad)


@needs_art
def test_art_norm_budgets():
    model, (x, y) = toy_model(), toy_data()
    # l2: eps=8 is a legitimate l2 radius; eps beyond sqrt(3*16*16) = 27.7 never binds
    advinterp.get_attack("art.pgd", norm=2, eps=8.0, eps_step=1.0, max_iter=1)
    with pytest.raises(ParameterError, match=r"eps=100\.0 is invalid; expected a number <= 27\.71 for norm=2 on "
                                             r"3x16x16 images"):
        advinterp.get_attack("art.fgsm", norm=2, eps=100.0).generate(model, x, y)
    with pytest.raises(ParameterError, match="norm=1 on 3x16x16"):
        advinterp.get_attack("art.pgd", norm=1, eps=1000.0, eps_step=1.0, max_iter=1).generate(model, x, y)
    with pytest.raises(ParameterError, match="8/255"):
        advinterp.get_attack("art.pgd", norm="inf", eps=8)


@needs_art
def test_linf_eps_in_the_art_evasion_wrapper():
    import advinterp_art

    with pytest.raises(ParameterError, match="8/255 = 0.0314"):
        advinterp_art.PGDAttack(toy_model().to_art(), eps=8)


# ------------------------------------------------------------------ 12. cw_l2 exact x
def test_cw_l2_returns_exactly_x_where_it_changed_nothing():
    model, (x, _) = toy_model(), toy_data(8)
    pred = model.predict(x)
    wrong = (pred + 1) % model.nb_classes  # "true" labels the model already gets wrong
    batch = CarliniL2(**CHEAP["cw_l2"]).generate(model, x, wrong)
    assert batch.success.all()
    assert torch.equal(batch.x_adv, x)
    assert int((batch.x_adv != x).sum()) == 0  # l0 = 0


def test_cw_l2_changed_images_carry_no_round_trip_noise():
    model = advinterp.get_model("synthetic-cnn")
    x, _ = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    x = x.clone()
    x[:, :, :2] = 0.0  # saturated pixels: clamped to 1e-6 in tanh space
    x[:, :, -2:] = 1.0
    batch = CarliniL2(max_iter=10, binary_search_steps=2, learning_rate=0.05, initial_const=1.0).generate(model, x)
    d = (batch.x_adv - x).abs()
    assert batch.success.all() and (d > 1e-3).any()
    assert not ((d > 0) & (d <= 2e-6)).any(), "entries off by the tanh round trip only"


# ------------------------------------------------------------------ 13. str in ART's trainer
@needs_art
def test_str_in_art_adversarial_trainer():
    import advinterp_art
    from art.defences.trainer import AdversarialTrainer

    model = toy_model()
    module = copy.deepcopy(model.module)
    student = advinterp.ModelAdapter(module, mean=model.mean, std=model.std, nb_classes=model.nb_classes,
                                     input_shape=model.input_shape)
    clf = student.to_art(optimizer=torch.optim.Adam(module.parameters(), lr=1e-3))
    attack = advinterp_art.STRAttack(clf, max_iter=2, binary_search_steps=1)
    assert StrAttack().targeted and not attack.targeted  # ART's convention: untargeted unless asked
    assert advinterp_art.STRAttack(clf, targeted=True).targeted
    x, y = (t.numpy() for t in toy_data(8))
    before = [p.detach().clone() for p in module.parameters()]
    np.random.seed(0)
    AdversarialTrainer(clf, attack, ratio=1.0).fit(x, np.eye(4, dtype=np.float32)[y], nb_epochs=1, batch_size=4)
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))


# ------------------------------------------------------------------ 4. spatial layers
@needs_captum
@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcampp"])
def test_explainers_refuse_a_non_spatial_layer(name):
    model, (x, y) = toy_model(), toy_data()
    head = model.classifier_name
    suitable = model.feature_layers()
    with pytest.raises(ParameterError) as info:
        advinterp.get_explainer(name, layer=head).explain(model, x, y)
    msg = str(info.value)
    assert f"layer={head!r} is invalid" in msg and "(N, C, h, w) feature map" in msg
    assert f"(N, {model.nb_classes})" in msg
    assert all(repr(n) in msg for n in suitable), msg
    advinterp.get_explainer(name, layer=suitable[-1]).explain(model, x, y)  # a listed layer works


# ------------------------------------------------------------------ 14. seeded random models
def test_random_torchvision_models_are_seeded():
    pytest.importorskip("torchvision")
    state = torch.random.get_rng_state()
    a = advinterp.get_model("torchvision:resnet18", weights="random")
    b = advinterp.get_model("torchvision:resnet18", weights="random")
    c = advinterp.get_model("torchvision:resnet18", weights="random", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG was consumed"
    sa, sb, sc = (m.module.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    with pytest.raises(ParameterError, match="seed=-1 is invalid"):
        advinterp.get_model("torchvision:resnet18", weights="random", seed=-1)
