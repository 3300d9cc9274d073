"""Reading and checking a study file (TOML): models, data and steps, before anything runs.

The format (every key is documented in ``docs/studies.md``)::

    title = "My study"
    seed = 0                          # the ${seed} variable; default seed of steps
    shard_size = 64                   # images per shard of a step (default 64)

    [vars]                            # ${name} variables, overridable: --set n=48
    n = 1000

    [models.std]                      # model ids -> a registered model + its params
    model = "synthetic-cnn"

    [data.test]                       # data ids -> dataset = NAME + params, folder = PATH
    dataset = "synthetic"             #   (ImageNet-style), broden = PATH or pairs = PATH
    params = { n = "${n}", split = "test" }

    [[steps]]
    id = "attack.${attack}"           # unique step id
    attack = "${attack}"              # exactly one of attack / explainer / analyzer / probe
    params = { targeted = true }
    model = "std"                     # default: the only model
    data = "test"                     # attacks and probes: default the only data table
    n = 32                            # first n images (after `start`)
    matrix = { attack = ["pgd", "cw_l2"] }   # one step per value (${attack})

    [[steps]]
    id = "pse.${attack}"
    analyzer = "pse"
    batch = "attack.${attack}"        # analyzers and explainers: an attack step (or pairs data)
    context = { }                     # context keywords -> step ids
    matrix = { attack = ["pgd", "cw_l2"] }

Every error names the file, the line, the key and the fix (:class:`StudyError`).
"""
from __future__ import annotations

import copy
import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..exceptions import AdvinterpError

__all__ = ["StudyError", "StudySpec", "ModelSpec", "DataSpec", "StepSpec", "parse_study", "STEP_KINDS",
           "parse_value"]

#: The component kinds a step can name (the key of the step's table).
STEP_KINDS: tuple[str, ...] = ("attack", "explainer", "analyzer", "probe")
_DATA_KINDS = ("dataset", "folder", "broden", "pairs")
_TOP_KEYS = {"title", "seed", "shard_size", "vars", "models", "data", "steps", "description", "compare"}
_STEP_KEYS = {"id", "params", "model", "data", "batch", "start", "n", "context", "report", "matrix", "targets",
              "seed", "shard_size", "labels", "source", *STEP_KINDS}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Parameter names holding file paths, resolved against the study file's folder.
PATH_KEYS = ("weights", "path", "root", "broden")


class StudyError(AdvinterpError, ValueError):
    """A study file is wrong; the message names the file, line, key and the fix."""


@dataclass
class ModelSpec:
    """``[models.<id>]``: a registered ``model`` and its ``params``."""

    id: str
    model: str
    params: dict[str, Any]
    where: str


@dataclass
class DataSpec:
    """``[data.<id>]``: ``kind`` is ``dataset`` (a registered name + params), ``folder``
    (ImageNet-style), ``broden`` (a Broden folder) or ``pairs`` (clean/adversarial pairs)."""

    id: str
    kind: str
    name: str
    params: dict[str, Any]
    where: str


@dataclass
class StepSpec:
    """One ``[[steps]]`` entry after matrix expansion and variable substitution."""

    id: str
    kind: str
    component: str
    params: dict[str, Any]
    model: str | None
    data: str | None
    batch: str | None
    start: int
    n: int | None
    context: dict[str, str]
    report: dict[str, str]
    targets: Any
    seed: int
    shard_size: int
    labels: str
    where: str
    source: int | None = None
    table: dict[str, Any] = field(default_factory=dict)

    @property
    def refs(self) -> dict[str, str]:
        """``{input name: step or data id}`` of everything this step reads."""
        out = {}
        if self.batch is not None:
            out["batch"] = self.batch
        out.update(self.context)
        out.update({k: v for k, v in self.report.items() if k not in out})
        return out

    @property
    def compute_refs(self) -> dict[str, str]:
        """The references the result depends on (``report`` entries only feed the report)."""
        out = {} if self.batch is None else {"batch": self.batch}
        out.update(self.context)
        return out


