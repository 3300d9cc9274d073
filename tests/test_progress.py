"""advinterp.progress (issue 11: every other test runs with ADVINTERP_PROGRESS=0, set in conftest)."""
import io
import sys

import pytest
import torch

from advinterp import progress as prog
from advinterp.progress import progress_bar, progress_enabled


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize("value, want", [("1", True), ("yes", True), ("true", True), ("0", False),
                                         ("false", False), ("no", False), ("", False)])
def test_env_var_decides_whatever_ci_and_terminal(monkeypatch, value, want):
    monkeypatch.setenv("ADVINTERP_PROGRESS", value)
    for ci in (None, "1"):
        if ci is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", ci)
        for tty in (True, False):
            monkeypatch.setattr(sys, "stderr", _Stream(tty))
            assert progress_enabled() is want


def test_without_the_env_var_ci_and_the_terminal_decide(monkeypatch):
    monkeypatch.delenv("ADVINTERP_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", _Stream(True))
    assert progress_enabled() is True
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    assert progress_enabled() is False                 # not a terminal (a log file, a pipe)
    monkeypatch.setattr(sys, "stderr", _Stream(True))
    monkeypatch.setenv("CI", "true")
    assert progress_enabled() is False                 # CI, even on a terminal
    monkeypatch.setenv("CI", "")
    assert progress_enabled() is True                  # an empty CI is no CI


def test_progress_bar_disabled_returns_the_iterable_itself(monkeypatch):
    items = [3, 1, 2]
    monkeypatch.setenv("ADVINTERP_PROGRESS", "0")
    assert progress_bar(items, desc="x") is items
    monkeypatch.setenv("ADVINTERP_PROGRESS", "1")
    assert progress_bar(items, desc="x", disable=True) is items   # the argument wins over the env var
    gen = iter(range(4))
    assert progress_bar(gen, disable=True) is gen


def test_progress_bar_enabled_is_tqdm_on_stderr(monkeypatch, capsys):
    from tqdm import tqdm

    monkeypatch.setenv("ADVINTERP_PROGRESS", "1")
    bar = progress_bar(range(5), desc="counting sheep")
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2, 3, 4]                # the items, unchanged and in order
    out, err = capsys.readouterr()
    assert out == "" and "counting sheep" in err
    # disable=False shows it even where the env var says no
    monkeypatch.setenv("ADVINTERP_PROGRESS", "0")
    bar = progress_bar([1, 2], desc="forced", disable=False, total=2)
    assert isinstance(bar, tqdm) and list(bar) == [1, 2]
    assert "forced" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*the attack failed")
def test_the_pse_analyzer_shows_a_bar_when_enabled(monkeypatch, capsys):
    from advinterp.analyzers.pse import PSEAnalyzer
    from advinterp.testing import toy_batch, toy_model

    model = toy_model()
    batch = toy_batch(model)
    monkeypatch.setenv("ADVINTERP_PROGRESS", "1")
    on = PSEAnalyzer(size=4, max_batch=8).analyze(model, batch)   # the toy model traces
    assert on.inference == "incremental"
    err = capsys.readouterr().err
    assert "pse images (incremental)" in err and f"0/{len(batch.x0)}" in err   # one step per image
    full = PSEAnalyzer(size=4, max_batch=8, incremental=False).analyze(model, batch)
    assert full.inference == "full" and "pse grids" in capsys.readouterr().err
    monkeypatch.setenv("ADVINTERP_PROGRESS", "0")
    off = PSEAnalyzer(size=4, max_batch=8).analyze(model, batch)
    off_full = PSEAnalyzer(size=4, max_batch=8, incremental=False).analyze(model, batch)
    assert "pse " not in capsys.readouterr().err
    assert torch.equal(torch.as_tensor(on.s), torch.as_tensor(off.s))   # the bar changes nothing
    assert torch.equal(torch.as_tensor(full.s), torch.as_tensor(off_full.s))


def _square(v):
    return v * v


def test_local_executor_shows_a_bar_over_several_shards(monkeypatch, capsys):
    from advinterp.executor import LocalExecutor, ShardTask

    tasks = [ShardTask("attack:pgd", i, _square, (i,), label=f"images {i}") for i in range(4)]
    for env, shown in (("1", True), ("0", False)):
        monkeypatch.setenv("ADVINTERP_PROGRESS", env)
        got = []
        LocalExecutor().run(tasks, lambda task, result: got.append((task.index, result)))
        assert got == [(0, 0), (1, 1), (2, 4), (3, 9)]          # every shard, in order, results unchanged
        assert ("attack:pgd shards" in capsys.readouterr().err) is shown
    # a single shard needs no bar
    monkeypatch.setenv("ADVINTERP_PROGRESS", "1")
    LocalExecutor().run(tasks[:1], lambda task, result: None)
    assert "shards" not in capsys.readouterr().err
