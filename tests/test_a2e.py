"""advinterp-a2e: attack-to-explain (Jalwana et al., CVPR 2020), Algorithms 1 and 2."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import advinterp
from advinterp.exceptions import ParameterError
from advinterp.model import ModelAdapter
from advinterp.testing import assert_model_unchanged, toy_data, toy_model

pytest.importorskip("skimage")
a2e = pytest.importorskip("advinterp_a2e")
from advinterp_a2e import A2E, attack_to_explain, default_eta, otsu_mask, refine_perturbation  # noqa: E402
from advinterp_a2e.algorithm import sign_search  # noqa: E402

C, H, W, K = 3, 4, 4, 3


def linear_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(K, C * H * W, generator=g) * 0.3)
        net[1].bias.copy_(torch.randn(K, generator=g) * 0.1)
    return ModelAdapter(net.eval(), nb_classes=K, input_shape=(C, H, W), name="linear")


def linear_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1 + n, C, H, W, generator=g), torch.randint(0, K, (1 + n,), generator=g)


def ce_grad(Wt, b, x, target):
    """Closed-form gradient of CE(Wx + b, target) w.r.t. x: W^T (softmax - onehot)."""
    s = torch.softmax(x.flatten(1).double() @ Wt.T + b, 1)
    s[:, target] -= 1
    return (s @ Wt).view(x.shape)


def probs(Wt, b, x, target):
    return torch.softmax(x.flatten(1).double() @ Wt.T + b, 1)[:, target]


# --------------------------------------------------------------------- Algorithm 1, line by line
@pytest.mark.parametrize("ascent", [True, False])
def test_algorithm1_line_by_line_on_a_linear_model(ascent):
    model = linear_model()
    x, y = linear_data()
    target, eta, b, alpha, beta, eps = 2, 0.7, 4, 0.9, 0.999, 1e-8
    keep = y[1:] != target
    trace = []
    res = attack_to_explain(model, x[0], x[1:], target, sample_labels=y[1:], eta=eta, batch=b, gamma=1.0,
                            max_iter=4, refine=False, ascent=ascent, trace=trace)
    Wt, bias = model.module[1].weight.detach().double(), model.module[1].bias.detach().double()
    usable = x[1:][keep].double()
    rows = torch.arange(len(x) - 1)[keep]
    p = torch.zeros(C, H, W, dtype=torch.float64)
    mu, sigma = torch.zeros_like(p), torch.zeros_like(p)
    d_bar = x[0].double()
    assert res.iterations == 4 and len(trace) == 4 and res.wp.shape == (4,) and res.indices.shape == (4, b - 1)
    for t, step in enumerate(trace, start=1):
        idx = step["indices"]                                     # line 3: b - 1 distinct non-target samples
        assert len(set(idx.tolist())) == b - 1 and set(idx.tolist()) <= set(rows.tolist())
        assert torch.equal(res.indices[t - 1], idx)
        D_raw = x[1:][idx].double()
        d, D = (d_bar + p).clamp(0, 1), (D_raw + p).clamp(0, 1)   # line 4
        gd, gD = ce_grad(Wt, bias, d[None], target)[0], ce_grad(Wt, bias, D, target)
        if ascent:
            gd, gD = -gd, -gD
        xi = gd.norm() / gD.flatten(1).norm(dim=1).mean()         # line 6
        assert step["xi"] == pytest.approx(float(xi), rel=1e-4)
        g = 0.5 * gd + xi / 2 * gD.mean(0)                        # line 7
        torch.testing.assert_close(step["g"].double(), g, rtol=1e-4, atol=1e-6)
        mu = alpha * mu + (1 - alpha) * g                         # lines 8-10
        sigma = beta * sigma + (1 - beta) * g * g
        rho = mu * math.sqrt(1 - beta ** t) / ((sigma.sqrt() + eps) * (1 - alpha ** t))
        torch.testing.assert_close(step["rho"].double(), rho, rtol=1e-3, atol=1e-5)
        r = rho / rho.abs().max()                                 # lines 11-14 (the whole D_bar)
        vp = float(probs(Wt, bias, (usable + p + r).clamp(0, 1), target).mean())
        vm = float(probs(Wt, bias, (usable + p - r).clamp(0, 1), target).mean())
        assert step["varrho_plus"] == pytest.approx(vp, abs=1e-5)
        assert step["varrho_minus"] == pytest.approx(vm, abs=1e-5)
        direction = 1 if vp >= vm else -1                         # lines 15-19: the better side
        assert step["direction"] == direction and res.directions[t - 1] == direction
        # on a linear model the target probability rises along -grad J, so the search picks
        # +rho when rho ascends (ascent=True) and -rho when it follows grad J (ascent=False)
        assert direction == (1 if ascent else -1)
        p = p + direction * rho
        p = p * min(1.0, eta / float(p.norm()))                    # line 20
        torch.testing.assert_close(step["p"].double(), p, rtol=1e-3, atol=1e-5)
        assert float(step["p"].norm()) <= eta * (1 + 1e-6)
        mb = (torch.cat([d_bar[None], D_raw]) + p).clamp(0, 1)     # lines 21-22
        assert step["wp"] == pytest.approx(float(probs(Wt, bias, mb, target).mean()), abs=1e-5)
        assert res.wp[t - 1] == pytest.approx(step["wp"])
    torch.testing.assert_close(res.p.double(), p, rtol=1e-3, atol=1e-5)


def test_sign_search_picks_the_better_side():
    model = linear_model()
    x, _ = linear_data()
    Wt = model.module[1].weight.detach()
    rho = Wt[1].view(C, H, W).clone()          # raises the logit of class 1
    p = torch.zeros(C, H, W)
    vp, vm = sign_search(model, x, p, rho, 1)
    assert vp > vm
    vp2, vm2 = sign_search(model, x, p, -rho, 1, batched=False)
    assert vp2 == pytest.approx(vm, abs=1e-6) and vm2 == pytest.approx(vp, abs=1e-6)


def test_projection_never_exceeds_eta_and_gamma_stops():
    model = linear_model()
    x, y = linear_data(12)
    trace = []
    res = attack_to_explain(model, x[0], x[1:], 0, eta=0.3, batch=5, gamma=1.0, max_iter=6, refine=False,
                            step=50.0, trace=trace)
    assert all(float(s["p"].norm()) <= 0.3 * (1 + 1e-6) for s in trace) and float(res.p.norm()) <= 0.3 * (1 + 1e-6)
    assert res.reached == -1 and res.iterations == 6
    easy = attack_to_explain(model, x[0], x[1:], 0, eta=5.0, batch=5, gamma=0.2, max_iter=50, refine=False)
    assert easy.reached == easy.iterations >= 1 and easy.wp[-1] >= 0.2 and (easy.wp[:-1] < 0.2).all()


def test_batched_equals_the_per_image_reference_and_resume_continues():
    model = toy_model()
    x, y = toy_data(n=10)
    kw = dict(eta=1.0, batch=4, gamma=1.0, max_iter=4, refine=False, seed=3)
    a = attack_to_explain(model, x[0], x[1:], 1, **kw)
    b = attack_to_explain(model, x[0], x[1:], 1, batched=False, **kw)
    torch.testing.assert_close(a.p, b.p, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.directions, b.directions)
    half = attack_to_explain(model, x[0], x[1:], 1, **{**kw, "max_iter": 2})
    rest = attack_to_explain(model, x[0], x[1:], 1, resume=half, **kw)
    assert rest.iterations == 4 and torch.equal(rest.indices, a.indices)
    torch.testing.assert_close(rest.p, a.p)
    torch.testing.assert_close(rest.wp, a.wp)


def test_result_survives_save_load_and_resumes_from_the_file(tmp_path):
    model = toy_model()
    x, _ = toy_data(n=8)
    kw = dict(eta=1.0, batch=3, gamma=1.0, max_iter=3, refine=False, seed=1)
    whole = attack_to_explain(model, x[0], x[1:], 2, **kw)
    half = attack_to_explain(model, x[0], x[1:], 2, **{**kw, "max_iter": 1})
    back = type(half).load(half.save(tmp_path / "a2e.pt"))
    assert torch.equal(back.p, half.p) and torch.equal(back.indices, half.indices) and back.params == half.params
    rest = attack_to_explain(model, x[0], x[1:], 2, resume=back, **kw)
    assert torch.equal(rest.indices, whole.indices)
    torch.testing.assert_close(rest.p, whole.p)
    assert rest.rows()[0]["iterations"] == 3


# --------------------------------------------------------------------- Algorithm 2
def otsu_by_hand(a):
    """Exhaustive Otsu: the split of the sorted values maximising the between-class variance."""
    v = np.sort(a.ravel())
    best, tau = -1.0, None
    for k in range(1, len(v)):
        lo, hi = v[:k], v[k:]
        if lo[-1] == hi[0]:
            continue
        between = len(lo) * len(hi) * (lo.mean() - hi.mean()) ** 2
        if between > best:
            best, tau = between, (lo[-1], hi[0])
    return a >= tau[1]


class _MeanConv(nn.Module):
    """Conv base = a 1x1 convolution averaging the channels (Omega = a), GAP + linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(1 / 3)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_refinement_mask_is_the_hand_computed_otsu_split():
    # bimodal; the low mode lies inside skimage's first histogram bin (below its centre), so
    # skimage's 256-bin Otsu and the exhaustive split agree exactly
    a = torch.tensor([[0.0, 0.001, 0.002, 0.9], [0.001, 0.0, 1.0, 1.1], [0.002, 0.001, 0.9, 1.0],
                      [0.0, 0.002, 0.001, 0.001]])
    want = torch.from_numpy(otsu_by_hand(a.numpy()))
    assert torch.equal(otsu_mask(a[None])[0], want) and want.sum() == 5
    assert not otsu_mask(torch.ones(1, 3, 3)).any()     # constant: no split
    # through a model whose convolutional base averages the channels: Omega's channel mean = a
    model = ModelAdapter(_MeanConv().eval(), nb_classes=2, input_shape=(3, 4, 4), name="meanconv")
    assert model.cam_layer == "features"
    p = a[None, None].repeat(1, 3, 1, 1) * 0.1
    seed = torch.full((1, 3, 4, 4), 0.5)
    out, mask = assert_model_unchanged(model, lambda: refine_perturbation(model, p, seed))
    assert torch.equal(mask[0], want)
    expect = (p * 5 * want.float()).clamp(-0.5, 0.5)                  # lambda = 5, same size: f = 5 * mask
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)
    assert ((seed + out) >= 0).all() and ((seed + out) <= 1).all()
    support = advinterp.get_support("a2e")
    batch = advinterp.AdversarialBatch(x0=seed, x_adv=seed + p, y_true=torch.tensor([0]))
    assert torch.equal(support(model, batch)[0, 0], want)


