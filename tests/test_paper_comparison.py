"""Paper comparisons: verdicts by hand, the study key ``compare``, and the xu2019 section on a
hand-built run whose numbers decide every verdict."""
import json
import math

import numpy as np
import pytest

import advinterp
from advinterp.sections.paper import Finding, gap, gap_verdict, threshold_verdict
from advinterp.study import Study, StudyError


def test_gap_and_verdicts_by_hand():
    g, se = gap(0.8, 0.03, 0.7, 0.04)
    assert g == pytest.approx(0.1) and se == pytest.approx(0.05)
    assert gap_verdict(0.11, 0.05) == "reproduced"          # 2.2 SE
    assert gap_verdict(0.09, 0.05) == "not resolved"        # 1.8 SE
    assert gap_verdict(-0.11, 0.05) == "not reproduced"
    assert gap_verdict(-0.09, 0.05, at_least=True) == "reproduced"   # not significantly lower
    assert gap_verdict(-0.11, 0.05, at_least=True) == "not reproduced"
    assert gap_verdict(0.5, 0.0) == "not resolved"          # one image decides nothing
    assert gap_verdict(float("nan"), 0.1) == "not measured" and gap_verdict(None, None) == "not measured"
    assert gap(1.0, None, 0.5, float("nan")) == (0.5, 0.0)
    assert threshold_verdict(True) == "reproduced" and threshold_verdict(False) == "not reproduced"
    assert threshold_verdict(None) == "not measured"


def test_plot_findings_draws_one_row_per_finding():
    from advinterp.viz.paper import plot_findings

    fs = [Finding("a", "T1", "1 vs 0", "1 vs 0", 0.3, 0.1, "reproduced"),
          Finding("b", "T2", "1 vs 0", "0 vs 1", -50.0, 0.1, "not reproduced")]
    fig = plot_findings(fs)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    # gap / SE: 3 for a, clipped to -10 for b (written as its value)
    xs = sorted(float(line.get_xdata()[0]) for line in ax.lines if line.get_marker() == "o")
    assert xs == pytest.approx([-10.0, 3.0])
    assert any(t.get_text() == "-500" for t in ax.texts)


STUDY = """
title = "compare"
seed = 0
compare = {compare}

[models.m]
model = "synthetic-cnn"

[data.d]
dataset = "synthetic"
params = {{ n = 8, split = "test" }}

[[steps]]
id = "attack.ifgsm"
attack = "ifgsm"
params = {{ targeted = true, eps = 0.0314, eps_step = 0.0078, max_iter = 5 }}
n = 4

[[steps]]
id = "attack.cw_l2"
attack = "cw_l2"
params = {{ targeted = true, binary_search_steps = 1, max_iter = 5, learning_rate = 0.05, initial_const = 1.0 }}
n = 4

[[steps]]
id = "cam.${{attack}}"
explainer = "cam"
batch = "attack.${{attack}}"
matrix = {{ attack = ["ifgsm", "cw_l2"] }}

[[steps]]
id = "is.${{attack}}"
analyzer = "is"
batch = "attack.${{attack}}"
context = {{ maps = "cam.${{attack}}" }}
matrix = {{ attack = ["ifgsm", "cw_l2"] }}
"""


def test_compare_names_are_checked(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(compare='["xu2091"]'))
    with pytest.raises(StudyError, match=r"study.toml:4: compare: no paper comparison named 'xu2091'. Did you mean "
                                         r"'xu2019'\?"):
        Study.from_file(path).check()
    path.write_text(STUDY.format(compare="[1]"))
    with pytest.raises(StudyError, match=r"compare: \[1\] is invalid; expected a list of paper names"):
        Study.from_file(path).check()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xu")
    return tmp, Study.from_text(STUDY.format(compare='["xu2019"]'), tmp / "study.toml").run(tmp / "run",
                                                                                          log=lambda m: None)


def test_the_xu2019_section_judges_a_run_and_says_what_is_missing(small_run):
    tmp_path, run = small_run
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())["papers"]["xu2019"]
    by = {r["finding"]: r for r in rows}
    # Table 2's C&W > IFGSM is judged from the two is steps: the numbers equal table2's
    from advinterp.analyzers.interpretability_score import table2

    t = {r["attack"]: r for r in table2([run.steps["is.ifgsm"].result, run.steps["is.cw_l2"].result])}
    f = by["Table 2: IS w.r.t. (x', t) C&W > IFGSM"]
    g = t["cw_l2"]["is_xadv_t"] - t["ifgsm"]["is_xadv_t"]
    se = math.hypot(t["cw_l2"]["se_is_xadv_t"], t["ifgsm"]["se_is_xadv_t"])
    assert f["gap"] == f"{g:+.3g}" and f["verdict"] == gap_verdict(g, se)
    # the steps the run lacks are named, not guessed
    assert by["Table 2: IS w.r.t. (x', t) Str > EAD"]["verdict"] == "not measured"
    assert "pse steps" in by["Table 1: IFGSM lowest, Str highest corr(s, ||delta_G||_2)"]["note"]
    assert "unit_sensitivity" in by["Fig. 7a: sensitive units are more interpretable (p < 0.05) at the deepest "
                                    "layer"]["note"]
    html = (tmp_path / "run" / "index.html").read_text()
    assert "Reproducing Xu et al. 2019" in html and (tmp_path / "run" / "paper_xu2019.txt").is_file()


def test_a_comparison_no_plugin_provides_is_reported_not_raised(small_run, tmp_path):
    import shutil

    shutil.copytree(small_run[0] / "run", tmp_path / "run")
    index = json.loads((tmp_path / "run" / "run.json").read_text())
    index["compare"] = ["gone2020"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(index))
    from advinterp.study.report import report_from_folder

    report_from_folder(tmp_path / "run")
    assert "no installed plugin registers a paper comparison of that name" in (tmp_path / "run" / "index.html").read_text()
