"""``advinterp demo``: the main job on the embedded default world and shipped models.

The demo is a list of steps (:data:`STEPS`); each takes the shared :class:`DemoContext`,
writes its files into the run directory and returns a report :class:`~advinterp.report.Section`.
Later analyses add their steps here.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .report import Section, write_report

__all__ = ["DemoContext", "STEPS", "run_demo"]


@dataclass
class DemoContext:
    """What the steps share: the run directory, the data, the models and a summary dict."""

    out: Path
    n: int
    n_attack: int
    seed: int
    log: Callable[[str], None]
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    scenes: Any = None
    models: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    batches: dict[str, Any] = field(default_factory=dict)
    #: the targeted attack batches of :func:`step_attacks` on synthetic-cnn, by attack name
    attack_batches: dict[str, Any] = field(default_factory=dict)


def step_world(ctx: DemoContext) -> Section:
    """Render the test scenes and draw a few with their concept masks and boxes."""
    from .datasets.synthetic import SyntheticWorld
    from .viz import plot_scenes, save_figure

    t = time.perf_counter()
    world = SyntheticWorld(size=64, seed=ctx.seed)
    ctx.scenes = world.generate(ctx.n, "test")
    ctx.x, ctx.y = ctx.scenes.tensors()
    dt = time.perf_counter() - t
    ctx.summary["world"] = {"n_test": ctx.n, "classes": len(world.classes), "attributes": len(world.attributes),
                            "concepts": len(world.concepts), "render_seconds": round(dt, 3)}
    ctx.log(f"rendered {ctx.n} test scenes in {dt:.2f}s ({len(world.classes)} classes, "
            f"{len(world.concepts)} concepts)")
    save_figure(plot_scenes(ctx.scenes, n=8), ctx.out / "scenes.png")
    return Section("The embedded world", [
        f"{ctx.n} test scenes of {len(world.classes)} classes defined by {len(world.attributes)} attributes; "
        f"concept masks in Broden's categories ({', '.join(world.categories)}) and object/part boxes."],
        figures=[("Sample scenes, their concept masks and boxes", "scenes.png")])


def step_models(ctx: DemoContext) -> Section:
    """Load both shipped models; clean accuracy on all test scenes, PGD accuracy on a subset."""
    from .registry import get_attack, get_model

    pgd = get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=10, num_random_init=1, seed=ctx.seed)
    rows = []
    xs, ys = ctx.x[:ctx.n_attack], ctx.y[:ctx.n_attack]
    for name in ("synthetic-cnn", "synthetic-cnn-robust"):
        model = get_model(name)
        ctx.models[name] = model
        clean = model.accuracy(ctx.x, ctx.y)
        batch = pgd.generate(model, xs, ys)
        ctx.batches[name] = batch
        robust = float((batch.y_adv == ys).float().mean())
        rows.append({"model": name, "clean_accuracy": clean, "pgd_accuracy": robust,
                     "pgd_n": len(xs), "pgd": "linf 8/255, 10x2/255, random start"})
        ctx.log(f"{name}: clean accuracy {clean:.3f} on {len(ctx.x)}, PGD accuracy {robust:.3f} on {len(xs)}")
    ctx.summary["models"] = rows
    return Section("Shipped models", ["Accuracy of the two shipped CNNs on the test scenes."],
                   tables=[("Accuracy (clean and under PGD)", rows)])


def step_activation_distance(ctx: DemoContext) -> Section:
    """Per-layer activation distance clean vs adversarial, natural vs robust model (A11)."""
    from .registry import get_analyzer
    from .viz import plot_layer_distances, save_figure

    analyzer = get_analyzer("activation_distance")
    results = {name: analyzer.analyze(model, ctx.batches[name]) for name, model in ctx.models.items()}
    for name, res in results.items():
        res.save(ctx.out / "results" / f"activation_distance-{name}.pt")
    save_figure(plot_layer_distances(results), ctx.out / "activation_distance.png")
    rows = [{"model": name, **r} for name, res in results.items() for r in res.rows()]
    ctx.summary["activation_distance"] = rows
    ctx.log("activation distance (relative, per layer): " + "; ".join(
        f"{name}: " + ", ".join(f"{r['layer']} {r['relative']:.2f}" for r in res.rows())
        for name, res in results.items()))
    return Section("Activation bias per layer (A11)", [
        "Mean Euclidean distance between clean and PGD activations per layer, relative to the clean "
        "activation norm: the perturbation grows through the natural model and is damped by the robust one."],
        tables=[("Distance per layer", rows)], figures=[("Relative activation distance", "activation_distance.png")])


#: Targeted attacks of the attack step: registry name -> parameters (a modest budget on 64x64).
DEMO_ATTACKS: dict[str, dict[str, Any]] = {
    "pgd": {"targeted": True, "eps": 8 / 255, "eps_step": 1 / 255, "max_iter": 20, "num_random_init": 1},
    "cw_l2": {"targeted": True, "binary_search_steps": 5, "max_iter": 50, "learning_rate": 0.05,
              "initial_const": 1.0},
    "ead": {"targeted": True, "binary_search_steps": 5, "max_iter": 50, "initial_const": 1.0},
    "str": {"targeted": True, "eps": 0.3, "max_iter": 30, "binary_search_steps": 3},
}


def step_attacks(ctx: DemoContext) -> Section:
    """Targeted PGD, C&W, EAD and Str-attack with random targets; the Table A1 view."""
    from .analyzers.attack_metrics import metrics_table
    from .data import random_targets
    from .datasets.synthetic import CLASSES
    from .progress import progress_bar
    from .registry import get_analyzer, get_attack, get_registry
    from .viz import plot_perturbations, save_figure

    model = ctx.models["synthetic-cnn"]
    n = min(ctx.n_attack, 32)
    x, y = ctx.x[:n], ctx.y[:n]
    t = random_targets(y, model.nb_classes, torch.Generator().manual_seed(ctx.seed))
    metrics = get_analyzer("attack_metrics")
    known = {i.name for i in get_registry().list("attack")}
    batches, results = {}, []
    for name in progress_bar([a for a in DEMO_ATTACKS if a in known], desc="attacks"):
        t0 = time.perf_counter()
        batch = get_attack(name, **DEMO_ATTACKS[name]).generate(model, x, y, t)
        batches[name] = batch
        res = metrics.analyze(model, batch)
        res.save(ctx.out / "results" / f"attack_metrics-{name}.pt")
        results.append(res)
        ctx.log(f"{name}: ASR {res.asr:.2f}, mean l2 {res.mean('l2'):.3f} ({time.perf_counter() - t0:.1f}s)")
    ctx.attack_batches = batches
    rows = [r for res in results for r in res.rows()]
    ctx.summary["attacks"] = rows
    (ctx.out / "table_a1.txt").write_text(metrics_table(results) + "\n")
    save_figure(plot_perturbations(batches, n=6, classes=CLASSES), ctx.out / "perturbations.png")
    return Section("Targeted attacks (Table A1 view)", [
        f"{n} test scenes on synthetic-cnn, random targets; norms averaged over successful examples "
        "(l0 counts perturbed entries, pixels x channels)."],
        tables=[("Attack success rate and distortion", rows)],
        figures=[("Perturbation magnitude per attack", "perturbations.png")])


#: Explainers of the explanation step (provided by the advinterp-captum plugin).
DEMO_EXPLAINERS: tuple[str, ...] = ("cam", "gradcam", "gradcampp")


def _pair_maps(pair: Any) -> dict[str, Any]:
    """``explain_pair``'s four maps as ``{"x0_t0", "xadv_t0", "x0_t", "xadv_t"}``."""
    keys = ("x0_t0", "xadv_t0", "x0_t", "xadv_t")
    if callable(getattr(pair, "maps", None)):
        return pair.maps()
    if isinstance(pair, dict):
        return {k: pair[k] for k in keys if k in pair}
    return dict(zip(keys, pair))


