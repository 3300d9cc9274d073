"""Conformance checks every component must pass — run them on your own plugin.

Modelled on scikit-learn's ``parametrize_with_checks``::

    from advinterp.testing import parametrize_with_checks
    from my_plugin import MyAnalyzer

    @parametrize_with_checks([MyAnalyzer])
    def test_conformance(component, check):
        check(component)

or, without pytest: ``advinterp.testing.check_component(MyAnalyzer)``.

The checks run on a tiny CAM-compatible CNN (:func:`toy_model`, with batch-norm so a
forward in training mode would be caught) and random 16x16 images, with the component's
``conformance_params`` (cheap settings). They verify:

* parameters: defaults, ``get_params``/``set_params``, unknown names and each declared
  invalid value raise :class:`~advinterp.exceptions.ParameterError`;
* outputs: shapes, dtype and device follow the input, pixels stay in [0, 1];
* determinism: two runs with the same parameters (and seed) give identical outputs;
* the model is left unchanged: weights and buffers (hashed), every module's training
  flag (the model is handed over in *training* mode), ``requires_grad``, ``.grad`` (values
  hashed), hooks -- also when the model raises midway through the component's work;
* bad inputs (pixels outside [0, 1], wrong rank, bad targets) raise ``ParameterError``.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from .components import Analyzer, Attack, Component, Explainer, Probe
from .data import AdversarialBatch, random_targets
from .exceptions import ParameterError
from .model import ModelAdapter, model_fingerprint
from .results import Result

__all__ = ["toy_model", "toy_data", "toy_batch", "check_component", "iter_checks", "parametrize_with_checks",
           "check_model_factory", "check_dataset", "check_sharded", "check_grad_modes", "check_empty",
           "assert_model_unchanged"]


class ToyModelFailure(RuntimeError):
    """Raised by the toy model's forward when told to (``fail_at``): the error case of
    :func:`check_model_unchanged`, raised *inside* the component's ``preserved()`` block."""


class _ToyCNN(nn.Module):
    #: Forward calls so far, and the call (1-based) that raises ToyModelFailure (0: none).
    calls: int = 0
    fail_at: int = 0

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Module()
        self.features.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.features.bn1 = nn.BatchNorm2d(8)
        self.features.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        self.calls += 1
        if self.fail_at and self.calls == self.fail_at:
            raise ToyModelFailure(f"the toy model fails on forward call {self.calls} (as the check asks)")
        f = self.features
        h = torch.relu(f.conv2(torch.relu(f.bn1(f.conv1(x)))))
        return self.head(h.mean((2, 3)))


def toy_model(num_classes: int = 4, size: int = 16, seed: int = 0) -> ModelAdapter:
    """A tiny GAP+linear CNN (non-Sequential, with batch-norm) wrapped in an adapter."""
    g = torch.Generator().manual_seed(seed)
    m = _ToyCNN(num_classes)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        m.features.bn1.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
        m.features.bn1.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    m.eval()
    return ModelAdapter(m, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), nb_classes=num_classes,
                        input_shape=(3, size, size), name="toy")


def toy_data(n: int = 4, size: int = 16, num_classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``(n, 3, size, size)`` pixels in [0, 1] and labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, num_classes, (n,), generator=g)


def toy_batch(model: ModelAdapter | None = None, n: int = 4, size: int = 16, seed: int = 0) -> AdversarialBatch:
    """A targeted PGD batch on the toy model (for analyzer checks)."""
    from .attacks.pgd_core import pgd_linf

    model = model or toy_model(size=size)
    x, _ = toy_data(n, size, model.nb_classes, seed)
    y = model.predict(x)
    t = random_targets(y, model.nb_classes, torch.Generator().manual_seed(seed))
    with model.preserved(freeze=True):
        xa = pgd_linf(model.logits, x, t, 16 / 255, 4 / 255, 5, targeted=True,
                      generator=torch.Generator().manual_seed(seed))
    return AdversarialBatch.from_pair(x, xa, y, model=model, y_target=t, attack="pgd")


