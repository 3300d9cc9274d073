"""An in-process plugin for the study tests: a toy model that counts (and can be told to
kill its process after) the images it forwards, and a toy dataset. Also imported by the
SIGKILL test's child process."""
from __future__ import annotations

import os
import signal

from torch import nn

import advinterp
from advinterp.components import as_dataset
from advinterp.testing import toy_data, toy_model

#: Images forwarded by every counting model of this process.
FORWARDS = {"images": 0}


class Counting(nn.Module):
    """Wraps a module; counts images; ``ADVINTERP_TEST_KILL_AT=K`` SIGKILLs the process once
    K images have been forwarded (a run killed in the middle of a step)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        FORWARDS["images"] += len(x)
        kill = os.environ.get("ADVINTERP_TEST_KILL_AT")
        if kill and FORWARDS["images"] >= int(kill):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x)


def counting_toy(seed: int = 0):
    """The conformance toy CNN (16x16, 4 classes) counting the images it forwards."""
    base = toy_model(seed=seed)
    return advinterp.ModelAdapter(Counting(base.module), mean=base.mean, std=base.std, nb_classes=4,
                                  input_shape=(3, 16, 16), cam_layer="inner.features.conv2",
                                  classifier="inner.head", name="counting-toy")


def toy_dataset(n: int = 40, seed: int = 0):
    """``n`` random 16x16 images with labels in [0, 4)."""
    return as_dataset("toy-data", toy_data(n=n, seed=seed))


class Plugin:
    @advinterp.hookimpl
    def advinterp_register_models(self, register):
        register(counting_toy, "counting-toy")

    @advinterp.hookimpl
    def advinterp_register_datasets(self, register):
        register(toy_dataset, "toy-data")


def register() -> None:
    """Register the fixtures' plugin (once per registry)."""
    reg = advinterp.get_registry()
    if not reg.has("model", "counting-toy"):
        advinterp.register_plugin_object(Plugin(), "study-fixtures")


class Unrestrictable(advinterp.Attack):
    """An attack without ``supports_mask`` (adds 0.01 everywhere): the error cases of masks
    and refinement, now that every native attack supports a mask."""

    name = "unrestrictable"
    params = {}

    def _generate(self, model, x, y, target):
        return (x + 0.01).clamp(0, 1)
