"""The core's built-in plugin: native attacks and analyzers, the embedded world's
dataset and models, torchvision models, and the reference grid-ablation backend.

Registered first by :mod:`advinterp.plugins` under the plugin name ``"builtins"``.
"""
from __future__ import annotations

from functools import partial

from .hookspecs import hookimpl

# torchvision architectures exposed as ``torchvision:<arch>`` (weights: the user's file or
# torchvision's cache; nothing is downloaded).
_TV_INPUT = {"inception_v3": (3, 299, 299)}


@hookimpl
def advinterp_register_attacks(register):
    from .attacks.cw import CarliniL2
    from .attacks.ead import ElasticNet
    from .attacks.fgsm import FGSM
    from .attacks.ifgsm import IFGSM
    from .attacks.pgd import PGD
    from .attacks.str_attack import StrAttack

    register(PGD)
    register(IFGSM)
    register(FGSM)
    register(StrAttack)
    register(CarliniL2)
    register(ElasticNet)


@hookimpl
def advinterp_register_analyzers(register):
    from .analyzers.activation_distance import ActivationDistance
    from .analyzers.activation_maps import ActivationMaps
    from .analyzers.attack_metrics import AttackMetricsAnalyzer
    from .analyzers.cam_replacement import CamReplacementAnalyzer
    from .analyzers.channel_masking import ChannelMaskingAnalyzer
    from .analyzers.feature_rmse import FeatureRMSEAnalyzer
    from .analyzers.filter_scaling import FilterScalingAnalyzer
    from .analyzers.interpretability_score import InterpretabilityScoreAnalyzer
    from .analyzers.pixel_histogram import PixelHistogramAnalyzer
    from .analyzers.pse import PSEAnalyzer
    from .analyzers.refine import RefineAnalyzer

    register(ActivationDistance)
    register(ActivationMaps)
    register(AttackMetricsAnalyzer)
    register(CamReplacementAnalyzer)
    register(ChannelMaskingAnalyzer)
    register(FeatureRMSEAnalyzer)
    register(FilterScalingAnalyzer)
    register(InterpretabilityScoreAnalyzer)
    register(PixelHistogramAnalyzer)
    register(PSEAnalyzer)
    register(RefineAnalyzer)


@hookimpl
def advinterp_register_supports(register):
    from .analyzers.refine import s1, s2

    register(s1, "S1")
    register(s2, "S2")


@hookimpl
def advinterp_register_probes(register):
    from .probes.accuracy import AccuracyProbe

    register(AccuracyProbe)


@hookimpl
def advinterp_register_datasets(register):
    register(synthetic_dataset, "synthetic")
    register(synthetic_broden_dataset, "synthetic-broden")
    register(imagenet_folder_dataset, "imagenet-folder")
    register(pairs_folder_dataset, "pairs-folder")
    from .datasets.awa2 import AwA2Dataset
    from .datasets.lad import LADDataset

    register(AwA2Dataset, "awa2")
    register(LADDataset, "lad")


@hookimpl
def advinterp_register_models(register):
    register(synthetic_cnn_standard, "synthetic-cnn")
    register(synthetic_cnn_robust, "synthetic-cnn-robust")
    from .models.torchvision_models import TORCHVISION_ARCHS

    for arch in TORCHVISION_ARCHS:
        f = partial(torchvision_model, arch)
        f.__doc__ = (f"torchvision {arch} (ImageNet, 1000 classes); weights=PATH, cached torchvision weights, or "
                     "'random' (seeded by seed=0).")
        register(f, f"torchvision:{arch}")


@hookimpl
def advinterp_register_papers(register):
    from .sections.ding2023 import ding2023_section
    from .sections.xu2019 import xu2019_section

    register(ding2023_section, "ding2023")
    register(xu2019_section, "xu2019")


@hookimpl(trylast=True)
def advinterp_grid_ablation_backend(device):
    from .ablation import ReferenceGridAblation

    return ReferenceGridAblation()


@hookimpl(trylast=True)
def advinterp_report_section(group, run):
    from .sections import builtin_section

    return builtin_section(group, run)


@hookimpl(trylast=True)
def advinterp_study_executor(engine):
    from .executor import LocalExecutor

    return LocalExecutor() if engine == "local" else None


