"""Adversarial fine-tuning (Ding et al., Sec. 4.6, Tables 14-15; capability B8).

The paper fine-tunes a pretrained classifier on adversarial images labelled with their TRUE
class (DAmageNet's precomputed examples), for training sets of growing size, and reports the
clean and adversarial validation accuracy after fine-tuning beside the pretrained baseline.

* :func:`adversarial_finetune` -- Adam on a deep copy of the model's module; returns a NEW
  :class:`~advinterp.ModelAdapter` (same ``mean``/``std``/``input_shape``/layer names). The
  model passed in is never modified (weights, buffers, modes, ``requires_grad``, ``.grad``),
  also when training raises. Either precomputed examples (``x_adv``, optionally mixed with
  ``x_clean``) or examples generated on the fly through ART's ``AdversarialTrainer``
  (``on_the_fly="pgd"``: the registered attack as an ART ``EvasionAttack``,
  :func:`advinterp_art.as_art_evasion_attack`, attacking the model being trained at every batch).
* :func:`save_adapter` / :func:`load_adapter` -- checkpoints loadable with
  ``torch.load(weights_only=True)``: the synthetic CNN's checkpoint dict (``get_model("synthetic-cnn",
  path=...)`` loads it), a plain ``state_dict`` for any other module.
* :class:`AdversarialTrainingAnalyzer` (registered ``art.adversarial_training``) and its result
  :class:`AdversarialTraining`: one fine-tuning per training-set size, validated on a context batch.

Example::

    import advinterp
    from advinterp_art.adversarial_training import adversarial_finetune, save_adapter
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=128, split="train").tensors()
    batch = advinterp.get_attack("pgd", eps=8/255, eps_step=2/255, max_iter=10).generate(model, x, y)
    tuned = adversarial_finetune(model, batch.x_adv, batch.y_true, epochs=5)
    save_adapter(tuned, "tuned.pt")          # advinterp.get_model("synthetic-cnn", path="tuned.pt")
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from advinterp.api import (AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result, as_adapter,
                           check_images, check_labels, progress_bar)

__all__ = ["adversarial_finetune", "save_adapter", "load_adapter", "AdversarialTraining",
           "AdversarialTrainingAnalyzer", "clone_adapter"]

_OWNER = "adversarial_finetune"


# ------------------------------------------------------------------------------ helpers
def _positive_int(owner: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ParameterError(owner, name, v, "a positive integer")
    return int(v)


def _positive_float(owner: str, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not math.isfinite(v) or v <= 0:
        raise ParameterError(owner, name, v, "a finite number > 0")
    return float(v)


def _check_betas(owner: str, betas: Any) -> tuple[float, float]:
    try:
        b = tuple(float(v) for v in betas)
    except Exception:
        b = ()
    if len(b) != 2 or not all(0 <= v < 1 for v in b):
        raise ParameterError(owner, "betas", betas, "two numbers in [0, 1), Adam's (beta1, beta2)",
                             "The default is (0.9, 0.999).")
    return b  # type: ignore[return-value]


def clone_adapter(adapter: ModelAdapter, module: nn.Module, name: str | None = None,
                  nb_classes: int | None = None) -> ModelAdapter:
    """A new :class:`ModelAdapter` over ``module`` with ``adapter``'s metadata (``mean``,
    ``std``, ``input_shape``, CAM and classifier layer names when they exist in ``module``)."""
    names = {n for n, _ in module.named_modules()}
    cam = getattr(adapter, "_cam_layer", None)
    head = getattr(adapter, "_classifier_name", None)
    return ModelAdapter(module, mean=adapter.mean, std=adapter.std,
                        nb_classes=nb_classes if nb_classes is not None else adapter.nb_classes,
                        input_shape=adapter.input_shape, cam_layer=cam if cam in names else None,
                        classifier=head if head in names else None, name=name or adapter.name)


def _trainable_copy(adapter: ModelAdapter) -> nn.Module:
    """A deep copy of the adapter's module, every parameter trainable, no ``.grad``. The copy is
    made under ``preserved()`` so nothing about the original moves."""
    with adapter.preserved():
        net = copy.deepcopy(adapter.module)
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    return net


def _finish(net: nn.Module) -> None:
    net.eval()
    for p in net.parameters():
        p.grad = None


# ------------------------------------------------------------------------------ fine-tuning
def adversarial_finetune(model: Any, x_adv: Any, y: Any, *, epochs: int, lr: float = 1e-3, batch_size: int = 32,
                         seed: int = 0, betas: Sequence[float] = (0.9, 0.999), x_clean: Any = None,
                         weight_decay: float = 0.0, train_bn: bool = True, on_the_fly: str | None = None,
                         attack_params: Mapping[str, Any] | None = None, ratio: float = 1.0,
                         name: str | None = None, progress: bool | None = None) -> ModelAdapter:
    """Fine-tune a deep copy of ``model`` on adversarial examples labelled with their true class.

    Args:
        model: :class:`ModelAdapter`, ``nn.Module`` or ART PyTorch classifier; never modified.
        x_adv: ``(N, C, H, W)`` adversarial images in [0, 1] (the training examples), or
            ``None`` with ``on_the_fly``.
        y: ``(N,)`` their TRUE labels (int64; one-hot accepted).
        epochs: passes over the training set (>= 1).
        lr: Adam's learning rate (default 1e-3, the paper's).
        batch_size: images per step (default 32).
        seed: seeds the shuffling (and every RNG the training draws from; the global RNG
            states are restored afterwards). Same seed, same result.
        betas: Adam's ``(beta1, beta2)`` (default ``(0.9, 0.999)``).
        x_clean: optional ``(M, C, H, W)`` clean images, labelled ``y`` too (``M == N``): with
            ``x_adv`` they are mixed into one training set of ``2N`` images. With
            ``on_the_fly`` they are the images the attack perturbs.
        weight_decay: Adam's weight decay (default 0).
        train_bn: (default True) batch-norm layers train (running statistics follow the
            training batches); False keeps them in eval mode.
        on_the_fly: ``None`` (default: precomputed ``x_adv``) or a registered native attack name
            (``"pgd"``): examples generated at every batch by ART's ``AdversarialTrainer`` with
            the attack as an ART ``EvasionAttack`` on the model being trained; needs
            ``x_clean`` (and ``x_adv=None``).
        attack_params: the on-the-fly attack's parameters (advinterp's names), e.g.
            ``{"eps": 8/255, "eps_step": 2/255, "max_iter": 10}``.
        ratio: on the fly: the fraction of each batch replaced by adversarial examples
            (ART's ``ratio``, default 1.0).
        name: display name of the new adapter (default ``"<model name>+advft"``).
        progress: show the progress bar over epochs (``None``: advinterp's setting).

    Returns:
        A new :class:`ModelAdapter` over the fine-tuned copy, in eval mode, with the model's
        ``mean``, ``std``, ``input_shape`` and layer names. Every parameter of the copy was
        trained (the paper fine-tunes the whole network). With precomputed examples its
        attribute ``train_losses`` lists the mean training loss of each epoch.

    Raises:
        ParameterError: bad images, labels or settings (naming the value and the fix).
    """
    adapter = as_adapter(model)
    epochs = _positive_int(_OWNER, "epochs", epochs)
    lr = _positive_float(_OWNER, "lr", lr)
    batch_size = _positive_int(_OWNER, "batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(_OWNER, "seed", seed, "an integer >= 0")
    betas = _check_betas(_OWNER, betas)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ParameterError(_OWNER, "weight_decay", weight_decay, "a number >= 0")
    shape = adapter.input_shape
    if on_the_fly is not None:
        return _finetune_art(adapter, x_adv, y, x_clean, on_the_fly, attack_params, ratio, epochs=epochs, lr=lr,
                             batch_size=batch_size, seed=int(seed), betas=betas, weight_decay=float(weight_decay),
                             train_bn=train_bn, name=name, progress=progress)
    if attack_params is not None:
        raise ParameterError(_OWNER, "attack_params", attack_params, "None without on_the_fly",
                             'Pass on_the_fly="pgd" (a registered attack) to generate examples during training.')
    if x_adv is None:
        raise ParameterError(_OWNER, "x_adv", None, "adversarial images (N, C, H, W) in [0, 1]",
                             'Or pass x_clean=... with on_the_fly="pgd" to generate them during training.')
    xa = check_images(_OWNER, x_adv, "x_adv", shape).detach()
    n = len(xa)
    labels = check_labels(_OWNER, y, n, adapter.nb_classes, "y").detach().cpu()
    if n == 0:
        raise ParameterError(_OWNER, "x_adv", xa, "at least one training image")
    xs = [xa]
    if x_clean is not None:
        xc = check_images(_OWNER, x_clean, "x_clean", shape).detach()
        if len(xc) != n:
            raise ParameterError(_OWNER, "x_clean", xc, f"{n} clean images (one per adversarial image, labelled y)",
                                 f"Got {len(xc)}.")
        xs.append(xc.to(xa.dtype))
        labels = torch.cat([labels, labels])
    x_all = torch.cat([x.to(xa.device) for x in xs])
    net = _trainable_copy(adapter)
    tuned = clone_adapter(adapter, net, name or f"{adapter.name}+advft")
    dev, dtype = tuned.device, tuned.dtype
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, weight_decay=float(weight_decay))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(int(seed))  # dropout and the like draw from the global RNG
            for _ in progress_bar(range(epochs), desc="adversarial fine-tuning", total=epochs,
                                  disable=None if progress is None else not progress):
                _train_mode(net, train_bn)
                order = torch.randperm(len(x_all), generator=gen)
                total = 0.0
                for i in range(0, len(order), batch_size):
                    idx = order[i:i + batch_size]
                    xb = x_all[idx.to(x_all.device)].clone().to(dev, dtype)
                    yb = labels[idx].to(dev)
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(net(tuned.normalize(xb)), yb)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / len(order))
    finally:
        _finish(net)
    tuned.train_losses = losses  # type: ignore[attr-defined]
    return tuned


def _train_mode(net: nn.Module, train_bn: bool) -> None:
    net.train()
    if not train_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _finetune_art(adapter: ModelAdapter, x_adv: Any, y: Any, x_clean: Any, attack: str,
                  attack_params: Mapping[str, Any] | None, ratio: float, *, epochs: int, lr: float, batch_size: int,
                  seed: int, betas: tuple[float, float], weight_decay: float, train_bn: bool, name: str | None,
                  progress: bool | None) -> ModelAdapter:
    """On-the-fly adversarial fine-tuning through ART's ``AdversarialTrainer``."""
    from art.defences.trainer import AdversarialTrainer

    from .adapters import seeded
    from .evasion import as_art_evasion_attack

    if not isinstance(attack, str) or not attack:
        raise ParameterError(_OWNER, "on_the_fly", attack, 'None or a registered native attack name ("pgd")')
    if x_adv is not None:
        raise ParameterError(_OWNER, "x_adv", x_adv, "None with on_the_fly (the attack makes the examples)",
                             "Pass the clean training images as x_clean=.")
    if x_clean is None:
        raise ParameterError(_OWNER, "x_clean", None, "the clean images (N, C, H, W) the on-the-fly attack perturbs")
    if attack_params is not None and not (isinstance(attack_params, Mapping)
                                          and all(isinstance(k, str) for k in attack_params)):
        raise ParameterError(_OWNER, "attack_params", attack_params, "None or a dict of the attack's parameters")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ParameterError(_OWNER, "ratio", ratio, "a fraction in (0, 1] of each batch made adversarial")
    if not train_bn:
        raise ParameterError(_OWNER, "train_bn", train_bn, "True with on_the_fly (ART's fit trains every layer)")
    xc = check_images(_OWNER, x_clean, "x_clean", adapter.input_shape).detach()
    n = len(xc)
    if n == 0:
        raise ParameterError(_OWNER, "x_clean", xc, "at least one training image")
    labels = check_labels(_OWNER, y, n, adapter.nb_classes, "y").detach().cpu().numpy()
    evasion_cls = as_art_evasion_attack(attack)  # ParameterError / UnknownComponentError for bad names
    net = _trainable_copy(adapter)
    tuned = clone_adapter(adapter, net, name or f"{adapter.name}+advft")
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    clf = tuned.to_art(optimizer=opt)
    art_attack = evasion_cls(clf, **dict(attack_params or {}))
    trainer = AdversarialTrainer(clf, art_attack, ratio=float(ratio))
    x_np = xc.cpu().float().numpy()
    y_np = np.eye(adapter.nb_classes, dtype=np.float32)[labels]
    try:
        with seeded(seed), torch.inference_mode(False), torch.enable_grad():
            for _ in progress_bar(range(epochs), desc="adversarial fine-tuning (ART, on the fly)", total=epochs,
                                  disable=None if progress is None else not progress):
                trainer.fit(x_np, y_np, nb_epochs=1, batch_size=batch_size)
    finally:
        _finish(net)
    return tuned


# ------------------------------------------------------------------------------ checkpoints
def _is_synthetic_cnn(module: nn.Module) -> bool:
    return (type(module).__name__ == "SyntheticCNN" and type(module).__module__.startswith("advinterp.")
            and hasattr(module, "layer1") and hasattr(module, "fc"))


def save_adapter(adapter: Any, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write the adapter's weights to ``path`` in a file ``torch.load(weights_only=True)`` reads.

    * the shipped synthetic CNN (any ``num_classes``/``width``): its checkpoint dict
      ``{"state_dict", "num_classes", "width", "mean", "std", "input_shape", "meta"}``, which
      ``advinterp.get_model("synthetic-cnn", path=path)`` (12 classes) and :func:`load_adapter` load;
    * any other module: its plain ``state_dict`` (load it into the same architecture with
      :func:`load_adapter` ``(path, module=...)`` or ``module.load_state_dict``).

    Args:
        adapter: :class:`ModelAdapter`, ``nn.Module`` or ART classifier.
        path: the file (parent folders are created).
        meta: extra JSON-like information stored with a synthetic-CNN checkpoint.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    adapter = as_adapter(adapter)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    module = adapter.module
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if _is_synthetic_cnn(module):
        ckpt: Any = {"state_dict": state, "num_classes": int(module.fc.out_features),
                     "width": int(module.layer1.conv.out_channels),
                     "mean": list(adapter.mean or (0.0, 0.0, 0.0)), "std": list(adapter.std or (1.0, 1.0, 1.0)),
                     "input_shape": list(adapter.input_shape or (3, 64, 64)), "meta": dict(meta or {})}
    else:
        ckpt = state
    torch.save(ckpt, path)
    return path


def load_adapter(path: str | Path, module: nn.Module | None = None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, name: str | None = None,
                 map_location: str | torch.device = "cpu", **adapter_kwargs: Any) -> ModelAdapter:
    """Load a file of :func:`save_adapter` with ``torch.load(weights_only=True)``.

    A synthetic-CNN checkpoint builds its own module (with its ``mean``/``std``); a plain
    ``state_dict`` needs ``module`` (the architecture; a deep copy is loaded, ``module``
    itself is left alone) and, if the model normalises, ``mean``/``std``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ParameterError("load_adapter", "path", str(path), "an existing checkpoint file written by save_adapter")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(ckpt, dict) and "state_dict" in ckpt and "width" in ckpt:
        import advinterp

        arch = type(advinterp.get_model("synthetic-cnn").module)
        net = arch(num_classes=int(ckpt["num_classes"]), width=int(ckpt["width"]))
        net.load_state_dict(ckpt["state_dict"])
        net.eval()
        shape = adapter_kwargs.pop("input_shape", None) or ckpt.get("input_shape") or (3, 64, 64)
        return ModelAdapter(net, mean=mean or ckpt.get("mean"), std=std or ckpt.get("std"),
                            nb_classes=int(ckpt["num_classes"]), input_shape=tuple(int(v) for v in shape),
                            name=name or path.stem, **adapter_kwargs)
    if module is None:
        raise ParameterError("load_adapter", "module", None, "the nn.Module architecture to load this state_dict into",
                             "A plain state_dict holds weights only: pass module=MyNet() (and mean=/std=).")
    net = copy.deepcopy(module)
    net.load_state_dict(ckpt)
    net.eval()
    return ModelAdapter(net, mean=mean, std=std, name=name or path.stem, **adapter_kwargs)


# ------------------------------------------------------------------------------ the analyzer
@dataclass(frozen=True)
class AdversarialTraining(Result):
    """Result of ``art.adversarial_training`` (Tables 14-15 of Ding et al.).

    Attributes:
        sizes: the training-set sizes ``(S,)``.
        clean_acc, adv_acc: ``(S,)`` clean and adversarial validation accuracy after
            fine-tuning on ``sizes[i]`` pairs.
        baseline_clean, baseline_adv: the pretrained model's clean and adversarial validation
            accuracy (the paper's numbers in parentheses).
        train_loss: ``(S, epochs)`` mean training loss per epoch (NaN where not recorded:
            on the fly).
        n_val: validation pairs; ``validated_on``: ``"val"`` (the context batch) or
            ``"batch"`` (the training pairs themselves: no ``val`` given).
        train_attack, val_attack: the attacks of the training and validation batches.
        epochs, lr, batch_size, seed, mix_clean, on_the_fly: the parameters.
    """

    sizes: tuple[int, ...]
    clean_acc: np.ndarray
    adv_acc: np.ndarray
    baseline_clean: float
    baseline_adv: float
    train_loss: np.ndarray
    n_val: int
    validated_on: str = "val"
    train_attack: str = ""
    val_attack: str = ""
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    mix_clean: bool = False
    on_the_fly: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per size: accuracies after fine-tuning, the baselines and the gains."""
        return [{"size": int(s), "clean_acc": float(c), "clean_baseline": float(self.baseline_clean),
                 "adv_acc": float(a), "adv_baseline": float(self.baseline_adv),
                 "adv_gain": float(a - self.baseline_adv), "clean_change": float(c - self.baseline_clean)}
                for s, c, a in zip(self.sizes, self.clean_acc, self.adv_acc)]

    def paper_rows(self) -> list[dict[str, Any]]:
        """Tables 14-15's layout: ``size | clean acc (baseline) | adversarial acc (baseline)``, in %."""
        def pct(v: float) -> str:
            return "nan" if not math.isfinite(v) else f"{100 * v:.1f}%"

        return [{"size": int(s), "clean acc (baseline)": f"{pct(float(c))} ({pct(self.baseline_clean)})",
                 "adversarial acc (baseline)": f"{pct(float(a))} ({pct(self.baseline_adv)})"}
                for s, c, a in zip(self.sizes, self.clean_acc, self.adv_acc)]


def _check_sizes(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v))


def _check_attack_name(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(v))


class AdversarialTrainingAnalyzer(Analyzer):
    """Adversarial fine-tuning per training-set size: clean and adversarial validation accuracy
    vs the pretrained baseline (Ding et al. Tables 14-15).

    The batch is the training set: its ``x_adv`` labelled ``y_true`` (an attack step over the
    TRAIN split, or a pairs folder, as the paper uses DAmageNet's precomputed images). For each
    size ``s`` of ``sizes`` a fresh copy of the model is fine-tuned on the first ``s`` pairs of a
    seeded permutation of the batch (nested subsets), and evaluated.

    Parameters: ``sizes`` ([32, 64, 128]; each <= the batch size), ``epochs`` (5), ``lr``
    (1e-3), ``batch_size`` (32), ``seed`` (0), ``mix_clean`` (False: adversarial images only;
    True: also the clean ``x0``), ``on_the_fly`` (None, or a registered native attack name:
    the ``x0`` of the subset attacked at every batch through ART's ``AdversarialTrainer``),
    ``attack_params`` (None or a dict for ``on_the_fly``; None: the batch's attack parameters
    when it is the same attack), ``eval_batch_size`` (256).

    Context: ``val``: an :class:`AdversarialBatch` (e.g. PGD over the test split): its ``x0``
    gives the clean and its ``x_adv`` the adversarial validation accuracy, both against its
    ``y_true``. Without it the training batch itself is used (only meaningful for checks).
    """

    name = "art.adversarial_training"
    context_keys = ("val",)
    params = {
        "sizes": Param([32, 64, 128], _check_sizes, "a non-empty list of distinct positive integers",
                       doc="training-set sizes (pairs of the batch); each <= the batch size",
                       invalid=([], [0], [4, 4], 8, [2.5])),
        "epochs": Param.integer(5, low=1, doc="passes over each training set"),
        "lr": Param.number(1e-3, low=0, low_open=True, doc="Adam's learning rate"),
        "batch_size": Param.integer(32, low=1, doc="images per step"),
        "seed": Param.integer(0, low=0, doc="subset permutation and training RNG"),
        "mix_clean": Param.boolean(False, doc="also train on the clean x0 (labelled y_true)"),
        "on_the_fly": Param(None, _check_attack_name, 'None or a registered native attack name ("pgd")',
                            doc="generate the examples during training (ART AdversarialTrainer)", invalid=("", 3)),
        "attack_params": Param(None, lambda v: v is None or (isinstance(v, dict)
                                                             and all(isinstance(k, str) for k in v)),
                               "None or a dict of the on-the-fly attack's parameters", invalid=("eps", [1])),
        "eval_batch_size": Param.integer(256, low=1, doc="images per forward when evaluating"),
    }
    conformance_params = {"sizes": [2, 4], "epochs": 1, "batch_size": 2}

    def _check_params(self) -> None:
        if self.attack_params is not None and self.on_the_fly is None:
            raise ParameterError(type(self).__name__, "attack_params", self.attack_params, "None without on_the_fly",
                                 'Set on_the_fly="pgd" to generate the training examples during training.')
        if self.on_the_fly is not None and self.mix_clean:
            raise ParameterError(type(self).__name__, "mix_clean", self.mix_clean, "False with on_the_fly",
                                 "On the fly, ART's ratio mixes clean and adversarial images (ratio=1.0 here).")

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> AdversarialTraining:
        owner = f"{type(self).__name__}.analyze"
        val = context.get("val")
        if val is None:
            val, validated_on = batch, "batch"
        elif not isinstance(val, AdversarialBatch):
            raise ParameterError(owner, "val", val, "an advinterp.AdversarialBatch (e.g. PGD over the test split)",
                                 'In a study: context = { val = "<attack step id>" }.')
        else:
            validated_on = "val"
            check_images(owner, val.x0, "val.x0", model.input_shape)
            check_images(owner, val.x_adv, "val.x_adv", model.input_shape)
            check_labels(owner, val.y_true, len(val.x0), model.nb_classes, "val.y_true")
        n = len(batch.x0)
        too_big = [s for s in self.sizes if s > n]
        if too_big:
            raise ParameterError(owner, "sizes", list(self.sizes), f"sizes <= {n}, the number of training pairs",
                                 f"{too_big} exceed the batch: attack more training images or lower sizes.")
        ebs = int(self.eval_batch_size)
        y_val = val.y_true.detach().cpu()
        base_c, base_a = _accuracy(model, val.x0, y_val, ebs), _accuracy(model, val.x_adv, y_val, ebs)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        y = batch.y_true.detach().cpu()
        clean, adv = [], []
        losses = np.full((len(self.sizes), int(self.epochs)), np.nan)
        attack_params = self.attack_params
        if self.on_the_fly is not None and attack_params is None and batch.attack == self.on_the_fly:
            attack_params = {k: v for k, v in (batch.params or {}).items()}
        for i, s in enumerate(progress_bar(list(self.sizes), desc="adversarial training: sizes")):
            idx = order[:s]
            if self.on_the_fly is None:
                tuned = adversarial_finetune(
                    model, batch.x_adv[idx.to(batch.x_adv.device)], y[idx], epochs=int(self.epochs), lr=float(self.lr),
                    batch_size=int(self.batch_size), seed=int(self.seed),
                    x_clean=batch.x0[idx.to(batch.x0.device)] if self.mix_clean else None)
                losses[i] = tuned.train_losses
            else:
                tuned = adversarial_finetune(
                    model, None, y[idx], epochs=int(self.epochs), lr=float(self.lr), batch_size=int(self.batch_size),
                    seed=int(self.seed), x_clean=batch.x0[idx.to(batch.x0.device)], on_the_fly=self.on_the_fly,
                    attack_params=attack_params)
            clean.append(_accuracy(tuned, val.x0, y_val, ebs))
            adv.append(_accuracy(tuned, val.x_adv, y_val, ebs))
        return AdversarialTraining(
            sizes=tuple(int(s) for s in self.sizes), clean_acc=np.asarray(clean, np.float64),
            adv_acc=np.asarray(adv, np.float64), baseline_clean=base_c, baseline_adv=base_a, train_loss=losses,
            n_val=len(val.x0), validated_on=validated_on, train_attack=batch.attack or "", val_attack=val.attack or "",
            epochs=int(self.epochs), lr=float(self.lr), batch_size=int(self.batch_size), seed=int(self.seed),
            mix_clean=bool(self.mix_clean), on_the_fly=self.on_the_fly)


def _accuracy(model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy of ``model`` on ``x`` against ``y`` (NaN for no images)."""
    if len(x) == 0:
        return float("nan")
    x = x.detach().to(model.device, model.dtype)
    return float((model.predict(x, batch_size).cpu() == y.cpu()).float().mean())
