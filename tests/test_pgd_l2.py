"""``pgd`` with ``norm=2``: l2 budget, ART's step, the l_inf path unchanged, bad values named."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp import ModelAdapter, ParameterError
from advinterp.attacks.pgd_core import pgd_l2, pgd_linf


def _linear_model():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return ModelAdapter(lin, input_shape=(3, 2, 2))


def test_one_l2_step_equals_closed_form():
    """For logits W x + b, grad_x CE = W^T (softmax - onehot): the step is eps_step * g / ||g||_2."""
    m = _linear_model()
    W, b = m.module[1].weight.detach(), m.module[1].bias.detach()
    x = torch.full((2, 3, 2, 2), 0.5)
    y = torch.tensor([0, 2])
    batch = advinterp.get_attack("pgd", norm=2, eps=1.0, eps_step=0.05, max_iter=1).generate(m, x, y)
    p = torch.softmax(x.flatten(1) @ W.T + b, 1)
    grad = (p - nn.functional.one_hot(y, 3).float()) @ W
    expect = (x.flatten(1) + 0.05 * grad / grad.norm(dim=1, keepdim=True)).view_as(x)
    assert torch.allclose(batch.x_adv, expect, atol=1e-6)
    assert torch.allclose(batch.delta.flatten(1).norm(dim=1), torch.full((2,), 0.05), atol=1e-6)


@pytest.mark.parametrize("random_init", [0, 1])
def test_l2_norm_of_delta_never_exceeds_eps(random_init):
    m = _linear_model()
    x = torch.rand(16, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    eps = 0.2
    for steps in (1, 3, 10):
        b = advinterp.get_attack("pgd", norm=2, eps=eps, eps_step=0.15, max_iter=steps,
                                 num_random_init=random_init, seed=2).generate(m, x)
        norms = b.delta.flatten(1).norm(dim=1)
        assert (norms <= eps + 1e-6).all() and b.x_adv.min() >= 0 and b.x_adv.max() <= 1
    # after 10 steps of 0.15 the ball's boundary is reached (away from the box's faces)
    assert norms.max() > 0.9 * eps


def test_random_start_lies_in_the_ball_and_is_seeded():
    x = torch.full((64, 3, 4, 4), 0.5)
    y = torch.zeros(64, dtype=torch.long)

    def fn(z):
        return torch.zeros(len(z), 2) + 0 * z.sum()
    a = pgd_l2(fn, x, y, 0.3, 0.1, 0, random_init=True, generator=torch.Generator().manual_seed(5))
    b = pgd_l2(fn, x, y, 0.3, 0.1, 0, random_init=True, generator=torch.Generator().manual_seed(5))
    norms = (a - x).flatten(1).norm(dim=1)
    assert torch.equal(a, b) and (norms <= 0.3 + 1e-6).all()
    # uniform in the 48-d ball: the radius is eps * U**(1/48), mostly close to eps
    assert norms.median() > 0.9 * 0.3 and norms.min() > 0


def test_targeted_l2_raises_the_target_probability(synthetic_model, synthetic_test_data):
    x, y = synthetic_test_data
    x, y = x[:16], y[:16]
    t = (y + 1) % synthetic_model.nb_classes
    b = advinterp.get_attack("pgd", norm=2, eps=2.0, eps_step=0.25, max_iter=10, targeted=True).generate(
        synthetic_model, x, y, t)
    with torch.no_grad():
        p0 = torch.softmax(synthetic_model.logits(x), 1).gather(1, t[:, None])
        p1 = torch.softmax(synthetic_model.logits(b.x_adv), 1).gather(1, t[:, None])
    assert (p1 > p0).all() and b.success.float().mean() > 0.5
    assert (b.delta.flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()


@pytest.mark.parametrize("norm", ["inf", math.inf, np.inf])
def test_linf_path_is_pgd_linf(norm):
    m = _linear_model()
    x = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    atk = advinterp.get_attack("pgd", norm=norm, eps=0.1, eps_step=0.03, max_iter=5, num_random_init=1, seed=3)
    got = atk.generate(m, x)
    want = pgd_linf(m.logits, x, got.y_true, 0.1, 0.03, 5, random_init=True,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(got.x_adv, want)
    # the default is l_inf
    default = advinterp.get_attack("pgd", eps=0.1, eps_step=0.03, max_iter=5, num_random_init=1, seed=3)
    assert default.norm == "inf" and torch.equal(default.generate(m, x).x_adv, want)


def test_l2_mask_keeps_delta_zero_outside_the_support():
    m = _linear_model()
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    atk = advinterp.get_attack("pgd", norm=2, eps=0.3, eps_step=0.1, max_iter=5, num_random_init=1, seed=3)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = atk.generate(m, x, mask=mask)
    assert torch.equal((got.x_adv - x) * (1 - mask), torch.zeros_like(x))
    assert (got.delta.flatten(1).norm(dim=1) <= 0.3 + 1e-6).all() and got.delta.abs().max() > 0
    assert torch.equal(atk.generate(m, x, mask=torch.ones(2, 2)).x_adv, atk.generate(m, x).x_adv)


def test_bad_norm_and_eps_are_named():
    with pytest.raises(ParameterError, match="norm"):
        advinterp.get_attack("pgd", norm=1)
    with pytest.raises(ParameterError, match="norm"):
        advinterp.get_attack("pgd", norm="l2")
    with pytest.raises(ParameterError, match="8/255"):
        advinterp.get_attack("pgd", eps=8)
    with pytest.raises(ParameterError, match="> 0 for norm=2"):
        advinterp.get_attack("pgd", norm=2, eps=0.0)
    atk = advinterp.get_attack("pgd", norm=2, eps=8.0)  # an l2 bound above 1 is fine
    assert atk.eps == 8.0
    with pytest.raises(ParameterError, match="8/255"):  # switching back to l_inf re-checks eps
        atk.set_params(norm="inf")
    assert atk.norm == 2
    m = _linear_model()  # 12 values: an l2 bound above sqrt(12) never binds
    with pytest.raises(ParameterError, match="never binds"):
        atk.generate(m, torch.rand(2, 3, 2, 2))


@pytest.mark.parametrize("targeted", [False, True])
def test_one_deterministic_step_equals_art(targeted):
    """max_iter=1, no random start: the same x_adv as ART's ProjectedGradientDescentPyTorch(norm=2)."""
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 4))
    m = ModelAdapter(net, input_shape=(3, 4, 4))
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    t = (y + 1) % 4
    ours = advinterp.get_attack("pgd", norm=2, eps=0.5, eps_step=0.3, max_iter=1, targeted=targeted).generate(
        m, x, y, t if targeted else None)
    clf = PyTorchClassifier(net, loss=nn.CrossEntropyLoss(), input_shape=(3, 4, 4), nb_classes=4,
                            clip_values=(0.0, 1.0))
    art = ProjectedGradientDescentPyTorch(clf, norm=2, eps=0.5, eps_step=0.3, max_iter=1, targeted=targeted,
                                          num_random_init=0, verbose=False)
    labels = (t if targeted else y).numpy()
    x_art = art.generate(x.numpy(), y=np.eye(4, dtype=np.float32)[labels])
    assert np.allclose(ours.x_adv.numpy(), x_art, atol=1e-6)
    # and with a step beyond the ball: the projection (rescaling) is ART's too
    ours = advinterp.get_attack("pgd", norm=2, eps=0.1, eps_step=0.3, max_iter=1, targeted=targeted).generate(
        m, x, y, t if targeted else None)
    art = ProjectedGradientDescentPyTorch(clf, norm=2, eps=0.1, eps_step=0.3, max_iter=1, targeted=targeted,
                                          num_random_init=0, verbose=False)
    assert np.allclose(ours.x_adv.numpy(), art.generate(x.numpy(), y=np.eye(4, dtype=np.float32)[labels]), atol=1e-6)
