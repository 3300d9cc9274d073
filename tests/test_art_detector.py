"""advinterp-art B9: the clean-vs-adversarial detector (ART BinaryInputDetector; Ding et al.
Sec. 4.7, Fig. 5) on the embedded world, per attack."""
import time

import numpy as np
import pytest
import torch

pytest.importorskip("art")
pytest.importorskip("sklearn")
import advinterp  # noqa: E402
from advinterp import ParameterError, model_fingerprint  # noqa: E402
from advinterp_art.detector import AdversarialDetection, evaluate_detector, fit_detector  # noqa: E402

N_PAIRS = 128
ATTACKS = {"pgd": {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 5}, "fgsm": {"eps": 8 / 255}}
# the defaults (Adam lr 1e-3, batch 32, 30 epochs: 120 steps on 64 training pairs), a narrower CNN
DETECTOR = {"width": 8, "examples": 2}


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(2)
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=N_PAIRS, split="test").tensors()
    return model, x, y


@pytest.fixture(scope="module")
def results(world):
    model, x, y = world
    out = {}
    for name, params in ATTACKS.items():
        batch = advinterp.get_attack(name, **params).generate(model, x, y)
        before = model_fingerprint(model)
        t0 = time.perf_counter()
        res = advinterp.get_analyzer("art.detector", **DETECTOR).analyze(model, batch)
        out[name] = (batch, res, time.perf_counter() - t0)
        assert model_fingerprint(model) == before
    return out


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_detector_separates_clean_from_adversarial(results, attack):
    batch, res, took = results[attack]
    assert isinstance(res, AdversarialDetection)
    print(f"\n{attack}: AUC {res.auc:.3f}, clean {res.acc_clean:.3f}, adversarial {res.acc_adv:.3f} "
          f"({len(res.train_index)} training / {len(res.val_index)} held-out pairs, {took:.1f}s)")
    assert len(res.train_index) == len(res.val_index) == N_PAIRS // 2
    assert not set(res.train_index) & set(res.val_index)
    assert res.auc > 0.9, res.rows()


def test_per_class_accuracy_agrees_with_the_predictions(results):
    batch, res, _ = results["pgd"]
    assert res.acc_clean == pytest.approx(float(np.mean(res.pred_clean == 0)))
    assert res.acc_adv == pytest.approx(float(np.mean(res.pred_adv == 1)))
    assert res.accuracy == pytest.approx((res.acc_clean + res.acc_adv) / 2)
    assert np.array_equal(res.pred_clean, (res.p_clean > 0.5).astype(np.int64))
    assert np.array_equal(res.pred_adv, (res.p_adv > 0.5).astype(np.int64))
    # the same numbers from the rebuilt detector on the held-out images
    det = res.detector()
    va = torch.as_tensor(res.val_index)
    ev = evaluate_detector(det, batch.x0[va], batch.x_adv[va])
    assert ev["auc"] == pytest.approx(res.auc) and ev["acc_clean"] == res.acc_clean and ev["acc_adv"] == res.acc_adv
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.zeros(len(va)), np.ones(len(va))], np.r_[res.p_clean, res.p_adv])
    assert auc == pytest.approx(res.auc)
    assert res.fpr[0] == 0 and res.tpr[-1] == 1 and np.all(np.diff(res.fpr) >= 0)


def test_the_detector_cam_is_the_detectors(results, world):
    model = world[0]
    batch, res, _ = results["pgd"]
    det = res.detector()
    assert det.nb_classes == 2 and det.input_shape == (3, 64, 64) and det.cam_layer == "layer4"
    cam = advinterp.get_explainer("cam")
    k = len(res.example_index)
    assert k == 2 and res.detector_cam.shape == (k, 2, 64, 64)
    imgs = res.example_images.reshape(-1, 3, 64, 64)
    assert torch.equal(res.example_images[:, 0], batch.x0[torch.as_tensor(res.example_index)])
    assert torch.equal(res.example_images[:, 1], batch.x_adv[torch.as_tensor(res.example_index)])
    want = cam.explain(det, imgs, 1).maps.reshape(k, 2, 64, 64)
    assert torch.allclose(res.detector_cam, want, atol=1e-5)
    pred = model.predict(imgs)
    assert np.array_equal(res.classifier_pred.reshape(-1), pred.numpy())
    mine = cam.explain(model, imgs, pred).maps.reshape(k, 2, 64, 64)
    assert torch.allclose(res.classifier_cam, mine, atol=1e-5)
    assert not torch.allclose(res.detector_cam, res.classifier_cam, atol=1e-2)
    corr = np.corrcoef(res.detector_cam.flatten().numpy(), res.classifier_cam.flatten().numpy())[0, 1]
    print(f"\ncorrelation of the detector's and the classifier's CAM (pgd examples): {corr:.3f}")


def test_fit_detector_takes_any_size_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    xc = torch.rand(6, 3, 24, 24, generator=g) * 0.5
    xa = (xc + 0.3).clamp(0, 1)
    a = fit_detector(xc, xa, epochs=2, batch_size=4, width=4, seed=1, progress=False)
    b = fit_detector(xc, xa, epochs=2, batch_size=4, width=4, seed=1, progress=False)
    assert a.input_shape == (3, 24, 24) and a.logits(xc).shape == (6, 2)
    assert model_fingerprint(a)["weights"] == model_fingerprint(b)["weights"]
    with pytest.raises(ParameterError, match="x_adv"):
        fit_detector(xc, xa[:, :, :16, :16], epochs=1)
    with pytest.raises(ParameterError, match="x_clean"):
        fit_detector(xc[:, :1], xa, epochs=1)


def test_bad_values(world):
    model, x, y = world
    b = advinterp.AdversarialBatch.from_pair(x[:1], x[:1], y[:1])
    with pytest.raises(ParameterError, match="2 pairs"):
        advinterp.get_analyzer("art.detector").analyze(model, b)
    with pytest.raises(ParameterError, match="train_fraction"):
        advinterp.get_analyzer("art.detector", train_fraction=1.0)


def test_report_section(results, tmp_path):
    from advinterp.api import ReportGroup, Run, StepView

    run = Run(out=tmp_path, title="t", classes=None)
    steps = [StepView(id=f"detector.{a}", kind="analyzer", name="art.detector", params={}, spec={}, refs={}, run=run,
                      _result=results[a][1]) for a in sorted(results)]
    sec = advinterp.get_registry().pm.hook.advinterp_report_section(
        group=ReportGroup("analyzer", "art.detector", steps), run=run)
    assert sec is not None and "Fig. 5" in sec.title
    assert [r["class"] for r in sec.tables[0][1]][:3] == ["clean", "adversarial", "both (balanced)"]
    assert len(sec.figures) == 1 + len(steps)
    for _, path in sec.figures:
        assert (tmp_path / path).stat().st_size > 1000
    assert set(run.summary["detector"]) == {s.id for s in steps}
