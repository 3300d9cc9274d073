"""AdversarialBatch.norms by hand (issue 11: l1 is a sum, l0 a count above tol, linf a max)."""
import math

import pytest
import torch

from advinterp import AdversarialBatch


def test_norms_by_hand_on_a_small_delta():
    x0 = torch.full((2, 2, 2, 2), 0.5, dtype=torch.float64)
    delta = torch.zeros_like(x0)
    delta[0, 0, 0, 0], delta[0, 0, 0, 1], delta[0, 1, 1, 1] = 0.25, -0.5, 0.125     # image 0: 3 entries
    delta[1, 1, 0, 0] = -0.375                                                      # image 1: 1 entry
    b = AdversarialBatch(x0=x0, x_adv=x0 + delta, y_true=torch.tensor([0, 1]), attack="hand")
    n = b.norms()
    assert set(n) == {"l0", "l1", "l2", "linf"}
    assert n["l0"].tolist() == [3.0, 1.0]
    assert n["l1"].tolist() == [0.25 + 0.5 + 0.125, 0.375]                          # a sum, not a mean
    assert n["l2"].tolist() == pytest.approx([math.sqrt(0.0625 + 0.25 + 0.015625), 0.375], rel=1e-15)
    assert n["linf"].tolist() == [0.5, 0.375]
    # rows() averages those per-image norms over the batch
    row = b.rows()[0]
    assert row["l1"] == pytest.approx((0.875 + 0.375) / 2) and row["l0"] == 2.0 and row["linf"] == 0.4375


def test_l0_counts_strictly_above_tol():
    x0 = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    xa = torch.tensor([[[[0.0, 0.25, 0.5, 0.125]]]], dtype=torch.float64)
    b = AdversarialBatch(x0=x0, x_adv=xa, y_true=torch.tensor([0]), attack="hand")
    assert b.norms(tol=0.25)["l0"].tolist() == [1.0]     # 0.25 is not above 0.25
    assert b.norms(tol=0.0)["l0"].tolist() == [3.0]
