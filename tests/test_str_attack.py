"""Str-attack (``str``): the ADMM building blocks against hand computations, and the attack
on the shipped synthetic model (targeted success, l_inf bound, group sparsity vs C&W-L2,
masks, retraining, parameter errors)."""
import math

import numpy as np
import pytest
import torch

import advinterp
from advinterp.attacks.str_attack import (StrAttack, default_group_size, fold_groups, group_counts, group_norms,
                                          group_padding, group_sizes, group_soft_threshold, project_box_linf,
                                          unfold_groups)
from advinterp.data import random_targets

GROUP = 4  # the default group size for 64x64 images




# ------------------------------------------------------------------ building blocks
def test_group_soft_threshold_by_hand():
    # three groups (columns) of two entries: norms 5, 0.5, 0
    cols = torch.tensor([[[3.0, 0.3, 0.0], [4.0, 0.4, 0.0]]])
    out = group_soft_threshold(cols, 1.0)
    # (1 - 1/5) * (3, 4) = (2.4, 3.2); norm 0.5 < 1 -> 0; a zero group stays 0 (no NaN)
    expected = torch.tensor([[[2.4, 0.0, 0.0], [3.2, 0.0, 0.0]]])
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()
    # per-group thresholds: (1, L), e.g. tau * sqrt|G_i| / rho
    out = group_soft_threshold(cols, torch.tensor([[4.0, 0.25, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[[0.6, 0.15, 0.0], [0.8, 0.2, 0.0]]]))
    # threshold 0 is the identity
    torch.testing.assert_close(group_soft_threshold(cols, 0.0), cols)


def test_unfold_fold_non_overlapping_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    cols = unfold_groups(x, 2, 2)
    assert cols.shape == (1, 4, 4)
    # groups in raster order, entries row-major inside the window
    torch.testing.assert_close(cols[0, :, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))
    torch.testing.assert_close(cols[0, :, 3], torch.tensor([10.0, 11.0, 14.0, 15.0]))
    torch.testing.assert_close(cols, torch.nn.functional.unfold(x, 2, stride=2))  # same layout as F.unfold
    torch.testing.assert_close(fold_groups(cols, 2, 2, (4, 4)), x)
    assert torch.equal(group_counts((4, 4), 2, 2), torch.ones(1, 1, 4, 4))
    # channels belong to the same group
    x3 = torch.rand(2, 3, 4, 4)
    cols3 = unfold_groups(x3, 2, 2)
    assert cols3.shape == (2, 12, 4)
    torch.testing.assert_close(group_norms(x3, 2, 2)[:, 0], x3[:, :, :2, :2].flatten(1).norm(dim=1))
    assert torch.equal(group_sizes(3, (4, 4), 2, 2), torch.full((1, 4), 12.0))


def test_unfold_fold_overlapping_counts():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    cols = unfold_groups(x, 2, 1)
    assert cols.shape == (1, 4, 4)
    torch.testing.assert_close(cols[0, :, 3], torch.tensor([4.0, 5.0, 7.0, 8.0]))
    counts = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    torch.testing.assert_close(group_counts((3, 3), 2, 1)[0, 0], counts)
    # fold is the adjoint of unfold: it sums the copies, so fold(unfold(x)) = count * x
    torch.testing.assert_close(fold_groups(cols, 2, 1, (3, 3)), x * counts)
    # adjointness <unfold(a), b> = <a, fold(b)> on random data, 2 channels, stride 2 of size 3
    a, b = torch.rand(2, 2, 7, 7), torch.rand(2, 2 * 9, 9)
    torch.testing.assert_close((unfold_groups(a, 3, 2) * b).sum(), (a * fold_groups(b, 3, 2, (7, 7))).sum())


def test_groups_cover_the_border():
    # 5x5 with 2x2 groups every 2: a zero row/column is padded so the last groups hold fewer pixels
    assert group_padding((5, 5), 2, 2) == (1, 1)
    assert torch.equal(group_counts((5, 5), 2, 2), torch.ones(1, 1, 5, 5))
    sizes = group_sizes(3, (5, 5), 2, 2)
    torch.testing.assert_close(sizes, 3 * torch.tensor([[4.0, 4.0, 2.0, 4.0, 4.0, 2.0, 2.0, 2.0, 1.0]]))
    x = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(fold_groups(unfold_groups(x, 2, 2), 2, 2, (5, 5)), x)
    # 4 px with 3-px groups every 2: groups start at 0 and 2 (padded to 5): pixel 2 is covered twice
    assert group_padding((4, 4), 3, 2) == (1, 1)
    row = torch.tensor([1.0, 1.0, 2.0, 1.0])
    torch.testing.assert_close(group_counts((4, 4), 3, 2)[0, 0], row[:, None] * row[None, :])
    with pytest.raises(ValueError):
        group_padding((4, 4), 5, 1)


def test_projection_box_and_linf_by_hand():
    x0 = torch.tensor([0.0, 0.05, 0.5, 0.98, 1.0])
    v = torch.tensor([-0.2, -0.2, 0.3, 0.3, 0.3])
    # bounds [max(-eps, -x0), min(eps, 1 - x0)] with eps = 0.1
    torch.testing.assert_close(project_box_linf(v, x0, 0.1), torch.tensor([0.0, -0.05, 0.1, 0.02, 0.0]))
    inside = torch.tensor([0.05, -0.05, 0.0, 0.01, -0.1])
    torch.testing.assert_close(project_box_linf(inside, x0, 0.1), inside)  # feasible points stay
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(project_box_linf(v, x0, 0.1, mask), torch.tensor([0.0, -0.05, 0.0, 0.02, 0.0]))


def test_default_group_size_follows_the_paper():
    assert default_group_size(224, 224) == 13 and default_group_size(299, 299) == 13  # ImageNet
    assert default_group_size(32, 32) == 2 and default_group_size(28, 28) == 2  # CIFAR-10, MNIST
    assert default_group_size(64, 64) == GROUP  # round(64 * 13 / 224)
    assert default_group_size(128, 96) == max(2, round(96 * 13 / 224))


# ------------------------------------------------------------------ the attack
@pytest.fixture(scope="module")
def setting():
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=32, split="test").tensors()
    t = random_targets(y, 12, torch.Generator().manual_seed(0))
    return model, x, y, t


