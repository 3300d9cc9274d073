import numpy as np
import pytest
import torch

import advinterp
from advinterp import AdversarialBatch, ParameterError
from advinterp.ablation import grid_boxes
from advinterp.attacks.refine import refine
from advinterp.supports import grids_above_beta, support_from_region, support_from_scores


def test_beta_footnote_3_by_hand():
    # ascending 1,2,3,4 (sum 10): cumulative 0.1, 0.3, 0.6, 1.0 -> k=2, beta = 2 -> keep {3, 4}
    s = torch.tensor([[3.0, 1.0, 4.0, 2.0]])
    assert grids_above_beta(s).tolist() == [[True, False, True, False]]
    # 0.25 of the mass at once: 5,5,5,5 -> beta = 5 at k=2 -> nothing strictly above
    assert not grids_above_beta(torch.full((1, 4), 5.0)).any()
    # fraction 0 keeps everything above the smallest
    assert grids_above_beta(torch.tensor([[0.0, 1.0, 2.0]]), 0.0).tolist() == [[False, True, True]]
    assert not grids_above_beta(torch.zeros(1, 3)).any()


def test_support_from_scores_is_union_of_kept_grids():
    boxes = grid_boxes(4, 4, 2, 2)  # four 2x2 quadrants
    m = support_from_scores(torch.tensor([[3.0, 1.0, 4.0, 2.0], [0, 0, 0, 9.0]]), boxes, (4, 4))
    expect0 = torch.zeros(4, 4, dtype=torch.bool)
    expect0[0:2, 0:2] = True  # grid 0 (s=3)
    expect0[2:4, 0:2] = True  # grid 2 (s=4)
    assert torch.equal(m[0, 0], expect0)
    assert m[1, 0].sum() == 0  # 0,0,0,9: cumulative reaches 30 % only at 9 itself -> beta=9
    with pytest.raises(ParameterError, match="one score per grid"):
        support_from_scores(torch.ones(1, 3), boxes, (4, 4))
    with pytest.raises(ParameterError, match="non-negative"):
        support_from_scores(-torch.ones(1, 4), boxes, (4, 4))


def test_support_from_region():
    r = torch.zeros(2, 5, 5)
    r[:, 1:3, 1:3] = 0.7
    m = support_from_region(r, (5, 5))
    assert m.shape == (2, 1, 5, 5) and m.sum() == 8
    with pytest.raises(ParameterError, match="Upsample"):
        support_from_region(r, (10, 10))


def test_refine_refuses_attacks_without_masks():
    from advinterp.testing import toy_batch, toy_model

    m = toy_model()
    with pytest.raises(ParameterError, match="supports_mask"):
        from study_fixtures import Unrestrictable

        refine(Unrestrictable(), m, toy_batch(m), torch.ones(16, 16))


def test_attack_metrics_by_hand():
    x0 = torch.zeros(2, 1, 2, 2)
    xa = x0.clone()
    xa[0, 0, 0, 0], xa[0, 0, 1, 1] = 0.3, 0.4     # l0 2, l1 0.7, l2 0.5, linf 0.4
    xa[1, 0, 0, 1] = 0.1                           # l0 1, l1 0.1, l2 0.1, linf 0.1
    b = AdversarialBatch(x0, xa, torch.tensor([0, 1]), success=torch.tensor([True, False]), attack="x")
    from advinterp.testing import toy_model

    r = advinterp.get_analyzer("attack_metrics").analyze(toy_model(), b)
    np.testing.assert_allclose(r.l0, [2, 1]); np.testing.assert_allclose(r.l1, [0.7, 0.1], rtol=1e-6)
    np.testing.assert_allclose(r.l2, [0.5, 0.1], rtol=1e-6); np.testing.assert_allclose(r.linf, [0.4, 0.1], rtol=1e-6)
    row = r.rows()[0]
    assert row["asr"] == 0.5 and row["l2"] == pytest.approx(0.5)  # averaged over the successful image
    row_all = advinterp.get_analyzer("attack_metrics", average_over="all").analyze(toy_model(), b).rows()[0]
    assert row_all["l2"] == pytest.approx(0.3)


def test_refine_with_cw_keeps_delta_inside_support(synthetic_model):
    """eq. (11) end to end: S1 from hand-made grid scores, C&W re-run under it."""
    from advinterp.data import random_targets

    x, y = advinterp.get_dataset("synthetic", n=6, split="test").tensors()
    t = random_targets(y, 12, torch.Generator().manual_seed(0))
    cw = advinterp.get_attack("cw_l2", targeted=True, binary_search_steps=3, max_iter=30, learning_rate=0.05,
                              initial_const=1.0)
    original = cw.generate(synthetic_model, x, y, t)
    boxes = grid_boxes(64, 64, 16, 16)
    # score each grid by the original perturbation's strength there (a stand-in for s_i)
    scores = torch.stack([original.delta[:, :, y0:y1, x0:x1].flatten(1).norm(dim=1) for y0, x0, y1, x1 in boxes.tolist()], 1)
    support = support_from_scores(scores, boxes, (64, 64))
    refined = refine(cw, synthetic_model, original, support)
    outside = (~support).expand_as(refined.delta)
    assert refined.delta[outside].abs().max() == 0
    assert torch.equal(refined.y_target, t) and torch.equal(refined.x0, x)
    r0 = advinterp.get_analyzer("attack_metrics").analyze(synthetic_model, original)
    r1 = advinterp.get_analyzer("attack_metrics").analyze(synthetic_model, refined)
    assert r1.l0.mean() < r0.l0.mean()  # fewer perturbed entries (Table A1's l0 column)
    assert r1.asr >= 0.5
