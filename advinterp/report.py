"""A self-contained HTML report for a run directory (figures embedded, no external files).

The page: title, optional summary paragraph, a table of contents linking to every section,
the sections (each an HTML ``<section>`` with a unique id), and — when the caller passes the
study text or software versions — an "About this run" section at the end. No scripts, no
external URLs; wide tables scroll inside their own box so the page fits a 1280 px window.
"""
from __future__ import annotations

import base64
import html
import importlib.metadata as md
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["Section", "write_report", "table_html", "software_versions", "ABOUT_TITLE"]

#: Title (and, slugged, id) of the section :func:`write_report` appends for the study text and versions.
ABOUT_TITLE = "About this run"
_TOC_ID = "contents"
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".webp": "image/webp"}


@dataclass
class Section:
    """One report section: a title, paragraphs of text, tables (``(caption, rows)``, rows being
    dicts) and figure files (``(caption, path)``, paths relative to the run directory).

    ``id`` is the section's HTML id (the link target in the table of contents); by default a
    slug of the title. Ids are made unique on the page (``-2``, ``-3``, ... appended).
    """

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    id: str | None = None


def table_html(rows: Sequence[dict], floatfmt: str = ".4g") -> str:
    """An HTML table of ``rows`` (columns = union of keys in first-seen order)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]

    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def software_versions() -> dict[str, str]:
    """Versions worth recording with a run: python, platform, advinterp, torch, numpy and, for
    every loaded entry-point plugin, ``"plugin <name>" -> "<distribution> <version>"``.

    Read from package metadata (``importlib.metadata``); no plugin module is imported here
    (:func:`advinterp.list_plugins` reports the plugins the registry has already loaded).
    """
    import platform

    from . import __version__, list_plugins
    from .plugins import ENTRY_POINT_GROUP

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    out = {"python": platform.python_version(), "platform": platform.platform(), "advinterp": __version__,
           "torch": version("torch"), "numpy": version("numpy")}
    dists = {ep.name: getattr(ep, "dist", None) for ep in md.entry_points(group=ENTRY_POINT_GROUP)}
    for status in list_plugins():
        if not status.loaded or status.source == "builtin":
            continue
        dist = dists.get(status.name)
        out[f"plugin {status.name}"] = (f"{dist.metadata['Name']} {dist.version}" if dist is not None
                                        else status.source)
    return out


def _slug(text: str, lower: bool = True) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_text.lower() if lower else ascii_text).strip("-") or "section"


def _unique_ids(sections: Sequence[Section]) -> list[str]:
    seen, ids = {_TOC_ID}, []
    for s in sections:
        base = _slug(s.id, lower=False) if s.id else _slug(s.title)
        sid, k = base, 2
        while sid in seen:
            sid, k = f"{base}-{k}", k + 1
        seen.add(sid)
        ids.append(sid)
    return ids


def _figure_html(run_dir: Path, caption: str, rel: str) -> str:
    path = run_dir / rel
    if not path.is_file():
        return f"<p class='missing'>figure missing: {html.escape(str(rel))}</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    mime = _MIME.get(path.suffix.lower(), "image/png")
    return (f"<figure><img src='data:{mime};base64,{data}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)} ({html.escape(str(rel))})</figcaption></figure>")


def _section_html(run_dir: Path, s: Section, sid: str, pre: str = "") -> str:
    parts = [f"<section id='{html.escape(sid)}'><h2>{html.escape(s.title)}</h2>"]
    parts += [f"<p>{html.escape(t)}</p>" for t in s.text]
    if pre:
        parts.append(pre)
    for caption, rows in s.tables:
        body = (f"<div class='table-wrap'>{table_html(rows)}</div>" if rows else "<p class='empty'>(no rows)</p>")
        parts.append(f"<h3>{html.escape(caption)}</h3>{body}")
    parts += [_figure_html(run_dir, caption, rel) for caption, rel in s.figures]
    parts.append("</section>")
    return "\n".join(parts)


_CSS = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;line-height:1.45;margin:0;color:#222;background:#fff}
main{max-width:1100px;margin:2em auto;padding:0 1.5em}
h1,h2,h3,p,figcaption,li{overflow-wrap:anywhere}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav#contents{background:#f8f8f8;border:1px solid #e4e4e4;padding:.5em 1.5em;margin:1em 0 2em}
nav#contents h2{border:0;margin:.5em 0 .2em;font-size:1.1em}
nav#contents ol{margin:.3em 0 .6em;padding-left:1.5em}
.table-wrap{max-width:100%;overflow-x:auto;margin:.5em 0 1.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
pre{background:#f6f6f6;border:1px solid #e4e4e4;padding:.8em;max-width:100%;overflow-x:auto;white-space:pre-wrap;
overflow-wrap:anywhere}
p.missing{color:#a00;font-weight:bold}p.empty{color:#777}
.summary{font-size:1.05em}"""


def write_report(run_dir: str | Path, title: str, sections: Sequence[Section], study_text: str | None = None,
                 versions: dict[str, str] | None = None, summary: str | None = None) -> Path:
    """Write ``run_dir/index.html`` and return its path.

    Args:
        run_dir: the run directory; figure paths are relative to it. Figures are embedded as
            base64; a missing figure file becomes a visible "figure missing: <file>" line.
        title: the page title.
        sections: the report's sections, in order (a table of contents links to each).
        study_text: the study file's text, shown verbatim in the "About this run" section.
        versions: software name -> version (e.g. :func:`software_versions`), shown as a table
            in the "About this run" section.
        summary: a paragraph shown under the title, before the table of contents.

    The "About this run" section is appended only when ``study_text`` or ``versions`` is given.
    """
    run_dir = Path(run_dir)
    sections = list(sections)
    about, about_pre = None, ""
    if study_text is not None or versions is not None:
        about = Section(ABOUT_TITLE, id="about-this-run")
        if versions is not None:
            about.tables.append(("Software versions",
                                 [{"software": k, "version": v} for k, v in versions.items()]))
        if study_text is not None:
            about_pre = f"<h3>Study file</h3><pre>{html.escape(study_text)}</pre>"
        sections.append(about)
    ids = _unique_ids(sections)
    toc = "".join(f"<li><a href='#{html.escape(sid)}'>{html.escape(s.title)}</a></li>"
                  for s, sid in zip(sections, ids))
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>"
             f"<h1>{html.escape(title)}</h1>"]
    if summary:
        parts.append(f"<p class='summary'>{html.escape(summary)}</p>")
    parts.append(f"<nav id='{_TOC_ID}'><h2>Contents</h2><ol>{toc}</ol></nav>")
    parts += [_section_html(run_dir, s, sid, about_pre if s is about else "") for s, sid in zip(sections, ids)]
    parts.append("</main></body></html>")
    out = run_dir / "index.html"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
