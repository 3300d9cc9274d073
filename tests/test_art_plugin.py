"""The advinterp-art plugin (plugins/advinterp-art): ART attacks as advinterp attacks, and
advinterp's native attacks as ART EvasionAttacks (AdversarialTrainer included)."""
import configparser
import copy
import inspect
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("art")
import advinterp_art  # noqa: E402  (shipped: a failed import is an error, not a skip)

import advinterp  # noqa: E402
from advinterp import ParameterError, UnknownComponentError  # noqa: E402
from advinterp.attacks.pgd import PGD  # noqa: E402
from advinterp.data import random_targets  # noqa: E402
from advinterp.testing import assert_model_unchanged, toy_data, toy_model  # noqa: E402
from advinterp_art import ADAPTERS, as_art_evasion_attack, art_attack, native_attacks  # noqa: E402
from advinterp_art.evasion import evasion_class_name  # noqa: E402

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "advinterp-art"
EV = "art.attacks.evasion."




@pytest.fixture(scope="module")
def model():
    return advinterp.get_model("synthetic-cnn")


@pytest.fixture(scope="module")
def data(model):
    x, y = advinterp.get_dataset("synthetic", n=8, split="test").tensors()
    t = random_targets(y, model.nb_classes, torch.Generator().manual_seed(0))
    return x, y, t


