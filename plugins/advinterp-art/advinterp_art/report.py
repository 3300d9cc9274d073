"""Report sections and figures of ``art.adversarial_training`` (B8) and ``art.detector`` (B9).

* adversarial training (Ding et al. Tables 14-15): the table ``size | clean acc (baseline) |
  adversarial acc (baseline)`` per step, and the figure of accuracy vs training-set size
  (:func:`plot_accuracy_vs_size`);
* detector (Sec. 4.7, Fig. 5): per-class accuracy and ROC-AUC per step, one ROC figure with a
  curve per step (:func:`plot_roc`), and per step Fig. 5 (:func:`plot_detector_cams`): image |
  classifier CAM (its prediction) | detector CAM (class "adversarial"), clean and adversarial.

Figures are matplotlib ``Figure`` objects (no pyplot state), written with
:func:`advinterp.api.save_figure` / ``run.save_figure``; headline numbers go to
``run.summary["adversarial_training"]`` and ``run.summary["detector"]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from advinterp.api import ParameterError, Section, image_hwc

from .adversarial_training import AdversarialTraining
from .detector import AdversarialDetection

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from advinterp.api import ReportGroup, Run

__all__ = ["plot_accuracy_vs_size", "plot_roc", "plot_detector_cams", "adversarial_training_section",
           "detector_section", "SECTIONS"]


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _label(step: Any) -> str:
    """A step's label: its id, with the attack of its batch when known."""
    return step.id


