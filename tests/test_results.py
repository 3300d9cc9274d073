import dataclasses
import json

import numpy as np
import pytest
import torch

from advinterp import AdversarialBatch, AdvinterpError, Result, ResultFileError
from advinterp.analyzers.activation_distance import ActivationDistanceResult
from advinterp.exceptions import ParameterError


def _batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 8, 8, generator=g)
    xa = (x0 + 0.1 * torch.randn(3, 3, 8, 8, generator=g)).clamp(0, 1)
    return AdversarialBatch(x0, xa, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]),
                            torch.tensor([True, False, True]), torch.tensor([1, 1, 0]), "pgd", {"eps": 0.1})


def test_adversarial_batch_save_load_round_trip(tmp_path):
    b = _batch()
    path = b.save(tmp_path / "sub" / "batch.pt")
    raw = torch.load(path, weights_only=True)  # safe to load without trusting code
    assert raw["format"].startswith("advinterp-result")
    back = AdversarialBatch.load(path)
    for f in dataclasses.fields(b):
        a, c = getattr(b, f.name), getattr(back, f.name)
        assert torch.equal(a, c) if isinstance(a, torch.Tensor) else a == c
    assert torch.allclose(back.delta, b.x_adv - b.x0)


def test_adversarial_batch_views():
    b = _batch()
    assert len(b[1:]) == 2 and torch.equal(b[0].x0, b.x0[:1]) and b.targeted
    n = b.norms()
    d = (b.x_adv - b.x0).flatten(1)
    assert torch.allclose(n["l2"], d.norm(dim=1)) and torch.allclose(n["linf"], d.abs().amax(1))
    assert torch.equal(n["l0"], ((b.x_adv - b.x0).abs() > 1e-8).flatten(1).sum(1).float())
    assert n["l0"].max() <= 3 * 8 * 8
    row = b.rows()[0]
    assert row["asr"] == pytest.approx(2 / 3) and row["l2"] == pytest.approx(float(n["l2"].mean()))
    json.dumps(b.to_dict())
    assert "asr" in b.table()
    with pytest.raises(ParameterError, match="y_true"):
        AdversarialBatch(b.x0, b.x_adv, torch.tensor([0]))
    untargeted = dataclasses.replace(b, y_target=None)
    assert torch.equal(untargeted.target, b.y_adv)


def test_result_with_numpy_and_nested_values(tmp_path):
    r = ActivationDistanceResult(("a", "b"), np.arange(6.0).reshape(3, 2), np.ones((3, 2), np.float32))
    back = Result.load(r.save(tmp_path / "r.pt"))
    assert isinstance(back, ActivationDistanceResult) and back.layers == ("a", "b")
    assert np.array_equal(back.distance, r.distance) and back.relative.dtype == np.float32
    assert r.mean() == {"a": 2.0, "b": 3.0}
    with pytest.raises(AdvinterpError, match="not a AdversarialBatch"):
        AdversarialBatch.load(tmp_path / "r.pt")


def test_load_refuses_non_result_classes(tmp_path):
    payload = {"format": "advinterp-result/1",
               "result": {"__dataclass__": "os:system", "fields": {"command": "echo hacked"}}}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ResultFileError, match="refusing to build os:system"):
        Result.load(tmp_path / "evil.pt")
