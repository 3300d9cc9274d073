import math

import pytest

from advinterp import Param, ParameterError
from advinterp.attacks.pgd import PGD


def test_uniform_message_names_value_and_expectation():
    with pytest.raises(ParameterError) as e:
        PGD(eps=-0.1)
    assert str(e.value) == "PGD: eps=-0.1 is invalid; expected a finite number >= 0.0."
    with pytest.raises(ParameterError, match=r"max_iter=1.5 is invalid; expected an integer >= 0"):
        PGD(max_iter=1.5)
    with pytest.raises(ParameterError, match=r"targeted='yes'"):
        PGD(targeted="yes")


def test_unknown_parameter_suggests_close_names():
    with pytest.raises(ParameterError) as e:
        PGD(epsilon=0.1)
    assert "epsilon" in str(e.value) and "Did you mean eps" in str(e.value)


def test_params_stored_as_attributes_and_round_trip():
    a = PGD(eps=0.1, max_iter=5)
    assert a.eps == 0.1 and a.max_iter == 5 and a.get_params()["eps_step"] == 0.1
    assert repr(a) == "PGD(eps=0.1, max_iter=5)"
    a.set_params(eps=0.2)
    assert a.eps == 0.2 and a.max_iter == 5
    with pytest.raises(ParameterError):
        a.set_params(eps=math.inf)
    assert a.eps == 0.2


@pytest.mark.parametrize("spec,good,bad", [
    (Param.number(1.0, low=0, high=1), [0, 0.5, 1], [-0.1, 1.1, float("nan"), True, "1"]),
    (Param.number(1.0, low=0, low_open=True), [1e-9], [0, -1]),
    (Param.integer(1, low=1, allow_none=True), [1, 7, None], [0, 2.0, False]),
    (Param.choice("a", ["a", "b"]), ["b"], ["c", None]),
    (Param.boolean(True), [False], [0, "True"]),
])
def test_param_kinds(spec, good, bad):
    for v in good:
        assert spec.validate("X", "p", v) == v
    for v in bad:
        with pytest.raises(ParameterError, match="X: p="):
            spec.validate("X", "p", v)
    for v in spec.invalid:
        with pytest.raises(ParameterError):
            spec.validate("X", "p", v)


def test_a_refused_cross_parameter_combination_leaves_the_component_as_it_was():
    """set_params validates each value, then the cross-parameter check; a refusal by the
    latter must not leave the new value set (PSE: suppression <= promotion)."""
    from advinterp.analyzers.pse import PSEAnalyzer

    a = PSEAnalyzer(suppression=-1.0, promotion=1.0)
    with pytest.raises(ParameterError, match="suppression"):
        a.set_params(suppression=2.0)
    assert a.suppression == -1.0 and a.promotion == 1.0
    with pytest.raises(ParameterError, match="stride"):
        a.set_params(size=4, stride=8)
    assert a.get_params() == PSEAnalyzer(suppression=-1.0, promotion=1.0).get_params()
