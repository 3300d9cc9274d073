"""Native C&W-L2 (``cw_l2``) and EAD (``ead``): hand-computed pieces on a linear model, the
attacks on the shipped model (success, sparsity ordering, support masks) and agreement with
ART's ``CarliniL2Method`` on a toy model."""
import pytest
import torch
from torch import nn

import advinterp
from advinterp import ModelAdapter
from advinterp.attacks.cw import (CarliniL2, carlini_l2, cw_loss, cw_objective, cw_success, from_tanh_space,
                                  to_tanh_space, update_const)
from advinterp.attacks.ead import ElasticNet, elastic_net, projected_shrinkage
from advinterp.data import random_targets


def _linear(seed=0, classes=4, shape=(3, 8, 8)):
    """Logits W x + b on flattened pixels: every gradient is a row difference of W."""
    torch.manual_seed(seed)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), classes))
    with torch.no_grad():
        lin[1].weight.mul_(0.1 / lin[1].weight.std())
        lin[1].bias.zero_()
    return ModelAdapter(lin, input_shape=shape, nb_classes=classes, name="linear")


def _linear_data(n=16, seed=1, shape=(3, 8, 8)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ hand-computed pieces
def test_cw_loss_and_success_hand_numbers():
    z = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 2.0]])
    lab = torch.tensor([0, 2])
    # targeted: max_{j != t} Z_j - Z_t = [3 - 1, 0.5 - 2] = [2, -1.5]
    assert torch.equal(cw_loss(z, lab, 0.0, targeted=True), torch.tensor([2.0, 0.0]))
    assert torch.equal(cw_loss(z, lab, 1.0, targeted=True), torch.tensor([2.0, -1.0]))
    assert torch.equal(cw_loss(z, lab, 2.0, targeted=True), torch.tensor([2.0, -1.5]))
    # untargeted: Z_y - max_{j != y} Z_j = [1 - 3, 2 - 0.5] = [-2, 1.5]
    assert torch.equal(cw_loss(z, lab, 1.0, targeted=False), torch.tensor([-1.0, 1.5]))
    assert torch.equal(cw_loss(z, lab, 3.0, targeted=False), torch.tensor([-2.0, 1.5]))
    # success = the margin goes beyond kappa
    assert cw_success(z, lab, 1.0, targeted=True).tolist() == [False, True]
    assert cw_success(z, lab, 1.5, targeted=True).tolist() == [False, False]  # -1.5 is not < -1.5
    assert cw_success(z, lab, 1.0, targeted=False).tolist() == [True, False]
    assert cw_success(z, lab, 0.0, targeted=False).tolist() == [True, False]


