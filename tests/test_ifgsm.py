"""Native ``ifgsm`` (BIM) and ``fgsm`` (issue 13, item 2): by hand on a linear model, equal to
ART's BasicIterativeMethod / FastGradientMethod, and usable inside ART's AdversarialTrainer."""
import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import ModelAdapter
from advinterp.testing import check_component, toy_data, toy_model


def _linear_model():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return ModelAdapter(lin, input_shape=(3, 2, 2))


def _grad_sign(m, x, y):
    W, b = m.module[1].weight.detach(), m.module[1].bias.detach()
    p = torch.softmax(x.flatten(1) @ W.T + b, 1)
    return ((p - nn.functional.one_hot(y, 3).float()) @ W).sign().view_as(x)


@pytest.mark.parametrize("targeted", [False, True])
def test_two_ifgsm_steps_by_hand(targeted):
    """x1 = clip(x0 + s a sign(g(x0))), x2 = clip_{x0, eps}(x1 + s a sign(g(x1))), s = -1 when
    targeted (descending the target's cross-entropy); no random start."""
    m = _linear_model()
    x0 = torch.full((2, 3, 2, 2), 0.5)
    y = torch.tensor([0, 2])
    t = torch.tensor([1, 0])
    lab, s = (t, -1.0) if targeted else (y, 1.0)
    a, eps = 0.04, 0.06
    x1 = (x0 + s * a * _grad_sign(m, x0, lab)).clamp(0, 1)
    x2 = torch.min(torch.max(x1 + s * a * _grad_sign(m, x1, lab), x0 - eps), x0 + eps).clamp(0, 1)
    atk = advinterp.get_attack("ifgsm", eps=eps, eps_step=a, max_iter=2, targeted=targeted)
    got = atk.generate(m, x0, y, t if targeted else None).x_adv
    assert torch.allclose(got, x2, atol=1e-7)
    assert (got - x0).abs().max() <= eps + 1e-7 and (got - x0).abs().max() > a  # the projection bound


def test_fgsm_is_one_step_of_size_eps():
    m = _linear_model()
    x0 = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2])
    got = advinterp.get_attack("fgsm", eps=0.07).generate(m, x0, y).x_adv
    assert torch.allclose(got, (x0 + 0.07 * _grad_sign(m, x0, y)).clamp(0, 1), atol=1e-7)


@pytest.mark.parametrize("name, art_name, params", [
    ("ifgsm", "BasicIterativeMethod", {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 5}),
    ("fgsm", "FastGradientMethod", {"eps": 8 / 255})])
@pytest.mark.parametrize("targeted", [False, True])
def test_equal_to_art(name, art_name, params, targeted):
    import art.attacks.evasion as ev

    model = toy_model()
    x, _ = toy_data(6)
    y = model.predict(x)
    t = (y + 1) % model.nb_classes
    ours = advinterp.get_attack(name, targeted=targeted, **params).generate(model, x, y, t if targeted else None)
    clf = model.to_art()
    kw = dict(params, targeted=targeted)
    if art_name == "FastGradientMethod":
        kw["norm"] = np.inf
    else:
        kw["verbose"] = False
    theirs = getattr(ev, art_name)(clf, **kw).generate(x.numpy(), y=(t if targeted else y).numpy())
    np.testing.assert_allclose(ours.x_adv.numpy(), theirs, atol=1e-6)


@pytest.mark.parametrize("name", ["ifgsm", "fgsm"])
def test_conformance(name):
    assert "check_output" in check_component(advinterp.get_attack(name))


def test_ifgsm_in_arts_adversarial_trainer():
    """The ART plugin makes every registered native attack an ART EvasionAttack:
    ``IFGSMAttack`` trains a model inside ART's AdversarialTrainer."""
    import copy

    import advinterp_art
    from art.defences.trainer import AdversarialTrainer

    model = toy_model()
    module = copy.deepcopy(model.module)
    student = ModelAdapter(module, mean=model.mean, std=model.std, nb_classes=model.nb_classes,
                           input_shape=model.input_shape)
    clf = student.to_art(optimizer=torch.optim.Adam(module.parameters(), lr=1e-3))
    attack = advinterp_art.art_attack("ifgsm", clf, eps=8 / 255, eps_step=2 / 255, max_iter=2)
    assert not attack.targeted
    x, y = (t.numpy() for t in toy_data(8))
    before = [p.detach().clone() for p in module.parameters()]
    AdversarialTrainer(clf, attack, ratio=1.0).fit(x, np.eye(4, dtype=np.float32)[y], nb_epochs=1, batch_size=4)
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))