def _direct(adapter_cls, estimator, params, x, labels, nb_classes, seed=0, mask=None):
    """ART called the way an ART user would, seeding the global RNGs ART draws from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    attack = adapter_cls.art_class()(estimator, **params)
    kw = {} if mask is None else {"mask": mask}
    return attack.generate(x.numpy(), y=np.eye(nb_classes, dtype=np.float32)[labels.numpy()], **kw)


# ------------------------------------------------------------------------- the plugin
def test_setup_cfg_declares_the_entry_point():
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN / "setup.cfg")
    assert cfg["metadata"]["name"] == "advinterp-art"
    assert cfg["options.entry_points"]["advinterp"].strip() == "art = advinterp_art"
    assert "adversarial-robustness-toolbox>=1.17" in cfg["options"]["install_requires"]


def test_loaded_through_its_entry_point():
    status = {p.name: p for p in advinterp.list_plugins()}
    assert status["art"].loaded and "advinterp-art" in status["art"].source
    names = {i.name: i for i in advinterp.list_components("attack")}
    for n in ("art.fgsm", "art.bim", "art.pgd", "art.cw_l2", "art.ead", "art.uap"):
        assert names[n].plugin == "art"
    assert advinterp.get_attack("art.pgd", eps=0.1).eps == 0.1


def test_loading_the_plugin_does_not_import_art():
    code = "import sys, advinterp; advinterp.get_attack('art.pgd'); print('art' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


NO_ART = """
import sys
class Block:  # as if adversarial-robustness-toolbox were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "art" or name.startswith("art."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import advinterp
status = {p.name: p for p in advinterp.list_plugins()}["art"]
assert not status.loaded and status.hint.startswith("pip install adversarial-robustness-toolbox"), status
assert advinterp.get_attack("pgd").name == "pgd"
print("ok")
"""


def test_plugin_without_art_is_unavailable_with_a_hint():
    r = subprocess.run([sys.executable, "-c", NO_ART], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda c: c.name)
def test_params_mirror_art_constructor(cls):
    sig = inspect.signature(cls.art_class().__init__).parameters
    passed = set(cls.art_params)
    assert passed <= set(sig), f"not ART arguments: {passed - set(sig)}"
    for name in passed:
        default = cls.params[name].default
        assert default == sig[name].default or (default is None and sig[name].default is None), name
    # everything ART takes is exposed, except the estimator and display/logging switches
    assert set(sig) - passed <= {"self", "estimator", "classifier", "verbose", "summary_writer"}


def test_uap_attackers_are_arts():
    from art.attacks.evasion import UniversalPerturbation

    assert set(advinterp_art.adapters.UAP_ATTACKERS) == set(UniversalPerturbation.attacks_dict)


# ------------------------------------------------------------------------- same as ART
CW = {"max_iter": 2, "binary_search_steps": 1, "learning_rate": 0.1, "initial_const": 1.0, "batch_size": 8,
      "max_halving": 2, "max_doubling": 2}
EAD = {"max_iter": 2, "binary_search_steps": 1, "learning_rate": 0.1, "initial_const": 1.0, "batch_size": 8}
CASES = [
    ("art.fgsm", {"eps": 8 / 255, "num_random_init": 1}, (False, True)),
    ("art.bim", {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 5}, (False, True)),
    ("art.pgd", {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 5, "num_random_init": 1}, (False, True)),
    ("art.pgd", {"norm": 2, "eps": 1.0, "eps_step": 0.25, "max_iter": 4, "decay": 0.5}, (False,)),
    ("art.cw_l2", CW, (False, True)),
    ("art.ead", EAD, (False, True)),
    ("art.uap", {"attacker": "fgsm", "attacker_params": {"eps": 0.05}, "max_iter": 2, "eps": 0.1}, (False,)),
    ("art.uap", {"attacker": "pgd", "attacker_params": {"eps": 0.05, "eps_step": 0.02, "max_iter": 2,
                                                        "num_random_init": 1, "verbose": False},
                 "max_iter": 1, "eps": 0.1, "delta": 0.0}, (False,)),
]


@pytest.mark.parametrize("name, params, variants", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_adapter_equals_art(model, data, name, params, variants):
    x, y, t = data
    cls = advinterp.get_registry().info("attack", name).obj
    for targeted in variants:
        kw = {**params, "targeted": True} if targeted else dict(params)
        attack = advinterp.get_attack(name, **kw)
        np_state = np.random.get_state()[1].copy()
        batch = attack.generate(model, x, y, t if targeted else None)
        assert np.array_equal(np.random.get_state()[1], np_state), "the adapter left numpy's RNG changed"
        expected = _direct(cls, model.to_art(), {**kw, "verbose": False} if "verbose" in inspect.signature(
            cls.art_class().__init__).parameters else kw, x, t if targeted else y, model.nb_classes)
        assert batch.x_adv.dtype == x.dtype and batch.attack == name
        np.testing.assert_allclose(batch.x_adv.numpy(), expected, atol=1e-6, rtol=0)
        assert np.abs(expected - x.numpy()).max() > 1e-3, "the case does not perturb: a vacuous comparison"
        if targeted:
            assert torch.equal(batch.success, batch.y_adv == t)


@pytest.mark.parametrize("name", ["art.fgsm", "art.pgd"])
def test_adapter_mask_equals_art(model, data, name):
    x, y, _ = data
    mask = (torch.rand(len(x), 1, *x.shape[-2:], generator=torch.Generator().manual_seed(0)) > 0.5).float()
    params = {"eps": 8 / 255, "eps_step": 2 / 255, "num_random_init": 1}
    if name == "art.pgd":
        params["max_iter"] = 3
    cls = advinterp.get_registry().info("attack", name).obj
    batch = advinterp.get_attack(name, **params).generate(model, x, y, mask=mask)
    extra = {"verbose": False} if name == "art.pgd" else {}
    expected = _direct(cls, model.to_art(), {**params, **extra}, x, y, model.nb_classes, mask=mask.numpy())
    np.testing.assert_allclose(batch.x_adv.numpy(), expected, atol=1e-6, rtol=0)
    assert float(((batch.x_adv - x) * (1 - mask)).abs().max()) == 0.0
    assert float(((batch.x_adv - x) * mask).abs().max()) > 0


def test_adapter_accepts_art_estimator_and_module(model, data):
    x, y, _ = data
    attack = advinterp.get_attack("art.pgd", eps=8 / 255, eps_step=2 / 255, max_iter=3)
    a = attack.generate(model, x, y)
    estimator = model.to_art()
    b = attack.generate(estimator, x, y)  # an ART classifier, used as is
    np.testing.assert_allclose(a.x_adv.numpy(), b.x_adv.numpy(), atol=1e-6, rtol=0)
    assert b.x_adv.dtype == torch.float32
    # float64 numpy input: numpy is converted, the result follows the input's dtype
    c = attack.generate(estimator, x.double().numpy(), y)
    assert c.x_adv.dtype == torch.float64
    np.testing.assert_allclose(c.x_adv.numpy(), a.x_adv.numpy(), atol=1e-6, rtol=0)
    # a bare nn.Module (no input_shape, no normalisation): ART still gets a classifier
    d = attack.generate(toy_model().module, *toy_data())
    assert d.x_adv.shape == (4, 3, 16, 16)


def test_adapter_leaves_art_estimator_model_unchanged():
    m = toy_model()
    est = m.to_art()
    attack = advinterp.get_attack("art.cw_l2", max_iter=2, binary_search_steps=1, batch_size=4)
    x, y = toy_data()
    assert_model_unchanged(m, lambda: attack.generate(est, x, y))


def test_uap_keeps_the_universal_noise(model, data):
    x, y, _ = data
    attack = advinterp.get_attack("art.uap", attacker="fgsm", attacker_params={"eps": 0.05}, max_iter=1, eps=0.1)
    batch = attack.generate(model, x, y)
    assert attack.noise_.shape == (1, *x.shape[1:]) and 0 <= attack.fooling_rate_ <= 1
    np.testing.assert_allclose(batch.x_adv.numpy(), np.clip(x.numpy() + attack.noise_, 0, 1), atol=1e-6)


# ------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda c: c.name)
def test_adapter_bad_inputs(cls):
    m = toy_model()
    x, y = toy_data()
    attack = cls(**cls.conformance_params)
    for bad, what in ((x * 3, "x"), (x - 2, "x"), (x[0], "x")):
        with pytest.raises(ParameterError, match=what):
            attack.generate(m, bad, y)
    with pytest.raises(ParameterError, match="target"):
        attack.generate(m, x, y, (y + 1) % 4)  # untargeted with targets
    if "targeted" in cls.params:
        targeted = cls(**{**cls.conformance_params, "targeted": True})
        with pytest.raises(ParameterError, match="target"):
            targeted.generate(m, x, y)  # targeted without targets
        with pytest.raises(ParameterError, match="target"):
            targeted.generate(m, x, y, y)  # target equal to the true label
    negative = next(p for p in ("eps", "learning_rate", "max_iter") if p in cls.params)
    with pytest.raises(ParameterError, match=negative):
        cls(**{negative: -1})


def test_adapter_cross_parameter_errors():
    with pytest.raises(ParameterError, match="norm"):
        advinterp.get_attack("art.pgd", norm=3, num_random_init=1)
    advinterp.get_attack("art.pgd", norm=3)  # ART's PGD takes any p >= 1 without random starts
    with pytest.raises(ParameterError, match="attacker_params"):
        advinterp.get_attack("art.uap", attacker="fgsm", attacker_params={"no_such": 1})
    with pytest.raises(ParameterError, match="attacker_params"):
        advinterp.get_attack("art.uap", attacker="fgsm", attacker_params={"targeted": True})
    with pytest.raises(ParameterError, match="attacker"):
        advinterp.get_attack("art.uap", attacker="nope")


# ------------------------------------------------------------------------- advinterp attacks in ART
def test_pgd_attack_class():
    from art.attacks import EvasionAttack
    from art.estimators.classification.classifier import ClassifierMixin
    from art.estimators.estimator import BaseEstimator, LossGradientsMixin

    cls = advinterp_art.PGDAttack
    assert cls is as_art_evasion_attack(PGD) is as_art_evasion_attack("pgd")
    assert issubclass(cls, EvasionAttack) and cls.__name__ == "PGDAttack"
    assert cls.attack_params == list(PGD.params)
    assert set(cls._estimator_requirements) == {BaseEstimator, LossGradientsMixin, ClassifierMixin}
    with pytest.raises(AttributeError):
        advinterp_art.NoSuchAttack
    with pytest.raises(ParameterError, match="ART adapter"):
        as_art_evasion_attack("art.pgd")
    with pytest.raises(UnknownComponentError):
        art_attack("no_such_attack", toy_model().to_art())


def test_evasion_attack_numpy_in_numpy_out(model, data):
    x, y, _ = data
    clf = model.to_art()
    attack = advinterp_art.PGDAttack(clf, eps=8 / 255, eps_step=2 / 255, max_iter=5)
    out = attack.generate(x.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == tuple(x.shape)
    # y=None attacks the predictions, like advinterp's generate(model, x)
    ref = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=5).generate(model, x)
    np.testing.assert_allclose(out, ref.x_adv.numpy(), atol=1e-6, rtol=0)
    # one-hot or index labels, float64 stays float64
    a = attack.generate(x.double().numpy(), y=np.eye(12)[y.numpy()])
    b = attack.generate(x.double().numpy(), y=y.numpy())
    assert a.dtype == np.float64 and np.array_equal(a, b)
    assert np.abs(a - x.numpy()).max() <= 8 / 255 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert (clf.predict(out).argmax(1) != y.numpy()).mean() >= 0.5


def test_evasion_attack_params_are_advinterps():
    clf = toy_model().to_art()
    with pytest.raises(ParameterError, match="eps"):
        advinterp_art.PGDAttack(clf, eps=-1)
    attack = advinterp_art.PGDAttack(clf, eps=0.1)
    with pytest.raises(ParameterError, match="eps"):
        attack.set_params(eps=-1)
    assert attack.eps == 0.1  # a rejected set_params changes nothing
    with pytest.raises(ParameterError, match="no such parameter"):
        attack.set_params(epsilon=0.1)
    attack.eps = -1  # ART style: set the attribute, then check
    with pytest.raises(ParameterError, match="eps"):
        attack._check_params()
    attack.set_params(eps=0.2, max_iter=2)
    assert attack.attack.eps == 0.2 and attack.attack.max_iter == 2
    x, _ = toy_data()
    with pytest.raises(ParameterError, match="mask"):  # a support of the wrong size
        attack.generate(x.numpy(), mask=np.ones((5, 5), np.float32))
    with pytest.raises(ParameterError, match="x"):
        attack.generate(x.numpy() * 3)


def test_evasion_attack_targeted(model, data):
    x, y, t = data
    clf = model.to_art()
    attack = art_attack("pgd", clf, eps=16 / 255, eps_step=2 / 255, max_iter=20, targeted=True)
    assert attack.targeted
    out = attack.generate(x.numpy(), y=np.eye(12, dtype=np.float32)[t.numpy()])
    assert (clf.predict(out).argmax(1) == t.numpy()).mean() >= 0.75
    with pytest.raises(ParameterError, match="y"):
        attack.generate(x.numpy())  # targeted needs targets
    # an image already classified as its target is returned unchanged, the others attacked
    pred = clf.predict(x.numpy()).argmax(1)
    t2 = t.numpy().copy()
    t2[0] = pred[0]
    out2 = attack.generate(x.numpy(), y=t2)
    assert np.array_equal(out2[0], x.numpy()[0])
    np.testing.assert_allclose(out2[1:], out[1:], atol=1e-6)


def test_every_native_attack_runs_in_art():
    m = toy_model()
    clf = m.to_art()
    x, y = toy_data()
    natives = native_attacks()
    assert "pgd" in natives and not any(n.startswith("art.") for n in natives)
    for name, cls in natives.items():
        ev = getattr(advinterp_art, evasion_class_name(cls))
        assert ev is as_art_evasion_attack(cls)
        params = {k: v for k, v in cls.conformance_params.items() if k != "targeted"}
        labels = y.numpy()
        if "targeted" in cls.params and not cls.params["targeted"].check(False):  # targeted-only (a2e)
            params["targeted"], labels = True, ((m.predict(x) + 1) % 4).numpy()  # ART's y: the targets
        out = art_attack(name, clf, **params).generate(x.numpy(), y=labels)
        assert out.shape == tuple(x.shape) and out.dtype == np.float32, name
        if cls.supports_mask:
            mask = np.zeros((4, 1, 16, 16), np.float32)
            mask[..., 4:12, 4:12] = 1
            out = art_attack(name, clf, **params).generate(x.numpy(), y=y.numpy(), mask=mask)
            assert np.abs((out - x.numpy()) * (1 - mask)).max() == 0, name


def test_adversarial_trainer_with_advinterp_pgd(model):
    from art.defences.trainer import AdversarialTrainer

    x, y = (t.numpy() for t in advinterp.get_dataset("synthetic", n=64, split="train").tensors())
    module = copy.deepcopy(model.module)
    student = advinterp.ModelAdapter(module, mean=model.mean, std=model.std, nb_classes=model.nb_classes,
                                     input_shape=model.input_shape)
    clf = student.to_art(optimizer=torch.optim.Adam(module.parameters(), lr=1e-3))
    attack = advinterp_art.PGDAttack(clf, eps=8 / 255, eps_step=4 / 255, max_iter=2, num_random_init=1)
    x_adv = attack.generate(x[:8])
    assert 0 < np.abs(x_adv - x[:8]).max() <= 8 / 255 + 1e-6  # the wrapper really attacks
    before = [p.detach().clone() for p in module.parameters()]
    reference = [p.detach().clone() for p in model.module.parameters()]
    np.random.seed(0)
    AdversarialTrainer(clf, attack, ratio=1.0).fit(x, np.eye(12, dtype=np.float32)[y], nb_epochs=1, batch_size=32)
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters())), "training changed nothing"
    assert all(torch.equal(a, p) for a, p in zip(reference, model.module.parameters())), "the original changed"
    assert all(p.requires_grad for p in module.parameters())  # generate() gave the parameters back
    out = attack.generate(x[:8])
    assert out.shape == x[:8].shape and np.abs(out - x[:8]).max() <= 8 / 255 + 1e-6