def test_tanh_change_of_variables():
    x = torch.tensor([0.0, 1e-9, 0.25, 0.5, 1.0])
    w = to_tanh_space(x)
    assert torch.isfinite(w).all()
    assert torch.allclose(from_tanh_space(w), x, atol=2e-6)
    assert from_tanh_space(torch.tensor([-50.0, 50.0])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("targeted", [True, False])
def test_cw_objective_and_gradient_by_hand(targeted):
    m = _linear()
    W, b = m.module[1].weight.detach(), m.module[1].bias.detach()
    x = _linear_data(3)
    w = to_tanh_space(x) + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    w.requires_grad_(True)
    lab = torch.tensor([1, 3, 0])
    const, kappa = torch.tensor([0.7, 2.0, 5.0]), 0.4
    loss, x_adv, logits, l2 = cw_objective(m.logits, w, x, lab, const, kappa, targeted)
    # by hand
    xa = (torch.tanh(w.detach()) + 1) / 2
    z = xa.flatten(1) @ W.T + b
    hand_l2 = ((xa - x) ** 2).flatten(1).sum(1)
    rows = torch.arange(3)
    other = z.clone()
    other[rows, lab] = -float("inf")
    j = other.argmax(1)
    margin = (z[rows, j] - z[rows, lab]) if targeted else (z[rows, lab] - z[rows, j])
    f = torch.maximum(margin, torch.full_like(margin, -kappa))
    assert torch.allclose(x_adv, xa) and torch.allclose(l2, hand_l2) and torch.allclose(logits, z, atol=1e-6)
    assert torch.allclose(loss, hand_l2 + const * f, atol=1e-6)
    # gradient w.r.t. w: (2 (x_adv - x) + c [f > -kappa] d margin / d x_adv) * (1 - tanh^2 w) / 2
    dmargin = (W[j] - W[lab]) if targeted else (W[lab] - W[j])
    active = (margin > -kappa).float()[:, None]
    g_x = 2 * (xa - x).flatten(1) + const[:, None] * active * dmargin
    hand_grad = (g_x.view_as(x) * (1 - torch.tanh(w.detach()) ** 2) / 2)
    (grad,) = torch.autograd.grad(loss.sum(), w)
    assert torch.allclose(grad, hand_grad, atol=1e-6)


def test_update_const_hand_example():
    c = torch.tensor([1.0, 1.0, 1.0, 3.0])
    lower = torch.tensor([0.0, 0.0, 0.5, 2.0])
    upper = torch.tensor([1e10, 4.0, 1e10, 5.0])
    success = torch.tensor([True, False, False, True])
    c, lower, upper = update_const(c, lower, upper, success)
    # success: upper = min(upper, c), c = (lower + upper) / 2
    # failure: lower = max(lower, c), c = (lower + upper) / 2 if upper < 1e9 else 10 c
    assert c.tolist() == [0.5, 2.5, 10.0, 2.5]
    assert lower.tolist() == [0.0, 1.0, 1.0, 2.0]
    assert upper.tolist() == [1.0, 4.0, 1e10, 3.0]


def test_projected_shrinkage_hand_example():
    x0 = torch.tensor([0.5, 0.5, 0.5, 0.95, 0.02, 0.3])
    z = torch.tensor([0.7, 0.505, 0.2, 1.3, -0.3, 0.4])
    # z - x0 = [0.2, 0.005, -0.3, 0.35, -0.32, 0.1]; beta = 0.1
    out = projected_shrinkage(z, x0, 0.1)
    expect = torch.tensor([0.6, 0.5, 0.3, 1.0, 0.0, 0.3])  # z-b | x0 | z+b | min(z-b,1) | max(z+b,0) | |d|<=b
    assert torch.allclose(out, expect, atol=1e-7)
    assert torch.equal(projected_shrinkage(z, x0, 0.0), z.clamp(0, 1))


def test_one_cw_step_is_one_adam_step_by_hand():
    """One binary-search step of one Adam step: Adam's first update is lr * g / (|g| + eps)."""
    m = _linear()
    W = m.module[1].weight.detach()
    x = _linear_data(4)
    y = m.predict(x)
    t = random_targets(y, 4, torch.Generator().manual_seed(0))
    c, lr = 1.0, 0.6
    w0 = to_tanh_space(x)
    z = m.logits(from_tanh_space(w0)).detach()
    other = z.clone()
    other[torch.arange(4), t] = -float("inf")
    j = other.argmax(1)
    g = (2 * (from_tanh_space(w0) - x).flatten(1) + c * (W[j] - W[t])).view_as(x) * (1 - torch.tanh(w0) ** 2) / 2
    w1 = w0 - lr * g / (g.abs() + 1e-8)
    hand = from_tanh_space(w1)
    ok = cw_success(m.logits(hand), t, 0.0, True)
    assert ok.all(), "the hand step should succeed on every image (test set-up)"
    out = CarliniL2(targeted=True, confidence=0.0, learning_rate=lr, binary_search_steps=1, max_iter=1,
                    initial_const=c).generate(m, x, y, t)
    assert out.success.all()
    assert torch.allclose(out.x_adv, hand, atol=1e-6)


def test_one_ead_step_is_one_ista_step_by_hand():
    m = _linear()
    W = m.module[1].weight.detach()
    x = _linear_data(4)
    y = m.predict(x)
    t = random_targets(y, 4, torch.Generator().manual_seed(0))
    c, lr, beta = 20.0, 0.1, 0.05
    z = m.logits(x).detach()
    other = z.clone()
    other[torch.arange(4), t] = -float("inf")
    j = other.argmax(1)
    grad = (c * (W[j] - W[t])).view_as(x)  # + 2 (y - x) = 0 at the start
    hand = projected_shrinkage(x - lr * grad, x, beta)
    assert cw_success(m.logits(hand), t, 0.0, True).all(), "test set-up"
    out = ElasticNet(targeted=True, confidence=0.0, learning_rate=lr, binary_search_steps=1, max_iter=1, beta=beta,
                     initial_const=c).generate(m, x, y, t)
    assert torch.allclose(out.x_adv, hand, atol=1e-6)
    assert ((out.x_adv - x).abs() > 0).float().mean() < 1  # the shrinkage zeroed small updates


def test_unsuccessful_images_are_returned_unchanged():
    m = _linear()
    x = _linear_data(4)
    y = m.predict(x)
    t = random_targets(y, 4, torch.Generator().manual_seed(0))
    for attack in (CarliniL2(targeted=True, learning_rate=1e-4, binary_search_steps=1, max_iter=1),
                   ElasticNet(targeted=True, learning_rate=1e-4, binary_search_steps=1, max_iter=1)):
        b = attack.generate(m, x, y, t)
        assert not b.success.any() and torch.equal(b.x_adv, x)


@pytest.mark.parametrize("fn", [carlini_l2, elastic_net])
def test_chunking_and_core_mask(fn):
    """batch_size only chunks (per-image optimisation); the functional core itself keeps
    delta exactly 0 outside the mask (before the base class projects)."""
    m = _linear()
    x = _linear_data(6)
    y = m.predict(x)
    t = random_targets(y, 4, torch.Generator().manual_seed(0))
    kw = dict(targeted=True, confidence=0.0, learning_rate=0.05, binary_search_steps=2, max_iter=5, initial_const=1.0)
    with m.preserved(freeze=True):
        whole = fn(m.logits, x, t, batch_size=128, **kw)
        chunks = fn(m.logits, x, t, batch_size=4, **kw)
        mask = torch.zeros(6, 1, 8, 8)
        mask[:, :, :, :4] = 1
        masked = fn(m.logits, x, t, mask=mask, **kw)
    assert torch.allclose(whole, chunks, atol=1e-6)
    assert torch.equal(masked[..., 4:], x[..., 4:])
    assert (masked[..., :4] != x[..., :4]).any()


# ------------------------------------------------------------------ agreement with ART
@pytest.mark.parametrize("targeted", [False, True])
def test_cw_agrees_with_art_on_toy_model(targeted):
    """Same kappa convention as ART's CarliniL2Method: ours breaks (at least) the images ART
    breaks, with an l2 no larger on average (equal max_iter / binary_search_steps)."""
    CarliniL2Method = pytest.importorskip("art.attacks.evasion").CarliniL2Method
    m = _linear()
    x = _linear_data(12)
    y = m.predict(x)
    t = random_targets(y, 4, torch.Generator().manual_seed(0))
    kw = dict(confidence=0.5, targeted=targeted, learning_rate=0.05, binary_search_steps=5, max_iter=20,
              initial_const=0.1, batch_size=12)
    ours = CarliniL2(**kw).generate(m, x, y, t if targeted else None)
    with m.preserved(freeze=True):
        art = CarliniL2Method(m.to_art(), verbose=False, **kw)
        x_art = torch.from_numpy(art.generate(x.numpy(), y=(t if targeted else y).numpy()))
    p_art = m.predict(x_art)
    ok_art = (p_art == t) if targeted else (p_art != y)
    assert ok_art.float().mean() >= 0.5, "test set-up: ART should break most images"
    assert (ours.success | ~ok_art).all(), "an image ART breaks is not broken by ours"
    both = ours.success & ok_art
    l2_ours = ours.delta.flatten(1).norm(dim=1)[both]
    l2_art = (x_art - x).flatten(1).norm(dim=1)[both]
    assert l2_ours.mean() <= l2_art.mean() + 1e-6
    # the kept adversarials have the kappa margin (ART's criterion: margin + kappa <= 0)
    margin_ok = cw_success(m.logits(ours.x_adv), t if targeted else y, 0.5 - 1e-4, targeted)
    assert margin_ok[ours.success].all()


# ------------------------------------------------------------------ the shipped model
N_SHIPPED = 16


@pytest.fixture(scope="module")
def shipped():
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=N_SHIPPED, split="test").tensors()
    t = random_targets(y, model.nb_classes, torch.Generator().manual_seed(0))
    return model, x, y, t


