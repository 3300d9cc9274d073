"""The example third-party plugin in examples/custom_plugin, through the registry."""
import configparser
import importlib.metadata as md
from pathlib import Path

import numpy as np
import pytest
import torch

import advinterp
from advinterp.testing import check_component, toy_batch, toy_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_plugin"


def test_setup_cfg_declares_the_entry_point():
    cfg = configparser.ConfigParser()
    cfg.read(EXAMPLE / "setup.cfg")
    assert cfg["options.entry_points"]["advinterp"].strip() == "logit_margin = advinterp_logit_margin"


def _installed() -> bool:
    try:
        md.distribution("advinterp-logit-margin")
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="run `make test` (installs examples/custom_plugin)")
def test_installed_plugin_is_found_through_its_entry_point():
    status = {p.name: p for p in advinterp.list_plugins()}
    assert status["logit_margin"].loaded and "advinterp-logit-margin" in status["logit_margin"].source
    info = advinterp.get_registry().info("analyzer", "example.logit_margin")
    assert info.plugin == "logit_margin"


def test_registered_in_process_and_run_through_registry(monkeypatch, fresh_registry):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import advinterp_logit_margin as plugin

    if "example.logit_margin" not in {i.name for i in advinterp.list_components("analyzer")}:
        advinterp.register_plugin_object(plugin, "logit_margin")
    model = toy_model()
    batch = toy_batch(model)
    res = advinterp.get_analyzer("example.logit_margin").analyze(model, batch)
    with torch.no_grad():
        z0, za = model.logits(batch.x0), model.logits(batch.x_adv)
    y = batch.y_true
    other = lambda z: z.scatter(1, y[:, None], float("-inf")).amax(1)  # noqa: E731
    np.testing.assert_allclose(res.clean, (z0.gather(1, y[:, None])[:, 0] - other(z0)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(res.adversarial, (za.gather(1, y[:, None])[:, 0] - other(za)).numpy(), rtol=1e-6)
    assert res.rows()[0]["flipped"] == pytest.approx(float((res.adversarial < 0).mean()))
    check_component(plugin.LogitMargin)