# ------------------------------------------------------------------------- helpers
def _instance(component: Component | type[Component], **override: Any) -> Component:
    cls = component if isinstance(component, type) else type(component)
    params = dict(cls.conformance_params)
    if not isinstance(component, type):
        params = {**component.get_params(), **params}
    params.update(override)
    return cls(**params)


def assert_model_unchanged(model: ModelAdapter, fn: Callable[[], Any], expect_raise: type | None = None) -> Any:
    """Run ``fn`` with the module in *training* mode and params requiring grad; assert that
    nothing about the model changed (also if ``fn`` raised ``expect_raise``)."""
    module = model.module
    module.train()
    params = [q for q in module.parameters() if q.grad is None]
    for q in params:  # existing .grad values, so an in-place edit of them shows in the fingerprint
        q.grad = torch.full_like(q, 0.5)
    before = model_fingerprint(model)
    try:
        if expect_raise is not None:
            try:
                fn()
            except expect_raise:
                out = None
            else:
                raise AssertionError(f"expected {expect_raise.__name__}")
        else:
            out = fn()
        after = model_fingerprint(model)
    finally:
        module.eval()
        for q in params:
            q.grad = None
    for key in before:
        if before[key] != after[key]:
            changed = [a[0] for a, b in zip(before[key], after[key]) if a != b] if isinstance(before[key], tuple) else []
            where = f" ({', '.join(map(str, changed[:5]))})" if changed else ""
            raise AssertionError(f"the component changed the model's {key}{where}"
                                 f"{' when it raised' if expect_raise is not None else ''}: {_FIX[key]}")
    return out


_FIX = {
    "weights": "never write parameters or buffers (run the model in eval mode, copy before editing).",
    "modes": "do the work inside `with model.preserved():`, which restores every module's training flag.",
    "requires_grad": "use `with model.preserved(freeze=True):` instead of toggling requires_grad yourself.",
    "grads": "take gradients w.r.t. the input (torch.autograd.grad) inside `model.preserved(freeze=True)`; "
             "never write, accumulate into or zero the parameters' .grad.",
    "hooks": "remove every hook you register (use try/finally or `model.preserved()`), also on errors.",
}