CW_KW = dict(targeted=True, learning_rate=0.05, max_iter=10, binary_search_steps=2, initial_const=1.0)
EAD_KW = dict(targeted=True, learning_rate=0.01, max_iter=20, binary_search_steps=2, initial_const=10.0,
              beta=0.001, decision_rule="L1")


@pytest.fixture(scope="module")
def cw_batch(shipped):
    model, x, y, t = shipped
    return advinterp.get_attack("cw_l2", **CW_KW).generate(model, x, y, t)


@pytest.fixture(scope="module")
def ead_batch(shipped):
    model, x, y, t = shipped
    return advinterp.get_attack("ead", **EAD_KW).generate(model, x, y, t)


def test_targeted_cw_and_ead_succeed_on_shipped_model(shipped, cw_batch, ead_batch):
    _, x, y, t = shipped
    for b in (cw_batch, ead_batch):
        assert torch.equal(b.y_target, t) and torch.equal(b.success, b.y_adv == t)
        assert b.success.float().mean() >= 0.9, f"{b.attack}: success {b.success.float().mean():.2f}"
        assert b.x_adv.min() >= 0 and b.x_adv.max() <= 1
        assert torch.equal(b.x_adv[~b.success], x[~b.success])  # failures are returned unchanged


def test_ead_is_sparser_than_cw(cw_batch, ead_batch):
    """The ordering of the EAD paper: elastic-net perturbations have much smaller l0 and l1."""
    both = cw_batch.success & ead_batch.success
    d_cw, d_ead = cw_batch.delta[both].flatten(1), ead_batch.delta[both].flatten(1)
    l0_cw, l0_ead = (d_cw.abs() > 1e-3).float().mean(1), (d_ead.abs() > 1e-3).float().mean(1)
    l1_cw, l1_ead = d_cw.abs().sum(1), d_ead.abs().sum(1)
    assert l0_ead.mean() < 0.5 * l0_cw.mean(), (l0_ead.mean(), l0_cw.mean())
    assert l1_ead.mean() < 0.7 * l1_cw.mean(), (l1_ead.mean(), l1_cw.mean())
    assert (d_ead == 0).float().mean() > 0.3  # exact zeros from the shrinkage


