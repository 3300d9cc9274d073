"""Gradients whatever the caller's grad mode: what attacks and explainers need.

Inside ``torch.no_grad()`` autograd is off; inside ``torch.inference_mode()`` tensors cannot
even enter autograd. An attack or a gradient explainer must work from either, so the
templates (and :func:`needs_grad` on an attack's ``_generate``) turn inference mode off,
gradients on, and clone inference-mode inputs (:func:`autograd_ready`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

__all__ = ["autograd_ready", "needs_grad"]


def autograd_ready(value: Any) -> Any:
    """``value`` itself, or a normal clone of it when it is an inference-mode tensor (call
    outside inference mode)."""
    if isinstance(value, torch.Tensor) and value.is_inference():
        return value.clone()
    return value


def needs_grad(generate: Callable) -> Callable:
    """Decorate ``_generate(self, model, x, y, target, **kw)`` so that it runs with autograd
    on, whatever the caller's mode (``torch.no_grad()``, ``torch.inference_mode()``)."""
    @functools.wraps(generate)
    def wrapper(self, model, *args: Any, **kw: Any):
        with torch.inference_mode(False), torch.enable_grad():
            args = tuple(autograd_ready(a) for a in args)
            kw = {k: autograd_ready(v) for k, v in kw.items()}
            return generate(self, model, *args, **kw)
    return wrapper