def _unsupported(value: Any, where: str) -> tuple[str, str] | None:
    """``(path, type name)`` of the first value a result may not hold (what :func:`encode`
    and JSON refuse), or ``None``."""
    import dataclasses

    import numpy as np

    if isinstance(value, (torch.Tensor, np.ndarray, np.generic, str, bool, int, float)) or value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        bad_key = next((k for k in value if not isinstance(k, (str, int, float, bool)) and k is not None), None)
        if bad_key is not None:
            return f"{where} (key {bad_key!r})", type(bad_key).__name__
        items = [(f"[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        return where, type(value).__name__
    for suffix, v in items:
        found = _unsupported(v, where + suffix)
        if found:
            return found
    return None


def _check_result_values(result: Result) -> None:
    """Fail naming the field when a result holds a value that to_dict/JSON or save refuse."""
    found = _unsupported(result, type(result).__name__)
    if found:
        path, tname = found
        raise AssertionError(
            f"{path} holds a {tname}, which a result cannot hold (to_dict()/JSON and save() refuse it): store "
            "tensors, numpy arrays, numbers, strings, None, or lists/tuples/dicts (str/number keys) of those"
            + (" -- e.g. a sorted list instead of a set" if tname in ("set", "frozenset") else "") + ".")


def _outputs(obj: Any) -> dict[str, Any]:
    if isinstance(obj, AdversarialBatch):
        return {"x_adv": obj.x_adv, "success": obj.success, "y_adv": obj.y_adv}
    if isinstance(obj, Result):
        return obj.to_dict()
    return {"out": obj}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def _run(component: Component, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, batch=None) -> Any:
    if isinstance(component, Attack):
        if component.targeted:
            return component.generate(model, x, y, random_targets(y, model.nb_classes, torch.Generator().manual_seed(1)))
        return component.generate(model, x, y)
    if isinstance(component, Explainer):
        return component.explain(model, x, y)
    if isinstance(component, Analyzer):
        return component.analyze(model, batch if batch is not None else toy_batch(model), **getattr(
            component, "conformance_context", {}))
    if isinstance(component, Probe):
        return component.run(model, (x, y) if component.needs_data else None,
                             **getattr(component, "conformance_context", {}))
    raise TypeError(f"{component!r} is not an Attack, Explainer, Analyzer or Probe")


# ------------------------------------------------------------------------- the checks
def check_params(component) -> None:
    """Defaults, get/set_params round trip, unknown and invalid values raise ParameterError."""
    cls = component if isinstance(component, type) else type(component)
    inst = cls()
    defaults = {k: p.default for k, p in cls.params.items()}
    assert _equal(inst.get_params(), defaults), f"{cls.__name__}() does not store its defaults"
    inst2 = _instance(cls)
    assert _equal(cls(**inst2.get_params()).get_params(), inst2.get_params()), "get_params does not round-trip"
    assert _equal(cls().set_params(**inst2.get_params()).get_params(), inst2.get_params()), "set_params failed"
    repr(inst2)
    try:
        cls(__no_such_parameter__=1)
    except ParameterError as e:
        assert "__no_such_parameter__" in str(e), "the error does not name the unknown parameter"
    else:
        raise AssertionError("an unknown parameter was accepted")
    for name, spec in cls.params.items():
        for bad in spec.invalid:
            try:
                cls(**{**dict(cls.conformance_params), name: bad})
            except ParameterError as e:
                assert name in str(e), f"the error for {name}={bad!r} does not name the parameter"
            else:
                raise AssertionError(f"{cls.__name__}({name}={bad!r}) was accepted")
            before = inst2.get_params()
            try:
                inst2.set_params(**{name: bad})
            except ParameterError:
                pass
            else:
                raise AssertionError(f"set_params({name}={bad!r}) was accepted")
            assert _equal(inst2.get_params(), before), f"a refused set_params({name}={bad!r}) changed the parameters"


def check_output(component) -> None:
    """Shapes, dtype and device follow the input; pixels stay in [0, 1]."""
    inst, model = _instance(component), toy_model()
    x, y = toy_data()
    if isinstance(inst, Explainer):
        _check_layer_maps(inst, model, x, y)
    for dtype in (torch.float32, torch.float64):
        out = _run(inst, model, x.to(dtype), y)
        if isinstance(out, AdversarialBatch):
            assert out.x_adv.shape == x.shape and out.x_adv.dtype == dtype and out.x_adv.device == x.device
            assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1, "adversarial pixels left [0, 1]"
            assert torch.equal(out.x0, x.to(dtype)), "x0 is not the input"
            assert out.success is not None and out.success.shape == (len(x),) and out.success.dtype == torch.bool
            assert len(out.y_true) == len(x)
        elif isinstance(inst, Explainer):
            assert out.maps.shape == (len(x), *x.shape[-2:]), f"maps have shape {tuple(out.maps.shape)}"
            assert out.maps.dtype == dtype, f"maps have dtype {out.maps.dtype} for {dtype} input: follow the input"
            assert out.layer_maps.ndim == 3, f"layer_maps have shape {tuple(out.layer_maps.shape)}, not (N, h, w)"
            finite = torch.isfinite(out.maps).flatten(1).all(1)
            assert finite.all(), (
                f"the maps of {int((~finite).sum())} of {len(x)} images contain NaN or inf ({dtype}): return "
                "finite maps (guard divisions, e.g. normalise by max(peak, eps); clamp logs)")
        else:
            assert isinstance(out, Result), f"analyze() returned {type(out).__name__}, not a Result"
            _check_result_values(out)
            json.dumps(out.to_dict())
            out.table()


def _check_layer_maps(inst: Explainer, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor) -> None:
    """What ``_explain_many`` returns, before the base class upsamples it: one ``(N, h, w)``
    map per target vector (anything else would crash in ``interpolate``)."""
    maps, layer = inst._layer_maps(model, x, [y])
    assert isinstance(maps, (list, tuple)) and len(maps) == 1, (
        f"_explain_many returned {type(maps).__name__} of length {len(maps) if hasattr(maps, '__len__') else '?'} "
        "for 1 target vector: return ([one map per target vector], layer name)")
    m = maps[0]
    assert isinstance(m, torch.Tensor) and m.ndim == 3 and len(m) == len(x), (
        f"_explain_many returned a map of shape {tuple(getattr(m, 'shape', ()))} for {len(x)} images: return "
        f"(N, h, w) = ({len(x)}, h, w) maps at the layer's resolution (keep the spatial axes; do not reduce them)")
    assert isinstance(layer, str), f"_explain_many returned the layer name {layer!r}: return the layer's name (str)"


def check_save_load(component, tmp_dir: str | None = None) -> None:
    """The result survives ``save``/``load`` (``weights_only=True``)."""
    import tempfile
    from pathlib import Path

    inst, model = _instance(component), toy_model()
    x, y = toy_data()
    out = _run(inst, model, x, y)
    _check_result_values(out)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        back = type(out).load(out.save(Path(d) / "r.pt"))
    assert _equal(_outputs(out), _outputs(back)), "save/load changed the result"


def check_sharded(component) -> None:
    """A sharded probe gives the same result whatever the shard size (1, 3 or all at once)."""
    cls = component if isinstance(component, type) else type(component)
    if not cls.shardable:
        return
    inst, model = _instance(component), toy_model()
    x, y = toy_data(n=5)
    data = (x, y) if inst.needs_data else None
    ctx = getattr(inst, "conformance_context", {})
    whole = _outputs(inst.run(model, data, **ctx))
    for size in (1, 3):
        assert _equal(_outputs(_instance(component).run(model, data, shard_size=size, **ctx)), whole), \
            f"shard_size={size} changes the result: the partials do not merge exactly"


def check_deterministic(component) -> None:
    """Two runs with the same parameters give identical outputs."""
    inst, model = _instance(component), toy_model()
    x, y = toy_data()
    batch = toy_batch(model) if isinstance(inst, Analyzer) else None
    a = _outputs(_run(inst, model, x, y, batch))
    b = _outputs(_run(_instance(component), model, x, y, batch))
    assert _equal(a, b), "two runs with the same parameters differ"


def check_model_unchanged(component) -> None:
    """Weights, buffers, modes, requires_grad, grads and hooks are as before — also when the
    model raises midway through the component's work (inside its ``preserved()`` block)."""
    inst, model = _instance(component), toy_model()
    x, y = toy_data()
    batch = toy_batch(model) if isinstance(inst, Analyzer) else None
    net = model.module
    net.calls = 0
    assert_model_unchanged(model, lambda: _run(inst, model, x, y, batch))
    if net.calls:  # the component runs the model: make a forward in the middle of its work raise
        net.calls, net.fail_at = 0, (net.calls + 1) // 2
        try:
            assert_model_unchanged(model, lambda: _run(_instance(component), model, x, y, batch), ToyModelFailure)
        finally:
            net.fail_at = 0
    bad = x.clone()
    bad[0, 0, 0, 0] = 2.0  # invalid input: the component must raise and still leave the model alone
    if isinstance(inst, Analyzer):
        bad_batch = AdversarialBatch(x0=batch.x0, x_adv=bad, y_true=batch.y_true)
        assert_model_unchanged(model, lambda: inst.analyze(model, bad_batch), ParameterError)
    elif isinstance(inst, Probe):
        if inst.needs_data:
            assert_model_unchanged(model, lambda: inst.run(model, (bad, y)), ParameterError)
    else:
        assert_model_unchanged(model, lambda: _run(inst, model, bad, y), ParameterError)


def check_bad_inputs(component) -> None:
    """Out-of-range and NaN pixels, wrong rank, channels-last batches, images of another size
    or channel count than the model's ``input_shape`` and out-of-range labels raise
    ParameterError naming the problem (the templates' ``check_images`` / ``check_labels`` do
    this for components that keep the public methods)."""
    inst, model = _instance(component), toy_model()
    x, y = toy_data()
    cases: list[tuple[str, Callable[[], Any], str]] = []
    nan = x.clone()
    nan[1, 0, 2, 2] = float("nan")
    nhwc = x.permute(0, 2, 3, 1).contiguous()   # channels-last
    small = x[:, :, :8, :8].contiguous()         # 8x8 into a 16x16 model
    gray = x[:, :1].contiguous()                 # 1 channel into a 3-channel model
    if isinstance(inst, Analyzer):
        batch = toy_batch(model)
        cases.append(("not a batch", lambda: inst.analyze(model, (x, y)), "batch"))
        cases.append(("pixels > 1", lambda: inst.analyze(model, AdversarialBatch(x0=x, x_adv=x * 3, y_true=y)),
                      "x_adv"))
        cases.append(("NaN pixels", lambda: inst.analyze(model, AdversarialBatch(x0=x, x_adv=nan, y_true=y)),
                      "NaN"))
        cases.append(("y_true out of range", lambda: inst.analyze(
            model, AdversarialBatch(x0=batch.x0, x_adv=batch.x_adv, y_true=batch.y_true + 100,
                                    y_target=batch.y_target, success=batch.success)), "y_true"))
        if inst.feeds_model:
            cases += [("channels-last", lambda: inst.analyze(model, AdversarialBatch(
                          x0=x.permute(0, 2, 3, 1), x_adv=nhwc, y_true=y)), "channels-last"),
                      ("smaller images", lambda: inst.analyze(model, AdversarialBatch(
                          x0=small, x_adv=small, y_true=y)), "(3, 16, 16)")]
    elif isinstance(inst, Probe):
        if inst.needs_data:
            cases += [("pixels > 1", lambda: inst.run(model, (x * 3, y)), "data"),
                      ("NaN pixels", lambda: inst.run(model, (nan, y)), "NaN"),
                      ("3-d input", lambda: inst.run(model, (x[0], y)), "data"),
                      ("not a dataset", lambda: inst.run(model, 3), "data")]
            if inst.feeds_model:
                cases += [("channels-last", lambda: inst.run(model, (nhwc, y)), "channels-last"),
                          ("smaller images", lambda: inst.run(model, (small, y)), "(3, 16, 16)"),
                          ("one channel", lambda: inst.run(model, (gray, y)), "(3, 16, 16)")]
        cases.append(("unknown context", lambda: inst.run(model, (x, y) if inst.needs_data else None,
                                                           __no_such_context__=1), "__no_such_context__"))
    else:
        cases += [("pixels > 1", lambda: _run(inst, model, x * 3, y), "x"),
                  ("pixels < 0", lambda: _run(inst, model, x - 2, y), "x"),
                  ("NaN pixels", lambda: _run(inst, model, nan, y), "NaN"),
                  ("channels-last", lambda: _run(inst, model, nhwc, y), "channels-last"),
                  ("smaller images", lambda: _run(inst, model, small, y), "(3, 16, 16)"),
                  ("one channel", lambda: _run(inst, model, gray, y), "(3, 16, 16)"),
                  ("3-d input", lambda: _run(inst, model, x[0], y), "x"),
                  ("label out of range", lambda: _run(inst, model, x, y + 100), "")]
    if isinstance(inst, Attack):
        if inst.targeted:
            cases += [("targeted without target", lambda: inst.generate(model, x, y), "target"),
                      ("target equal to y", lambda: inst.generate(model, x, y, y), "target")]
        else:
            cases.append(("untargeted with target", lambda: inst.generate(model, x, y, y), "target"))
    for what, fn, name in cases:
        try:
            fn()
        except ParameterError as e:
            assert name in str(e), f"{what}: the error does not name {name!r}: {e}"
        else:
            raise AssertionError(f"{what} was accepted")


def iter_checks(component: Component | type[Component]) -> Iterator[Callable[[Any], None]]:
    """The checks that apply to ``component``: its kind's row of :data:`advinterp.kinds.KINDS`."""
    from .kinds import KINDS

    cls = component if isinstance(component, type) else type(component)
    rows = [k for k in KINDS if k.base is not None and issubclass(cls, k.base)]
    if not rows:
        raise TypeError(f"{cls.__name__} is not a component of any kind "
                        f"({', '.join(k.base.__name__ for k in KINDS if k.base is not None)})")
    yield from (globals()[name] for name in rows[0].checks)
    if issubclass(cls, Attack) and not cls.conformance_params.get("targeted") and "targeted" in cls.params:
        # run the attack checks in targeted mode too
        for chk in (check_output, check_model_unchanged, check_bad_inputs):
            yield functools.partial(_targeted, chk)


def _targeted(check, component) -> None:
    cls = component if isinstance(component, type) else type(component)

    class Targeted(cls):  # type: ignore[misc, valid-type]
        conformance_params = {**cls.conformance_params, "targeted": True}

    Targeted.__name__ = cls.__name__
    check(Targeted)


def _check_name(check) -> str:
    if isinstance(check, functools.partial):
        return f"{check.args[0].__name__}[targeted]"
    return check.__name__


def check_component(component: Component | type[Component]) -> list[str]:
    """Run every applicable check; raise ``AssertionError`` naming the first that fails.

    Returns the names of the checks run.
    """
    names = []
    for chk in iter_checks(component):
        name = _check_name(chk)
        try:
            chk(component)
        except AssertionError as e:
            raise AssertionError(f"{getattr(component, '__name__', component)}: {name}: {e}") from e
        names.append(name)
    return names


def parametrize_with_checks(components: Iterable[Component | type[Component]]):
    """A ``pytest.mark.parametrize("component, check", ...)`` over components x checks."""
    import pytest

    cases, ids = [], []
    for comp in components:
        for chk in iter_checks(comp):
            cases.append((comp, chk))
            ids.append(f"{getattr(comp, 'name', '') or getattr(comp, '__name__', comp)}-{_check_name(chk)}")
    return pytest.mark.parametrize("component, check", cases, ids=ids)


def check_model_factory(factory: Callable[..., ModelAdapter], **params: Any) -> None:
    """A model factory returns a working :class:`ModelAdapter` that ``preserved`` restores."""
    model = factory(**params)
    assert isinstance(model, ModelAdapter), f"the factory returned {type(model).__name__}"
    assert model.input_shape is not None, "registered models must declare input_shape"
    x = torch.rand(2, *model.input_shape)
    out = assert_model_unchanged(model, lambda: model.logits(x).detach())
    assert out.shape == (2, model.nb_classes), f"logits have shape {tuple(out.shape)}"
    model.layer(model.cam_layer)
    model.layer(model.classifier_name)


def check_dataset(factory: Callable[..., Any], **params: Any) -> None:
    """A dataset factory returns a map-style dataset of ``(x in [0,1] (C,H,W), int y)``
    items, or an image-only dataset with ``image(i)`` (e.g. Broden): what a study's attack and
    probe steps read through :func:`advinterp.components.load_items`."""
    from .components import load_items

    ds = factory(**params)
    assert len(ds) > 0
    if callable(getattr(ds, "image", None)):
        x, y = load_items(ds, [0, len(ds) - 1])
        assert x.ndim == 4 and x.is_floating_point() and y is None
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        return
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.ndim == 3 and x.is_floating_point()
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert isinstance(int(y), int)


def check_support(rule: Callable[..., Any]) -> None:
    """A support rule of refined attacks (``advinterp_register_supports``) returns the
    ``(N, 1, H, W)`` bool support of a batch, deterministically, leaving the model unchanged."""
    model = toy_model()
    batch = toy_batch(model)
    n, _, h, w = batch.x0.shape
    out = assert_model_unchanged(model, lambda: rule(model, batch))
    assert isinstance(out, torch.Tensor), f"the rule returned {type(out).__name__}, not a tensor"
    assert out.dtype == torch.bool, f"the support has dtype {out.dtype}, not torch.bool"
    assert tuple(out.shape) == (n, 1, h, w), f"the support has shape {tuple(out.shape)}, not {(n, 1, h, w)}"
    assert torch.equal(out, rule(model, batch)), "two calls on the same batch differ"


def check_paper(section: Callable[..., Any]) -> None:
    """A paper comparison (``advinterp_register_papers``) answers a run without any of the
    steps it reads with a :class:`~advinterp.report.Section` whose findings say what is
    missing, instead of raising; it writes only inside the run folder."""
    import tempfile
    from pathlib import Path

    from .report import Section
    from .study.views import ReportGroup, Run

    with tempfile.TemporaryDirectory() as tmp:
        run = Run(out=Path(tmp), title="empty run")
        out = section(ReportGroup("paper", getattr(section, "__name__", "paper"), []), run)
        assert isinstance(out, Section), f"the comparison returned {type(out).__name__}, not a Section"
        assert out.title and (out.text or out.tables), "the section of an empty run says nothing"
        text = " ".join(out.text) + " ".join(str(r) for _, rows in out.tables for r in rows)
        assert "needs" in text or "missing" in text or "not measured" in text, (
            "on a run without the steps it reads, the section must say what is missing (e.g. 'not measured: needs "
            "pse steps')")


def check_grad_modes(component) -> None:
    """Attacks and explainers need gradients: called inside ``torch.no_grad()`` or
    ``torch.inference_mode()`` they give the same output as outside (use
    :func:`advinterp.api.needs_grad` on ``_generate``, ``torch.enable_grad()`` in ``_explain``)."""
    inst, model = _instance(component), toy_model()
    if not isinstance(inst, (Attack, Explainer)):
        return
    x, y = toy_data()
    want = _outputs(_run(inst, model, x, y))
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            xs, ys = x.clone(), y.clone()
            try:
                got = _outputs(_run(_instance(component), model, xs, ys))
            except RuntimeError as e:
                raise AssertionError(f"under torch.{mode.__name__}() it raised {type(e).__name__}: {e}; enable "
                                     "gradients inside (advinterp.api.needs_grad / torch.enable_grad())") from e
        assert _equal(got, want), f"under torch.{mode.__name__}() the output differs from the normal one"


def check_empty(component) -> None:
    """An empty input (``N = 0``) gives an empty output of the right shapes, not an error
    from inside torch (attacks: an empty batch; explainers: ``(0, H, W)`` maps; analyzers and
    probes: a result whose table renders, or a clear ParameterError from an analysis that
    needs at least one pair, such as a significance test)."""
    inst, model = _instance(component), toy_model()
    x, y = toy_data()
    x0, y0 = x[:0], y[:0]
    if isinstance(inst, Attack):
        out = _run(inst, model, x0, y0)
        assert out.x_adv.shape == x0.shape and len(out.success) == 0, f"an empty batch gave {tuple(out.x_adv.shape)}"
    elif isinstance(inst, Explainer):
        out = inst.explain(model, x0, y0)
        assert tuple(out.maps.shape) == (0, *x.shape[-2:]), f"an empty batch gave maps {tuple(out.maps.shape)}"
    elif isinstance(inst, Analyzer):
        batch = toy_batch(model)[:0]
        try:
            out = inst.analyze(model, batch, **getattr(inst, "conformance_context", {}))
        except ParameterError:  # an analysis that needs at least one pair may refuse, clearly
            return
        assert isinstance(out, Result), f"analyze() of an empty batch returned {type(out).__name__}"
        out.table()
    elif isinstance(inst, Probe) and inst.needs_data:
        out = inst.run(model, (x0, y0), **getattr(inst, "conformance_context", {}))
        assert isinstance(out, Result)
        out.table()