@dataclass
class StudySpec:
    """A parsed, checked study file."""

    path: Path | None
    text: str
    title: str
    seed: int
    shard_size: int
    vars: dict[str, Any]
    models: dict[str, ModelSpec]
    data: dict[str, DataSpec]
    steps: list[StepSpec]
    description: str = ""
    #: the ``--set`` values the study was parsed with (kept in ``run.json`` for resuming)
    overrides: dict[str, Any] = field(default_factory=dict)
    #: ``compare = ["xu2019", ...]``: papers whose reported numbers the report sets the run
    #: against (a section each, see ``advinterp.sections``)
    compare: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


# ---------------------------------------------------------------------------- locations
class _Locator:
    """Line numbers of tables and keys in the TOML text (tomllib keeps none)."""

    _HEADER = re.compile(r"^\s*(\[\[|\[)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        path: tuple = ()
        counts: dict[tuple, int] = {}
        for no, line in enumerate(text.splitlines(), 1):
            m = self._HEADER.match(line)
            if m:
                parts = tuple(p.strip().strip("\"'") for p in m.group(2).split("."))
                if m.group(1) == "[[":
                    idx = counts.get(parts, 0)
                    counts[parts] = idx + 1
                    path = parts + (idx,)
                else:  # a sub-table of the last array entry, e.g. [steps.params]
                    base = parts[:-1]
                    path = (base + (counts[base] - 1,) + parts[-1:]) if counts.get(base) else parts
                self.lines.setdefault(path, no)
                continue
            m = self._KEY.match(line)
            if m:
                key = tuple(k.strip().strip("\"'") for k in m.group(1).split("."))
                self.lines.setdefault(path + key, no)

    def line(self, *path: Any) -> int | None:
        """The line of the longest known prefix of ``path``."""
        for k in range(len(path), 0, -1):
            if tuple(path[:k]) in self.lines:
                return self.lines[tuple(path[:k])]
        return None


class _Ctx:
    def __init__(self, path: Path | None, text: str):
        self.name = str(path) if path is not None else "<study>"
        self.loc = _Locator(text)

    def error(self, where: tuple, message: str, fix: str = "") -> StudyError:
        line = self.loc.line(*where)
        shown = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in where).replace(".[", "[")
        head = f"{self.name}:{line}" if line else self.name
        return StudyError(f"{head}: {shown}: {message}" + (f" {fix}" if fix else ""))


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    return f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""


#: The ``params`` of a ``pairs = "PATH"`` data table (keywords of ``PairsFolder``; relative
#: ``clean`` / ``adversarial`` / ``labels`` paths are taken inside PATH).
_PAIRS_PARAMS = ("size", "classes", "clean", "adversarial", "labels", "match", "unmatched")


def _check_pairs_params(ctx: "_Ctx", w: tuple, params: Any) -> None:
    """A pairs table's params: known keys, and ``match`` / ``unmatched`` among their choices."""
    if not isinstance(params, dict):
        return  # None, or not a table: _table reports it
    for key, value in params.items():
        if key not in _PAIRS_PARAMS:
            raise ctx.error(w + ("params", key), "unknown parameter of pairs data.",
                            f"{_close(key, list(_PAIRS_PARAMS))}A pairs table takes {', '.join(_PAIRS_PARAMS)}.")
    choices = {"match": ("stem", "path", "name"), "unmatched": ("error", "skip")}
    for key, allowed in choices.items():
        if key in params and params[key] not in allowed:
            raise ctx.error(w + ("params", key), f"{params[key]!r} is not one of {', '.join(map(repr, allowed))}.",
                            'E.g. match = "stem" (a.png pairs with a.JPEG) and unmatched = "skip" (keep the '
                            "pairs that match).")
    for key in ("clean", "adversarial", "labels"):
        if key in params and not isinstance(params[key], str):
            raise ctx.error(w + ("params", key), f"expected a path string, got {params[key]!r}.",
                            "Relative paths are taken inside the pairs folder.")