def step_explanations(ctx: DemoContext) -> Section:
    """The four CAMs of an attacked image (Fig. 3) and the interpretability score (Table 2)."""
    from .analyzers.interpretability_score import table2, table2_text
    from .datasets.synthetic import CLASSES
    from .registry import get_analyzer, get_explainer, get_registry
    from .viz import plot_cam_overlays, plot_is_table, save_figure

    title = "Explaining adversarial examples with CAMs (Fig. 3, Table 2 view)"
    names = [e for e in DEMO_EXPLAINERS if get_registry().has("explainer", e)]
    try:  # the demo is core code: the captum plugin is optional
        from advinterp_captum.pairs import explain_pair
    except ImportError:
        explain_pair = None
    if not names or explain_pair is None or not ctx.attack_batches:
        why = ("no attack batches" if not ctx.attack_batches else
               "the advinterp-captum plugin (explainers cam, gradcam, gradcampp) is not installed")
        ctx.log(f"explanations: skipped ({why})")
        return Section(title, [f"Skipped: {why}."])
    model = ctx.models["synthetic-cnn"]
    analyzer = get_analyzer("is")
    results, figure_maps = [], None
    shown = "str" if "str" in ctx.attack_batches else next(iter(ctx.attack_batches))
    for ename in names:
        explainer = get_explainer(ename)
        for attack, batch in ctx.attack_batches.items():
            t0 = time.perf_counter()
            # the four maps in shared passes; normalising (a positive per-image divisor) leaves B unchanged
            pair = _pair_maps(explain_pair(explainer, model, batch, normalize=True))
            if figure_maps is None and attack == shown:
                figure_maps = pair
            res = analyzer.analyze(model, batch, maps=pair, explainer=ename)
            res.save(ctx.out / "results" / f"is-{attack}-{ename}.pt")
            results.append(res)
            ctx.log(f"IS {attack} / {ename}: (x0,t0) {res.mean('x0_t0'):.3f}, (x',t) {res.mean('xadv_t'):.3f} "
                    f"({time.perf_counter() - t0:.1f}s)")
    rows = table2(results)
    ctx.summary["interpretability_score"] = rows
    (ctx.out / "table2.txt").write_text(table2_text(results) + "\n")
    save_figure(plot_is_table(results), ctx.out / "is_scores.png")
    batch = ctx.attack_batches[shown]
    save_figure(plot_cam_overlays(batch.x0, batch.x_adv, figure_maps, n=4, classes=CLASSES, y_true=batch.y_true,
                                  target=batch.target), ctx.out / "cam_pairs.png")
    return Section(title, [
        f"{names[0]} maps of {shown} examples: F(x0, t0), F(x', t0), F(x0, t), F(x', t) (normalised to a common "
        "maximum per image). The interpretability score IS = ||B o delta||_2 / ||delta||_2, with B the pixels where "
        "the map is at least its 70% quantile, is the share of the perturbation's energy inside the discriminative "
        "region w.r.t. (x0, t0) and (x', t); images with delta = 0 are left out of the means."],
        tables=[("Interpretability score per attack and explainer (Table 2 view)", rows)],
        figures=[(f"CAMs of {shown} examples ({names[0]})", "cam_pairs.png"),
                 ("Mean interpretability score per attack", "is_scores.png")])


