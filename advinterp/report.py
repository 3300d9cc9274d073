"""A self-contained HTML report for a run directory (figures embedded, no external files)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["Section", "write_report", "table_html"]


@dataclass
class Section:
    """One report section: a title, paragraphs of text, tables (lists of row dicts) and
    figure files (PNG paths relative to the run directory)."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)


def table_html(rows: Sequence[dict], floatfmt: str = ".4g") -> str:
    """An HTML table of ``rows`` (columns = union of keys in first-seen order)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]

    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
figcaption{color:#555;font-size:.9em}"""


def write_report(run_dir: str | Path, title: str, sections: Sequence[Section]) -> Path:
    """Write ``run_dir/index.html`` with every section; PNGs are embedded as base64."""
    run_dir = Path(run_dir)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(t)}</p>" for t in s.text]
        for caption, rows in s.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>{table_html(rows)}")
        for caption, rel in s.figures:
            data = base64.b64encode((run_dir / rel).read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)} ({html.escape(rel)})</figcaption></figure>")
    parts.append("</body></html>")
    out = run_dir / "index.html"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