# a modest budget: 3 binary-search steps x 30 ADMM iterations
BUDGET = dict(max_iter=30, binary_search_steps=3, eta0=10.0, tau=0.1)


@pytest.fixture(scope="module")
def str_batch(setting):
    model, x, y, t = setting
    return StrAttack(eps=0.3, **BUDGET).generate(model, x, y, t)


def _group_count(delta):
    return (group_norms(delta, GROUP, GROUP) > 1e-3).sum(1).float()


def _cw_reference(model, x, t):
    """A dense C&W-L2 attack: the native ``cw_l2`` when registered, else ART's."""
    names = {i.name for i in advinterp.list_components("attack")}
    if "cw_l2" in names:
        cw = advinterp.get_attack("cw_l2", targeted=True, binary_search_steps=3, max_iter=20, learning_rate=0.05,
                                  initial_const=1.0)
        return cw.generate(model, x, target=t).x_adv
    from art.attacks.evasion import CarliniL2Method

    art = CarliniL2Method(model.to_art(), confidence=1.0, targeted=True, learning_rate=0.05, binary_search_steps=3,
                          max_iter=20, initial_const=1.0, batch_size=len(x), verbose=False)
    onehot = np.eye(model.nb_classes, dtype=np.float32)[t.numpy()]
    return torch.from_numpy(art.generate(x.numpy(), y=onehot))


