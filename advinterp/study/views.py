"""What report sections see of a run: :class:`Run`, :class:`ReportGroup`, :class:`StepView`.

A section is built from saved results only (``advinterp report RUN_DIR`` rebuilds the report
without models or data): a :class:`StepView` loads its step's result from the run folder on
first use, and its inputs (the batch it analysed, its context and report references) are
step views too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import AdvinterpError

__all__ = ["Run", "ReportGroup", "StepView", "table_rows"]


@dataclass
class StepView:
    """One finished step of a run, as a report section sees it.

    Attributes:
        id: the step's id in the study (``"pse.cw_l2"``).
        kind: ``"attack"``, ``"explainer"``, ``"analyzer"``, ``"probe"`` or ``"data"``.
        name: the component's registry name (the dataset's for ``"data"``).
        params: the component's parameters (all of them, defaults filled in).
        spec: the step's table in the study file after variable substitution (``model``,
            ``data``, ``batch``, ``n``, ``context``, ``report``, ...).
        refs: ``{input name: step id}``: ``"batch"``, each context key, each report key.
        run: the :class:`Run` it belongs to.
    """

    id: str
    kind: str
    name: str
    params: dict[str, Any]
    spec: dict[str, Any]
    refs: dict[str, str]
    run: "Run" = field(repr=False)
    path: Path | None = None
    seconds: float = 0.0
    _result: Any = field(default=None, repr=False)

    @property
    def result(self) -> Any:
        """The step's result (loaded from the run folder on first use)."""
        if self._result is None:
            if self.path is None:
                raise AdvinterpError(f"step {self.id!r} has no saved result in {self.run.out}")
            from ..results import Result

            self._result = Result.load(self.path)
        return self._result

    def input(self, name: str) -> "StepView | None":
        """The step view of input ``name`` (``"batch"``, a context or report key), or ``None``
        (no such input, or a data table -- a pairs folder as the batch -- whose images a run
        folder does not keep: ``refs[name]`` still names it)."""
        ref = self.refs.get(name)
        if ref is None or (ref not in self.run.steps and ref in self.run.data):
            return None
        return self.run.step(ref)

    def rows(self) -> list[dict[str, Any]]:
        """The result's scalar table rows (:func:`table_rows`); ``[]`` when it cannot be read."""
        try:
            return table_rows(self.result)
        except Exception:
            return []

    @property
    def model(self) -> str:
        """The model id the step ran on (``""`` for steps without a model)."""
        return str(self.spec.get("model") or "")


@dataclass
class ReportGroup:
    """The steps one report section covers: every step of one component (analyzers,
    explainers, probes, data), or every attack step (``kind="attack"``, ``name="*"``), in
    study order."""

    kind: str
    name: str
    steps: list[StepView]

    def results(self) -> list[Any]:
        return [s.result for s in self.steps]


@dataclass
class Run:
    """A run folder: where sections write their figures and tables.

    Attributes:
        out: the run folder.
        title: the study's title.
        summary: headline numbers sections add (``run.summary["pse"] = rows``); written to
            ``summary.json`` beside each step's rows.
        classes: class names of the study's first dataset, when it has them (figure labels).
        steps: the finished steps by id; models: the study's model ids and their registry names;
        data: the study's data ids and their kinds.
    """

    out: Path
    title: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    steps: dict[str, StepView] = field(default_factory=dict)
    #: ``{model id: registered model name}`` of the study (``{"robust": "synthetic-cnn-robust"}``)
    models: dict[str, str] = field(default_factory=dict)
    #: ``{data id: kind}`` of the study's data tables (``{"damagenet": "pairs"}``)
    data: dict[str, str] = field(default_factory=dict)

    def step(self, step_id: str) -> StepView:
        try:
            return self.steps[step_id]
        except KeyError:
            raise AdvinterpError(f"the run in {self.out} has no finished step {step_id!r}") from None

    def save_figure(self, fig: Any, name: str) -> str:
        """Save a matplotlib figure as ``out/name`` (PNG) and return ``name`` (the path the
        report embeds)."""
        from ..viz import save_figure

        save_figure(fig, self.out / name)
        return name

    def write_text(self, name: str, text: str) -> str:
        """Write ``out/name`` (a text table beside the report) and return ``name``."""
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        return name


def table_rows(result: Any) -> list[dict[str, Any]]:
    """``result.rows()`` with only the scalar cells (what tables, logs and ``summary.json``
    show); ``[]`` for a result without a table view."""
    try:
        rows = result.rows()
    except Exception:  # a result without a table view still runs and reports
        return []
    return [{k: v for k, v in r.items() if isinstance(v, (bool, int, float, str)) or v is None} for r in rows]