# --------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_parameter_errors():
    model = linear_model()
    x, y = linear_data()
    cases = [
        (dict(eta=0.0), "eta=0.0", "eta=None"),
        (dict(eta=-1), "eta=-1", "eta=None"),
        (dict(batch=50), "batch=50", "batch <="),
        (dict(gamma=0.0), "gamma=0.0", "0.8"),
        (dict(gamma=1.5), "gamma=1.5", "0.8"),
    ]
    for kw, name, fix in cases:
        with pytest.raises(ParameterError) as e:
            attack_to_explain(model, x[0], x[1:], 0, **kw)
        assert name in str(e.value) and fix in str(e.value), str(e.value)
    with pytest.raises(ParameterError, match="all of class 1") as e:
        attack_to_explain(model, x[0], x[1:], 1, sample_labels=torch.ones(len(x) - 1, dtype=torch.long))
    assert "other classes" in str(e.value)
    for kw in (dict(eta=0.0), dict(gamma=2.0), dict(batch=1), dict(targeted=False)):
        with pytest.raises(ParameterError, match=next(iter(kw))):
            advinterp.get_attack("a2e", **kw)


# --------------------------------------------------------------------- the attack
def test_attack_is_registered_and_leaves_the_model_unchanged():
    assert isinstance(advinterp.get_attack("a2e"), A2E) and not A2E.shardable
    model = toy_model()
    x, _ = toy_data(n=6)
    y = model.predict(x)
    t = (y + 1) % 4
    att = advinterp.get_attack("a2e", batch=3, max_iter=4, gamma=0.5, refine_every=2, eta=1.0)
    out = assert_model_unchanged(model, lambda: att.generate(model, x, y, t))
    assert out.x_adv.shape == x.shape and len(att.results_) == 6
    for i, r in enumerate(att.results_):
        assert r.target == int(t[i]) and r.iterations >= 1 and float(r.p.norm()) <= 1.0 + 1e-5
        # D_bar of seed i: the other images whose label is not the target
        allowed = {j for j in range(6) if j != i and int(y[j]) != int(t[i])}
        assert set(r.indices.flatten().tolist()) <= set(range(len(allowed)))
    again = advinterp.get_attack("a2e", batch=3, max_iter=4, gamma=0.5, refine_every=2, eta=1.0)
    assert torch.equal(again.generate(model, x, y, t).x_adv, out.x_adv)


