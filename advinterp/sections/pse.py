"""The section of the ``pse`` steps: Table 1, Fig. 2, the PSR maps of Fig. 4 and one image
under several attacks (Fig. A2)."""
from __future__ import annotations

from ..report import Section
from ..results import format_table
from ..study.views import ReportGroup, Run, StepView
from .cam import selected_batch

__all__ = ["pse_section", "same_images", "several_targets"]


def _equal(a, b) -> bool:
    import torch

    if a is None or b is None:
        return a is None and b is None
    return bool(torch.equal(torch.as_tensor(a).cpu(), torch.as_tensor(b).cpu()))


def same_images(steps: list[StepView]) -> list[tuple[StepView, object, object]]:
    """The ``(step, batch, pair maps)`` of the largest set of steps with a ``cam`` report
    reference that share their first image (equal ``x0[0]`` and ``y_target[0]``; the first such
    set on ties), in the paper's row order of Fig. A2 (C&W, EAD, Str, IFGSM, then others by
    name); ``[]`` when no 2 steps share it."""
    from ..viz import PAPER_ATTACKS

    best = _largest_group(steps, lambda ref, b: _equal(_target0(ref), _target0(b)))
    order = list(PAPER_ATTACKS)
    return sorted(best, key=lambda it: (order.index(it[0].result.attack) if it[0].result.attack in order
                                        else len(order), it[0].result.attack))


def several_targets(steps: list[StepView]) -> list[tuple[StepView, object, object]]:
    """Fig. 5: the ``(step, batch, pair maps)`` of the largest set of steps with a ``cam``
    report reference whose first image is the same (``x0[0]``) under the same attack with a
    different target each, ordered by target; ``[]`` when fewer than 2."""
    best = _largest_group(steps, lambda ref, b: ref.attack == b.attack and _target0(ref) is not None
                          and _target0(b) is not None and not _equal(_target0(ref), _target0(b)))
    return sorted(best, key=lambda it: int(_target0(it[1])))


def _target0(batch):
    return None if batch.y_target is None else batch.y_target[0]


def _largest_group(steps: list[StepView], together) -> list[tuple[StepView, object, object]]:
    """The largest set (the first on ties; at least 2) of steps with a ``cam`` reference whose
    first images are equal and whose batches ``together(first_member, batch)`` accepts."""
    found = []
    for s in steps:
        cam, batch = s.input("cam"), selected_batch(s)
        if cam is None or batch is None or not len(batch):
            continue
        found.append((s, batch, cam.result.take(slice(0, len(batch)))))
    groups: list[list[tuple[StepView, object, object]]] = []
    for item in found:
        b = item[1]
        for g in groups:
            ref = g[0][1]
            if _equal(ref.x0[0], b.x0[0]) and all(together(m[1], b) for m in g):
                g.append(item)
                break
        else:
            groups.append([item])
    best = max(groups, key=len, default=[])
    return best if len(best) >= 2 else []


