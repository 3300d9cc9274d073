"""The pluggy core: built-ins, entry points, broken plugins, disabling, duplicates, unknown names."""
import sys
import textwrap

import pytest
import torch

import advinterp
import advinterp.testing
from advinterp import hookimpl
from advinterp.cli import main as cli_main
from advinterp.exceptions import DuplicateComponentError, ParameterError, UnknownComponentError


def _fake_distribution(tmp_path, dist, entry_points, modules=None):
    """Write an installed distribution (dist-info with entry_points.txt) onto sys.path."""
    info = tmp_path / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[advinterp]\n{eps}\n")
    for name, src in (modules or {}).items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(src))
    return tmp_path


GOOD_PLUGIN = '''
import advinterp
import advinterp.testing
from advinterp import Analyzer
from advinterp.analyzers.activation_distance import ActivationDistance

class Renamed(ActivationDistance):
    """A working third-party analyzer."""
    name = "fake.good"

@advinterp.hookimpl
def advinterp_register_analyzers(register):
    register(Renamed)
'''


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch, fresh_registry):
    path = _fake_distribution(tmp_path, "advinterp-fakes", {
        "broken": "advinterp_fake_missing_dep",
        "good": "advinterp_fake_good",
    }, {"advinterp_fake_missing_dep": "import a_package_that_is_not_installed_xyz\n",
        "advinterp_fake_good": GOOD_PLUGIN})
    monkeypatch.syspath_prepend(str(path))
    for m in ("advinterp_fake_missing_dep", "advinterp_fake_good"):
        sys.modules.pop(m, None)
    return fresh_registry.reload_plugins()


def test_builtins_registered_first():
    plugins = advinterp.list_plugins()
    assert plugins[0].name == "builtins" and plugins[0].loaded
    names = {(c.kind, c.name) for c in advinterp.list_components()}
    assert {("attack", "pgd"), ("analyzer", "activation_distance"), ("dataset", "synthetic"),
            ("model", "synthetic-cnn"), ("model", "synthetic-cnn-robust"), ("model", "torchvision:resnet50")} <= names


def test_broken_plugin_is_unavailable_and_others_work(fake_plugins, capsys):
    status = {p.name: p for p in fake_plugins.plugins}
    assert not status["broken"].loaded
    assert "a_package_that_is_not_installed_xyz" in status["broken"].error
    assert status["broken"].hint.startswith("pip install a_package_that_is_not_installed_xyz")
    assert "advinterp-fakes" in status["broken"].source
    assert status["good"].loaded and status["builtins"].loaded
    # the good plugin and the built-ins still work
    model = advinterp.testing.toy_model()
    batch = advinterp.testing.toy_batch(model)
    assert advinterp.get_analyzer("fake.good").analyze(model, batch).distance.shape == (4, 3)
    assert advinterp.get_attack("pgd").name == "pgd"
    # and `advinterp list` shows the reason and the fix
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "UNAVAILABLE" in out and "a_package_that_is_not_installed_xyz" in out
    assert "fake.good" in out


def test_unknown_name_mentions_unavailable_plugins(fake_plugins):
    with pytest.raises(UnknownComponentError, match="broken"):
        advinterp.get_analyzer("fake.missing")


def test_disable_plugins_env(tmp_path, monkeypatch, fresh_registry):
    path = _fake_distribution(tmp_path, "advinterp-fakes", {"good": "advinterp_fake_good"},
                              {"advinterp_fake_good": GOOD_PLUGIN})
    monkeypatch.syspath_prepend(str(path))
    # the installed plugins (plugins/*, the example plugin) are blocked too, so nothing is left
    installed = [ep.name for ep in __import__("importlib.metadata").metadata.entry_points(group="advinterp")]
    monkeypatch.setenv("ADVINTERP_DISABLE_PLUGINS", ", ".join(["good", "builtins", *installed]))
    reg = fresh_registry.reload_plugins()
    status = {p.name: p for p in reg.plugins}
    assert status["good"].disabled and status["builtins"].disabled
    assert reg.list() == []
    with pytest.raises(UnknownComponentError):
        advinterp.get_attack("pgd")


class _Dup1:
    @hookimpl
    def advinterp_register_attacks(self, register):
        from advinterp.attacks.pgd import PGD

        register(PGD)


def test_duplicate_names_raise_naming_both(fresh_registry):
    with pytest.raises(DuplicateComponentError) as e:
        advinterp.register_plugin_object(_Dup1(), "second-pgd")
    assert "builtins" in str(e.value) and "second-pgd" in str(e.value) and "'pgd'" in str(e.value)
    # the registry still works afterwards and the bad plugin is gone
    fresh_registry.reload_plugins()
    assert advinterp.get_attack("pgd")


def test_unknown_component_lists_close_matches():
    with pytest.raises(UnknownComponentError) as e:
        advinterp.get_attack("pdg")
    assert "Did you mean 'pgd'" in str(e.value)
    with pytest.raises(UnknownComponentError, match="synthetic-cnn"):
        advinterp.get_model("synthetic-cnm")
    with pytest.raises(ParameterError, match="kind"):
        advinterp.list_components("attacks")
    reg = advinterp.get_registry()
    assert reg.has("attack", "pgd") and not reg.has("attack", "pdg") and not reg.has("model", "pgd")
    with pytest.raises(ParameterError, match="kind"):
        reg.has("attacks", "pgd")


class _Raises:
    @hookimpl
    def advinterp_register_analyzers(self, register):
        from advinterp.analyzers.activation_distance import ActivationDistance

        class A(ActivationDistance):
            name = "half.registered"

        register(A)
        raise RuntimeError("boom while registering")