# ---------------------------------------------------------------------------- values
def _tomllib():
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser as the tomli package
        import tomli as tomllib
    return tomllib


def parse_value(text: str) -> Any:
    """A ``--set NAME=VALUE`` value: TOML syntax when it parses (``48``, ``0.5``, ``true``,
    ``[1, 2]``, ``"x"``), else the plain string."""
    tomllib = _tomllib()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _substitute(value: Any, variables: Mapping[str, Any], ctx: _Ctx, where: tuple) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        names = _VAR.findall(value)
        for n in names:
            if n not in variables:
                raise ctx.error(where, f"unknown variable ${{{n}}}.",
                                f"{_close(n, list(variables))}Define it under [vars] or in the step's matrix "
                                f"(known: {', '.join(sorted(variables)) or 'none'}).")
        if whole:  # "${n}" alone keeps the variable's type
            return copy.deepcopy(variables[whole.group(1)])
        return _VAR.sub(lambda m: str(variables[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _substitute(v, variables, ctx, where + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, ctx, where + (i,)) for i, v in enumerate(value)]
    return value


def _int(ctx: _Ctx, where: tuple, value: Any, low: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ctx.error(where, f"{value!r} is invalid; expected an integer >= {low}"
                        + (" (or leave it out)" if allow_none else "") + ".")
    return value


def _str(ctx: _Ctx, where: tuple, value: Any, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value:
        raise ctx.error(where, f"{value!r} is invalid; expected {what}.")
    return value


def _table(ctx: _Ctx, where: tuple, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.error(where, f"{value!r} is invalid; expected a table (e.g. {{ key = 1 }}).")
    return value


# ---------------------------------------------------------------------------- parsing
def parse_study(text: str, path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Parse and check the structure of a study file (names are checked against the registry
    by :meth:`advinterp.study.Study.check`).

    Args:
        text: the TOML text.
        path: where it was read from (named in errors; relative paths resolve against it).
        overrides: ``{var: value}`` replacing ``[vars]`` entries (``--set``), and ``seed``.
    """
    tomllib = _tomllib()
    ctx = _Ctx(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{ctx.name}: invalid TOML: {e}. Check the quotes, brackets and commas on that line.") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ctx.error((unknown[0],), "unknown top-level key.",
                        f"{_close(unknown[0], sorted(_TOP_KEYS))}Known: {', '.join(sorted(_TOP_KEYS))}.")
    overrides = dict(overrides or {})
    given = dict(overrides)
    variables = dict(_table(ctx, ("vars",), raw.get("vars")))
    bad = sorted(set(overrides) - set(variables) - {"seed", "shard_size"})
    if bad:
        raise StudyError(f"{ctx.name}: --set {bad[0]}=...: the study has no variable {bad[0]!r}. "
                         f"{_close(bad[0], list(variables))}Its variables: {', '.join(sorted(variables)) or 'none'} "
                         "(and seed, shard_size).")
    seed = _int(ctx, ("seed",), overrides.pop("seed", raw.get("seed", 0)), 0)
    shard_size = _int(ctx, ("shard_size",), overrides.pop("shard_size", raw.get("shard_size", 64)), 1)
    variables.update(overrides)
    variables.setdefault("seed", seed)
    title = _str(ctx, ("title",), raw.get("title", path.stem if path is not None else "study"))

    models = {}
    for mid, table in _table(ctx, ("models",), raw.get("models")).items():
        w = ("models", mid)
        table = _substitute(_table(ctx, w, table), variables, ctx, w)
        extra = sorted(set(table) - {"model", "params", "weights"})
        if extra:
            raise ctx.error(w + (extra[0],), "unknown key.", "A model table has model, params and weights.")
        name = _str(ctx, w + ("model",), table.get("model"), "a registered model name (see `advinterp list model`)")
        params = dict(_table(ctx, w + ("params",), table.get("params")))
        if "weights" in table:
            params["weights"] = table["weights"]
        models[mid] = ModelSpec(mid, name, params, f"models.{mid}")

    data = {}
    for did, table in _table(ctx, ("data",), raw.get("data")).items():
        w = ("data", did)
        table = _substitute(_table(ctx, w, table), variables, ctx, w)
        kinds = [k for k in _DATA_KINDS if k in table]
        if len(kinds) != 1:
            raise ctx.error(w, f"expected exactly one of {', '.join(_DATA_KINDS)} (found {kinds or 'none'}).",
                            'E.g. dataset = "synthetic", folder = "imagenet/val", broden = "broden1_224" or '
                            'pairs = "damagenet".')
        extra = sorted(set(table) - {kinds[0], "params"})
        if extra:
            raise ctx.error(w + (extra[0],), "unknown key.", f"A data table has {kinds[0]} and params.")
        name = _str(ctx, w + (kinds[0],), table[kinds[0]])
        if kinds[0] == "pairs":
            _check_pairs_params(ctx, w, table.get("params"))
        data[did] = DataSpec(did, kinds[0], name, dict(_table(ctx, w + ("params",), table.get("params"))),
                             f"data.{did}")

    raw_steps = raw.get("steps", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ctx.error(("steps",), "a study needs at least one [[steps]] entry.",
                        'Add e.g.\n[[steps]]\nid = "attack"\nattack = "pgd"')
    steps: list[StepSpec] = []
    seen: dict[str, tuple] = {}
    for i, table in enumerate(raw_steps):
        w = ("steps", i)
        table = _table(ctx, w, table)
        for expanded in _expand(ctx, w, table, variables):
            step = _step(ctx, w, expanded, seed, shard_size)
            if step.id in seen or step.id in data:
                other = ("a data id" if step.id in data else "this entry's matrix makes it twice" if seen[step.id] == w
                         else f"also steps[{seen[step.id][1]}]")
                raise ctx.error(w + ("id",), f"the id {step.id!r} is used twice ({other}).",
                                "Every step needs its own id; in a matrix, put the variables in the id (\"pse.${attack}\").")
            seen[step.id] = w
            steps.append(step)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ctx.error(("description",), f"{description!r} is invalid; expected a string (shown under the report's title).")
    compare = raw.get("compare", [])
    if isinstance(compare, str):
        compare = [compare]
    if not (isinstance(compare, list) and all(isinstance(c, str) and c for c in compare)):
        raise ctx.error(("compare",), f"{compare!r} is invalid; expected a list of paper names, e.g. "
                        "compare = [\"xu2019\"] (see docs/studies.md, 'Comparing with a paper').")
    spec = StudySpec(path, text, title, seed, shard_size, variables, models, data, steps, description, given,
                     tuple(dict.fromkeys(compare)))
    _check_refs(ctx, spec)
    spec.steps = _order(ctx, spec)
    return spec


def _expand(ctx: _Ctx, where: tuple, table: dict, variables: Mapping[str, Any]) -> list[dict]:
    """The steps of one ``[[steps]]`` table: one per combination of its ``matrix`` -- the
    product of ``{ var = [values] }`` lists, or the listed combinations of a list of tables
    ``[{ var = value, ... }, ...]`` (all with the same variables). Matrix values may use
    ``[vars]`` (``n = "${n_robust}"``)."""
    raw = table.get("matrix")
    body = {k: v for k, v in table.items() if k != "matrix"}
    if isinstance(raw, list):
        if not raw or not all(isinstance(c, dict) and c for c in raw):
            raise ctx.error(where + ("matrix",), f"{raw!r} is invalid; expected a table of lists "
                            "({ var = [values] }) or a non-empty list of tables ([{ var = value }, ...]).")
        names = list(raw[0])
        for i, c in enumerate(raw):
            if sorted(c) != sorted(names):
                raise ctx.error(where + ("matrix", i), f"this combination sets {sorted(c)}, the first one "
                                f"{sorted(names)}; every combination must set the same variables.")
        combos = [tuple(c[n] for n in names) for c in raw]
    else:
        matrix = _table(ctx, where + ("matrix",), raw)
        for k, v in matrix.items():
            if not isinstance(v, list) or not v:
                raise ctx.error(where + ("matrix", k), f"{v!r} is invalid; expected a non-empty list of values.")
        if not matrix:
            return [_substitute(body, variables, ctx, where)]
        names = list(matrix)
        combos = list(itertools.product(*(matrix[n] for n in names)))
    out = []
    for combo in combos:
        values = _substitute(dict(zip(names, combo)), variables, ctx, where + ("matrix",))
        out.append(_substitute(body, {**variables, **values}, ctx, where))
    return out


def _step(ctx: _Ctx, w: tuple, t: dict, seed: int, shard_size: int) -> StepSpec:
    unknown = sorted(set(t) - _STEP_KEYS)
    if unknown:
        raise ctx.error(w + (unknown[0],), "unknown step key.",
                        f"{_close(unknown[0], sorted(_STEP_KEYS))}Step keys: {', '.join(sorted(_STEP_KEYS))}.")
    sid = _str(ctx, w + ("id",), t.get("id"), "a step id (a non-empty string, e.g. \"attack.pgd\")")
    kinds = [k for k in STEP_KINDS if k in t]
    if len(kinds) != 1:
        raise ctx.error(w, f"step {sid!r} must name exactly one component: one of {', '.join(STEP_KINDS)} "
                        f"(found {', '.join(kinds) or 'none'}).", 'E.g. analyzer = "pse".')
    kind = kinds[0]
    comp = _str(ctx, w + (kind,), t[kind], f"a registered {kind} name (see `advinterp list {kind}`)")
    for key in ("model", "data", "batch"):
        if key in t and t[key] is not None:
            _str(ctx, w + (key,), t[key], "an id")
    article = "an" if kind[0] in "aeiou" else "a"
    if kind in ("analyzer", "explainer") and "data" in t:
        raise ctx.error(w + ("data",), f"{article} {kind} step reads a batch, not data.",
                        'Use batch = "<attack step id>" (or the id of a pairs data table).')
    if kind in ("attack", "probe") and "batch" in t:
        raise ctx.error(w + ("batch",), f"{article} {kind} step reads data, not a batch.",
                        'Use data = "<data id>".')
    if kind in ("analyzer", "explainer") and "batch" not in t:
        raise ctx.error(w, f"{kind} step {sid!r} needs batch = \"<attack step id>\" (the examples it looks at).")
    if kind in ("attack", "explainer") and t.get("context"):
        raise ctx.error(w + ("context",), f"{kind} steps take no context (context feeds analyzers and probes).")
    if kind == "analyzer" and "batch" in (t.get("context") or {}):
        raise ctx.error(w + ("context", "batch"), "'batch' is the step's own batch = \"...\" key, not a context "
                        "keyword.", "Move it out of context.")
    if kind != "attack":
        for key in ("targets", "labels", "source"):
            if key in t:
                raise ctx.error(w + (key,), f"{key} applies to attack steps only ({sid!r} is {article} {kind} step).")
    refs = {}
    for key in ("context", "report"):
        sub = _table(ctx, w + (key,), t.get(key))
        for k, v in sub.items():
            _str(ctx, w + (key, k), v, "the id of another step")
        refs[key] = dict(sub)
    targets = t.get("targets", "random")
    if not (targets == "random" or (isinstance(targets, int) and not isinstance(targets, bool) and targets >= 0)):
        raise ctx.error(w + ("targets",), f"{targets!r} is invalid; expected \"random\" or a class index >= 0.")
    labels = t.get("labels", "data")
    if labels not in ("data", "predicted"):
        raise ctx.error(w + ("labels",), f"{labels!r} is invalid; expected \"data\" (the dataset's labels) or "
                        "\"predicted\" (the model's predictions on the clean images).")
    source = t.get("source")
    if source is not None and not (isinstance(source, int) and not isinstance(source, bool) and source >= 0):
        raise ctx.error(w + ("source",), f"{source!r} is invalid; expected a class index >= 0 (attack only the "
                        "images of that class, e.g. source = 3), or leave it out for every image.")
    return StepSpec(
        id=sid, kind=kind, component=comp, params=dict(_table(ctx, w + ("params",), t.get("params"))),
        model=t.get("model"), data=t.get("data"), batch=t.get("batch"),
        start=_int(ctx, w + ("start",), t.get("start", 0), 0), n=_int(ctx, w + ("n",), t.get("n"), 0, True),
        context=refs["context"], report=refs["report"], targets=targets,
        seed=_int(ctx, w + ("seed",), t.get("seed", seed), 0),
        shard_size=_int(ctx, w + ("shard_size",), t.get("shard_size", shard_size), 1), labels=labels,
        where=".".join(map(str, w)), table=t, source=source)


def _where_of(step: StepSpec) -> tuple:
    kind, idx = step.where.split(".")
    return (kind, int(idx))


def _check_refs(ctx: _Ctx, spec: StudySpec) -> None:
    ids = [s.id for s in spec.steps]
    for s in spec.steps:
        w = _where_of(s)
        for key, mid in (("model", s.model),):
            if mid is not None and mid not in spec.models:
                raise ctx.error(w + (key,), f"step {s.id!r}: unknown model id {mid!r}.",
                                f"{_close(mid, list(spec.models))}Models: {', '.join(spec.models) or 'none'}.")
        if s.model is None and len(spec.models) != 1:
            raise ctx.error(w, f"step {s.id!r} must say which model it runs on: model = one of "
                            f"{', '.join(spec.models) or '(none: add a [models.<id>] table)'}.")
        if s.kind in ("attack", "probe"):
            if s.data is not None and s.data not in spec.data:
                raise ctx.error(w + ("data",), f"step {s.id!r}: unknown data id {s.data!r}.",
                                f"{_close(s.data, list(spec.data))}Data: {', '.join(spec.data) or 'none'}.")
            if s.data is None and s.kind == "attack" and len(spec.data) != 1:
                raise ctx.error(w, f"step {s.id!r} must say which data it attacks: data = one of "
                                f"{', '.join(spec.data) or '(none: add a [data.<id>] table)'}.")
        for name, ref in s.refs.items():
            key = ("batch",) if name == "batch" else (("context", name) if name in s.context else ("report", name))
            if ref == s.id:
                raise ctx.error(w + key, f"step {s.id!r} refers to itself.")
            if ref in spec.data and (name == "batch" or name in s.context) and spec.data[ref].kind == "pairs":
                continue  # pairs data: an AdversarialBatch like an attack step's
            if ref not in ids:
                extra = " (data ids are allowed only as the batch or a context input, of pairs data)" \
                    if ref in spec.data else ""
                raise ctx.error(w + key, f"step {s.id!r} refers to an unknown step {ref!r}{extra}.",
                                f"{_close(ref, ids)}Steps: {', '.join(ids)}.")
            if name == "batch" and spec.step(ref).kind != "attack":
                raise ctx.error(w + key, f"the batch of step {s.id!r} must be an attack step (or pairs data); "
                                f"{ref!r} is a {spec.step(ref).kind} step.")


def _order(ctx: _Ctx, spec: StudySpec) -> list[StepSpec]:
    """Steps in file order, moved after what they read; a cycle is an error naming it."""
    by_id = {s.id: s for s in spec.steps}
    done: list[StepSpec] = []
    state: dict[str, int] = {}

    def visit(s: StepSpec, trail: list[str]) -> None:
        if state.get(s.id) == 2:
            return
        if state.get(s.id) == 1:
            cycle = trail[trail.index(s.id):] + [s.id]
            raise ctx.error(_where_of(s), f"the steps form a cycle: {' -> '.join(cycle)}.",
                            "A step can only read steps that do not read it back.")
        state[s.id] = 1
        for ref in s.refs.values():
            if ref in by_id:
                visit(by_id[ref], trail + [s.id])
        state[s.id] = 2
        done.append(s)

    for s in spec.steps:
        visit(s, [])
    return done