def test_targeted_success_linf_and_group_sparsity(setting, str_batch):
    model, x, y, t = setting
    b = str_batch
    assert b.success.float().mean() >= 0.9
    assert torch.equal(b.y_adv[b.success], t[b.success])
    delta = b.x_adv - b.x0
    assert delta.abs().max() <= 0.3 + 1e-6  # ||delta||_inf <= eps
    assert b.x_adv.min() >= 0 and b.x_adv.max() <= 1
    l2_str = delta.flatten(1).norm(dim=1)
    groups_str = _group_count(delta)
    total = group_norms(delta, GROUP, GROUP).shape[1]
    # the dense reference, on a subset (the group count of C&W is ~all groups on every image)
    k = 8
    ok = b.success[:k]
    x_cw = _cw_reference(model, x[:k], t[:k])
    ok_cw = model.predict(x_cw) == t[:k]
    both = ok & ok_cw
    assert both.sum() >= k // 2
    d_cw = x_cw - x[:k]
    l2_cw = d_cw.flatten(1).norm(dim=1)
    groups_cw = _group_count(d_cw)
    # similar l2 ...
    assert l2_str[:k][both].mean() <= 2.0 * l2_cw[both].mean()
    # ... but clearly fewer perturbed groups
    assert groups_str[:k][both].mean() <= 0.6 * groups_cw[both].mean()
    assert groups_str[b.success].mean() <= 0.6 * total
    # the perturbation is exactly zero on the groups that are switched off
    assert (group_norms(delta, GROUP, GROUP) == 0).any(1)[b.success].all()


def test_mask_zero_outside(setting):
    model, x, y, t = setting
    x, y, t = x[:4], y[:4], t[:4]
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1
    attack = StrAttack(max_iter=15, binary_search_steps=2, eta0=10.0, tau=0.1)
    b = attack.generate(model, x, y, t, mask=mask)
    delta = b.x_adv - b.x0
    assert torch.equal(delta * (1 - mask), torch.zeros_like(delta))
    assert b.success.any() and (delta[b.success] != 0).any()
    # the attack itself (before the base class projects) keeps delta at 0 outside the mask
    m = mask[None, None].expand(4, 1, 64, 64)
    with model.preserved(freeze=True):
        x_adv = attack._generate(model, x, y, t, mask=m)
    assert torch.equal((x_adv - x) * (1 - mask), torch.zeros_like(x))


def test_overlapping_groups_untargeted_and_retrain(setting):
    model, x, y, t = setting
    x, y = x[:4], y[:4]
    base = dict(max_iter=10, binary_search_steps=2, eta0=10.0, tau=0.1, eps=0.2, targeted=False, group_stride=2)
    b = StrAttack(**base).generate(model, x, y)
    assert b.success.all()
    assert (b.x_adv - b.x0).abs().max() <= 0.2 + 1e-6
    # retraining on the selected support never increases l2 and never leaves the support
    r = StrAttack(**base, retrain=True).generate(model, x, y)
    assert r.success.all()
    d, dr = b.x_adv - b.x0, r.x_adv - r.x0
    assert (dr.flatten(1).norm(dim=1) <= d.flatten(1).norm(dim=1) + 1e-6).all()
    assert (dr.abs() * (d == 0)).max() <= 1e-6


# ------------------------------------------------------------------ parameters
@pytest.mark.parametrize("kwargs, name", [
    ({"eps": -0.1}, "eps"),
    ({"eps": 0.0}, "eps"),
    ({"group_size": 0}, "group_size"),
    ({"group_stride": 0}, "group_stride"),
    ({"group_size": 2, "group_stride": 3}, "group_stride"),
    ({"tau": -1.0}, "tau"),
    ({"rho": 0.0}, "rho"),
    ({"max_iter": 0}, "max_iter"),
])
def test_bad_parameters(kwargs, name):
    with pytest.raises(advinterp.ParameterError, match=name):
        StrAttack(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"group_size": 65}, "group_size"),
    ({"group_stride": 8}, "group_stride"),  # larger than the default group size (4) of 64x64 images
])
def test_bad_parameters_for_the_image(setting, kwargs, name):
    model, x, y, t = setting
    with pytest.raises(advinterp.ParameterError, match=name):
        StrAttack(max_iter=1, binary_search_steps=1, **kwargs).generate(model, x[:2], y[:2], t[:2])


def test_registered():
    assert isinstance(advinterp.get_attack("str"), StrAttack)
    assert StrAttack.supports_mask and StrAttack().targeted
    # the authors' defaults (KaidiXu/StrAttack, l2_LADMMST_attack_v3.py; issue 13, item 6)
    p = StrAttack().get_params()
    assert (p["rho"], p["gamma"], p["eta0"], p["confidence"], p["retrain"], p["tau"]) == (15.0, 2.0, 5.0, 0.0, True, None)