def pse_section(group: ReportGroup, run: Run) -> Section:
    """Table 1 over every pse step; Fig. 2 (grid sensitivity) of the first step's first image;
    for steps with a ``report = { cam = "<explainer step>" }`` reference, x0, F(x0, t0) and the
    PSR of the top 70 % grids drawn over F(x', t) (Fig. 4); when 2 or more such steps hold the
    same first image (``x0`` and ``y_target``), the first image every one of them succeeded on
    under each attack (Fig. A2, :func:`same_images`)."""
    from ..analyzers.pse import table1
    from ..viz import PAPER_ATTACKS, first_common_success, plot_pse_sensitivity, plot_psr_attacks, plot_psr_overlay

    results = group.results()
    rows = table1(results)
    run.summary.setdefault("pse", {})["table1"] = rows
    run.write_text("table1.txt", format_table(rows))
    figures = []
    first = group.steps[0]
    batch = selected_batch(first)
    if batch is not None and len(batch):
        figures.append((f"Grid sensitivity of a {first.id} example (Fig. 2)", run.save_figure(
            plot_pse_sensitivity(first.result, 0, batch.x_adv, run.classes), "pse_sensitivity.png")))
    for s in group.steps:
        cam, batch = s.input("cam"), selected_batch(s)
        if cam is None or batch is None or not len(batch):
            continue
        pair = cam.result.take(slice(0, len(batch)))
        idx = list(range(len(batch)))
        name = f"psr_{s.id.split('.', 1)[-1]}.png" if s.id.startswith("pse.") else f"psr_{s.id}.png"
        figures.append((f"x0, F(x0, t0) and the PSR of the top 70% grids by s on F(x', t): {s.id} (Fig. 4)",
                        run.save_figure(plot_psr_overlay(s.result, pair.xadv_t, idx, image=batch.x_adv,
                                                         classes=run.classes, cam_x0_t0=pair.x0_t0, x0=batch.x0),
                                        name)))
    rows_a2 = same_images(group.steps)
    if rows_a2:
        index = first_common_success([b.success for _, b, _ in rows_a2])
        if index is not None:
            fig = plot_psr_attacks([st.result for st, _, _ in rows_a2], [pm for _, _, pm in rows_a2],
                                   rows_a2[0][1].x0, [b.x_adv for _, b, _ in rows_a2], index,
                                   labels=[PAPER_ATTACKS.get(st.result.attack, st.result.attack or st.id)
                                           for st, _, _ in rows_a2], classes=run.classes)
            figures.append((f"Image {index} under {len(rows_a2)} attacks: F(x0, t0), x0, F(x', t) and the PSR "
                            "of the top 70% grids by s on F(x', t) (Fig. A2; the first image every attack "
                            "succeeded on)", run.save_figure(fig, "psr_attacks.png")))
    rows_5 = [r for r in several_targets(group.steps) if r[1].success is None or bool(r[1].success[0])]
    if len(rows_5) >= 2:  # the targets the attack reached
        name = (lambda c: run.classes[int(c)] if run.classes else str(int(c)))
        fig = plot_psr_attacks([st.result for st, _, _ in rows_5], [pm for _, _, pm in rows_5], rows_5[0][1].x0,
                               [b.x_adv for _, b, _ in rows_5], 0,
                               labels=[f"to {name(b.y_target[0])}" for _, b, _ in rows_5], classes=run.classes,
                               title=f"One image, {len(rows_5)} targets (Fig. 5): {name(rows_5[0][1].y_true[0])} "
                                     f"under {rows_5[0][1].attack}")
        figures.append((f"One image, {len(rows_5)} targets ({rows_5[0][1].attack}): F(x0, t0), x0, F(x', t) and the "
                        "PSR on F(x', t) per target (Fig. 5: the suppression pattern stays, the promotion follows "
                        "the target)", run.save_figure(fig, "psr_targets.png")))
    res = first.result
    return Section("Promotion-suppression effect of grid perturbations (Figs. 2 and 4, Table 1)", [
        f"Each image is cut into {res.n_grids} grids of {res.size}x{res.size} pixels (the paper's 13x13 on 299x299, "
        "scaled). For each grid, d0 is how much the true-class logit recovers and dt how much the target logit drops "
        "when the grid's perturbation is removed (floored at xi); s = d0 + dt, and the PSR r = log2(dt / d0) marks a "
        "grid suppression-dominated (r < -1, white), promotion-dominated (r > 1, black) or balanced (grey). Table 1 "
        "correlates d0, dt, s with the perturbation strength per grid, over the adversarial examples (pairs whose "
        "attack succeeded, as the paper; n_dropped counts the failed pairs left out). "
        + (f"The ablated images ran by exact incremental inference: {res.inference_note}."
           if res.inference == "incremental" else
           "Every ablated image ran a full forward" + (f" ({res.inference_note})." if res.inference_note else "."))],
        tables=[("Correlation of d0, dt, s with ||delta_G||_2, averaged over images (Table 1 view)", rows)],
        figures=figures)
