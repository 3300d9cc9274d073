"""Issue 11 (hardening): numpy pairs, result files that cannot be read, hostile class names,
and the conformance suite's own messages."""
import dataclasses
import io
import sys

import numpy as np
import pytest
import torch

import advinterp
from advinterp import AdversarialBatch, Result, ResultFileError
from advinterp.analyzers.activation_distance import ActivationDistanceResult


def _result():
    return ActivationDistanceResult(("a", "b"), np.arange(6.0).reshape(3, 2), np.ones((3, 2), np.float32))


def _payload(result_value, fmt="advinterp-result/1", version="0.1.0"):
    payload = {"format": fmt, "result": result_value}
    if version is not None:
        payload["advinterp"] = version
    return payload


def _save(path, payload):
    torch.save(payload, path)
    return path


# ----------------------------------------------------------------------- item 6
def test_from_pair_accepts_numpy():
    from advinterp.testing import toy_model

    g = np.random.default_rng(0)
    x = g.random((2, 3, 16, 16), dtype=np.float32)
    b = AdversarialBatch.from_pair(x, x.copy(), np.array([0, 1], np.int32), model=toy_model(),
                                   y_target=np.array([1, 2]))
    assert isinstance(b.x0, torch.Tensor) and b.x0.dtype == torch.float32
    assert b.y_true.dtype == torch.long and b.y_target.dtype == torch.long and b.success.shape == (2,)
    with pytest.raises(advinterp.ParameterError, match="y_true.*integer class labels"):
        AdversarialBatch.from_pair(x, x, np.array([0.5, 1.0]))


# ----------------------------------------------------------------------- item 7
def test_saved_file_records_the_version(tmp_path):
    raw = torch.load(_result().save(tmp_path / "r.pt"), weights_only=True)
    assert raw["advinterp"] == advinterp.__version__ and raw["format"] == "advinterp-result/1"


def test_old_files_without_version_still_load(tmp_path):
    from advinterp.results import encode

    path = _save(tmp_path / "old.pt", _payload(encode(_result()), version=None))
    assert isinstance(Result.load(path), ActivationDistanceResult)


def test_truncated_file(tmp_path):
    data = _result().to_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultFileError) as e:
        Result.load(path)
    msg = str(e.value)
    assert str(path) in msg and "truncated or corrupt" in msg and "advinterp-result/1" in msg
    assert "Re-create it" in msg and e.value.path == path


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ResultFileError, match=r"empty\.pt: is empty \(0 bytes\).*reads advinterp-result/1"):
        Result.load(path)


def test_newer_format_names_both_versions(tmp_path):
    path = _save(tmp_path / "new.pt", _payload({}, fmt="advinterp-result/7", version="9.0.0"))
    with pytest.raises(ResultFileError) as e:
        Result.load(path)
    msg = str(e.value)
    assert str(path) in msg and "advinterp-result/7" in msg and "advinterp 9.0.0" in msg
    assert f"advinterp {advinterp.__version__} reads advinterp-result/1" in msg


def test_not_a_result_file(tmp_path):
    path = _save(tmp_path / "weights.pt", {"w": torch.zeros(2)})
    with pytest.raises(ResultFileError, match="weights.pt: is not an advinterp result file"):
        Result.load(path)


def test_extra_and_missing_fields(tmp_path):
    from advinterp.results import encode

    enc = encode(_result())
    enc["fields"]["smoothing"] = 0.5
    path = _save(tmp_path / "extra.pt", _payload(enc, version="0.9.0"))
    with pytest.raises(ResultFileError) as e:
        Result.load(path)
    msg = str(e.value)
    assert str(path) in msg and "'smoothing'" in msg and "does not define" in msg and "advinterp 0.9.0" in msg
    enc = encode(_result())
    del enc["fields"]["distance"]
    with pytest.raises(ResultFileError, match="required field.*'distance'"):
        Result.load(_save(tmp_path / "missing.pt", _payload(enc)))