# ------------------------------------------------------------------------------ figures
def plot_accuracy_vs_size(results: dict[str, AdversarialTraining]) -> "Figure":
    """Clean (circles) and adversarial (squares) validation accuracy after fine-tuning vs the
    training-set size, one colour per result, with the pretrained baselines dashed."""
    if not results or not all(isinstance(r, AdversarialTraining) for r in results.values()):
        raise ParameterError("plot_accuracy_vs_size", "results", results, "{label: AdversarialTraining}, non-empty")
    from matplotlib.ticker import ScalarFormatter

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    cmap = [f"C{i % 10}" for i in range(len(results))]
    for col, (name, r) in zip(cmap, results.items()):
        sizes = np.asarray(r.sizes)
        ax.plot(sizes, r.clean_acc, "o-", color=col, label=f"{name}: clean")
        ax.plot(sizes, r.adv_acc, "s-", color=col, alpha=0.7, label=f"{name}: adversarial")
        ax.axhline(r.baseline_clean, color=col, ls="--", lw=0.8)
        ax.axhline(r.baseline_adv, color=col, ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({int(s) for r in results.values() for s in r.sizes}))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("adversarial training-set size (pairs)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Adversarial fine-tuning (dashed: pretrained clean, dotted: pretrained adversarial)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def plot_roc(results: dict[str, AdversarialDetection]) -> "Figure":
    """The detectors' ROC curves (held-out pairs), AUC in the legend."""
    if not results or not all(isinstance(r, AdversarialDetection) for r in results.values()):
        raise ParameterError("plot_roc", "results", results, "{label: AdversarialDetection}, non-empty")
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    for i, (name, r) in enumerate(results.items()):
        ax.plot(r.fpr, r.tpr, color=f"C{i % 10}", lw=1.5, label=f"{name} (AUC = {r.auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (clean called adversarial)")
    ax.set_ylabel("true positive rate (adversarial detected)")
    ax.set_title("Clean-vs-adversarial detector: ROC", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def _norm(m: Any) -> np.ndarray:
    a = np.asarray(m.detach().cpu().float() if hasattr(m, "detach") else m, dtype=np.float64)
    peak = np.abs(a).max() if a.size else 0.0
    return a / peak if peak > 0 else a


def plot_detector_cams(result: AdversarialDetection, classes: Sequence[str] | None = None) -> "Figure":
    """Fig. 5: per example row (clean, then adversarial) the image, the classifier's CAM for its
    prediction and the detector's CAM for class "adversarial" (each map over the image, scaled
    by its own maximum |value|)."""
    if not isinstance(result, AdversarialDetection):
        raise ParameterError("plot_detector_cams", "result", result, "an AdversarialDetection")
    k = len(result.example_index)
    fig = _figure(7.2, 2.4 * max(1, 2 * k))
    if not k:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no held-out example", ha="center", va="center")
        return fig
    axes = fig.subplots(2 * k, 3, squeeze=False)
    for i in range(k):
        for j, kind in enumerate(("clean", "adversarial")):
            row = axes[2 * i + j]
            img = image_hwc(result.example_images[i, j])
            pred = int(result.classifier_pred[i, j])
            name = classes[pred] if classes is not None and pred < len(classes) else str(pred)
            row[0].imshow(img, cmap=None if img.ndim == 3 else "gray")
            row[0].set_title(f"{kind} (pair {int(result.example_index[i])})", fontsize=8)
            for ax, cam, title in ((row[1], result.classifier_cam[i, j], f"classifier CAM: {name}"),
                                   (row[2], result.detector_cam[i, j],
                                    f"detector CAM: adversarial (p={float(result.detector_prob[i, j]):.2f})")):
                ax.imshow(img.mean(2) if img.ndim == 3 else img, cmap="gray")
                ax.imshow(_norm(cam), cmap="jet", alpha=0.5, vmin=-1, vmax=1)
                ax.set_title(title, fontsize=8)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    return fig


# ------------------------------------------------------------------------------ sections
def adversarial_training_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``art.adversarial_training`` steps: Tables 14-15 per step and accuracy vs size."""
    results = {_label(s): s.result for s in group.steps}
    run.summary["adversarial_training"] = {k: r.rows() for k, r in results.items()}
    tables = [(f"Adversarial fine-tuning: validation accuracy after training (pretrained baseline) -- {k}",
               r.paper_rows()) for k, r in results.items()]
    tables += [("Adversarial fine-tuning: accuracies and gains", [{"step": k, **row} for k, r in results.items()
                                                                   for row in r.rows()])]
    figs = []
    if results:
        figs.append(("Validation accuracy vs adversarial training-set size (Tables 14-15)",
                     run.save_figure(plot_accuracy_vs_size(results), "adversarial_training_accuracy.png")))
    text = ["A copy of the pretrained model is fine-tuned (Adam) on adversarial examples labelled with their true "
            "class, one copy per training-set size; accuracy on the validation pairs' clean and adversarial images, "
            "the pretrained model's in parentheses. The paper (Tables 14-15) finds that adversarial training raises "
            "the adversarial accuracy, more with more data, while the clean accuracy may drop."]
    for k, r in results.items():
        where = "the training pairs themselves (no val context)" if r.validated_on == "batch" else \
            f"{r.n_val} validation pairs ({r.val_attack or 'val'})"
        how = f"on the fly ({r.on_the_fly}, ART AdversarialTrainer)" if r.on_the_fly else \
            ("adversarial + clean images" if r.mix_clean else "adversarial images only")
        text.append(f"{k}: {r.train_attack or 'pairs'} training pairs, {how}; {r.epochs} epochs, lr {r.lr:g}, batch "
                    f"{r.batch_size}, seed {r.seed}; validated on {where}.")
    return Section("Adversarial training (B8, Tables 14-15)", text, tables=tables, figures=figs)


def detector_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``art.detector`` steps: per-class accuracy and AUC, ROC figure, Fig. 5 per step."""
    results = {_label(s): s.result for s in group.steps}
    run.summary["detector"] = {k: {"auc": float(r.auc), "acc_clean": float(r.acc_clean),
                                   "acc_adv": float(r.acc_adv), "n_val": int(len(r.val_index))}
                               for k, r in results.items()}
    rows = [{"step": k, **row} for k, r in results.items() for row in r.rows()]
    figs = []
    if results:
        figs.append(("ROC of the clean-vs-adversarial detector on held-out pairs",
                     run.save_figure(plot_roc(results), "detector_roc.png")))
    for k, r in results.items():
        if len(r.example_index):
            figs.append((f"Image | classifier CAM (its prediction) | detector CAM (class adversarial) (Fig. 5) -- {k}",
                         run.save_figure(plot_detector_cams(r, run.classes),
                                         f"{k.replace('/', '_')}_detector_cam.png")))
    text = ["A binary detector (the synthetic CNN architecture with two outputs, GAP + linear, trained through ART's "
            "BinaryInputDetector with Adam) separates clean from adversarial images; it is trained on a seeded part "
            "of the pairs and evaluated on the held-out rest: per-class accuracy, ROC curve and ROC-AUC of its "
            "adversarial-class probability. The paper (Sec. 4.7, Fig. 5) finds that such a detector separates the "
            "two (AUC 0.9875; 98.42 % clean, 99.07 % adversarial accuracy), and that its CAM for 'adversarial' does "
            "not rest on the object the classifier's CAM highlights but on small local regions."]
    for k, r in results.items():
        text.append(f"{k}: {len(r.train_index)} training and {len(r.val_index)} held-out pairs "
                    f"({r.attack or 'pairs'}); width {r.width}, {r.epochs} epochs, lr {r.lr:g}, batch {r.batch_size}, "
                    f"seed {r.seed}; "
                    f"AUC {r.auc:.3f}; CAMs by {r.explainer}.")
    return Section("Adversarial-example detector (B9, Fig. 5)", text,
                   tables=[("Detector: per-class accuracy and ROC-AUC on held-out pairs", rows)], figures=figs)


#: ``(group kind, component name)`` -> the section the plugin answers with.
SECTIONS: dict[tuple[str, str], Callable[["ReportGroup", "Run"], Section]] = {
    ("analyzer", "art.adversarial_training"): adversarial_training_section,
    ("analyzer", "art.detector"): detector_section,
}