#: Images per attack in the PSE step; the same clean images are attacked with C&W refined under S1/S2.
DEMO_PSE_IMAGES = 3
#: C&W of the refinement (Table A1) view: a lighter budget than the attack step's, the same for the
#: unrefined and the refined runs.
DEMO_REFINE_CW: dict[str, Any] = {"targeted": True, "binary_search_steps": 3, "max_iter": 30, "learning_rate": 0.05,
                                  "initial_const": 1.0}


def step_pse(ctx: DemoContext) -> Section:
    """Grid sensitivity and PSR per attack (Figs. 2 and 4, Table 1); C&W refined under S1/S2 (Table A1)."""
    from .analyzers.pse import table1, table1_text
    from .analyzers.refine_analysis import refine_attack, table_a1
    from .datasets.synthetic import CLASSES
    from .registry import get_analyzer, get_attack, get_explainer, get_registry
    from .viz import plot_pse_sensitivity, plot_psr_overlay, save_figure

    title = "Promotion-suppression effect of grid perturbations (Figs. 2 and 4, Tables 1 and A1)"
    if not ctx.attack_batches:
        ctx.log("pse: skipped (no attack batches)")
        return Section(title, ["Skipped: no attack batches."])
    model = ctx.models["synthetic-cnn"]
    k = DEMO_PSE_IMAGES
    analyzer = get_analyzer("pse")
    # the CAM F(x', t) under the PSR overlay comes from the optional advinterp-captum plugin
    cam = get_explainer("cam") if get_registry().has("explainer", "cam") else None
    results, figures = {}, []
    for attack, batch in ctx.attack_batches.items():
        t0 = time.perf_counter()
        sub = batch[:k]
        res = analyzer.analyze(model, sub)
        res.save(ctx.out / "results" / f"pse-{attack}.pt")
        results[attack] = res
        if cam is not None:
            f_adv = cam.explain(model, sub.x_adv, sub.target).maps
            save_figure(plot_psr_overlay(res, f_adv, list(range(len(sub))), image=sub.x_adv, classes=CLASSES),
                        ctx.out / f"psr_{attack}.png")
            figures.append((f"PSR of the top 70% grids by s on F(x', t): {attack}", f"psr_{attack}.png"))
        row = res.rows()[0]
        ctx.log(f"pse {attack}: {res.n_grids} grids x {res.n_images} images, corr(s, ||d_G||_2) "
                f"{row['pearson_s']:.2f}, suppression/balanced/promotion {row['frac_suppression']:.2f}/"
                f"{row['frac_balanced']:.2f}/{row['frac_promotion']:.2f} ({time.perf_counter() - t0:.1f}s, "
                f"{res.backend} backend)")
    shown = "cw_l2" if "cw_l2" in results else next(iter(results))
    save_figure(plot_pse_sensitivity(results[shown], 0, ctx.attack_batches[shown].x_adv[:k], CLASSES),
                ctx.out / "pse_sensitivity.png")
    figures.insert(0, (f"Grid sensitivity of a {shown} example (Fig. 2)", "pse_sensitivity.png"))
    rows = table1(list(results.values()))
    (ctx.out / "table1.txt").write_text(table1_text(list(results.values())) + "\n")
    tables = [("Correlation of d0, dt, s with ||delta_G||_2, averaged over images (Table 1 view)", rows)]
    t0 = time.perf_counter()
    supports = ("S1", "S2") if cam is not None else ("S1",)
    clean = ctx.attack_batches[shown][:k]
    ref = refine_attack(get_attack("cw_l2", **DEMO_REFINE_CW), model, clean.x0, clean.y_true, clean.target,
                        supports=supports, pse=analyzer)
    ref.save(ctx.out / "results" / "refine-cw_l2.pt")
    ref_rows = ref.rows()
    (ctx.out / "table_a1_refined.txt").write_text(table_a1([ref]) + "\n")
    tables.append((f"C&W ({DEMO_REFINE_CW['binary_search_steps']} x {DEMO_REFINE_CW['max_iter']} iterations) with and "
                   "without refinement under S1 / S2 (Table A1 view)", ref_rows))
    ctx.log(f"C&W refined under {', '.join(supports)}: " + "; ".join(
        f"{r['support']} l0 {r['l0_original']:.0f} -> {r['l0_refined']:.0f}, ASR {r['asr_refined']:.2f}"
        for r in ref_rows) + f" ({time.perf_counter() - t0:.1f}s)")
    ctx.summary["pse"] = {"table1": rows, "table_a1_refined": ref_rows}
    res = results[shown]
    return Section(title, [
        f"The first {k} targeted examples of each attack on synthetic-cnn, cut into {res.n_grids} grids of "
        f"{res.size}x{res.size} pixels (the paper's 13x13 on 224x224, scaled). For each grid, d0 is how much the "
        "true-class logit recovers and dt how much the target logit drops when the grid's perturbation is removed "
        "(floored at xi); s = d0 + dt, and the PSR r = log2(dt / d0) marks a grid suppression-dominated (r < -1, "
        "white), promotion-dominated (r > 1, black) or balanced (grey). Table 1 correlates d0, dt, s with the "
        "perturbation strength per grid. Refinement re-runs C&W with delta = 0 outside S1 (grids holding the top 70% "
        "of the cumulative s) or S2 (the CAM region of the true class)."
        + ("" if cam is not None else " The advinterp-captum plugin is not installed: no CAM overlay, no S2.")],
        tables=tables, figures=figures)


