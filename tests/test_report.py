"""advinterp.report without a browser: structure, escaping, missing figures, the About section."""
import re
from html.parser import HTMLParser

import pytest

from advinterp.report import ABOUT_TITLE, Section, software_versions, write_report

# the smallest valid PNG (1x1, grey)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000376ef9240000000a49444154"
                    "789c6368000000820081dd43af0000000049454e44ae426082")


class _Page(HTMLParser):
    """Ids, TOC link targets, section ids, <pre> and <title> text of a page."""

    def __init__(self, text):
        super().__init__()
        self.ids, self.toc_links, self.section_ids, self.pre, self.title = [], [], [], [], ""
        self._in_nav = self._in_pre = self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "nav":
            self._in_nav = True
        elif tag == "a" and self._in_nav:
            self.toc_links.append(a["href"])
        elif tag == "section":
            self.section_ids.append(a["id"])
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False
        elif tag == "pre":
            self._in_pre = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre[-1] += data
        if self._in_title:
            self.title += data


@pytest.fixture
def report(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    sections = [
        Section("Results <b>", ["x < y & z"], [("Table <1>", [{"col<": "<v>", "f": 0.123456}])], [("fig", "a.png")]),
        Section("Results <b>", ["same title again"]),
        Section("Figures", figures=[("gone", "missing/nope.png"), ("ok", "a.png")]),
        Section("Custom", id="my id!"),
        Section("Contents"),  # its slug would clash with the table of contents' own id
    ]
    study = "name: <study>\nsteps: [a & b]\n"
    path = write_report(tmp_path, "T <1>", sections, study_text=study, versions={"torch": "2.x", "my<pkg": "1"},
                        summary="short <summary>")
    return path, path.read_text(encoding="utf-8"), study


def test_toc_links_every_section_and_ids_are_unique(report):
    _, text, _ = report
    page = _Page(text)
    assert len(page.ids) == len(set(page.ids))
    assert len(page.section_ids) == 6  # five sections + About this run
    assert page.toc_links == [f"#{i}" for i in page.section_ids]
    assert page.section_ids[:2] == ["results-b", "results-b-2"]
    assert page.section_ids[3] == "my-id"
    assert "contents" in page.ids and page.section_ids[4] != "contents"
    assert page.section_ids[-1] == "about-this-run"
    assert text.index("<nav") < text.index("<section")


def test_escaping(report):
    _, text, study = report
    page = _Page(text)
    assert page.title == "T <1>"
    for raw in ("<b>", "<1>", "<v>", "col<", "<study>", "my<pkg", "<summary>"):
        assert raw not in text, raw
    for escaped in ("Results &lt;b&gt;", "Table &lt;1&gt;", "&lt;v&gt;", "x &lt; y &amp; z", "short &lt;summary&gt;"):
        assert escaped in text, escaped
    assert page.pre == [study]


def test_missing_figure_is_reported_not_fatal(report):
    _, text, _ = report
    assert "figure missing: missing/nope.png" in text
    assert text.count("data:image/png;base64,") == 2


def test_tables_are_wrapped_and_about_section_has_versions(report):
    _, text, _ = report
    tables = re.findall(r"<div class='table-wrap'><table>", text)
    assert len(tables) == text.count("<table>") == 2
    about = text[text.index("id='about-this-run'"):]
    assert ABOUT_TITLE in about and "Software versions" in about and "Study file" in about
    assert "<td>torch</td><td>2.x</td>" in about and "<td>my&lt;pkg</td><td>1</td>" in about


def test_backward_compatible_call(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    text = write_report(tmp_path, "plain", [Section("One", ["p"], [("t", [{"a": 1}])], [("f", "a.png")]),
                                            Section("Empty table", tables=[("none", [])])]).read_text()
    assert ABOUT_TITLE not in text and "<pre>" not in text
    assert "<section id='one'>" in text and "(no rows)" in text


def test_software_versions():
    v = software_versions()
    for key in ("python", "platform", "advinterp", "torch", "numpy"):
        assert v[key], key
    plugins = {k: val for k, val in v.items() if k.startswith("plugin ")}
    assert "plugin builtins" not in v
    assert any(val.startswith("advinterp-") for val in plugins.values()), plugins
