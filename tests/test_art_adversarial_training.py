"""advinterp-art B8: adversarial fine-tuning (Ding et al. Sec. 4.6, Tables 14-15) on the
embedded world: PGD (eps 8/255) pairs over the train split are the training set, PGD pairs
over the test split the validation set."""
import time

import numpy as np
import pytest
import torch

pytest.importorskip("art")
import advinterp  # noqa: E402
from advinterp import ParameterError, model_fingerprint  # noqa: E402
from advinterp.testing import ToyModelFailure, assert_model_unchanged, toy_batch, toy_model  # noqa: E402
from advinterp_art.adversarial_training import (AdversarialTraining, adversarial_finetune, load_adapter,  # noqa: E402
                                                save_adapter)

SIZES = [16, 32, 64]
PGD = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 5}


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(2)
    model = advinterp.get_model("synthetic-cnn")
    xtr, ytr = advinterp.get_dataset("synthetic", n=64, split="train").tensors()
    xte, yte = advinterp.get_dataset("synthetic", n=64, split="test").tensors()
    attack = advinterp.get_attack("pgd", **PGD)
    return model, attack.generate(model, xtr, ytr), attack.generate(model, xte, yte)


def test_adversarial_accuracy_rises_above_baseline_at_every_size(world):
    model, train, val = world
    before = model_fingerprint(model)
    t0 = time.perf_counter()
    res = advinterp.get_analyzer("art.adversarial_training", sizes=SIZES, epochs=3).analyze(model, train, val=val)
    took = time.perf_counter() - t0
    assert isinstance(res, AdversarialTraining) and res.validated_on == "val" and res.n_val == 64
    assert model_fingerprint(model) == before
    assert res.baseline_clean > 0.9 and res.baseline_adv < 0.2, (res.baseline_clean, res.baseline_adv)
    for row in res.rows():
        assert row["adv_acc"] > res.baseline_adv + 0.1, row
    print(f"\nadversarial training ({took:.1f}s, {res.epochs} epochs):\n{res.table()}")
    rows = res.paper_rows()
    assert [r["size"] for r in rows] == SIZES
    assert rows[0]["adversarial acc (baseline)"].endswith(f"({100 * res.baseline_adv:.1f}%)")
    back = AdversarialTraining.load(res.save(__import__("tempfile").mkdtemp() + "/r.pt"))
    assert np.array_equal(back.adv_acc, res.adv_acc) and back.sizes == res.sizes


def test_finetune_returns_a_new_adapter_and_leaves_the_model_alone(world):
    model, train, val = world
    module = model.module
    module.train()  # hand it over in training mode with grads, as the conformance checks do
    grads = [p for p in module.parameters() if p.grad is None]
    for p in grads:
        p.grad = torch.full_like(p, 0.5)
    try:
        before = model_fingerprint(model)
        tuned = adversarial_finetune(model, train.x_adv[:16], train.y_true[:16], epochs=1, seed=3)
        assert model_fingerprint(model) == before
    finally:
        module.eval()
        for p in grads:
            p.grad = None
    assert tuned is not model and tuned.module is not module
    assert tuned.mean == model.mean and tuned.std == model.std and tuned.input_shape == model.input_shape
    assert tuned.cam_layer == model.cam_layer and tuned.nb_classes == model.nb_classes
    assert not tuned.module.training and all(p.grad is None for p in tuned.module.parameters())
    assert model_fingerprint(tuned)["weights"] != before["weights"]
    # deterministic for a seed
    again = adversarial_finetune(model, train.x_adv[:16], train.y_true[:16], epochs=1, seed=3)
    assert model_fingerprint(again)["weights"] == model_fingerprint(tuned)["weights"]


def test_model_unchanged_when_training_raises():
    model = toy_model()
    batch = toy_batch(model)
    net = model.module
    net.calls, net.fail_at = 0, 2  # the deep copy inherits the counter: its 2nd training forward raises
    try:
        assert_model_unchanged(model, lambda: adversarial_finetune(model, batch.x_adv, batch.y_true, epochs=3,
                                                                   batch_size=2), ToyModelFailure)
    finally:
        net.fail_at = 0
    # and when the analyzer's training raises
    net.calls, net.fail_at = 0, 3
    try:
        assert_model_unchanged(model, lambda: advinterp.get_analyzer(
            "art.adversarial_training", sizes=[4], epochs=2, batch_size=2).analyze(model, batch), ToyModelFailure)
    finally:
        net.fail_at = 0


