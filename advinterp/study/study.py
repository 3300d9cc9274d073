"""``advinterp.Study``: run a study file into a resumable run folder and write its report.

A run folder holds::

    study.toml                   the study as given (plus run.json: variables, step keys)
    steps/<id>-<key>/result.pt   each step's result, saved as soon as the step is done
    steps/<id>-<key>/shards/     partial results of an unfinished step (merged, then removed)
    index.html, summary.json     the report and each step's headline numbers
    *.png, *.txt                 the figures and text tables the sections wrote

``<key>`` fingerprints everything the result depends on: the model's weights and settings,
the data's spec (and its files' names, sizes and times), the step's component, parameters,
selection and seed, the shard size and the keys of the steps it reads. Running the study
again into the same folder recomputes only the steps whose key changed -- a changed
parameter invalidates that step and everything downstream of it, nothing else -- and a run
killed at any moment resumes at the last saved shard.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .. import __version__
from ..components import Analyzer, Attack, Explainer, Probe, Subset, load_items, load_labels
from ..data import AdversarialBatch, random_targets
from ..exceptions import AdvinterpError, UnknownComponentError
from ..executor import Executor, ShardTask
from ..model import ModelAdapter, model_fingerprint
from ..registry import get_executor, get_registry
from ..results import Result
from .spec import PATH_KEYS, DataSpec, StepSpec, StudyError, StudySpec, parse_study
from .store import ResultStore, safe_name
from .views import Run, StepView, table_rows

__all__ = ["Study", "run_study", "STEP_FORMAT"]

#: Part of every step key: bump when saved step results change meaning.
STEP_FORMAT = "advinterp-step/1"


# ---------------------------------------------------------------------------- shard functions
# Module-level (picklable) so an engine may run them in other processes.
def attack_shard(attack: Attack, model: ModelAdapter, data: Any, indices: list[int], y: Any, target: Any):
    """Attack items ``indices`` of ``data`` (labels ``y``, targets ``target`` or None)."""
    x, _ = load_items(data, indices, f"step {attack.name}")
    return attack.generate(model, x, y, target)


def analyze_shard(analyzer: Analyzer, model: ModelAdapter, batch: AdversarialBatch, context: dict):
    return analyzer.analyze(model, batch, **context)


def explain_shard(explainer: Explainer, model: ModelAdapter, batch: AdversarialBatch):
    return explainer.explain_pair(model, batch, normalize=True)


def probe_run(probe: Probe, model: ModelAdapter, data: Any, context: dict):
    return probe.run(model, data, **context)


def probe_partial(probe: Probe, model: ModelAdapter, data: Any, indices: list[int], state: Any, step: int,
                  context: dict):
    """One shard of one pass of a sharded probe (the model is preserved as in ``run``)."""
    with model.preserved(freeze=True):
        return probe._partial(model, data, indices, state, step, **context)


def _canonical(value: Any) -> Any:
    """A JSON-stable form of parameters (tuples as lists, paths and other objects as text)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _digest(material: Any) -> str:
    return hashlib.sha256(json.dumps(_canonical(material), sort_keys=True).encode()).hexdigest()[:16]


def _n_images(result: Any) -> int | None:
    per = getattr(type(result), "per_image", ())
    if not per:
        return None
    for f in per:
        v = getattr(result, f)
        if v is not None and hasattr(v, "__len__"):
            return len(v)
    return None


