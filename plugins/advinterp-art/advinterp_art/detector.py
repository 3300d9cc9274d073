"""A clean-vs-adversarial binary detector trained through ART's detector API (Ding et al.,
Sec. 4.7, Fig. 5; capability B9).

The detector is the shipped CAM-compatible CNN architecture (``SyntheticCNN``: conv stages,
global average pooling, one linear layer) with ``num_classes=2`` (0 = clean, 1 = adversarial),
wrapped in an ART ``PyTorchClassifier`` (``clip_values=(0, 1)``, the classifier's ``mean``/``std``
as ART preprocessing) and trained by ART's ``BinaryInputDetector`` with Adam. GAP makes it
size-agnostic: it takes the pairs' image size (64 px on the embedded world, any size in general).

* :func:`fit_detector` -- train a detector on clean and adversarial images; returns its
  :class:`~advinterp.ModelAdapter` (two outputs; CAM layer ``layer4``, head ``fc``).
* :func:`evaluate_detector` -- per-class accuracy, ROC curve and ROC-AUC (scikit-learn) on the
  detector's adversarial-class probability.
* :class:`DetectorAnalyzer` (registered ``art.detector``) and its result :class:`AdversarialDetection`:
  seeded split of the pairs (``train_fraction`` for training, the rest held out), the
  evaluation on the held-out pairs, and Fig. 5: for clean and adversarial images the CAM of the
  classifier (for its prediction) and the CAM of the DETECTOR (for class "adversarial"),
  both from the registered explainer (``cam``) -- the detector's through its adapter.
  ``result.detector()`` rebuilds the trained detector (its weights are in the result).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from advinterp.api import (AdversarialBatch, Analyzer, Explainer, ModelAdapter, Param, ParameterError, Result,
                           check_images, progress_bar)

__all__ = ["fit_detector", "evaluate_detector", "detector_module", "AdversarialDetection", "DetectorAnalyzer",
           "CLEAN", "ADVERSARIAL"]

#: The detector's classes.
CLEAN, ADVERSARIAL = 0, 1
_OWNER = "fit_detector"


@functools.lru_cache(maxsize=1)
def _architecture() -> type:
    """The shipped synthetic CNN's class (reached through the model factory: the plugin uses
    only the public API)."""
    import advinterp

    return type(advinterp.get_model("synthetic-cnn").module)


def detector_module(width: int = 16, seed: int = 0) -> nn.Module:
    """A fresh ``SyntheticCNN(num_classes=2, width=width)``, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return _architecture()(num_classes=2, width=int(width))


def _adapter(net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None,
             input_shape: Sequence[int]) -> ModelAdapter:
    return ModelAdapter(net, mean=mean, std=std, nb_classes=2, input_shape=tuple(int(s) for s in input_shape),
                        cam_layer="layer4", classifier="fc", name="detector")


