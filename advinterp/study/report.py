"""The report of a run folder: sections from the plugins, ``index.html`` and ``summary.json``.

Steps are grouped for the report -- every attack step together (one Table A1), every other
step by its component (``pse``, ``is``, ``dissection``, ...), the data by dataset -- in the
order each group first appears in the study. Each group is offered to the
``advinterp_report_section(group, run)`` hook (``firstresult``): plugins answer for their own
components, the core for its own and, last, with a generic table of each step's rows.

:func:`report_from_folder` rebuilds the report of a finished (or partly finished) run from
its ``run.json`` and saved results alone: ``advinterp report RUN_DIR``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..exceptions import AdvinterpError
from ..report import Section, software_versions, write_report
from ..results import format_table
from .views import ReportGroup, Run, StepView, table_rows

__all__ = ["groups_of", "write_run_report", "report_from_folder", "generic_section"]


def groups_of(run: Run, data: dict[str, Any] | None = None, compare: list[str] | tuple[str, ...] = ()) -> list[ReportGroup]:
    """The run's report groups, in order: data (by dataset name), then steps, then one group
    per paper of the study's ``compare`` (``kind="paper"``, every finished step)."""
    groups: dict[tuple[str, str], ReportGroup] = {}
    for did, spec in (data or {}).items():
        name = spec["name"] if spec["kind"] == "dataset" else spec["kind"]
        view = StepView(did, "data", name, dict(spec.get("params") or {}), dict(spec), {}, run)
        groups.setdefault(("data", name), ReportGroup("data", name, [])).steps.append(view)
    for view in run.steps.values():
        key = ("attack", "*") if view.kind == "attack" else (view.kind, view.name)
        groups.setdefault(key, ReportGroup(key[0], key[1], [])).steps.append(view)
    for name in compare:
        groups[("paper", name)] = ReportGroup("paper", name, list(run.steps.values()))
    return list(groups.values())


def generic_section(group: ReportGroup, run: Run) -> Section:
    """Each step's ``result.rows()`` (plus its id) as one table: the section of components
    without their own."""
    rows = []
    for s in group.steps:
        if s.kind == "data":
            rows.append({"data": s.id, "kind": s.spec.get("kind", ""), "name": s.name,
                         **{k: str(v) for k, v in s.params.items()}})
            continue
        try:
            result = s.result
        except Exception as e:  # unreadable (e.g. its plugin is gone): say so rather than fail the report
            rows.append({"step": s.id, "result": f"cannot be read ({type(e).__name__}: {e})"})
            continue
        rows += [{"step": s.id, **r} for r in table_rows(result)] or [{"step": s.id, "result": "no table"}]
    what = "Data" if group.kind == "data" else f"{group.kind} {group.name}"
    if rows and group.kind != "data":
        run.write_text(f"{group.kind}_{group.name}.txt".replace("*", "all"), format_table(rows))
    caption = "The data tables of the study" if group.kind == "data" else f"{what}: one row per step"
    return Section(f"{what[0].upper()}{what[1:]}", tables=[(caption, rows)])


def _sections(run: Run, data: dict[str, Any], compare: list[str] | tuple[str, ...] = ()) -> list[Section]:
    from ..registry import get_registry

    hook = get_registry().pm.hook.advinterp_report_section
    out = []
    for group in groups_of(run, data, compare):
        try:
            section = hook(group=group, run=run)
        except Exception as e:  # one broken section (a plugin's bug, a result it cannot read) keeps the others
            import traceback
            import warnings

            where = traceback.extract_tb(e.__traceback__)[-1]
            msg = (f"The section of {group.kind} {group.name!r} ({', '.join(st.id for st in group.steps)}) failed: "
                   f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno}). The results are in "
                   "the run folder; fix the cause and rebuild the report with advinterp report RUN_DIR.")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            section = Section(f"{group.kind} {group.name}: section failed", [msg])
        if section is not None:
            out.append(section)
    return out


def write_run_report(out: Path, run: Run, index: dict[str, Any] | None = None) -> Path:
    """Write ``index.html`` and ``summary.json`` of the run folder ``out``."""
    out = Path(out)
    if index is None:
        index = json.loads((out / "run.json").read_text())
    run.summary.clear()
    if not run.models:
        run.models = {k: str(v.get("model", "")) for k, v in (index.get("models") or {}).items()}
    sections = _sections(run, index.get("data", {}), index.get("compare", []))
    study_text = (out / "study.toml").read_text(encoding="utf-8") if (out / "study.toml").is_file() else None
    summary = {"title": run.title, "seconds": index.get("seconds"), **run.summary,
               "steps": {sid: {"kind": e["kind"], "component": e["component"], "seconds": e["seconds"],
                               "cached": e.get("cached", False), "rows": run.steps[sid].rows()}
                         for sid, e in index.get("steps", {}).items() if sid in run.steps}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    n = len(index.get("steps", {}))
    lead = (f"{index['description'].strip()} " if index.get("description") else "") + (
        f"{n} steps on {', '.join(m['model'] for m in index.get('models', {}).values()) or 'no model'}; "
        f"the study file and software versions are at the end.")
    return write_report(out, run.title, sections, study_text=study_text, versions=software_versions(), summary=lead)


def report_from_folder(run_dir: str | Path) -> Path:
    """Rebuild ``index.html`` and ``summary.json`` of ``run_dir`` from its saved results."""
    out = Path(run_dir)
    path = out / "run.json"
    if not path.is_file():
        raise AdvinterpError(f"{out}: not a run folder (no run.json). Run a study into it first: "
                             "advinterp run STUDY.toml --out DIR.")
    index = json.loads(path.read_text())
    run = Run(out=out, title=index.get("title", out.name), classes=index.get("classes"),
              data={d: str(v.get("kind", "")) for d, v in (index.get("data") or {}).items()})
    for sid, e in index.get("steps", {}).items():
        result_path = out / e["path"]
        if not result_path.is_file():
            continue
        run.steps[sid] = StepView(sid, e["kind"], e["component"], dict(e.get("params") or {}), dict(e.get("spec") or {}),
                                  dict(e.get("refs") or {}), run, result_path, float(e.get("seconds") or 0))
    return write_run_report(out, run, index)
