"""The bad-input cases of issue 11 ("Hardening"), one callable each.

Every case triggers one thing a user may get wrong (or that used to break) and returns, via
:func:`run_case`, what the user now sees: the exception's type and message, the warning's
text, or ``works: <short result>``. ``tests/test_reliability.py`` runs every case, checks the
expected outcome, and renders the table of ``docs/reliability.md`` from them.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter, Result
from advinterp.testing import toy_batch, toy_data, toy_model

SIZE = 16


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``fn()`` triggers it and returns a short description when it works.

    ``expect`` is ``"works"``, ``"warns"`` or the name of the exception type raised;
    ``phrase`` a key phrase of the message (or of the ``works:`` text) that must stay in it.
    """

    id: str
    component: str
    problem: str
    fn: Callable[[], str]
    expect: str
    phrase: str
    needs: tuple[str, ...] = ()   # optional modules the case imports (skipped without them)


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str       # "works", "warns" or the exception type's name
    message: str    # "works: ...", the warning text or the exception message

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("works", "warns") else f"raises {self.kind}"


def run_case(case: Case) -> Outcome:
    """Run ``case.fn`` recording warnings; an exception wins over warnings, a warning over works."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            result = case.fn()
        except Exception as e:  # noqa: BLE001 - the point is to record it
            return Outcome(type(e).__name__, str(e))
    user = [w for w in rec if issubclass(w.category, UserWarning)]
    if user:
        return Outcome("warns", str(user[0].message))
    return Outcome("works", f"works: {result}")


def shorten(message: str) -> str:
    """One line, absolute paths cut to their file name, and the parts that depend on the
    machine rather than on advinterp elided (torch's own wording of a corrupt zip, the list of
    installed components), so the table is the same wherever the tests run."""
    message = re.sub(r"(?:/[^\s/:'\"()]+)+/([^\s/:'\"()]+)", r"\1", message)
    message = re.sub(r"torch cannot read it: [^)]*", "torch cannot read it: ...", message)
    message = re.sub(r"Known (\w+): [^.]*\.", r"Known \1: ...", message)
    return " ".join(message.split())


# --------------------------------------------------------------------------- helpers
def _model() -> ModelAdapter:
    return toy_model(size=SIZE)


def _hand_batch(y_true, y_target, success=None) -> AdversarialBatch:
    x, _ = toy_data(len(y_true), SIZE)
    xa = (x + 0.05).clamp(0, 1)
    return AdversarialBatch(x0=x, x_adv=xa, y_true=torch.as_tensor(y_true), y_target=torch.as_tensor(y_target),
                            success=success, y_adv=torch.as_tensor(y_target), attack="hand")


def _empty_batch() -> AdversarialBatch:
    x = torch.rand(0, 3, SIZE, SIZE)
    y = torch.zeros(0, dtype=torch.long)
    return AdversarialBatch(x0=x, x_adv=x.clone(), y_true=y, y_target=y + 1,
                            success=torch.zeros(0, dtype=torch.bool), y_adv=y + 1, attack="test")


def _attack_in_mode(mode) -> str:
    model, (x, _) = _model(), toy_data(4, SIZE)
    y = model.predict(x)
    attack = advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=3)
    ref = attack.generate(model, x, y)
    with mode():
        out = attack.generate(model, x.clone(), y.clone())
    assert torch.equal(out.x_adv, ref.x_adv)
    return "same x_adv as with gradients enabled"


def _empty_analysis(name: str, **params) -> str:
    res = advinterp.get_analyzer(name, **params).analyze(_model(), _empty_batch())
    row = res.rows()[0]
    return f"empty result (n={row.get('n', 0)}, n_valid={row['n_valid']})"


def _empty_explain() -> str:
    att = advinterp.get_explainer("gradcampp").explain(_model(), torch.rand(0, 3, SIZE, SIZE),
                                                       torch.zeros(0, dtype=torch.long))
    return f"empty maps {tuple(att.maps.shape)}"


def _explain(x) -> Callable[[], str]:
    def fn():
        att = advinterp.get_explainer("gradcam").explain(_model(), x, 0)
        return f"maps {tuple(att.maps.shape)}"
    return fn


def _art_channels_last() -> str:
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(_model().module, nn.CrossEntropyLoss(), (SIZE, SIZE, 3), 4, clip_values=(0, 1),
                            channels_first=False)
    ModelAdapter(clf)
    return "adapted"


def _gradcampp_fc() -> str:
    model, (x, y) = _model(), toy_data(2, SIZE)
    advinterp.get_explainer("gradcampp", layer=model.classifier_name).explain(model, x, y)
    return "explained"


def _cw_mask() -> str:
    model, (x, y) = _model(), toy_data(2, SIZE)
    advinterp.get_attack("cw_l2", max_iter=2, binary_search_steps=1).generate(model, x, y, mask=torch.ones(8, 8))
    return "attacked"


def _cw_already_wrong() -> str:
    model, (x, _) = _model(), toy_data(4, SIZE)
    wrong = (model.predict(x) + 1) % model.nb_classes  # labels the model already gets wrong
    b = advinterp.get_attack("cw_l2", max_iter=5, binary_search_steps=2, learning_rate=0.05,
                             initial_const=10.0).generate(model, x, wrong)
    l0 = b.norms()["l0"]
    return f"x_adv == x, l0 = {int(l0.max())} for all {len(l0)} images"


def _from_pair_numpy() -> str:
    g = np.random.default_rng(0)
    x = g.random((2, 3, SIZE, SIZE), dtype=np.float32)
    b = AdversarialBatch.from_pair(x, x.copy(), np.array([0, 1], np.int32), model=_model())
    return f"torch batch, x0 {b.x0.dtype}, y_true {b.y_true.dtype}"


def _result_bytes() -> bytes:
    from advinterp.analyzers.activation_distance import ActivationDistanceResult

    return ActivationDistanceResult(("a", "b"), np.arange(6.0).reshape(3, 2), np.ones((3, 2), np.float32)).to_bytes()


def _encoded() -> dict:
    from advinterp.analyzers.activation_distance import ActivationDistanceResult
    from advinterp.results import encode

    return encode(ActivationDistanceResult(("a", "b"), np.arange(6.0).reshape(3, 2), np.ones((3, 2), np.float32)))


def _load_file(name: str, data: bytes | None = None, payload: dict | None = None) -> Callable[[], str]:
    def fn():
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            if data is not None:
                path.write_bytes(data)
            else:
                torch.save(payload, path)
            Result.load(path)
        return "loaded"
    return fn


def _truncated() -> bytes:
    data = _result_bytes()
    return data[: len(data) // 2]


def _payload(result, fmt="advinterp-result/1", version="0.1.0") -> dict:
    return {"format": fmt, "advinterp": version, "result": result}


def _extra_field() -> dict:
    enc = _encoded()
    enc["fields"]["smoothing"] = 0.5
    return _payload(enc, version="0.9.0")


def _renamed_class() -> dict:
    enc = _encoded()
    enc["__dataclass__"] = "advinterp.analyzers.activation_distance:ActivationDistanceResultV2"
    return _payload(enc, version="0.2.0")


def _hostile_this() -> str:
    sys.modules.pop("this", None)
    try:
        _load_file("zen.pt", payload=_payload({"__dataclass__": "this:d", "fields": {}}))()
    finally:
        assert "this" not in sys.modules, "the file imported 'this'"
    return "loaded"


def _pse_failed() -> str:
    b = _hand_batch([0, 1, 2], [1, 2, 3], success=torch.tensor([False, True, False]))
    res = advinterp.get_analyzer("pse", size=4).analyze(_model(), b)
    return f"n_valid={res.rows()[0]['n_valid']}"


def _analyze(name: str, batch: Callable[[], AdversarialBatch], **params) -> Callable[[], str]:
    def fn():
        advinterp.get_analyzer(name, **params).analyze(_model(), batch())
        return "analyzed"
    return fn


def _nan_pixels() -> str:
    x, y = toy_data(4, SIZE)
    x[2, 0, 3, 3] = float("nan")
    advinterp.get_explainer("cam").explain(_model(), x, y)
    return "explained"


def _str_in_trainer() -> str:
    import advinterp_art
    from art.defences.trainer import AdversarialTrainer

    model = _model()
    module = copy.deepcopy(model.module)
    student = ModelAdapter(module, mean=model.mean, std=model.std, nb_classes=model.nb_classes,
                           input_shape=model.input_shape)
    clf = student.to_art(optimizer=torch.optim.Adam(module.parameters(), lr=1e-3))
    attack = advinterp_art.STRAttack(clf, max_iter=2, binary_search_steps=1)
    x, y = (t.numpy() for t in toy_data(8, SIZE))
    state = np.random.get_state()
    np.random.seed(0)
    try:
        AdversarialTrainer(clf, attack, ratio=1.0).fit(x, np.eye(4, dtype=np.float32)[y], nb_epochs=1, batch_size=4)
    finally:
        np.random.set_state(state)
    return "one epoch of adversarial training with STR (untargeted)"


def _random_models() -> str:
    a = advinterp.get_model("torchvision:resnet18", weights="random")
    b = advinterp.get_model("torchvision:resnet18", weights="random")
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    return "identical weights (seed=0 by default)"


_STUDY_HEAD = '[models.m]\nmodel = "synthetic-cnn"\n[data.d]\ndataset = "synthetic"\n'


def _study(text: str) -> Callable[[], str]:
    def fn():
        advinterp.Study.from_text(_STUDY_HEAD + text, path="study.toml").check()
        return "checked"
    return fn


# --------------------------------------------------------------------------- the cases
CASES: list[Case] = [
    Case("no-grad", "attacks (pgd, cw_l2, ead, str, art.*)", "attack called inside torch.no_grad()",
         lambda: _attack_in_mode(torch.no_grad), "works", "same x_adv"),
    Case("inference-mode", "attacks (pgd, cw_l2, ead, str, art.*)", "attack called inside torch.inference_mode()",
         lambda: _attack_in_mode(torch.inference_mode), "works", "same x_adv"),
    Case("empty-gradcampp", "explainer gradcampp", "empty batch (N = 0)", _empty_explain, "works", "empty maps (0, 16, 16)",
         ("captum", "advinterp_captum")),
    Case("empty-is", "analyzer is", "empty batch (N = 0)", lambda: _empty_analysis("is"), "works", "empty result"),
    Case("empty-pse", "analyzer pse", "empty batch (N = 0)", lambda: _empty_analysis("pse", size=4), "works",
         "empty result"),
    Case("nhwc", "explainers, analyzers, attacks", "channels-last (N, H, W, C) batch",
         _explain(torch.rand(2, SIZE, SIZE, 3)), "ParameterError", "x.permute(0, 3, 1, 2)"),
    Case("wrong-size", "explainers, analyzers, attacks", "images of another size than the model's input_shape",
         _explain(torch.rand(2, 3, 8, 8)), "ParameterError", "Got images of shape (3, 8, 8)"),
    Case("one-channel", "explainers, analyzers, attacks", "1-channel images for a 3-channel model",
         _explain(torch.rand(2, 1, SIZE, SIZE)), "ParameterError", "Got images of shape (1, 16, 16)"),
    Case("art-channels-last", "ModelAdapter (ART classifier)", "PyTorchClassifier(channels_first=False)",
         _art_channels_last, "IncompatibleModelError", "channels_first=True", ("art",)),
    Case("cam-on-fc", "explainer gradcampp", "layer= the classifier (not a spatial layer)", _gradcampp_fc,
         "ParameterError", "(N, C, h, w) feature map", ("captum", "advinterp_captum")),
    Case("mask-shape", "attack cw_l2", "support mask of the wrong shape", _cw_mask, "ParameterError",
         "a 0/1 mask of shape (16, 16)"),
    Case("cw-l2-misclassified", "attack cw_l2, AdversarialBatch.norms", "image the model already misclassifies",
         _cw_already_wrong, "works", "l0 = 0"),
    Case("from-pair-numpy", "AdversarialBatch.from_pair", "numpy arrays instead of tensors", _from_pair_numpy,
         "works", "torch batch"),
    Case("truncated-file", "Result.load", "truncated result file",
         lambda: _load_file("cut.pt", data=_truncated())(), "ResultFileError", "truncated or corrupt"),
    Case("empty-file", "Result.load", "empty (0-byte) result file", _load_file("empty.pt", data=b""),
         "ResultFileError", "is empty (0 bytes)"),
    Case("newer-format", "Result.load", "file written by a newer advinterp",
         _load_file("new.pt", payload=_payload({}, fmt="advinterp-result/7", version="9.0.0")),
         "ResultFileError", "advinterp-result/7"),
    Case("extra-field", "Result.load", "file with a field the class does not define",
         lambda: _load_file("extra.pt", payload=_extra_field())(), "ResultFileError", "does not define"),
    Case("renamed-class", "Result.load", "file naming a renamed result class",
         lambda: _load_file("renamed.pt", payload=_renamed_class())(), "ResultFileError", "renamed or removed"),
    Case("hostile-this", "Result.load", "hostile file naming the module `this`", _hostile_this, "ResultFileError",
         "belongs to no loaded advinterp plugin"),
    Case("eps-255", "attack pgd", "eps=8 (meant 8/255)", lambda: advinterp.get_attack("pgd", eps=8) and "built",
         "ParameterError", "Did you mean 8/255 = 0.0314?"),
    Case("failed-pairs", "analyzer pse (and is)", "batch where the attack failed on some pairs", _pse_failed, "warns",
         "failed on 2 of 3 pairs"),
    Case("target-is-true-pse", "analyzer pse", "y_target == y_true",
         _analyze("pse", lambda: _hand_batch([0, 1, 2], [1, 1, 3]), size=4), "ParameterError",
         "1 of 3 images have y_target == y_true"),
    Case("target-is-true-is", "analyzer is", "y_target == y_true",
         _analyze("is", lambda: _hand_batch([0, 1, 2], [1, 1, 3])), "ParameterError",
         "1 of 3 images have y_target == y_true"),
    Case("y-true-range-metrics", "analyzer attack_metrics", "y_true out of the model's classes",
         _analyze("attack_metrics", lambda: _hand_batch([0, 7, 2], [1, 2, 3])), "ParameterError",
         "class indices in [0, 4)"),
    Case("y-true-range-distance", "analyzer activation_distance", "y_true out of the model's classes",
         _analyze("activation_distance", lambda: _hand_batch([0, 7, 2], [1, 2, 3])), "ParameterError",
         "class indices in [0, 4)"),
    Case("nan-pixels", "explainers, analyzers, attacks", "NaN pixels", _nan_pixels, "ParameterError",
         "contains NaN or inf in 1 of 4 images (first: image 2)"),
    Case("str-art-trainer", "advinterp_art.STRAttack", "str inside ART's AdversarialTrainer", _str_in_trainer,
         "works", "adversarial training", ("art", "advinterp_art")),
    Case("random-weights", "models torchvision:*", "weights='random' twice with the same seed", _random_models,
         "works", "identical weights", ("torchvision",)),
    Case("study-unknown-component", "Study", "study step naming an unknown analyzer",
         _study('[[steps]]\nid = "a"\nattack = "pgd"\n[[steps]]\nid = "p"\nanalyzer = "pes"\nbatch = "a"\n'),
         "StudyError", "unknown analyzer 'pes'. Did you mean 'pse'"),
    Case("study-cycle", "Study", "study steps that depend on each other in a cycle",
         _study('[[steps]]\nid = "a"\nattack = "pgd"\n[[steps]]\nid = "p"\nanalyzer = "is"\nbatch = "a"\n'
                'context = { maps = "q" }\n[[steps]]\nid = "q"\nanalyzer = "is"\nbatch = "a"\n'
                'context = { maps = "p" }\n'),
         "StudyError", "the steps form a cycle: p -> q -> p"),
]


def _truncated() -> bytes:
    data = _result_bytes()
    return data[: len(data) // 2]