def test_saved_adapter_loads_with_weights_only_and_predicts_the_same(world, tmp_path):
    model, train, val = world
    tuned = adversarial_finetune(model, train.x_adv[:32], train.y_true[:32], epochs=1)
    path = save_adapter(tuned, tmp_path / "tuned.pt", meta={"recipe": "adversarial_finetune"})
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["num_classes"] == 12 and ckpt["meta"]["recipe"] == "adversarial_finetune"
    x = val.x_adv[:16]
    want = tuned.logits(x).detach()
    for loaded in (advinterp.get_model("synthetic-cnn", path=str(path)), load_adapter(path)):
        assert torch.allclose(loaded.logits(x).detach(), want, atol=1e-5)
        assert torch.equal(loaded.predict(x), tuned.predict(x))
    # any other module: a plain state_dict
    toy = toy_model()
    b = toy_batch(toy)
    t2 = adversarial_finetune(toy, b.x_adv, b.y_true, epochs=1, batch_size=2)
    p2 = save_adapter(t2, tmp_path / "toy.pt")
    sd = torch.load(p2, weights_only=True)
    assert set(sd) == set(toy.module.state_dict())
    back = load_adapter(p2, toy.module, mean=toy.mean, std=toy.std, input_shape=toy.input_shape)
    assert torch.allclose(back.logits(b.x_adv).detach(), t2.logits(b.x_adv).detach())
    with pytest.raises(ParameterError, match="module"):
        load_adapter(p2)


def test_on_the_fly_through_arts_adversarial_trainer(world):
    model, train, val = world
    before = model_fingerprint(model)
    tuned = adversarial_finetune(model, None, train.y_true[:16], x_clean=train.x0[:16], epochs=1, batch_size=8,
                                 on_the_fly="pgd", attack_params={**PGD, "max_iter": 2})
    assert model_fingerprint(model) == before
    assert model_fingerprint(tuned)["weights"] != before["weights"]
    res = advinterp.get_analyzer("art.adversarial_training", sizes=[8], epochs=1, batch_size=8, on_the_fly="pgd",
                                 attack_params={**PGD, "max_iter": 2}).analyze(model, train[:8], val=val[:16])
    assert res.on_the_fly == "pgd" and len(res.adv_acc) == 1 and np.isnan(res.train_loss).all()


def test_bad_values_name_the_value(world):
    model, train, val = world
    with pytest.raises(ParameterError, match="sizes"):
        advinterp.get_analyzer("art.adversarial_training", sizes=[128]).analyze(model, train[:8], val=val)
    with pytest.raises(ParameterError, match="val"):
        advinterp.get_analyzer("art.adversarial_training", sizes=[4]).analyze(model, train[:8],
                                                                              val=(val.x0, val.y_true))
    with pytest.raises(ParameterError, match="epochs"):
        adversarial_finetune(model, train.x_adv[:4], train.y_true[:4], epochs=0)
    with pytest.raises(ParameterError, match="betas"):
        adversarial_finetune(model, train.x_adv[:4], train.y_true[:4], epochs=1, betas=(0.9,))
    with pytest.raises(ParameterError, match="x_clean"):
        adversarial_finetune(model, train.x_adv[:4], train.y_true[:4], epochs=1, x_clean=train.x0[:3])
    with pytest.raises(ParameterError, match="x_clean"):
        adversarial_finetune(model, None, train.y_true[:4], epochs=1, on_the_fly="pgd")
    with pytest.raises(ParameterError, match="attack_params"):
        advinterp.get_analyzer("art.adversarial_training", attack_params={"eps": 0.1})


def test_report_section(tmp_path):
    from advinterp.api import ReportGroup, Run, StepView

    res = AdversarialTraining(sizes=(8, 16), clean_acc=np.array([0.8, 0.85]), adv_acc=np.array([0.3, 0.5]),
                              baseline_clean=1.0, baseline_adv=0.05, train_loss=np.zeros((2, 1)), n_val=32,
                              train_attack="pgd", val_attack="pgd")
    run = Run(out=tmp_path, title="t")
    step = StepView(id="advtrain", kind="analyzer", name="art.adversarial_training", params={}, spec={}, refs={},
                    run=run, _result=res)
    sec = advinterp.get_registry().pm.hook.advinterp_report_section(
        group=ReportGroup("analyzer", "art.adversarial_training", [step]), run=run)
    assert sec is not None and "Tables 14-15" in sec.title
    assert sec.tables[0][1][1] == {"size": 16, "clean acc (baseline)": "85.0% (100.0%)",
                                   "adversarial acc (baseline)": "50.0% (5.0%)"}
    assert (tmp_path / sec.figures[0][1]).stat().st_size > 1000
    assert run.summary["adversarial_training"]["advtrain"][0]["adv_gain"] == pytest.approx(0.25)
