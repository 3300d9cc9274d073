"""Reports opened in a real browser (headless chromium via playwright; see tests/browser.py).

Skipped when chromium or playwright is missing — unless ADVINTERP_REQUIRE_BROWSER is set
(.ci/run sets it), then that is a failure. Run only these with ``pytest -m browser``.

The full demo is too slow for a test (its targeted attacks take minutes even on 4 scenes), so
the first test runs the demo study's first block (PGD, accuracy and activation bias on both
shipped models, 16 scenes) through the study layer and checks its real report; the second
checks what that report does not exercise: a very wide table, a missing figure, escaping.
"""
import os

import pytest

from advinterp.report import ABOUT_TITLE, Section, software_versions, write_report
from browser import browser_unavailable, check_report

pytestmark = pytest.mark.browser

# The first block of advinterp/studies/demo.toml, small.
MINI_STUDY = """\
title = "advinterp report check <mini>"
seed = 0

[vars]
n = 16
n_attack = 4

[models.standard]
model = "synthetic-cnn"

[models.robust]
model = "synthetic-cnn-robust"

[data.test]
dataset = "synthetic"
params = { n = "${n}", split = "test", seed = "${seed}" }

[[steps]]
id = "pgd.${model}"
attack = "pgd"
params = { eps = 0.03137254901960784, eps_step = 0.00784313725490196, max_iter = 10, num_random_init = 1, seed = "${seed}" }
model = "${model}"
data = "test"
n = "${n_attack}"
matrix = { model = ["standard", "robust"] }

[[steps]]
id = "accuracy.${model}"
probe = "accuracy"
model = "${model}"
data = "test"
context = { batch = "pgd.${model}" }
matrix = { model = ["standard", "robust"] }

[[steps]]
id = "activation_distance.${model}"
analyzer = "activation_distance"
model = "${model}"
batch = "pgd.${model}"
matrix = { model = ["standard", "robust"] }
"""


@pytest.fixture
def require_browser():
    reason = browser_unavailable()
    if reason is None:
        return
    if os.environ.get("ADVINTERP_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"ADVINTERP_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(f"the browser check needs chromium and playwright: {reason}")


def test_demo_report_in_chromium(require_browser, demo_run):
    """The report of the shipped demo study (small): every section the core and the plugins
    contribute, opened in chromium."""
    html = (demo_run / "index.html").read_text(encoding="utf-8")
    expected = ["The embedded world", "Models: accuracy, clean and under attack", "Activation bias per layer (A11)",
                "Attacks (Table A1 view)", "Explaining adversarial examples: cam (Fig. 3)",
                "Interpretability score of the perturbations (Table 2 view)",
                "Promotion-suppression effect of grid perturbations (Figs. 2 and 4, Table 1)",
                "Refined attacks under S1 / S2 (Table A1 view)", ABOUT_TITLE]
    counts = check_report(demo_run / "index.html", demo_run / "report-1280.png", expect_sections=expected)
    assert counts["sections"] == counts["toc_links"] == html.count("<section ")
    assert counts["sections"] >= 14 and counts["images"] >= 15 and counts["tables"] >= 15
    assert "section failed" not in html


def test_study_report_in_chromium(require_browser, tmp_path):
    from advinterp.study import Study

    out = Study.from_text(MINI_STUDY).run(tmp_path / "run", log=lambda *_: None).out
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "&lt;mini&gt;" in html  # the study text, escaped, in the About section

    expected = ["The embedded world", "Models: accuracy, clean and under attack", "Activation bias per layer (A11)",
                ABOUT_TITLE]
    counts = check_report(out / "index.html", out / "report-1280.png", expect_sections=expected)
    assert counts["sections"] == counts["toc_links"] == html.count("<section ")
    assert counts["images"] >= 2 and counts["tables"] >= 3
    assert (out / "report-1280.png").stat().st_size > 10_000


def test_wide_table_and_missing_figure_in_chromium(require_browser, tmp_path):
    import matplotlib.pyplot as plt

    for name, wide in (("small.png", False), ("wide.png", True)):
        fig, ax = plt.subplots(figsize=(24, 3) if wide else (4, 3), dpi=100)  # 2400 px: scaled to fit
        ax.plot(range(10), [i * i for i in range(10)])
        fig.savefig(tmp_path / name)
        plt.close(fig)
    wide_rows = [{f"a rather long column name {i}": i / 7 for i in range(40)} for _ in range(3)]
    sections = [
        Section("Figures <and> tables", ["x < y & z; a-very-long-unbroken-word-" * 12],
                [("small", [{"metric": "asr", "value": 0.5}])], [("small", "small.png"), ("wide", "wide.png")]),
        Section("Wide table", ["Forty columns: the table scrolls inside its own box."], [("wide", wide_rows)],
                [("deleted on purpose", "no-such-figure.png")]),
        Section("Wide table", ["Same title, another id."]),
    ]
    path = write_report(tmp_path, "report check", sections, study_text="x = '<b>'\n" + "long line " * 200,
                        versions=software_versions(), summary="Synthetic sections.")
    assert "figure missing: no-such-figure.png" in path.read_text(encoding="utf-8")
    counts = check_report(path, tmp_path / "report-1280.png", expect_sections=["Wide table", ABOUT_TITLE])
    assert (counts["images"], counts["tables"], counts["sections"], counts["toc_links"]) == (2, 3, 4, 4)
    assert counts["scroll_width"] <= 1280