# ------------------------------------------------------------------ ADMM iterations by hand (issue 11)
class _Recorder(torch.nn.Module):
    """Records every input it is run on (the attack reads x0 + candidate and x0 + z)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def _admm_by_hand(x0, t, W, b, c, rho, gamma, tau, eps, kappa, eta0, size, stride, iters):
    """The module docstring's ADMM for one image of a linear model, in plain numpy loops:
    returns the sequence of (candidate, z) the attack must evaluate, and the states."""
    C, H, Wd = x0.shape
    groups = [(r, q) for r in range(0, H - size + 1, stride) for q in range(0, Wd - size + 1, stride)]
    count = np.zeros((H, Wd))
    for r, q in groups:
        count[r:r + size, q:q + size] += 1
    z = np.zeros_like(x0)
    u = np.zeros_like(x0)
    v = np.zeros_like(x0)
    s = [np.zeros((C, size, size)) for _ in groups]
    lo, hi = np.maximum(-eps, -x0), np.minimum(eps, 1 - x0)
    seen, states = [], []
    for k in range(iters):
        delta = rho * (z - u / rho) / (2 * gamma + rho)
        w = np.minimum(np.maximum(z - v / rho, lo), hi)
        ys = []
        support = np.zeros_like(x0, dtype=bool)
        for (r, q), si in zip(groups, s):
            a = z[:, r:r + size, q:q + size] - si / rho
            n = math.sqrt(float((a ** 2).sum()))
            thr = tau * math.sqrt(C * size * size) / rho
            yi = max(0.0, 1 - thr / n) * a if n > 0 else np.zeros_like(a)
            ys.append(yi)
            support[:, r:r + size, q:q + size] |= yi != 0
        cand = w * support
        # gradient of c * max(max_{j != t} Z_j - Z_t, -kappa) at x0 + z (targeted, linear Z)
        logits = W @ (x0 + z).ravel() + b
        other = [j for j in range(len(b)) if j != t]
        jstar = other[int(np.argmax(logits[other]))]
        margin = logits[jstar] - logits[t]
        grad = (c * (W[jstar] - W[t])).reshape(x0.shape) if margin > -kappa else np.zeros_like(x0)
        seen.append((cand, z.copy()))
        eta = eta0 * math.sqrt(k + 1)
        folded = np.zeros_like(x0)
        for (r, q), yi, si in zip(groups, ys, s):
            folded[:, r:r + size, q:q + size] += rho * yi + si
        z_new = (eta * z - grad + rho * delta + u + rho * w + v + folded) / (eta + 2 * rho + rho * count)
        u = u + rho * (delta - z_new)
        v = v + rho * (w - z_new)
        s = [si + rho * (yi - z_new[:, r:r + size, q:q + size]) for (r, q), yi, si in zip(groups, ys, s)]
        states.append(dict(delta=delta, w=w, y=ys, z=z_new, u=u, v=v, s=s, grad=grad))
        z = z_new
    return seen, states


@pytest.mark.parametrize("stride", [2, 1], ids=["disjoint", "overlapping"])
def test_admm_iterations_by_hand_on_a_linear_model(stride):
    from torch import nn

    from advinterp import ModelAdapter

    C, H, Wd, K = 2, 4, 4, 4
    g = torch.Generator().manual_seed(7)
    lin = nn.Linear(C * H * Wd, K).double()
    with torch.no_grad():
        # pixel weights grow to the right: gradient magnitudes differ by group
        scale = torch.linspace(0.2, 2.0, Wd, dtype=torch.float64).repeat(C * H)
        lin.weight.copy_(torch.randn(K, C * H * Wd, generator=g, dtype=torch.float64) * scale)
        lin.bias.copy_(torch.randn(K, generator=g, dtype=torch.float64))
    rec = _Recorder(nn.Sequential(nn.Flatten(), lin))
    model = ModelAdapter(rec, nb_classes=K, input_shape=(C, H, Wd), name="linear-str")
    x0 = torch.rand(2, C, H, Wd, generator=g, dtype=torch.float64) * 0.6 + 0.2
    y = model.predict(x0)
    t = (y + 1) % K
    p = dict(rho=1.5, gamma=0.3, tau=0.8, eps=0.12, kappa=0.5, eta0=1.0, c=2.0)
    iters = 4
    atk = StrAttack(targeted=True, eps=p["eps"], group_size=2, group_stride=stride, confidence=p["kappa"],
                    initial_const=p["c"], binary_search_steps=1, max_iter=iters, rho=p["rho"], gamma=p["gamma"],
                    tau=p["tau"], eta0=p["eta0"])
    rec.inputs.clear()
    atk.generate(model, x0, y, t)
    # the ADMM run's forwards: per iteration x0 + candidate (the whole batch), then x0 + z
    runs = [a for a in rec.inputs if a.shape == x0.shape]
    start = next(i for i in range(len(runs)) if torch.equal(runs[i], x0) and i + 1 < len(runs)
                 and torch.equal(runs[i + 1], x0))
    runs = runs[start:start + 2 * iters]
    assert len(runs) == 2 * iters
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    nontrivial = {"clipped": False, "group_off": False, "group_on": False}
    for i in range(len(x0)):
        xi = x0[i].numpy()
        seen, states = _admm_by_hand(xi, int(t[i]), W, b, p["c"], p["rho"], p["gamma"], p["tau"], p["eps"],
                                     p["kappa"], p["eta0"], 2, stride, iters)
        for k, (cand, z) in enumerate(seen):
            np.testing.assert_allclose(runs[2 * k][i].numpy() - xi, cand, rtol=0, atol=1e-12,
                                       err_msg=f"candidate w*support of iteration {k}, image {i}")
            np.testing.assert_allclose(runs[2 * k + 1][i].numpy() - xi, z, rtol=0, atol=1e-12,
                                       err_msg=f"z entering iteration {k}, image {i}")
        # the first iteration in closed form: from z = u = v = s = 0, delta = w = y = 0 and
        # z1 = -grad f(x0) / (eta0 + 2 rho + rho count); u1 = v1 = -rho z1, s1 = -rho z1 per group
        first = states[0]
        assert not first["delta"].any() and not first["w"].any() and not any(yi.any() for yi in first["y"])
        count = np.zeros((H, Wd))
        for r in range(0, H - 1, stride):
            for q in range(0, Wd - 1, stride):
                count[r:r + 2, q:q + 2] += 1
        z1 = -first["grad"] / (p["eta0"] + 2 * p["rho"] + p["rho"] * count)
        np.testing.assert_allclose(first["z"], z1, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(first["u"], -p["rho"] * z1, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(first["v"], -p["rho"] * z1, rtol=1e-13, atol=1e-15)
        assert first["grad"].any()
        # the second iteration's prox steps are not trivial: clipping at eps and groups switched off and on
        second = states[1]
        nontrivial["clipped"] |= bool((np.abs(second["w"]) == p["eps"]).any())
        nontrivial["group_off"] |= any(not yi.any() for yi in second["y"])
        nontrivial["group_on"] |= any(yi.any() for yi in second["y"])
    assert all(nontrivial.values()), nontrivial


def test_tau_none_is_the_authors_size_independent_threshold(setting):
    """tau=None: a group is switched off below ||delta_G||_2 = 3 / rho whatever its size (the
    authors' code); with equal-size groups that is tau = 3 / sqrt|G| exactly."""
    model, x, y, t = setting
    x, y, t = x[:3], y[:3], t[:3]
    kw = dict(max_iter=40, binary_search_steps=2, group_size=4, retrain=False)
    a = StrAttack(**kw).generate(model, x, y, t)
    assert a.success.any()
    b = StrAttack(tau=3.0 / math.sqrt(3 * 4 * 4), **kw).generate(model, x, y, t)
    assert torch.equal(a.x_adv, b.x_adv)
    c = StrAttack(tau=3.0 / math.sqrt(3 * 4 * 4) * 0.2, **kw).generate(model, x, y, t)   # a weaker penalty
    assert not torch.equal(a.x_adv, c.x_adv)