def fit_detector(x_clean: Any, x_adv: Any, *, epochs: int = 30, lr: float = 1e-3, batch_size: int = 32,
                 seed: int = 0, width: int = 16, mean: Sequence[float] | None = (0.5, 0.5, 0.5),
                 std: Sequence[float] | None = (0.25, 0.25, 0.25), betas: Sequence[float] = (0.9, 0.999),
                 device: str | torch.device = "cpu", recalibrate_bn: bool = True,
                 progress: bool | None = None) -> ModelAdapter:
    """Train a clean-vs-adversarial detector with ART's ``BinaryInputDetector``.

    Args:
        x_clean: ``(N, 3, H, W)`` clean images in [0, 1] (label 0).
        x_adv: ``(M, 3, H', W')`` adversarial images in [0, 1] (label 1); same ``H, W`` as
            ``x_clean``.
        epochs: passes over the ``N + M`` images (default 30; what counts is the number of
            Adam steps, ``epochs * (N + M) / batch_size``: ~100 or more).
        lr: Adam's learning rate (default 1e-3).
        batch_size: images per step (default 32).
        seed: initial weights, shuffling (ART's DataLoader draws from torch's global RNG:
            seeded here, restored afterwards). Same seed, same detector.
        width: channels of the CNN's first stage (default 16, as the shipped classifier).
        mean, std: per-channel normalisation of the detector's input (default the shipped
            classifier's; ``None`` for none), ART's ``preprocessing``.
        betas: Adam's betas.
        device: where to train (``"cpu"`` or a CUDA device).
        recalibrate_bn: (default True) after training, recompute the batch-norm running
            statistics as the plain average over all training images (train mode, no
            gradient, weights unchanged). The exponential average of the last batches
            otherwise skews the decision: on the embedded world (64 PGD training pairs) it
            lifts the held-out ROC-AUC from 0.86-1.0 to 0.99-1.0 over seeds and widths.
        progress: the progress bar over epochs (``None``: advinterp's setting).

    Returns:
        The detector's :class:`ModelAdapter` (eval mode, 2 outputs: logits of clean and
        adversarial; input ``(3, H, W)``).
    """
    from art.defences.detector.evasion import BinaryInputDetector
    from art.estimators.classification import PyTorchClassifier

    from .adapters import seeded
    from .adversarial_training import _check_betas, _positive_float, _positive_int

    epochs = _positive_int(_OWNER, "epochs", epochs)
    lr = _positive_float(_OWNER, "lr", lr)
    batch_size = _positive_int(_OWNER, "batch_size", batch_size)
    width = _positive_int(_OWNER, "width", width)
    betas = _check_betas(_OWNER, betas)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(_OWNER, "seed", seed, "an integer >= 0")
    xc = check_images(_OWNER, x_clean, "x_clean").detach()
    xa = check_images(_OWNER, x_adv, "x_adv").detach()
    for name, x in (("x_clean", xc), ("x_adv", xa)):
        if x.shape[1] != 3:
            raise ParameterError(_OWNER, name, x, "3-channel images (N, 3, H, W)",
                                 f"The detector is the 3-channel synthetic CNN; got {x.shape[1]} channels "
                                 "(repeat grey images: x.expand(-1, 3, -1, -1)).")
    if xc.shape[2:] != xa.shape[2:]:
        raise ParameterError(_OWNER, "x_adv", xa, f"images of x_clean's size {tuple(xc.shape[2:])}",
                             f"Got {tuple(xa.shape[2:])}.")
    if not len(xc) or not len(xa):
        raise ParameterError(_OWNER, "x_clean" if not len(xc) else "x_adv", xc if not len(xc) else xa,
                             "at least one image of each class")
    shape = (3, int(xc.shape[2]), int(xc.shape[3]))
    net = detector_module(width, int(seed)).to(device)
    det = _adapter(net, mean, std, shape)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
    pre = None if mean is None else (np.asarray(mean, np.float32), np.asarray(std, np.float32))
    clf = PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), optimizer=opt, input_shape=shape, nb_classes=2,
                            clip_values=(0.0, 1.0), preprocessing=pre,
                            device_type="gpu" if torch.device(device).type == "cuda" else "cpu")
    detector = BinaryInputDetector(clf)
    x = torch.cat([xc.float().cpu(), xa.float().cpu()]).numpy()
    y = np.zeros((len(x), 2), np.float32)
    y[:len(xc), CLEAN] = 1
    y[len(xc):, ADVERSARIAL] = 1
    try:
        with seeded(int(seed)), torch.inference_mode(False), torch.enable_grad():
            for _ in progress_bar(range(epochs), desc="detector training (ART BinaryInputDetector)", total=epochs,
                                  disable=None if progress is None else not progress):
                detector.fit(x, y, batch_size=batch_size, nb_epochs=1)
            if recalibrate_bn:
                _recalibrate_bn(det, torch.from_numpy(x), batch_size)
    finally:
        net.eval()
        for p in net.parameters():
            p.grad = None
    det.art_detector = detector  # type: ignore[attr-defined]
    return det