def test_reaches_gamma_on_the_shipped_model():
    """Algorithm 1 alone, default b = 32, gamma = 0.8 and max_iter = 300 on the shipped model.

    With the default eta (10 at 224 px scaled to 64 px: 2.857) the mean target probability
    plateaus near 0.14 in 300 iterations on this model (measured, docs/attack_to_explain.md),
    so the budget is raised to eta = 40; gamma is then reached within a few iterations."""
    from advinterp.datasets.synthetic import SyntheticWorld

    assert default_eta((3, 64, 64)) == pytest.approx(10 * 64 / 224)
    model = advinterp.get_model("synthetic-cnn")
    x, y = SyntheticWorld(size=64, seed=0).generate(40, "test").tensors()
    target = 3
    i = int((y != target).nonzero()[0])
    rest = torch.tensor([j for j in range(len(x)) if j != i])
    res = assert_model_unchanged(model, lambda: attack_to_explain(
        model, x[i], x[rest], target, sample_labels=y[rest], eta=40.0, refine=False, progress=False))
    assert 0 < res.reached == res.iterations < 300 and res.wp[-1] >= 0.8, (res.reached, res.wp.max())
    assert float(res.p.norm()) <= 40.0 * (1 + 1e-6) and res.indices.shape == (res.iterations, 31)
    assert not set(res.indices.flatten().tolist()) & set((y[rest] == target).nonzero().flatten().tolist())


def test_runs_inside_an_art_pipeline():
    art_plugin = pytest.importorskip("advinterp_art")
    model = toy_model()
    x, _ = toy_data(n=5)
    y = model.predict(x)
    t = ((y + 1) % 4).numpy()
    cls = art_plugin.as_art_evasion_attack("a2e")
    from art.attacks import EvasionAttack

    assert issubclass(cls, EvasionAttack) and cls is art_plugin.as_art_evasion_attack(A2E)
    attack = cls(model.to_art(), targeted=True, batch=3, max_iter=3, eta=1.0)
    out = attack.generate(x.numpy(), y=t)
    ref = advinterp.get_attack("a2e", batch=3, max_iter=3, eta=1.0).generate(model, x, y, torch.as_tensor(t))
    assert isinstance(out, np.ndarray) and out.shape == tuple(x.shape)
    np.testing.assert_allclose(out, ref.x_adv.numpy(), atol=1e-6)
