"""The two shipped models: loaded with weights_only, accurate, and the robust one robust."""
import torch

import advinterp
from advinterp.models.synthetic_cnn import WEIGHTS_DIR, checkpoint_meta


def test_checkpoints_are_plain_tensors_and_small():
    for name in ("synthetic_cnn.pt", "synthetic_cnn_robust.pt"):
        path = WEIGHTS_DIR / name
        ckpt = torch.load(path, weights_only=True)
        assert set(ckpt) >= {"state_dict", "num_classes", "width", "mean", "std", "meta"}
        assert path.stat().st_size < 2_000_000


def test_clean_accuracy_at_least_95_percent(synthetic_model, synthetic_test_data):
    x, y = synthetic_test_data
    acc = synthetic_model.accuracy(x, y)
    assert acc >= 0.95, acc
    # the number stored with the checkpoint (and in docs/models.md) is what we measure
    assert abs(acc - checkpoint_meta()["clean_accuracy"]) < 0.02


def test_robust_model_is_more_robust(synthetic_model, synthetic_test_data):
    x, y = synthetic_test_data
    x, y = x[:100], y[:100]
    robust = advinterp.get_model("synthetic-cnn-robust")
    pgd = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=10, num_random_init=1)
    acc_nat = float((pgd.generate(synthetic_model, x, y).y_adv == y).float().mean())
    acc_rob = float((pgd.generate(robust, x, y).y_adv == y).float().mean())
    assert acc_rob > acc_nat + 0.3, (acc_nat, acc_rob)
    assert robust.accuracy(x, y) > 0.6
