"""Refined attacks (PSE paper, Appendix 3, eq. 11): the registered supports S1/S2, custom
supports, the ``refine`` analyzer, ``refine_attack`` and the ``Refinement`` result (Table A1)."""
import numpy as np
import pytest
import torch

import advinterp
from advinterp import ParameterError, UnknownComponentError, hookimpl
from advinterp.analyzers.pse import PSEAnalyzer
from advinterp.analyzers.refine import Refinement, refine_attack, table_a1
from advinterp.testing import check_support

CHEAP_CW = {"targeted": True, "binary_search_steps": 2, "max_iter": 15, "learning_rate": 0.05, "initial_const": 1.0}
PSE16 = PSEAnalyzer(size=16)  # S1 on 4x4 grids of 16 px: cheaper than the default 16x16 grids of 4 px


def _has_cam():
    return advinterp.get_registry().has("explainer", "cam")


@pytest.fixture(scope="module")
def clean():
    x, y = advinterp.get_dataset("synthetic", n=3, split="test").tensors()
    return x, y, (y + 5) % 12


@pytest.fixture(scope="module")
def cw_batch(synthetic_model, clean):
    x, y, t = clean
    return advinterp.get_attack("cw_l2", **CHEAP_CW).generate(synthetic_model, x, y, t)


