"""advinterp-attributes D1/D3: eq. 2's alpha-mixed adversarial training of a copy (never the
user's model), and the ``attributes.robustness`` analyzer (Fig. 4) on the toy model."""
import math

import numpy as np
import pytest
import torch

import advinterp
from advinterp.api import ParameterError
from advinterp.testing import assert_model_unchanged, toy_batch, toy_data, toy_model
from advinterp_attributes.adversarial_training import alpha_adversarial_training, mixed_loss
from advinterp_attributes.robustness import COLUMNS, Robustness, RobustnessResult


def test_mixed_loss_eq2_by_hand():
    lc = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    la = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    ce_c = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    ce_a = (math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(1.0))) / 2
    for alpha in (0.0, 0.3, 0.5, 1.0):
        assert float(mixed_loss(lc, la, y, alpha)) == pytest.approx(alpha * ce_c + (1 - alpha) * ce_a, rel=1e-6)


def test_training_a_copy_leaves_the_users_model_unchanged():
    model = toy_model()
    x, y = toy_data(8)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    tuned = assert_model_unchanged(model, lambda: alpha_adversarial_training(model, x, y, eps=0.05, epochs=1,
                                                                            batch_size=4, max_iter=2, lr=1e-2))
    assert tuned.module is not model.module
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    changed = [k for k, v in tuned.module.state_dict().items() if not torch.equal(before[k], v)]
    assert changed, "the copy was not trained"
    assert not any(m.training for m in tuned.module.modules())
    assert len(tuned.train_losses) == 1 and np.isfinite(tuned.train_losses[0])
    # and when it raises (labels out of range)
    assert_model_unchanged(model, lambda: alpha_adversarial_training(model, x, torch.full((8,), 9)),
                           expect_raise=ParameterError)


def test_alpha_one_is_plain_adam_on_the_clean_loss():
    """alpha = 1: no attack, the copy follows a hand-written Adam loop over the same order."""
    model = toy_model()
    x, y = toy_data(8)
    tuned = alpha_adversarial_training(model, x, y, alpha=1.0, epochs=2, batch_size=4, lr=1e-2, seed=3)
    import copy

    net = copy.deepcopy(model.module)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        order = torch.randperm(8, generator=gen)
        for i in range(0, 8, 4):
            idx = order[i:i + 4]
            net.train()
            for m in net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(model.normalize(x[idx])), y[idx]).backward()
            opt.step()
    for (k, a), b in zip(tuned.module.state_dict().items(), net.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_same_seed_same_model_and_bad_settings():
    model = toy_model()
    x, y = toy_data(4)
    a = alpha_adversarial_training(model, x, y, eps=0.05, epochs=1, max_iter=2, seed=1, lr=1e-2)
    b = alpha_adversarial_training(model, x, y, eps=0.05, epochs=1, max_iter=2, seed=1, lr=1e-2)
    for u, v in zip(a.module.state_dict().values(), b.module.state_dict().values()):
        assert torch.equal(u, v)
    for kw in ({"eps": 0}, {"alpha": 1.5}, {"epochs": 0}, {"lr": -1.0}, {"batch_size": 0}, {"train_bn": "no"}):
        with pytest.raises(ParameterError, match=next(iter(kw))):
            alpha_adversarial_training(model, x, y, **kw)
    with pytest.raises(ParameterError):
        alpha_adversarial_training(model, x[:0], y[:0])


def test_robustness_analyzer_on_the_toy_model():
    model = toy_model()
    batch = toy_batch(model, n=8)
    an = advinterp.get_analyzer("attributes.robustness", eps=[0.01, 0.5], modes=["untargeted", "targeted"],
                                max_iter=3, epochs=1, at_max_iter=1, sje_epochs=5, at_eps=0.05)
    assert isinstance(an, Robustness)
    res = assert_model_unchanged(model, lambda: an.analyze(model, batch))
    assert isinstance(res, RobustnessResult)
    assert res.accuracy.shape == (2, 2, len(COLUMNS)) and len(res.rows()) == 4
    assert res.trained_on == "the batch's clean images" and res.attributes_from == "one-hot"
    clean = model.accuracy(batch.x0, batch.y_true)
    np.testing.assert_allclose(res.accuracy[:, :, 0], clean)  # softmax_clean does not depend on eps
    assert np.all(res.accuracy[:, 1, 1] <= res.accuracy[:, 0, 1] + 1e-12)  # eps 0.5 hurts at least as much
    np.testing.assert_array_equal(res.at_eps, [0.05, 0.05])
    assert np.isfinite(res.accuracy).all()
    row = res.rows()[0]
    assert row["sje_minus_softmax_adv"] == pytest.approx(row["sje_adv"] - row["softmax_adv"])
    off = advinterp.get_analyzer("attributes.robustness", eps=[0.05], modes=["untargeted"], max_iter=2,
                                 sje_epochs=2, adversarial_training=False).analyze(model, batch)
    assert np.isnan(off.accuracy[0, 0, 4:]).all() and np.isfinite(off.accuracy[0, 0, :4]).all()


def test_robustness_context_and_bad_params():
    model = toy_model()
    batch = toy_batch(model, n=4)
    phi = np.eye(4)[:, :3] + 0.5
    res = advinterp.get_analyzer("attributes.robustness", eps=[0.05], modes=["targeted"], max_iter=2, sje_epochs=2,
                                 adversarial_training=False).analyze(model, batch, train=batch, class_attributes=phi)
    assert res.trained_on == "context" and res.attributes_from == "context"
    with pytest.raises(ParameterError, match="class_attributes"):
        advinterp.get_analyzer("attributes.robustness", eps=[0.05], adversarial_training=False).analyze(
            model, batch, class_attributes=np.ones((3, 2)))
    for bad in ({"eps": []}, {"modes": ["both"]}, {"at_eps": 0.0}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            advinterp.get_analyzer("attributes.robustness", **bad)


def test_plot_robustness():
    from advinterp_attributes.report import plot_robustness

    acc = np.linspace(0, 1, 2 * 3 * len(COLUMNS)).reshape(2, 3, len(COLUMNS))
    res = RobustnessResult(eps=np.array([0.01, 0.06, 0.12]), modes=("untargeted", "targeted"), accuracy=acc,
                           at_eps=np.array([0.01, 0.06, 0.12]), n=5, n_train=7)
    fig = plot_robustness(res)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == len(COLUMNS)
    with pytest.raises(ParameterError):
        plot_robustness("no")