# ---------------------------------------------------------------------------- the study
class Study:
    """A checked study: models, data and steps (see :mod:`advinterp.study.spec`).

    Build one with :meth:`from_file` or :meth:`from_text`; :meth:`check` resolves every name
    against the registry and loads the models (all errors name the file, line and fix) and
    :meth:`run` executes it into a run folder::

        study = advinterp.Study.from_file("study.toml", vars={"n": 48})
        run = study.run("runs/mine")          # resumes whatever that folder already holds
    """

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self._models: dict[str, ModelAdapter] = {}
        self._datasets: dict[str, Any] = {}
        self._model_keys: dict[str, str] = {}
        self._data_keys: dict[str, str] = {}
        self._components: dict[str, Any] = {}
        self._checked = False

    @classmethod
    def from_file(cls, path: str | Path, vars: Mapping[str, Any] | None = None) -> "Study":
        """Read and parse ``path`` (``vars`` override its ``[vars]``, like ``--set``)."""
        path = Path(path)
        if not path.is_file():
            raise StudyError(f"{path}: no such study file.")
        return cls(parse_study(path.read_text(encoding="utf-8"), path.resolve(), vars))

    @classmethod
    def from_text(cls, text: str, path: str | Path | None = None, vars: Mapping[str, Any] | None = None) -> "Study":
        """Parse ``text`` as if read from ``path`` (named in errors; relative paths resolve
        against its folder)."""
        return cls(parse_study(text, None if path is None else Path(path).resolve(), vars))

    @classmethod
    def resume(cls, run_dir: str | Path, vars: Mapping[str, Any] | None = None) -> "Study":
        """The study of the run folder ``run_dir``, as it was run: its saved ``study.toml``
        with the ``--set`` values of that run (updated by ``vars``), relative paths resolved
        against the original study file's folder."""
        import json

        run_dir = Path(run_dir)
        text_file, index_file = run_dir / "study.toml", run_dir / "run.json"
        if not text_file.is_file():
            raise StudyError(f"{run_dir}: not a run folder (no study.toml). Start it with advinterp run STUDY.toml "
                             f"--out {run_dir}.")
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        origin = index.get("study_file") or str(text_file.resolve())
        overrides = {**(index.get("overrides") or {}), **dict(vars or {})}
        return cls(parse_study(text_file.read_text(encoding="utf-8"), Path(origin), overrides))

    @property
    def steps(self) -> list[StepSpec]:
        return self.spec.steps

    # ------------------------------------------------------------------ checking
    def _error(self, where: str, key: str | None, message: str, fix: str = "") -> StudyError:
        from .spec import _Ctx

        parts = tuple(int(p) if p.isdigit() else p for p in where.split("."))
        return _Ctx(self.spec.path, self.spec.text).error(parts + ((key,) if key else ()), message, fix)

    def _resolve_paths(self, params: Mapping[str, Any], where: str, key: str = "params",
                       keys: tuple[str, ...] = PATH_KEYS) -> dict[str, Any]:
        """``params`` with the file-path entries (``keys``) resolved against the study file's
        folder; a missing file is an error naming the key."""
        out = dict(params)
        for k in keys:
            v = out.get(k)
            if not isinstance(v, str) or v in ("random",):
                continue
            p = Path(v).expanduser()
            if not p.is_absolute():
                p = self.spec.base_dir / p
            if not p.exists():
                raise self._error(where, key, f"{k} = {v!r}: no such file or folder ({p}).",
                                  "Relative paths are resolved against the study file's folder.")
            out[k] = str(p)
        return out

    def check(self) -> "Study":
        """Resolve every model, dataset and component name, validate parameters and context
        keys, and load the models -- before anything runs. Returns ``self``."""
        if self._checked:
            return self
        for mid in self.spec.models:
            self._model(mid)
        for did in self.spec.data:
            self._dataset(did)
        for s in self.steps:
            comp = self._component(s)
            keys = getattr(comp, "context_keys", ())
            if keys is not None and s.context:
                bad = sorted(set(s.context) - set(keys))
                if bad:
                    raise self._error(s.where, "context", f"{s.component} takes no context keyword {bad[0]!r}.",
                                      f"It accepts: {', '.join(keys) or 'none'}.")
            if s.kind in ("attack", "probe") and s.data is None and getattr(comp, "needs_data", True):
                if len(self.spec.data) != 1:
                    raise self._error(s.where, None, f"{s.kind} step {s.id!r} must say which data it reads: data = "
                                      f"one of {', '.join(self.spec.data) or '(none: add a [data.<id>] table)'}.")
                s.data = next(iter(self.spec.data))  # the only data: part of the step's key from here on
        reg = get_registry()
        for name in self.spec.compare:
            if not reg.has("paper", name):
                from .spec import _close

                known = sorted(i.name for i in reg.list("paper"))
                raise self._error("compare", None, f"no paper comparison named {name!r}. {_close(name, known)}"
                                  f"Registered: {', '.join(known) or 'none'}.",
                                  "See advinterp list paper; plugins add theirs with advinterp_register_papers.")
        self._checked = True
        return self

    def _model(self, mid: str) -> ModelAdapter:
        if mid not in self._models:
            ms = self.spec.models[mid]
            reg = get_registry()
            try:
                reg.info("model", ms.model)
            except UnknownComponentError as e:
                raise self._error(ms.where, "model", str(e)) from None
            params = self._resolve_paths(ms.params, ms.where, "weights" if "weights" in ms.params else "params")
            try:
                self._models[mid] = reg.create("model", ms.model, **params)
            except AdvinterpError as e:
                raise self._error(ms.where, "params", f"model {ms.model!r} could not be built: {e}") from None
            except (TypeError, OSError, RuntimeError) as e:
                raise self._error(ms.where, "params", f"model {ms.model!r} could not be built "
                                  f"({type(e).__name__}: {e}).", "Check its params and weights file.") from None
        return self._models[mid]

    def _dataset(self, did: str) -> Any:
        if did not in self._datasets:
            ds = self.spec.data[did]
            self._datasets[did] = self._make_dataset(ds)
        return self._datasets[did]

    def _make_dataset(self, ds: DataSpec) -> Any:
        reg = get_registry()
        try:
            if ds.kind == "dataset":
                reg.info("dataset", ds.name)
                return reg.create("dataset", ds.name, **self._resolve_paths(ds.params, ds.where))
            path = self._resolve_paths({ds.kind: ds.name}, ds.where, ds.kind, keys=(ds.kind,))[ds.kind]
            if ds.kind == "folder":
                return reg.create("dataset", "imagenet-folder", root=path, **ds.params)
            if ds.kind == "broden":
                from ..datasets.broden import BrodenDataset

                return BrodenDataset(path, **ds.params)
            from ..datasets.pairs import PairsFolder

            return PairsFolder(path, **ds.params)
        except UnknownComponentError as e:
            raise self._error(ds.where, ds.kind, str(e)) from None
        except StudyError:
            raise
        except AdvinterpError as e:
            raise self._error(ds.where, "params", f"data {ds.id!r} could not be opened: {e}") from None
        except TypeError as e:
            raise self._error(ds.where, "params", f"data {ds.id!r}: {e}.") from None

    def _component(self, s: StepSpec) -> Any:
        if s.id not in self._components:
            reg = get_registry()
            try:
                reg.info(s.kind, s.component)
                self._components[s.id] = reg.create(s.kind, s.component, **self._resolve_paths(s.params, s.where))
            except UnknownComponentError as e:
                raise self._error(s.where, s.kind, str(e)) from None
            except AdvinterpError as e:
                raise self._error(s.where, "params", f"step {s.id!r}: {e}") from None
        return self._components[s.id]

    # ------------------------------------------------------------------ keys
    def _model_key(self, mid: str) -> str:
        if mid not in self._model_keys:
            m = self._model(mid)
            self._model_keys[mid] = _digest({"weights": model_fingerprint(m)["weights"], "name": m.name,
                                             "mean": m.mean, "std": m.std, "input_shape": m.input_shape,
                                             "classes": m.nb_classes})
        return self._model_keys[mid]

    def _data_key(self, did: str) -> str:
        if did not in self._data_keys:
            ds = self.spec.data[did]
            material: dict[str, Any] = {"kind": ds.kind, "name": ds.name, "params": ds.params}
            paths = [v for k, v in ds.params.items() if k in PATH_KEYS and isinstance(v, str)]
            if ds.kind != "dataset":
                paths.append(ds.name)
            material["files"] = [_listing(self._resolve_paths({"path": p}, ds.where, keys=("path",))["path"])
                                 for p in paths]
            self._data_keys[did] = _digest(material)
        return self._data_keys[did]

    def step_keys(self) -> dict[str, str]:
        """``{step id: key}``: the fingerprint each step's result is saved under."""
        self.check()
        keys: dict[str, str] = {}
        for s in self.steps:
            comp = self._component(s)
            mid = self._model_id(s)
            material = {
                "format": STEP_FORMAT, "kind": s.kind, "component": s.component,
                "params": comp.get_params(), "model": self._model_key(mid),
                "data": None if s.data is None else self._data_key(s.data),
                "files": [_listing(v) for k, v in sorted(comp.get_params().items())
                          if k in PATH_KEYS and isinstance(v, str) and Path(v).exists()],
                "refs": {k: keys.get(v) or self._data_key(v) for k, v in s.compute_refs.items()},
                "start": s.start, "n": s.n, "seed": s.seed, "shard_size": s.shard_size,
            }
            if s.kind == "attack":
                material.update(targets=s.targets, labels=s.labels)
                if s.source is not None:
                    material.update(source=s.source)
            keys[s.id] = _digest(material)
        return keys

    def _of_class(self, s: StepSpec, model: Any, data: Any) -> list[int]:
        """The items of ``data`` whose label (the model's prediction with ``labels =
        "predicted"``) is the step's ``source`` class, in order."""
        if s.source >= model.nb_classes:
            raise AdvinterpError(f"step {s.id!r}: source = {s.source} is not a class of its model "
                                 f"({model.nb_classes} classes: 0..{model.nb_classes - 1}).")
        every = list(range(len(data)))
        y = None if s.labels == "predicted" else load_labels(data, every)
        if y is None:
            y = torch.cat([model.predict(load_items(data, every[i:i + 256])[0]).cpu()
                           for i in range(0, len(every), 256)]) if every else torch.zeros(0, dtype=torch.long)
        pool = [i for i, c in zip(every, y.tolist()) if int(c) == s.source]
        if not pool:
            raise AdvinterpError(f"step {s.id!r}: no item of data {s.data!r} has class {s.source} "
                                 f"({'predicted' if s.labels == 'predicted' else 'label'}); pick another source.")
        return pool

    def _model_id(self, s: StepSpec) -> str:
        return s.model if s.model is not None else next(iter(self.spec.models))

    # ------------------------------------------------------------------ running
    def run(self, out: str | Path | None = None, engine: "str | Executor" = "local",
            log: Callable[[str], None] = print, report: bool = True) -> Run:
        """Run every step not already done in ``out`` and write the report.

        Args:
            out: the run folder (default ``runs/<title>-<time>``); results already in it
                whose keys match are reused, so the same folder resumes a killed run.
            engine: the executor's engine (``"local"``: in this process; plugins add others,
                e.g. ``"ray"``), or an executor object (``get_executor("ray", address=...)``),
                which the caller then owns (this run does not close it).
            log: where progress lines go.
            report: write ``index.html`` and ``summary.json`` at the end.

        Returns:
            The :class:`~advinterp.study.views.Run` (its ``steps`` hold every result).
        """
        self.check()
        executor = get_executor(engine) if isinstance(engine, str) else engine
        try:
            return self._run(out, executor, log, report)
        finally:
            close = getattr(executor, "close", None)
            if isinstance(engine, str) and close is not None:
                close()

    def _run(self, out: str | Path | None, executor: "Executor", log: Callable[[str], None], report: bool) -> Run:
        out = Path(out) if out is not None else Path("runs") / f"{safe_name(self.spec.title)}-{time.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "study.toml").write_text(self.spec.text, encoding="utf-8")
        store = ResultStore(out / "steps", log)
        keys = self.step_keys()
        run = Run(out=out, title=self.spec.title, classes=self._classes(),
                  data={d.id: d.kind for d in self.spec.data.values()})
        index: dict[str, Any] = {"title": self.spec.title, "description": self.spec.description,
                                 "compare": list(self.spec.compare),
                                 "advinterp": __version__, "engine": executor.name,
                                 "study_file": None if self.spec.path is None else str(self.spec.path),
                                 "overrides": self.spec.overrides, "vars": self.spec.vars, "classes": run.classes,
                                 "data": {d.id: {"kind": d.kind, "name": d.name, "params": d.params}
                                          for d in self.spec.data.values()},
                                 "models": {m.id: {"model": m.model, "params": m.params}
                                            for m in self.spec.models.values()},
                                 "steps": {}}
        cache: dict[str, Any] = {}
        consumers = {s.id: {t.id for t in self.steps if s.id in t.compute_refs.values()} for s in self.steps}
        t_run = time.perf_counter()
        for i, s in enumerate(self.steps, 1):
            t0 = time.perf_counter()
            sdir = out / "steps" / f"{safe_name(s.id)}-{keys[s.id]}"
            final = sdir / "result.pt"
            result = store.load(final) if final.exists() else None
            cached = result is not None
            if result is None:
                result = self._execute(s, sdir, store, executor, cache, log)
                store.save(final, result)
                shutil.rmtree(sdir / "shards", ignore_errors=True)
            seconds = time.perf_counter() - t0
            cache[s.id] = result
            comp = self._component(s)
            rows = table_rows(result)
            spec = {**s.table, "model": self._model_id(s), "data": s.data}
            entry = {"kind": s.kind, "component": s.component, "params": _canonical(comp.get_params()),
                     "spec": _canonical(spec), "refs": s.refs, "key": keys[s.id],
                     "path": str(final.relative_to(out)), "seconds": round(seconds, 3), "cached": cached}
            index["steps"][s.id] = entry
            ResultStore.write_json(out / "run.json", index)
            run.steps[s.id] = StepView(s.id, s.kind, s.component, comp.get_params(), spec, s.refs, run,
                                       final, seconds, result)
            log(f"[{i}/{len(self.steps)}] {s.id}: " + ("done before (reused)" if cached else f"{seconds:.1f}s")
                + (f" -- {_headline(rows)}" if rows else ""))
            for ref in s.compute_refs.values():  # free what no later step reads
                if ref in cache and consumers.get(ref, set()) <= set(index["steps"]):
                    cache.pop(ref, None)
        index["seconds"] = round(time.perf_counter() - t_run, 2)
        ResultStore.write_json(out / "run.json", index)
        if report:
            from .report import write_run_report

            path = write_run_report(out, run)
            log(f"wrote {out}/ (report: {path}, summary.json) in {index['seconds']:.1f}s")
        return run

    def _classes(self) -> list[str] | None:
        """Class names for figure labels: the first dataset's when they match the first
        model's classes, ImageNet's for 1000-class models, else ``None`` (indices)."""
        nb = self._model(next(iter(self.spec.models))).nb_classes if self.spec.models else None
        for did in self.spec.data:
            classes = getattr(self._dataset(did), "classes", None)
            try:
                names = None if classes is None else [str(c) for c in classes]
            except TypeError:
                names = None
            if names is not None and len(names) == nb:
                return names
        if nb == 1000:
            from ..datasets.imagenet import imagenet_classes

            return list(imagenet_classes())
        return None

    def _input(self, s: StepSpec, ref: str, cache: dict[str, Any], model: ModelAdapter) -> Any:
        if ref in cache:
            return cache[ref]
        if ref in self.spec.data:  # pairs data as a batch
            pairs = self._dataset(ref)
            x0, xa, y = pairs.tensors()
            return AdversarialBatch.from_pair(x0, xa, y, model=model, attack=f"pairs:{ref}")
        raise AdvinterpError(f"step {s.id!r}: the result of {ref!r} is not available")  # pragma: no cover

    def _execute(self, s: StepSpec, sdir: Path, store: ResultStore, executor: Any, cache: dict[str, Any],
                 log: Callable[[str], None]) -> Result:
        comp = self._component(s)
        model = self._model(self._model_id(s))
        shards = sdir / "shards"

        def run_tasks(tasks: list[ShardTask], prefix: str = "") -> list[Result]:
            path = {t.index: shards / f"{prefix}{t.index:05d}.pt" for t in tasks}
            todo = [t for t in tasks if not store.valid(path[t.index])]
            if len(todo) < len(tasks):
                log(f"    {s.id}: {len(tasks) - len(todo)} of {len(tasks)} shards done before (reused)")
            executor.run(todo, lambda t, r: store.save(path[t.index], r))
            parts = []
            for t in tasks:
                r = store.load(path[t.index])
                if r is None:
                    raise AdvinterpError(f"step {s.id!r}: shard {t.index} ({t.label}) left no valid result")
                parts.append(r)
            return parts

        def merged(parts: list[Result]) -> Result:
            return parts[0] if len(parts) == 1 else type(parts[0]).merge(parts)

        context = {k: self._input(s, ref, cache, model) for k, ref in s.context.items()}
        if s.kind == "attack":
            data = self._dataset(s.data)
            pool = list(range(len(data))) if s.source is None else self._of_class(s, model, data)
            stop = len(pool) if s.n is None else min(len(pool), s.start + s.n)
            idx = pool[min(s.start, stop):stop]
            y = None if s.labels == "predicted" else load_labels(data, idx)
            t = None
            if getattr(comp, "targeted", False):
                if y is None:
                    y = torch.cat([model.predict(load_items(data, idx[i:i + 256])[0]).cpu()
                                   for i in range(0, len(idx), 256)]) if idx else torch.zeros(0, dtype=torch.long)
                t = (random_targets(y, model.nb_classes, torch.Generator().manual_seed(s.seed))
                     if s.targets == "random" else torch.full_like(y, int(s.targets)))
            size = s.shard_size if comp.shardable else max(1, len(idx))
            tasks = [ShardTask(s.id, k, attack_shard,
                               (comp, model, data, idx[a:a + size], None if y is None else y[a:a + size],
                                None if t is None else t[a:a + size]), label=f"images {idx[a]}:{idx[min(a + size, len(idx)) - 1] + 1}")
                     for k, a in enumerate(range(0, len(idx), size))]
            if not tasks:
                tasks = [ShardTask(s.id, 0, attack_shard, (comp, model, data, [], y, t), label="no images")]
            return merged(run_tasks(tasks))
        if s.kind in ("analyzer", "explainer"):
            full = self._input(s, s.batch, cache, model)
            batch = full
            sel = slice(s.start, None if s.n is None else s.start + s.n)
            if s.start or s.n is not None:
                batch = full.take(sel)
            for k in getattr(comp, "per_image_context", ()):
                v = context.get(k)
                n_v = None if v is None else _n_images(v)
                if n_v is None:
                    continue
                if n_v == len(full) and len(batch) != len(full):
                    context[k] = v = v.take(sel)
                    n_v = len(batch)
                if n_v != len(batch):
                    raise self._error(s.where, "context", f"step {s.id!r}: context {k!r} ({s.context[k]!r}) holds "
                                      f"{n_v} images, the batch {len(batch)}.",
                                      "Give both steps the same batch and n.")
            shardable = comp.shardable if s.kind == "analyzer" else True
            size = s.shard_size if shardable else max(1, len(batch))
            tasks = []
            for k, a in enumerate(range(0, max(1, len(batch)), size)):
                part = batch.take(slice(a, a + size))
                ctx = {key: (v.take(slice(a, a + size)) if key in getattr(comp, "per_image_context", ())
                             and _n_images(v) is not None else v) for key, v in context.items()}
                if s.kind == "analyzer":
                    tasks.append(ShardTask(s.id, k, analyze_shard, (comp, model, part, ctx), label=f"images {a}:{a + len(part)}"))
                else:
                    tasks.append(ShardTask(s.id, k, explain_shard, (comp, model, part), label=f"images {a}:{a + len(part)}"))
            return merged(run_tasks(tasks))
        # probes
        data = self._dataset(s.data) if s.data is not None else comp.default_data()
        n = len(data) if data is not None else 0
        idx = list(range(min(s.start, n), n if s.n is None else min(n, s.start + s.n)))
        if data is not None and (s.start or s.n is not None):
            data = Subset(data, idx)
            idx = list(range(len(idx)))
        if not comp.shardable:
            return run_tasks([ShardTask(s.id, 0, probe_run, (comp, model, data, context), label="whole")])[0]
        with model.preserved(freeze=True):
            state = comp._start(model, data, **context)
        for p in range(comp.passes):
            tasks = [ShardTask(s.id, k, probe_partial, (comp, model, data, idx[a:a + s.shard_size], state, p, context),
                               label=f"pass {p}, items {a}:{min(a + s.shard_size, len(idx))}")
                     for k, a in enumerate(range(0, max(1, len(idx)), s.shard_size))]
            parts = run_tasks(tasks, prefix=f"p{p}-")
            with model.preserved(freeze=True):
                state = comp._merge(parts, state, p, **context)
        with model.preserved(freeze=True):
            return comp._finish(model, state, **context)


def _listing(path: str) -> list:
    """Names, sizes and modification times under ``path`` (a file or a folder)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(p)) if f != p else f.name, st.st_size, st.st_mtime_ns])
    return out


def _headline(rows: list[dict[str, Any]], limit: int = 6) -> str:
    r = rows[0]
    parts = []
    for k, v in r.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.3g}")
        elif isinstance(v, (int, str)) and not isinstance(v, bool) and k not in ("attack", "model"):
            parts.append(f"{k} {v}")
        if len(parts) >= limit:
            break
    more = f" (+{len(rows) - 1} rows)" if len(rows) > 1 else ""
    return ", ".join(parts) + more


def run_study(path: str | Path, out: str | Path | None = None, vars: Mapping[str, Any] | None = None,
              engine: str = "local", log: Callable[[str], None] = print) -> Run:
    """Read, check and run the study file ``path`` (``advinterp run``)."""
    return Study.from_file(path, vars).run(out, engine=engine, log=log)