# ---------------------------------------------------------------------------- factories
def synthetic_dataset(n: int = 1000, split: str = "test", size: int = 64, seed: int = 0):
    """The embedded synthetic world (12 classes, 64x64 scenes; split train/val/test)."""
    from .datasets.synthetic import SyntheticDataset

    return SyntheticDataset(n=n, split=split, size=size, seed=seed)


def synthetic_broden_dataset(n: int = 200, split: str = "val", size: int = 64, seed: int = 0):
    """The embedded world exported in Broden format (NetDissect's layout) to a temporary folder."""
    from .datasets.broden import synthetic_broden

    return synthetic_broden(n=n, split=split, size=size, seed=seed)


def pairs_folder_dataset(root: str | None = None, size: int | str | None = 224, classes=None,
                         clean: str | None = None, adversarial: str | None = None, labels: str | None = None,
                         match: str = "stem", unmatched: str = "error"):
    """Clean/adversarial pairs: ``root/clean/<class>/<img>`` and ``root/adversarial/<class>/<img>``,
    or ``clean=`` / ``adversarial=`` folders (class trees or flat, e.g. DAmageNet beside ILSVRC val)
    with ``labels=`` a ``name label`` file; files pair by ``match`` ("stem": same relative path, any
    extension; "path"; "name"); ``unmatched`` "error" (default) or "skip"; ``size`` 224 or "original"."""
    from .datasets.pairs import PairsFolder

    return PairsFolder(root, size=size, classes=classes, clean=clean, adversarial=adversarial, labels=labels,
                       match=match, unmatched=unmatched)


def imagenet_folder_dataset(root: str, size: int = 224, classes=None):
    """An ImageNet-style folder ``root/<class>/<image>`` (resize + centre crop to ``size``;
    ``classes``: folder names, or ``{folder: label}``, default every folder in sorted order)."""
    from .datasets.imagenet import ImageFolderDataset

    return ImageFolderDataset(root, size=size, classes=classes)


def synthetic_cnn(robust: bool = False, device: str = "cpu", path: str | None = None):
    """The shipped CAM-compatible CNN trained on the synthetic world (robust: PGD-trained)."""
    from .model import ModelAdapter
    from .models.synthetic_cnn import MEAN, STD, load_synthetic_cnn

    module = load_synthetic_cnn(robust=robust, path=path).to(device)
    return ModelAdapter(module, mean=MEAN, std=STD, nb_classes=module.fc.out_features, input_shape=(3, 64, 64),
                        cam_layer="layer4", classifier="fc",
                        name="synthetic-cnn-robust" if robust else "synthetic-cnn")




def synthetic_cnn_standard(device: str = "cpu", path: str | None = None):
    """Shipped CAM-compatible CNN (GAP + linear) trained on the synthetic world (64x64, 12 classes)."""
    return synthetic_cnn(robust=False, device=device, path=path)


def synthetic_cnn_robust(device: str = "cpu", path: str | None = None):
    """The same CNN adversarially trained with PGD (linf 8/255) on the synthetic world."""
    return synthetic_cnn(robust=True, device=device, path=path)


def torchvision_model(arch: str, weights: str | None = None, device: str = "cpu", seed: int = 0):
    """A torchvision classifier with the user's or cached weights (never downloads).

    ``weights``: a ``state_dict`` path, ``None`` (torchvision's cache) or ``"random"`` (the
    random initialisation, drawn from ``seed``: default 0; the same seed gives identical
    weights). ``seed`` is ignored when weights are loaded.
    """
    from .model import ModelAdapter
    from .models.torchvision_models import IMAGENET_MEAN, IMAGENET_STD, cam_layer_of, load_torchvision_model

    module = load_torchvision_model(arch, weights=weights, seed=seed).to(device)
    cam, head = cam_layer_of(arch)
    return ModelAdapter(module, mean=IMAGENET_MEAN, std=IMAGENET_STD, nb_classes=1000,
                        input_shape=_TV_INPUT.get(arch, (3, 224, 224)), cam_layer=cam, classifier=head,
                        name=f"torchvision:{arch}")


@hookimpl
def advinterp_register_explainers(register):
    from .explainers.occlusion import Occlusion

    register(Occlusion)