@pytest.mark.parametrize("name", ["cw_l2", "ead"])
def test_left_half_mask_on_shipped_model(shipped, name):
    model, x, y, t = shipped
    x, y, t = x[:8], y[:8], t[:8]
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:, :32] = True  # left half only
    kw = {**(CW_KW if name == "cw_l2" else EAD_KW), "initial_const": 10.0}
    b = advinterp.get_attack(name, **kw).generate(model, x, y, t, mask=mask)
    assert torch.equal(b.x_adv[..., 32:], x[..., 32:]), "perturbation outside the mask"
    assert b.delta[..., :32].abs().sum() > 0
    assert b.success.float().mean() >= 0.75, f"{name} with a half mask: success {b.success.float().mean():.2f}"


def test_attacks_run_inside_no_grad():
    """Users often call attacks inside ``torch.no_grad()``: the optimisation re-enables grad."""
    m = _linear()
    x = _linear_data(4)
    y = m.predict(x)
    t = random_targets(y, 4, torch.Generator().manual_seed(0))
    kw = dict(targeted=True, learning_rate=0.05, binary_search_steps=1, max_iter=5, initial_const=5.0)
    for cls in (CarliniL2, ElasticNet):
        ref = cls(**kw).generate(m, x, y, t)
        with torch.no_grad():
            b = cls(**kw).generate(m, x, y, t)
        assert torch.equal(b.x_adv, ref.x_adv) and b.success.any()