def test_renamed_class(tmp_path):
    from advinterp.results import encode

    enc = encode(_result())
    enc["__dataclass__"] = "advinterp.analyzers.activation_distance:ActivationDistanceResultV2"
    path = _save(tmp_path / "renamed.pt", _payload(enc, version="0.2.0"))
    with pytest.raises(ResultFileError) as e:
        Result.load(path)
    msg = str(e.value)
    assert str(path) in msg and "ActivationDistanceResultV2" in msg and "renamed or removed" in msg
    assert "ActivationDistanceResult" in msg.split("result types of")[1] and "advinterp 0.2.0" in msg


# ----------------------------------------------------------------------- item 15
@pytest.mark.parametrize("name", ["this:Zen", "os:system", "subprocess:Popen"])
def test_hostile_class_names_import_nothing(tmp_path, name, capsys):
    mod = name.partition(":")[0]
    had = mod in sys.modules
    path = _save(tmp_path / "evil.pt", _payload({"__dataclass__": name, "fields": {"command": "echo hacked"}}))
    with pytest.raises(ResultFileError, match=f"refusing to build {name}.*nothing was imported"):
        Result.load(path)
    assert (mod in sys.modules) == had
    assert "Beautiful is better" not in capsys.readouterr().out


def test_this_is_never_imported(tmp_path):
    sys.modules.pop("this", None)
    before = set(sys.modules)
    path = _save(tmp_path / "zen.pt", _payload({"__dataclass__": "this:d", "fields": {}}))
    with pytest.raises(ResultFileError, match="'this' belongs to no loaded advinterp plugin"):
        Result.load(path)
    assert "this" not in sys.modules and not {m for m in set(sys.modules) - before if m == "this"}


def test_real_non_result_class_is_refused(tmp_path):
    for name in ("advinterp.registry:ComponentInfo", "advinterp.plugins:PluginStatus"):
        path = _save(tmp_path / "x.pt", _payload({"__dataclass__": name, "fields": {}}))
        with pytest.raises(ResultFileError, match=f"refusing to build {name}: it is not a result type"):
            Result.load(path)


def test_plugin_not_loaded(tmp_path):
    path = _save(tmp_path / "p.pt", _payload({"__dataclass__": "advinterp_nosuch.results:Thing", "fields": {}}))
    with pytest.raises(ResultFileError, match="module 'advinterp_nosuch.results' belongs to no loaded advinterp plugin.*Install \\(or enable\\) the advinterp plugin"):
        Result.load(path)


def test_nested_plugin_dataclasses_resolve():
    advinterp.get_registry()
    from advinterp.results import result_types

    names = set(result_types())
    for n in ("advinterp_dissect.dissection:LayerDissection", "advinterp_dissect.dissection:Vocabulary",
              "advinterp_dissect.analysis:LayerSensitivity", "advinterp_dissect.significance:SignificanceTest",
              "advinterp_dissect.probe:LayerTally"):
        assert n in names, n


def test_registered_nested_dataclass_round_trips(tmp_path):
    from typing import Any

    from advinterp.results import register_result_type

    @dataclasses.dataclass(frozen=True)
    class Inner:
        v: int

    @dataclasses.dataclass(frozen=True)
    class Outer(Result):
        inner: Any

    with pytest.raises(ResultFileError, match="Inner"):
        Result.load(Outer(Inner(3)).save(tmp_path / "o.pt"))
    register_result_type(Inner)
    assert Result.load(tmp_path / "o.pt").inner == Inner(3)


# ----------------------------------------------------------------------- items 16 and 25
from typing import Any  # noqa: E402

from advinterp.analyzers.activation_distance import ActivationDistance  # noqa: E402
from advinterp.components import Explainer  # noqa: E402
from advinterp.testing import check_component, check_model_unchanged, check_output, check_save_load  # noqa: E402