def test_failing_registration_hook_marks_plugin_unavailable(fresh_registry):
    reg = advinterp.register_plugin_object(_Raises(), "raises")
    status = {p.name: p for p in reg.plugins}
    assert not status["raises"].loaded and "boom while registering" in status["raises"].error
    assert "half.registered" not in {c.name for c in reg.list("analyzer")}
    assert advinterp.get_analyzer("activation_distance")


class _BadRegister:
    @hookimpl
    def advinterp_register_attacks(self, register):
        register(object)


def test_registering_a_non_attack_is_reported(fresh_registry):
    reg = advinterp.register_plugin_object(_BadRegister(), "bad")
    status = {p.name: p for p in reg.plugins}
    assert not status["bad"].loaded and "subclass of advinterp.Attack" in status["bad"].error


def test_typo_in_hook_name_is_rejected(fresh_registry):
    class Typo:
        @hookimpl
        def advinterp_register_atacks(self, register):  # noqa: typo on purpose
            pass

    with pytest.raises(Exception, match="advinterp_register_atacks"):
        advinterp.register_plugin_object(Typo(), "typo")


def test_grid_ablation_backend_hook_falls_back_to_reference(fresh_registry, monkeypatch):
    from advinterp.registry import get_ablation_backend

    monkeypatch.setenv("ADVINTERP_DISABLE_PLUGINS", "gridablate")  # the compiled backend, where installed
    fresh_registry.reload_plugins()
    assert get_ablation_backend("cpu").name == "reference"

    class Fast:
        name = "fast"

        def ablate(self, *a):
            raise NotImplementedError

    class FastPlugin:
        @hookimpl
        def advinterp_grid_ablation_backend(self, device):
            return Fast() if device.type == "cpu" else None

    advinterp.register_plugin_object(FastPlugin(), "fast")
    assert get_ablation_backend("cpu").name == "fast"
    assert get_ablation_backend("meta").name == "reference"


def test_model_factory_must_return_adapter(fresh_registry):
    class P:
        @hookimpl
        def advinterp_register_models(self, register):
            register(lambda: torch.nn.Linear(2, 2), "raw-module")

    advinterp.register_plugin_object(P(), "p")
    with pytest.raises(advinterp.AdvinterpError, match="not a ModelAdapter"):
        advinterp.get_model("raw-module")


def test_install_hint_prefers_the_exceptions_own_hint():
    from advinterp.plugins import install_hint

    class BuildError(ImportError):
        hint = "pip install --no-build-isolation -e plugins/advinterp-x"

    assert install_hint(BuildError("no compiled module"), "advinterp-x") == BuildError.hint
    missing = ModuleNotFoundError("No module named 'captum'", name="captum")
    assert install_hint(missing, "advinterp-captum") == "pip install captum (needed by advinterp-captum)"
    assert "--force-reinstall advinterp-y" in install_hint(RuntimeError("boom"), "advinterp-y")


#: The plugins this repository ships (plugins/* and the example plugin): none may be missing.
SHIPPED_PLUGINS = ("art", "captum", "dissect", "gridablate", "logit_margin", "a2e", "attributes", "ray")


def test_every_shipped_plugin_is_loaded():
    """A shipped plugin whose module (or a submodule) fails to import is an error here, not a
    silently skipped test file."""
    status = {p.name: p for p in advinterp.list_plugins()}
    for name in ("builtins", *SHIPPED_PLUGINS):
        assert name in status, f"plugin {name!r} not found: {sorted(status)}"
        p = status[name]
        assert p.loaded and not p.disabled and p.error is None, f"plugin {name!r}: {p}"
    by_plugin = {}
    for c in advinterp.get_registry().list():
        by_plugin.setdefault(c.plugin, set()).add((c.kind, c.name))
    assert {("explainer", "cam"), ("explainer", "gradcam")} <= by_plugin["captum"]
    assert ("probe", "dissection") in by_plugin["dissect"]
    assert ("attack", "art.pgd") in by_plugin["art"]
    assert ("analyzer", "example.logit_margin") in by_plugin["logit_margin"]
    assert ("attack", "a2e") in by_plugin["a2e"]


def test_disabling_one_plugin_leaves_the_others_loaded(monkeypatch, fresh_registry):
    before = {(c.kind, c.name, c.plugin) for c in fresh_registry.get_registry().list()}
    monkeypatch.setenv("ADVINTERP_DISABLE_PLUGINS", " captum ")
    reg = advinterp.reload_plugins()
    status = {p.name: p for p in reg.plugins}
    assert status["captum"].disabled and not status["captum"].loaded
    for name in ("builtins", *(p for p in SHIPPED_PLUGINS if p != "captum")):
        assert status[name].loaded and not status[name].disabled, status[name]
    after = {(c.kind, c.name, c.plugin) for c in reg.list()}
    # exactly the captum components are gone; every other plugin's components are registered
    assert after == {c for c in before if c[2] != "captum"}
    assert not reg.has("explainer", "cam") and reg.has("attack", "pgd") and reg.has("attack", "art.pgd")
    assert reg.has("probe", "dissection") and reg.has("analyzer", "example.logit_margin")
    with pytest.raises(UnknownComponentError):
        advinterp.get_explainer("cam")
    assert advinterp.get_attack("pgd") is not None
    # two names, comma separated: both blocked, the rest loaded
    monkeypatch.setenv("ADVINTERP_DISABLE_PLUGINS", "captum,logit_margin")
    status = {p.name: p for p in advinterp.reload_plugins().plugins}
    assert status["captum"].disabled and status["logit_margin"].disabled
    assert status["dissect"].loaded and status["art"].loaded and status["builtins"].loaded