def step_dissection(ctx: DemoContext) -> Section:
    """Network dissection of synthetic-cnn over the embedded world in Broden format, unit sensitivity
    to untargeted PGD and its significance (A8-A10, Figs. 7-8); needs the advinterp-dissect plugin."""
    title = "Network dissection and unit sensitivity (Figs. 7-8)"
    try:  # the demo is core code: the dissect plugin is optional
        from advinterp_dissect.demo import demo_dissection
    except ImportError:
        ctx.log("dissection: skipped (the advinterp-dissect plugin is not installed)")
        return Section(title, ["Skipped: the advinterp-dissect plugin is not installed "
                               "(pip install -e plugins/advinterp-dissect)."])
    ctx.summary["dissection"] = {}
    return demo_dissection(ctx.out, ctx.models["synthetic-cnn"], seed=ctx.seed, n=min(200, ctx.n), log=ctx.log,
                           summary=ctx.summary["dissection"])


#: The demo's steps, in order.
STEPS: list[Callable[[DemoContext], Section]] = [step_world, step_models, step_activation_distance, step_attacks,
                                                 step_explanations, step_pse, step_dissection]


def run_demo(out: str | Path | None = None, n: int = 1000, n_attack: int = 200, seed: int = 0,
             log: Callable[[str], None] = print) -> Path:
    """Run every step; return the run directory (``runs/demo-<time>`` by default)."""
    import matplotlib

    matplotlib.use("Agg")
    torch.manual_seed(seed)
    out = Path(out) if out is not None else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, n=n, n_attack=min(n_attack, n), seed=seed, log=log)
    sections = []
    t0 = time.perf_counter()
    for step in STEPS:
        sections.append(step(ctx))
    ctx.summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(ctx.summary, indent=2))
    report = write_report(out, "advinterp demo", sections)
    log(f"wrote {out}/ (report: {report}, summary.json) in {ctx.summary['seconds']:.1f}s")
    return out