def centre_square(model, batch, **context):
    """The centre half of each side (a custom support for the tests)."""
    n, _, h, w = batch.x0.shape
    mask = torch.zeros(n, 1, h, w, dtype=torch.bool)
    mask[:, :, h // 4:3 * h // 4, w // 4:3 * w // 4] = True
    return mask


class _CentrePlugin:
    @hookimpl
    def advinterp_register_supports(self, register):
        register(centre_square, "test.centre")


# ---------------------------------------------------------------------------- the supports
@pytest.mark.filterwarnings("ignore:CAM on toy")  # the toy CNN has a functional ReLU before its pooling
def test_s1_and_s2_are_registered_and_conform():
    assert {"S1", "S2"} <= {i.name for i in advinterp.list_components("support")}
    check_support(advinterp.get_support("S1"))
    if not _has_cam():
        pytest.skip("S2 needs the captum plugin's cam explainer")
    check_support(advinterp.get_support("S2"))


def test_check_support_catches_a_bad_rule():
    with pytest.raises(AssertionError, match="bool"):
        check_support(lambda model, batch, **context: centre_square(model, batch).float())
    with pytest.raises(AssertionError, match="shape"):
        check_support(lambda model, batch, **context: centre_square(model, batch)[:, 0])


def test_unknown_support_names_close_matches(synthetic_model, cw_batch):
    with pytest.raises(UnknownComponentError, match="Did you mean 'S1'"):
        advinterp.get_support("S1x")
    with pytest.raises(UnknownComponentError, match="Did you mean 'S1'"):
        advinterp.get_analyzer("refine", supports=["S1x"]).analyze(synthetic_model, cw_batch)
    with pytest.raises(UnknownComponentError, match="Known supports: S1, S2"):
        refine_attack(advinterp.get_attack("cw_l2", **CHEAP_CW), synthetic_model, cw_batch, supports=("S3",))


def test_s1_s2_rules_validate_their_context(synthetic_model, cw_batch):
    s1, s2 = advinterp.get_support("S1"), advinterp.get_support("S2")
    with pytest.raises(ParameterError, match="PSEResult of the unrefined batch"):
        s1(synthetic_model, cw_batch, pse="x")
    other = PSE16.analyze(synthetic_model, cw_batch[:2])
    with pytest.raises(ParameterError, match="It holds 2 images"):
        s1(synthetic_model, cw_batch, pse=other)
    with pytest.raises(ParameterError, match="for the 3 images"):
        s2(synthetic_model, cw_batch, region=np.ones((2, 64, 64), dtype=bool))
    with pytest.raises(ParameterError, match="Upsample"):
        s2(synthetic_model, cw_batch, region=np.ones((3, 8, 8), dtype=bool))
    res = PSEAnalyzer(size=16, fraction=0.5).analyze(synthetic_model, cw_batch)
    assert torch.equal(s1(synthetic_model, cw_batch, pse=res), res.s1_mask(0.5))  # the result's own fraction
    assert torch.equal(s1(synthetic_model, cw_batch, pse=res, fraction=0.1), res.s1_mask(0.1))


# ---------------------------------------------------------------------------- refine_attack
def test_refine_attack_under_s1_and_s2(synthetic_model):
    x, y = advinterp.get_dataset("synthetic", n=2, split="test").tensors()
    t = (y + 5) % 12
    cw = advinterp.get_attack("cw_l2", **CHEAP_CW)
    region = np.zeros((2, 64, 64), dtype=bool)
    region[:, 16:48, 16:48] = True
    pse = PSEAnalyzer(size=16)
    res = refine_attack(cw, synthetic_model, x, y, t, supports=("S1", "S2"), pse=pse, region=region)
    s1 = pse.analyze(synthetic_model, res.batches["original"]).s1_mask()
    assert torch.equal(res.batches["S1"].delta * ~s1, torch.zeros_like(x))
    assert (res.batches["S2"].delta[:, :, :16] == 0).all() and (res.batches["S2"].delta[:, :, 16:48, 16:48] != 0).any()
    np.testing.assert_allclose(res.support_share["S2"], [0.25, 0.25])
    np.testing.assert_allclose(res.support_share["S1"], s1.float().flatten(1).mean(1).numpy())
    rows = res.rows()
    assert [r["support"] for r in rows] == ["S1", "S2"]
    for r in rows:
        assert r["l0_refined"] <= r["l0_original"] or np.isnan(r["l0_refined"])
        assert {"l1_original", "l2_refined", "linf_refined", "asr_refined", "asr_original"} <= set(r)
    assert rows[0]["asr_refined"] == pytest.approx(float(res.batches["S1"].success.float().mean()))
    assert "S2" in table_a1([res])
    # a precomputed unrefined batch is reused as is
    again = refine_attack(cw, synthetic_model, res.batches["original"], supports="S2", region=region)
    assert again.batches["original"] is res.batches["original"] and isinstance(again, Refinement)
    from study_fixtures import Unrestrictable

    with pytest.raises(ParameterError, match="supports_mask"):
        refine_attack(Unrestrictable(), synthetic_model, x, y)
    with pytest.raises(ParameterError, match="supports"):
        refine_attack(cw, synthetic_model, res.batches["original"], supports=())
    with pytest.raises(ParameterError, match="table_a1"):
        table_a1([res, "x"])


# ---------------------------------------------------------------------------- the analyzer
@pytest.fixture(scope="module")
def refined(synthetic_model, cw_batch):
    """The ``refine`` analyzer on the C&W batch itself (attack=None), under S1 and S2."""
    supports = ["S1", "S2"] if _has_cam() else ["S1"]
    return advinterp.get_analyzer("refine", supports=supports).analyze(synthetic_model, cw_batch, pse=PSE16)


def test_analyzer_on_the_batch_equals_refine_attack_bit_for_bit(synthetic_model, cw_batch, refined):
    supports = list(refined.refined)
    assert type(advinterp.get_analyzer("refine")).describe().startswith("Re-runs an attack")
    ref = refine_attack(advinterp.get_attack("cw_l2", **CHEAP_CW), synthetic_model, cw_batch, supports=supports,
                        pse=PSE16)
    assert refined.batches["original"] is cw_batch and supports[0] == "S1"
    for k in ["original", *supports]:
        assert torch.equal(refined.batches[k].x_adv, ref.batches[k].x_adv), k
    assert refined.to_dict() == ref.to_dict()
    s1 = PSE16.analyze(synthetic_model, cw_batch).s1_mask()
    assert torch.equal(refined.batches["S1"].delta * ~s1, torch.zeros_like(cw_batch.x0))


def test_analyzer_with_attack_runs_it_first(synthetic_model, cw_batch):
    pgd = advinterp.get_attack("pgd", targeted=True).generate(synthetic_model, cw_batch.x0, cw_batch.y_true,
                                                               cw_batch.y_target)
    params = {k: v for k, v in CHEAP_CW.items() if k != "max_iter"}
    an = advinterp.get_analyzer("refine", attack="cw_l2", attack_params={**params, "max_iter": 15})
    res = an.analyze(synthetic_model, pgd)
    original = res.batches["original"]
    # C&W was run unrefined on the pgd batch's images, labels and targets: cw_batch exactly
    assert original.attack == "cw_l2" and res.attack == "cw_l2" and torch.equal(original.x_adv, cw_batch.x_adv)
    assert torch.equal(original.y_target, pgd.y_target) and torch.equal(original.x0, pgd.x0)
    s1 = PSEAnalyzer().analyze(synthetic_model, original).s1_mask()  # S1 of the new run, not of pgd
    np.testing.assert_array_equal(res.support_share["S1"], s1.float().flatten(1).mean(1).numpy())
    assert torch.equal(res.batches["S1"].delta * ~s1, torch.zeros_like(pgd.x0))
    # the pgd batch itself is refined with pgd (its own attack), restricted to its S1
    own = advinterp.get_analyzer("refine", supports=["S1"]).analyze(synthetic_model, pgd)
    s1_pgd = PSEAnalyzer().analyze(synthetic_model, pgd).s1_mask()
    assert own.attack == "pgd" and torch.equal(own.batches["S1"].delta * ~s1_pgd, torch.zeros_like(pgd.x0))


def test_context_describing_the_batch_is_refused_with_attack(synthetic_model, cw_batch):
    pse = PSE16.analyze(synthetic_model, cw_batch)
    an = advinterp.get_analyzer("refine", attack="cw_l2", attack_params=CHEAP_CW)
    with pytest.raises(ParameterError, match="pse=") as e:
        an.analyze(synthetic_model, cw_batch, pse=pse)
    assert "attack=None" in str(e.value)
    with pytest.raises(ParameterError, match="region"):
        an.analyze(synthetic_model, cw_batch, region=np.ones((3, 64, 64), dtype=bool))
    with pytest.raises(ParameterError, match="no such context"):
        advinterp.get_analyzer("refine").analyze(synthetic_model, cw_batch, maps={})
    # without attack= the context is the batch's: S1 from the given result
    res = advinterp.get_analyzer("refine").analyze(synthetic_model, cw_batch, pse=pse)
    np.testing.assert_allclose(res.support_share["S1"], pse.s1_mask().float().flatten(1).mean(1).numpy())


def test_parameters_are_validated():
    with pytest.raises(ParameterError, match="attack_params"):
        advinterp.get_analyzer("refine", attack_params={"max_iter": 3})  # without attack=
    with pytest.raises(ParameterError, match="supports"):
        advinterp.get_analyzer("refine", supports=[])
    with pytest.raises(ParameterError, match="supports"):
        advinterp.get_analyzer("refine", supports="S1")
    with pytest.raises(ParameterError, match="average_over"):
        advinterp.get_analyzer("refine", average_over="some")


def test_custom_support_plugin_is_usable_by_name(fresh_registry, synthetic_model, cw_batch):
    advinterp.register_plugin_object(_CentrePlugin(), "test-centre")
    assert advinterp.get_support("test.centre") is centre_square
    check_support(centre_square)
    res = advinterp.get_analyzer("refine", supports=["test.centre"]).analyze(synthetic_model, cw_batch)
    mask = centre_square(synthetic_model, cw_batch)
    delta = res.batches["test.centre"].delta
    assert torch.equal(delta * ~mask, torch.zeros_like(delta)) and (delta * mask != 0).any()
    np.testing.assert_array_equal(res.support_share["test.centre"], [0.25] * 3)
    assert [r["support"] for r in res.rows()] == ["test.centre"]


def test_a_rule_returning_a_bad_mask_is_named(fresh_registry, synthetic_model, cw_batch):
    class Bad:
        @hookimpl
        def advinterp_register_supports(self, register):
            register(lambda model, batch, **context: centre_square(model, batch).float(), "test.float")

    advinterp.register_plugin_object(Bad(), "test-bad")
    with pytest.raises(ParameterError, match="support 'test.float'"):
        advinterp.get_analyzer("refine", supports=["test.float"]).analyze(synthetic_model, cw_batch)


# ---------------------------------------------------------------------------- the result
def test_refinement_take_and_merge_round_trip(refined, tmp_path):
    res = refined
    assert Refinement.mergeable()
    head, tail = res.take(slice(0, 2)), res.take(slice(2, None))
    assert len(head.original.success) == 2 and len(tail.batches["S1"]) == 1
    assert tail.support_share["S1"].shape == (1,) and tail.refined["S1"].l2.shape == (1,)
    assert Refinement.merge([head, tail]).to_dict() == res.to_dict()
    one = res.take(1)
    assert torch.equal(one.batches["S1"].x_adv, res.batches["S1"].x_adv[1:2])
    assert Refinement.load(res.save(tmp_path / "r.pt")).to_dict() == res.to_dict()
