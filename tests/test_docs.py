"""Every hook is documented in docs/hooks.md; the README opens with the two commands."""
import inspect
import re
from pathlib import Path

import advinterp.hookspecs as hs

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_is_documented():
    doc = (ROOT / "docs" / "hooks.md").read_text()
    headings = set(re.findall(r"^##+ `?(advinterp_\w+)", doc, flags=re.M))
    names = hs.hook_names()
    assert names, "no hookspecs found"
    missing = [n for n in names if n not in headings]
    assert not missing, f"hooks without a section in docs/hooks.md: {missing}"
    stale = headings - set(names)
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"
    for n in names:
        assert inspect.getdoc(getattr(hs, n)), f"{n} has no docstring"


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    head = text[:1500]
    assert "make demo" in head and "make test" in head


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