class _ToyExplainer(Explainer):
    name = "toy_explainer"

    def _explain(self, model, x, target):
        a = model.activations(x, [model.cam_layer])[model.cam_layer]
        return a.mean(1), model.cam_layer


class _NaNExplainer(_ToyExplainer):
    def _explain(self, model, x, target):
        m, layer = super()._explain(model, x, target)
        return m / 0 * 0, layer


class _FlatExplainer(_ToyExplainer):
    def _explain(self, model, x, target):
        m, layer = super()._explain(model, x, target)
        return m.mean((1, 2)), layer


@dataclasses.dataclass(frozen=True)
class _SetResult(Result):
    labels: Any


class _SetAnalyzer(ActivationDistance):
    name = "set_analyzer"

    def _analyze(self, model, batch, **context):
        return _SetResult({"cat", "dog"})


def test_toy_explainer_passes_check_output():
    check_output(_ToyExplainer)


def test_nan_maps_fail_with_a_message():
    with pytest.raises(AssertionError, match=r"maps of \d+ of 4 images contain NaN or inf.*return finite maps"):
        check_output(_NaNExplainer)
    with pytest.raises(AssertionError, match="_NaNExplainer: check_output: the maps"):
        check_component(_NaNExplainer)


def test_flat_maps_fail_a_named_check_not_interpolate():
    with pytest.raises(AssertionError, match=r"returned a map of shape \(4,\) for 4 images: return \(N, h, w\)"):
        check_output(_FlatExplainer)


def test_result_holding_a_set_fails_naming_the_field():
    for check in (check_output, check_save_load):
        with pytest.raises(AssertionError, match=r"_SetResult\.labels holds a set.*sorted list instead of a set"):
            check(_SetAnalyzer)


def _params(model):
    return list(model.module.parameters())


class _GradEditOnError(ActivationDistance):
    """Zeroes the parameters' .grad in place and restores them only when it succeeds."""

    name = "grad_edit"

    def _analyze(self, model, batch, **context):
        saved = [p.grad.clone() if p.grad is not None else None for p in _params(model)]
        for p in _params(model):
            if p.grad is not None:
                p.grad.mul_(0)
        out = super()._analyze(model, batch, **context)
        for p, g in zip(_params(model), saved):
            if g is not None:
                p.grad.copy_(g)
        return out


class _BufferLeakOnError(ActivationDistance):
    """Shifts a batch-norm buffer and shifts it back only when it succeeds."""

    name = "buffer_leak"

    def _analyze(self, model, batch, **context):
        bn = model.module.features.bn1
        saved = bn.running_mean.clone()
        bn.running_mean.add_(1.0)
        out = super()._analyze(model, batch, **context)
        bn.running_mean.copy_(saved)
        return out


def test_grad_values_are_fingerprinted():
    from advinterp.model import model_fingerprint
    from advinterp.testing import toy_model

    model = toy_model()
    for p in _params(model):
        p.grad = torch.ones_like(p)
    before = model_fingerprint(model)
    _params(model)[0].grad.mul_(2)
    assert model_fingerprint(model)["grads"] != before["grads"]


def test_model_unchanged_catches_grad_edits_when_raising():
    with pytest.raises(AssertionError, match=r"changed the model's grads \(.*\) when it raised: .*never write"):
        check_model_unchanged(_GradEditOnError)


def test_model_unchanged_catches_state_left_behind_when_raising():
    with pytest.raises(AssertionError, match="changed the model's weights when it raised"):
        check_model_unchanged(_BufferLeakOnError)


def test_the_error_case_raises_inside_the_component():
    from advinterp.testing import ToyModelFailure, toy_model

    model = toy_model()
    model.module.calls, model.module.fail_at = 0, 1
    with pytest.raises(ToyModelFailure):
        ActivationDistance().analyze(model, advinterp.testing.toy_batch(toy_model()))
