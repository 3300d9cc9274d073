"""Issue 11 (hardening), kept: every bad-input case of ``reliability_cases.py`` ends as
expected, ``docs/reliability.md`` holds the table those cases produce (regenerate it with
``ADVINTERP_WRITE_DOCS=1``), analyses leave the model exactly as it was (also when they fail
midway), and repeating a small analysis does not grow the process's memory."""
from __future__ import annotations

import gc
import importlib.util
import os
import sys
from pathlib import Path

import pytest

import advinterp
from advinterp.model import model_fingerprint
from advinterp.testing import assert_model_unchanged, toy_batch, toy_model

sys.path.insert(0, str(Path(__file__).parent))
from reliability_cases import CASES, Case, run_case, shorten  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
BEGIN, END = "<!-- cases:begin -->", "<!-- cases:end -->"


def _missing(case: Case) -> list[str]:
    return [m for m in case.needs if importlib.util.find_spec(m) is None]


# ------------------------------------------------------------------ every case, as expected
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case):
    if _missing(case):
        pytest.skip(f"needs {', '.join(_missing(case))}")
    out = run_case(case)
    assert out.kind == case.expect, f"{case.id}: expected {case.expect}, got {out.kind}: {out.message}"
    assert case.phrase in out.message, f"{case.id}: {case.phrase!r} not in {out.message!r}"
    assert "Traceback" not in out.message


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------ the table in docs/reliability.md
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table() -> str:
    lines = ["| case | component | what is wrong | outcome | what the user sees |",
             "|---|---|---|---|---|"]
    for case in CASES:
        out = run_case(case)
        lines.append("| " + " | ".join(_cell(s) for s in (
            f"`{case.id}`", case.component, case.problem, out.label, shorten(out.message))) + " |")
    return "\n".join(lines)


def test_docs_table_is_generated_from_the_cases():
    missing = sorted({m for c in CASES for m in _missing(c)})
    if missing:
        pytest.skip(f"the table covers optional plugins: needs {', '.join(missing)}")
    table = render_table()
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC.name} lacks the markers {BEGIN} / {END}"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    fresh = f"{head}{BEGIN}\n{table}\n{END}{tail}"
    if os.environ.get("ADVINTERP_WRITE_DOCS") == "1":
        DOC.write_text(fresh)
        return
    assert text == fresh, (f"{DOC.name} is out of date with tests/reliability_cases.py; regenerate it with "
                           "ADVINTERP_WRITE_DOCS=1 pytest tests/test_reliability.py")


# ------------------------------------------------------------------ model safety
def _analyses(model):
    b = toy_batch(model)
    x, y = b.x0, b.y_true
    return {
        "pgd": lambda: advinterp.get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=2).generate(model, x, y),
        "cw_l2": lambda: advinterp.get_attack("cw_l2", max_iter=2, binary_search_steps=1).generate(model, x, y),
        "cam": lambda: advinterp.get_explainer("cam").explain_pair(model, b),
        "pse": lambda: advinterp.get_analyzer("pse", size=4).analyze(model, b),
        "is": lambda: advinterp.get_analyzer("is").analyze(model, b),
        "attack_metrics": lambda: advinterp.get_analyzer("attack_metrics").analyze(model, b),
        "activation_distance": lambda: advinterp.get_analyzer("activation_distance").analyze(model, b),
    }


def _failing(model):
    """Calls that fail: at validation, and midway (the model raises inside the component)."""
    b = toy_batch(model)
    x, y = b.x0, b.y_true
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")

    def midway(fn):
        def call():
            head = model.module.get_submodule(model.classifier_name)

            def boom(*_):
                raise RuntimeError("the model failed midway")
            handle = head.register_forward_hook(boom)
            try:
                fn()
            finally:
                handle.remove()
        return call

    ok = _analyses(model)
    return {
        "pgd-nan": (lambda: advinterp.get_attack("pgd", max_iter=2).generate(model, nan, y), advinterp.ParameterError),
        "pse-bad-target": (lambda: advinterp.get_analyzer("pse", size=4).analyze(
            model, advinterp.AdversarialBatch(x0=x, x_adv=b.x_adv, y_true=y, y_target=y)), advinterp.ParameterError),
        "pgd-midway": (midway(ok["pgd"]), RuntimeError),
        "cw_l2-midway": (midway(ok["cw_l2"]), RuntimeError),
        "cam-midway": (midway(ok["cam"]), RuntimeError),
        "pse-midway": (midway(ok["pse"]), RuntimeError),
    }


def test_analyses_leave_the_model_unchanged():
    model = toy_model()
    before = model_fingerprint(model)
    for name, fn in _analyses(model).items():
        assert_model_unchanged(model, fn)
    assert model_fingerprint(model) == before, "weights, modes, requires_grad, grads or hooks changed"


def test_failing_analyses_leave_the_model_unchanged():
    model = toy_model()
    before = model_fingerprint(model)
    for name, (fn, exc) in _failing(model).items():
        assert_model_unchanged(model, fn, expect_raise=exc)
    assert model_fingerprint(model) == before, "weights, modes, requires_grad, grads or hooks changed"


# ------------------------------------------------------------------ memory flatness
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_memory_is_flat_over_repeated_analyses():
    model = toy_model()
    b = toy_batch(model, n=2)
    exp = advinterp.get_explainer("gradcam")
    an = advinterp.get_analyzer("attack_metrics")

    def once():
        exp.explain(model, b.x_adv, b.y_target)
        an.analyze(model, b).rows()

    for _ in range(20):  # warm up allocator and caches
        once()
    gc.collect()
    start = _rss_bytes()
    for _ in range(200):
        once()
    gc.collect()
    grown = _rss_bytes() - start
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 200 loops"


# ------------------------------------------------------------------ docs/plugins.md examples (issue 11, item 17)
def test_plugin_doc_explainer_and_attack_examples_pass_conformance():
    import re

    from advinterp.testing import check_component, toy_data

    text = (DOC.parent / "plugins.md").read_text()
    ns: dict = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if "class InputGradient" in block or "class FGSM" in block:
            exec(block, ns)  # noqa: S102 - our own documentation
    explainer, attack = ns["InputGradient"], ns["FGSM"]
    check_component(explainer)
    check_component(attack)
    model, (x, y) = toy_model(), toy_data()
    with __import__("torch").no_grad():
        assert explainer().explain(model, x, y).layer == "input"
        assert attack().generate(model, x, y).success.any()


# ------------------------------------------------------------------ l0 and round-off (issue 11, item 12)
def test_l0_ignores_round_off_relative_to_the_dtype():
    import torch

    x = torch.full((1, 3, 4, 4), 0.5)
    xa = x.clone()
    xa[0, 0, 0, 0] += 1e-7          # round-off in float32 (below 4 * eps = 4.8e-7)
    xa[0, 1, 0, 0] += 1e-3          # a real change
    b = advinterp.AdversarialBatch(x0=x, x_adv=xa, y_true=torch.tensor([0]))
    assert b.norms()["l0"].tolist() == [1.0]
    assert b.norms(tol=0.0)["l0"].tolist() == [2.0]
    half = advinterp.AdversarialBatch(x0=x.half(), x_adv=(x + 1e-3).half(), y_true=torch.tensor([0]))
    assert half.norms()["l0"].tolist() == [0.0]   # 1e-3 is round-off at float16 (tol 3.9e-3)
    assert float(b.norms()["linf"]) > 0
