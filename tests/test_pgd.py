import pytest
import torch
from torch import nn

import advinterp
from advinterp import ModelAdapter, ParameterError
from advinterp.data import random_targets


def _linear_model():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return ModelAdapter(lin, input_shape=(3, 2, 2))


def test_one_step_equals_closed_form():
    """For logits W x + b, grad_x CE = W^T (softmax - onehot): one FGSM-like step by hand."""
    m = _linear_model()
    W, b = m.module[1].weight.detach(), m.module[1].bias.detach()
    x = torch.full((2, 3, 2, 2), 0.5)
    y = torch.tensor([0, 2])
    batch = advinterp.get_attack("pgd", eps=0.1, eps_step=0.05, max_iter=1).generate(m, x, y)
    p = torch.softmax(x.flatten(1) @ W.T + b, 1)
    grad = (p - nn.functional.one_hot(y, 3).float()) @ W
    expect = (x.flatten(1) + 0.05 * grad.sign()).view_as(x)
    assert torch.allclose(batch.x_adv, expect, atol=1e-7)


def test_projection_and_clipping():
    m = _linear_model()
    x = torch.rand(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    b = advinterp.get_attack("pgd", eps=0.03, eps_step=0.02, max_iter=7, num_random_init=1).generate(m, x)
    assert (b.delta.abs() <= 0.03 + 1e-7).all() and b.x_adv.min() >= 0 and b.x_adv.max() <= 1


def test_targeted_success_and_untargeted_on_shipped_model(synthetic_model, synthetic_test_data):
    x, y = synthetic_test_data
    x, y = x[:48], y[:48]
    pgd = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=10)
    b = pgd.generate(synthetic_model, x, y)
    assert b.success.float().mean() > 0.8  # the natural model is not robust
    t = random_targets(y, 12, torch.Generator().manual_seed(0))
    bt = advinterp.get_attack("pgd", eps=16 / 255, eps_step=2 / 255, max_iter=20, targeted=True).generate(
        synthetic_model, x, y, t)
    assert torch.equal(bt.y_target, t) and bt.success.float().mean() > 0.8
    assert torch.equal(bt.success, bt.y_adv == t)


def test_bad_inputs_are_named():
    m = _linear_model()
    x = torch.rand(2, 3, 2, 2)
    pgd = advinterp.get_attack("pgd", targeted=True)
    with pytest.raises(ParameterError, match="target=None"):
        pgd.generate(m, x, torch.tensor([0, 1]))
    with pytest.raises(ParameterError, match="different from the true label"):
        pgd.generate(m, x, torch.tensor([0, 1]), torch.tensor([2, 1]))
    with pytest.raises(ParameterError, match=r"pixels in \[0, 1\]"):
        pgd.generate(m, x * 255, torch.tensor([0, 1]), torch.tensor([1, 2]))
    with pytest.raises(ParameterError, match=r"shape \(2,\)"):
        pgd.generate(m, x, torch.tensor([0, 1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ParameterError, match=r"class indices in \[0, 3\)"):
        pgd.generate(m, x, torch.tensor([0, 1]), torch.tensor([1, 7]))
    with pytest.raises(ParameterError, match="uint8"):
        pgd.generate(m, (x * 255).to(torch.uint8), torch.tensor([0, 1]), torch.tensor([1, 2]))


def test_mask_is_refused_by_attacks_without_support():
    from study_fixtures import Unrestrictable

    m = _linear_model()
    x = torch.rand(2, 3, 2, 2)
    with pytest.raises(ParameterError, match="cannot be restricted"):
        Unrestrictable().generate(m, x, mask=torch.ones(2, 2))


@pytest.mark.parametrize("name", ["pgd", "ifgsm", "fgsm"])
def test_linf_attacks_restricted_to_a_support(name):
    """A mask keeps delta 0 outside the support at every step (the iterates are those of the
    attack on the support, not the unrestricted result cut afterwards); an all-ones mask
    changes nothing."""
    from advinterp.attacks.pgd_core import pgd_linf

    m = _linear_model()
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    params = {"eps": 0.1, **({} if name == "fgsm" else {"eps_step": 0.03, "max_iter": 5})}
    if name == "pgd":
        params.update(num_random_init=1, seed=3)
    atk = advinterp.get_attack(name, **params)
    free = atk.generate(m, x)
    assert torch.equal(atk.generate(m, x, mask=torch.ones(2, 2)).x_adv, free.x_adv)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = atk.generate(m, x, mask=mask).x_adv
    assert torch.equal((got - x) * (1 - mask), torch.zeros_like(x))
    # by hand: the same steps with the projection onto the support after each one
    steps = 1 if name == "fgsm" else 5
    step = params["eps"] if name == "fgsm" else params["eps_step"]
    g = torch.Generator().manual_seed(3) if name == "pgd" else None
    want = pgd_linf(m.logits, x, free.y_true, 0.1, step, steps, random_init=name == "pgd", generator=g,
                    mask=mask[None, None])
    assert torch.equal(got, want)


def test_check_mask_shapes():
    from advinterp.components import check_mask

    assert check_mask("t", torch.ones(4, 5, dtype=torch.bool), (2, 3, 4, 5)).shape == (2, 1, 4, 5)
    assert check_mask("t", torch.zeros(2, 4, 5), (2, 3, 4, 5)).shape == (2, 1, 4, 5)
    assert check_mask("t", torch.zeros(2, 3, 4, 5), (2, 3, 4, 5)).shape == (2, 3, 4, 5)
    with pytest.raises(ParameterError, match="0/1 mask of shape"):
        check_mask("t", torch.zeros(3, 4, 5), (2, 3, 4, 5))
    with pytest.raises(ParameterError, match="Threshold"):
        check_mask("t", torch.full((4, 5), 0.5), (2, 3, 4, 5))
