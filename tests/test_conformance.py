"""The conformance suite over every registered component (every kind with a base class:
attacks, explainers, analyzers, probes), every support rule, every model factory and every
dataset that needs no user path."""
import pytest

import advinterp
from advinterp.kinds import KINDS
from advinterp.testing import check_dataset, check_model_factory, check_paper, check_support, parametrize_with_checks

COMPONENTS = [info.obj for kind in KINDS if kind.base is not None for info in advinterp.list_components(kind.name)]


def test_every_kind_has_components():
    kinds = {info.kind for info in advinterp.list_components()}
    assert {k.name for k in KINDS} <= kinds, {k.name for k in KINDS} - kinds


@pytest.mark.parametrize("name", sorted(i.name for i in advinterp.list_components("support")))
def test_support_conforms(name):
    check_support(advinterp.get_support(name))


@pytest.mark.parametrize("name", sorted(i.name for i in advinterp.list_components("paper")))
def test_paper_comparison_conforms(name):
    check_paper(advinterp.get_registry().info("paper", name).obj)


@parametrize_with_checks(COMPONENTS)
def test_component_conforms(component, check):
    check(component)


# torchvision architectures are many; their factory is one function: check it on one
# architecture with random weights (no download), and the shipped models fully.
MODEL_CASES = {"synthetic-cnn": {}, "synthetic-cnn-robust": {}, "torchvision:resnet18": {"weights": "random"}}
# datasets that need a user path are tested on fixtures in their own test files
DATASET_CASES = {"synthetic": {"n": 8}, "synthetic-broden": {"n": 3, "size": 24}}


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_factory_conforms(name):
    check_model_factory(advinterp.get_registry().info("model", name).obj, **MODEL_CASES[name])


def test_every_model_factory_is_covered():
    names = {i.name for i in advinterp.list_components("model")}
    assert set(MODEL_CASES) <= names
    assert all(n in MODEL_CASES or n.startswith("torchvision:") for n in names)


@pytest.mark.parametrize("name", sorted(DATASET_CASES))
def test_dataset_conforms(name):
    check_dataset(advinterp.get_registry().info("dataset", name).obj, **DATASET_CASES[name])


def test_conformance_catches_a_component_that_mutates_the_model():
    from advinterp.analyzers.activation_distance import ActivationDistance
    from advinterp.testing import check_model_unchanged

    class Leaky(ActivationDistance):
        name = "leaky"

        def _analyze(self, model, batch, **context):
            model.module.train()  # forgets to restore: preserved() must undo it...
            for p in model.module.parameters():
                p.data.mul_(1.0001)  # ...but a silent weight edit must be caught
            return super()._analyze(model, batch, **context)

    with pytest.raises(AssertionError, match="weights"):
        check_model_unchanged(Leaky)
