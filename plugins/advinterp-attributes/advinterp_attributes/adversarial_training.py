"""Adversarial training with the alpha-mixed loss of eq. 2 (Gulshad et al. 2020, Sec. 3.1; D3).

The paper trains the robust model with::

    J~(x, y) = alpha * J(x, y) + (1 - alpha) * J(x_hat, y)          (eq. 2)

where ``J`` is the cross-entropy and ``x_hat`` a PGD adversarial example of ``x`` made on the
model being trained, at the same ``eps`` as the attack studied. :func:`alpha_adversarial_training`
does that to a **deep copy** of the user's model and returns a new
:class:`advinterp.api.ModelAdapter` over the copy; the model passed in is never changed
(weights, buffers, modes, ``requires_grad``, ``.grad``, hooks), also when training raises.

The PGD examples come from the core attack through the public API
(``advinterp.api.get_attack("pgd", norm="inf", eps=..., eps_step=..., max_iter=...)``),
regenerated at every mini-batch against the current copy (the copy is in eval mode while
the attack runs).

Example::

    import advinterp
    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp_attributes.adversarial_training import alpha_adversarial_training
    model = advinterp.get_model("synthetic-cnn")
    x, y = SyntheticWorld().generate(256, "train").tensors()
    robust = alpha_adversarial_training(model, x, y, eps=0.06, alpha=0.5, epochs=2)
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from advinterp.api import ModelAdapter, ParameterError, as_adapter, check_images, check_labels, get_attack

__all__ = ["alpha_adversarial_training", "mixed_loss"]

_OWNER = "alpha_adversarial_training"


def mixed_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 2: ``alpha * CE(logits_clean, y) + (1 - alpha) * CE(logits_adv, y)`` (means over the batch)."""
    ce = nn.functional.cross_entropy
    return alpha * ce(logits_clean, y) + (1.0 - alpha) * ce(logits_adv, y)


def _number(name: str, v: Any, low: float, high: float | None = None, low_open: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))
    if ok:
        v = float(v)
        ok = (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        hi = f"{high}]" if high is not None else "inf)"
        rng = f"{'(' if low_open else '['}{low}, {hi}"
        raise ParameterError(_OWNER, name, v, f"a finite number in {rng}")
    return float(v)


def _integer(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ParameterError(_OWNER, name, v, f"an integer >= {low}")
    return int(v)


def alpha_adversarial_training(model: Any, x: Any, y: Any, eps: float = 0.06, alpha: float = 0.5, epochs: int = 2,
                               lr: float = 5e-4, batch_size: int = 32, eps_step: float | None = None,
                               max_iter: int = 5, seed: int = 0, train_bn: bool = False,
                               name: str | None = None) -> ModelAdapter:
    """Fine-tune a deep copy of ``model`` with eq. 2's alpha-mixed clean + PGD loss.

    Args:
        model: a :class:`ModelAdapter` or anything :func:`advinterp.api.as_adapter` takes; never modified.
        x: ``(N, C, H, W)`` clean training images in [0, 1]; y: ``(N,)`` their true labels.
        eps: the PGD l_inf budget (default 0.06; the paper uses the attack's eps).
        alpha: weight of the clean loss in eq. 2, in [0, 1] (default 0.5; 1 = clean training only,
            no attack is run).
        epochs: passes over ``x`` (default 2). lr: Adam's learning rate (default 5e-4).
        batch_size: images per step (default 32).
        eps_step: PGD step (default ``eps / 4``). max_iter: PGD iterations (default 5).
        seed: seeds the shuffling, PGD's random start and the global RNG during training (the
            global RNG state is restored afterwards). Same seed, same model.
        train_bn: batch-norm layers in train mode while fine-tuning (default False: their
            running statistics stay as they are, which keeps a short fine-tune on small batches stable).
        name: display name of the new adapter (default ``"<model name>+at(eps)"``).

    Returns:
        A new :class:`ModelAdapter` over the fine-tuned copy, in eval mode, with the model's
        ``mean``, ``std``, ``input_shape``, classifier and CAM layer; its attribute
        ``train_losses`` lists the mean eq.-2 loss of each epoch.

    Raises:
        ParameterError: bad images, labels or settings (naming the value and the fix).
    """
    adapter = as_adapter(model)
    eps = _number("eps", eps, 0.0, 1.0, low_open=True)
    alpha = _number("alpha", alpha, 0.0, 1.0)
    epochs = _integer("epochs", epochs, 1)
    lr = _number("lr", lr, 0.0, None, low_open=True)
    batch_size = _integer("batch_size", batch_size, 1)
    eps_step = eps / 4 if eps_step is None else _number("eps_step", eps_step, 0.0, None, low_open=True)
    max_iter = _integer("max_iter", max_iter, 1)
    seed = _integer("seed", seed, 0)
    if not isinstance(train_bn, (bool, np.bool_)):
        raise ParameterError(_OWNER, "train_bn", train_bn, "True or False")
    xs = check_images(_OWNER, x, "x", adapter.input_shape).detach()
    if len(xs) == 0:
        raise ParameterError(_OWNER, "x", "0 images", "at least one training image")
    ys = check_labels(_OWNER, y, len(xs), adapter.nb_classes, "y").detach().cpu().long()

    net = copy.deepcopy(adapter.module)  # never the user's module
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    tuned = ModelAdapter(net, mean=adapter.mean, std=adapter.std, nb_classes=adapter.nb_classes,
                         input_shape=adapter.input_shape, cam_layer=adapter.cam_layer,
                         classifier=adapter.classifier_name, name=name or f"{adapter.name}+at({eps:g})")
    dev, dtype = tuned.device, tuned.dtype
    attack = None if alpha == 1.0 else get_attack("pgd", norm="inf", eps=eps, eps_step=eps_step,
                                                   max_iter=max_iter, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(seed)
            for _ in range(epochs):
                order = torch.randperm(len(xs), generator=gen)
                total = 0.0
                for i in range(0, len(order), batch_size):
                    idx = order[i:i + batch_size]
                    xb = xs[idx.to(xs.device)].to(dev, dtype)
                    yb = ys[idx].to(dev)
                    if attack is not None:
                        net.eval()  # the attack runs on the current copy (it restores what it changes)
                        xa = attack.generate(tuned, xb, yb).x_adv.detach().to(dev, dtype)
                    _train_mode(net, bool(train_bn))
                    opt.zero_grad(set_to_none=True)
                    lc = net(tuned.normalize(xb))  # not tuned.logits: that runs in eval mode
                    loss = mixed_loss(lc, net(tuned.normalize(xa)) if attack is not None else lc, yb, alpha)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / len(order))
    finally:
        net.eval()
        for p in net.parameters():
            p.grad = None
    tuned.train_losses = losses  # type: ignore[attr-defined]
    return tuned


def _train_mode(net: nn.Module, train_bn: bool) -> None:
    net.train()
    if not train_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