def _recalibrate_bn(det: ModelAdapter, x: torch.Tensor, batch_size: int) -> None:
    """Batch-norm running statistics = the cumulative average over ``x`` (train-mode forwards
    without gradient, in batches of ``batch_size``); momenta restored afterwards."""
    bns = [m for m in det.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        det.module.train()
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                det.module(det.normalize(x[i:i + batch_size].to(det.device, det.dtype)))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        det.module.eval()


def evaluate_detector(detector: ModelAdapter, x_clean: Any, x_adv: Any, batch_size: int = 256) -> dict[str, Any]:
    """Per-class accuracy and ROC of a detector on held-out clean and adversarial images.

    Args:
        detector: the detector's adapter (2 outputs: clean, adversarial).
        x_clean, x_adv: ``(N, 3, H, W)`` / ``(M, 3, H, W)`` images in [0, 1].
        batch_size: images per forward.

    Returns:
        ``{"p_clean" (N,), "p_adv" (M,)``: the adversarial-class probability (softmax);
        ``"pred_clean", "pred_adv"``: the detector's class (argmax, 1 = adversarial);
        ``"acc_clean"`` (fraction of clean images called clean), ``"acc_adv"`` (of adversarial
        images called adversarial), ``"accuracy"`` (their mean: balanced accuracy), ``"auc"``
        (scikit-learn ``roc_auc_score``), ``"fpr", "tpr", "thresholds"`` (``roc_curve``)}.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    owner = "evaluate_detector"
    xc = check_images(owner, x_clean, "x_clean", detector.input_shape).detach()
    xa = check_images(owner, x_adv, "x_adv", detector.input_shape).detach()
    if not len(xc) or not len(xa):
        raise ParameterError(owner, "x_clean" if not len(xc) else "x_adv", xc if not len(xc) else xa,
                             "at least one held-out image of each class")

    def probs(x: torch.Tensor) -> torch.Tensor:
        with detector.preserved(freeze=True), torch.no_grad():
            out = [torch.softmax(detector.logits(x[i:i + batch_size].to(detector.device, detector.dtype)), 1)
                   for i in range(0, len(x), batch_size)]
        return torch.cat(out).cpu().double()

    pc, pa = probs(xc), probs(xa)
    pred_c, pred_a = pc.argmax(1).numpy(), pa.argmax(1).numpy()
    labels = np.r_[np.zeros(len(xc)), np.ones(len(xa))]
    scores = np.r_[pc[:, ADVERSARIAL].numpy(), pa[:, ADVERSARIAL].numpy()]
    fpr, tpr, thr = roc_curve(labels, scores)
    acc_c, acc_a = float((pred_c == CLEAN).mean()), float((pred_a == ADVERSARIAL).mean())
    return {"p_clean": pc[:, ADVERSARIAL].numpy(), "p_adv": pa[:, ADVERSARIAL].numpy(),
            "pred_clean": pred_c.astype(np.int64), "pred_adv": pred_a.astype(np.int64),
            "acc_clean": acc_c, "acc_adv": acc_a, "accuracy": (acc_c + acc_a) / 2,
            "auc": float(roc_auc_score(labels, scores)), "fpr": fpr, "tpr": tpr,
            "thresholds": np.where(np.isfinite(thr), thr, np.nan)}


# ------------------------------------------------------------------------------ the analyzer
@dataclass(frozen=True)
class AdversarialDetection(Result):
    """Result of ``art.detector`` (Ding et al. Sec. 4.7, Fig. 5).

    Attributes:
        train_index, val_index: the pairs of the batch used for training and held out.
        p_clean, p_adv: ``(V,)`` the detector's adversarial-class probability of the held-out
            clean and adversarial images.
        pred_clean, pred_adv: ``(V,)`` its class for them (1 = adversarial).
        acc_clean, acc_adv: per-class accuracy (clean called clean, adversarial called
            adversarial); ``accuracy``: their mean; ``auc``: ROC-AUC (scikit-learn).
        fpr, tpr, thresholds: the ROC curve (``roc_curve``; its infinite first threshold is NaN).
        example_index: ``(k,)`` the held-out pairs of Fig. 5.
        example_images: ``(k, 2, 3, H, W)`` their clean and adversarial images.
        classifier_pred: ``(k, 2)`` the classifier's prediction of each.
        classifier_cam: ``(k, 2, H, W)`` the explainer's map of the CLASSIFIER for its prediction.
        detector_cam: ``(k, 2, H, W)`` the explainer's map of the DETECTOR for class 1 (adversarial).
        detector_prob: ``(k, 2)`` the detector's adversarial probability of each.
        detector_state: the detector's ``state_dict`` (rebuild it with :meth:`detector`).
        width, mean, std, input_shape: the detector's architecture and normalisation.
        attack, explainer: names; epochs, lr, batch_size, seed, train_fraction, recalibrate_bn:
            the parameters.
    """

    train_index: np.ndarray
    val_index: np.ndarray
    p_clean: np.ndarray
    p_adv: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    acc_clean: float
    acc_adv: float
    accuracy: float
    auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    example_index: np.ndarray
    example_images: torch.Tensor
    classifier_pred: np.ndarray
    classifier_cam: torch.Tensor
    detector_cam: torch.Tensor
    detector_prob: np.ndarray
    detector_state: dict
    width: int = 16
    mean: tuple | None = None
    std: tuple | None = None
    input_shape: tuple = (3, 64, 64)
    attack: str = ""
    explainer: str = "cam"
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    train_fraction: float = 0.5
    recalibrate_bn: bool = True

    def detector(self) -> ModelAdapter:
        """The trained detector as a :class:`ModelAdapter` (two outputs: clean, adversarial)."""
        net = _architecture()(num_classes=2, width=int(self.width))
        net.load_state_dict({k: torch.as_tensor(v) for k, v in self.detector_state.items()})
        net.eval()
        return _adapter(net, self.mean, self.std, self.input_shape)

    def rows(self) -> list[dict[str, Any]]:
        """Per-class accuracy on the held-out pairs, and the ROC-AUC."""
        n = len(self.val_index)
        return [{"attack": self.attack, "class": "clean", "n": n, "accuracy": float(self.acc_clean),
                 "auc": float(self.auc)},
                {"attack": self.attack, "class": "adversarial", "n": n, "accuracy": float(self.acc_adv),
                 "auc": float(self.auc)},
                {"attack": self.attack, "class": "both (balanced)", "n": 2 * n, "accuracy": float(self.accuracy),
                 "auc": float(self.auc)}]


class DetectorAnalyzer(Analyzer):
    """Clean-vs-adversarial detector (ART ``BinaryInputDetector`` on a 2-class synthetic CNN):
    per-class accuracy, ROC-AUC on held-out pairs, and the classifier's vs the detector's CAM (Fig. 5).

    The batch is the pairs: a seeded ``train_fraction`` of them trains the detector (their
    ``x0`` as clean, their ``x_adv`` as adversarial), the rest is held out for the evaluation.

    Parameters: ``epochs`` (30: on 64 training pairs at batch 32, 120 Adam steps; fewer leave
    the detector calling everything clean), ``lr`` (1e-3), ``batch_size`` (32), ``seed`` (0: split,
    initial weights, shuffling), ``width`` (16), ``train_fraction`` (0.5), ``examples`` (2
    held-out pairs in Fig. 5), ``recalibrate_bn`` (True: see :func:`fit_detector`),
    ``explainer`` (``"cam"``) and ``explainer_params`` (None).

    Context: ``explainer``: an :class:`~advinterp.Explainer` or a registered name used instead
    of the parameter.
    """

    name = "art.detector"
    context_keys = ("explainer",)
    params = {
        "epochs": Param.integer(30, low=1, doc="passes over the training pairs"),
        "lr": Param.number(1e-3, low=0, low_open=True, doc="Adam's learning rate"),
        "batch_size": Param.integer(32, low=1, doc="images per step"),
        "seed": Param.integer(0, low=0, doc="split, initial weights and shuffling"),
        "width": Param.integer(16, low=1, doc="channels of the detector's first stage"),
        "train_fraction": Param(0.5, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                                "a fraction in (0, 1) of the pairs used for training", invalid=(0, 1, 1.5, "half")),
        "examples": Param.integer(2, low=0, doc="held-out pairs shown in Fig. 5"),
        "recalibrate_bn": Param.boolean(True, doc="batch-norm statistics = the average over the training images"),
        "explainer": Param("cam", lambda v: isinstance(v, str) and bool(v), "a registered explainer name",
                           doc="the explainer giving both CAMs", invalid=("", 3)),
        "explainer_params": Param(
            None, lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
            "None or a dict of the explainer's parameters", invalid=("cam", [1])),
    }
    conformance_params = {"epochs": 1, "batch_size": 4, "width": 4, "examples": 1}

    def _explainer(self, context: Mapping[str, Any]) -> Explainer:
        import advinterp

        exp = context.get("explainer")
        if exp is None or isinstance(exp, str):
            return advinterp.get_explainer(exp or self.explainer, **(self.explainer_params or {}))
        if not isinstance(exp, Explainer):
            raise ParameterError(f"{type(self).__name__}.analyze", "explainer", exp,
                                 "an advinterp Explainer instance or a registered explainer name")
        return exp

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> AdversarialDetection:
        owner = f"{type(self).__name__}.analyze"
        exp = self._explainer(context)
        n = len(batch.x0)
        if n < 2:
            raise ParameterError(owner, "batch", batch, "at least 2 pairs (some to train the detector, some held out)",
                                 f"Got {n}.")
        n_train = min(n - 1, max(1, int(round(float(self.train_fraction) * n))))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        tr, va = order[:n_train].sort().values, order[n_train:].sort().values
        x0, xa = batch.x0.detach(), batch.x_adv.detach()
        mean, std = model.mean, model.std
        if mean is not None and len(mean) != 3:
            mean = std = None
        det = fit_detector(x0[tr.to(x0.device)], xa[tr.to(xa.device)], epochs=int(self.epochs), lr=float(self.lr),
                           batch_size=int(self.batch_size), seed=int(self.seed), width=int(self.width), mean=mean,
                           std=std, device=model.device, recalibrate_bn=bool(self.recalibrate_bn))
        ev = evaluate_detector(det, x0[va.to(x0.device)], xa[va.to(xa.device)])
        # Fig. 5: the first `examples` held-out pairs, clean and adversarial
        k = min(int(self.examples), len(va))
        ex = va[:k]
        h, w = x0.shape[-2:]
        imgs = torch.stack([x0[ex.to(x0.device)], xa[ex.to(xa.device)]], 1).cpu().float() if k else \
            torch.zeros(0, 2, *x0.shape[1:])
        flat = imgs.reshape(-1, *imgs.shape[2:])
        if k:
            pred = model.predict(flat.to(model.device, model.dtype)).cpu()
            cls_cam = exp.explain(model, flat.to(model.device, model.dtype), pred.to(model.device)).maps.cpu().float()
            det_cam = exp.explain(det, flat.to(det.device), ADVERSARIAL).maps.cpu().float()
            with torch.no_grad():
                prob = torch.softmax(det.logits(flat.to(det.device)), 1)[:, ADVERSARIAL].cpu().double()
        else:
            pred, cls_cam, det_cam = torch.zeros(0, dtype=torch.long), torch.zeros(0, h, w), torch.zeros(0, h, w)
            prob = torch.zeros(0, dtype=torch.float64)
        state = {k_: v.detach().cpu().clone() for k_, v in det.module.state_dict().items()}
        return AdversarialDetection(
            train_index=tr.numpy(), val_index=va.numpy(), p_clean=ev["p_clean"], p_adv=ev["p_adv"],
            pred_clean=ev["pred_clean"], pred_adv=ev["pred_adv"], acc_clean=ev["acc_clean"], acc_adv=ev["acc_adv"],
            accuracy=ev["accuracy"], auc=ev["auc"], fpr=ev["fpr"], tpr=ev["tpr"], thresholds=ev["thresholds"],
            example_index=ex.numpy(), example_images=imgs, classifier_pred=pred.numpy().reshape(k, 2),
            classifier_cam=cls_cam.reshape(k, 2, h, w), detector_cam=det_cam.reshape(k, 2, h, w),
            detector_prob=prob.numpy().reshape(k, 2), detector_state=state, width=int(self.width),
            mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std),
            input_shape=tuple(int(s) for s in det.input_shape), attack=batch.attack or "",
            explainer=getattr(exp, "name", "") or type(exp).__name__, epochs=int(self.epochs), lr=float(self.lr),
            batch_size=int(self.batch_size), seed=int(self.seed), train_fraction=float(self.train_fraction),
            recalibrate_bn=bool(self.recalibrate_bn))
