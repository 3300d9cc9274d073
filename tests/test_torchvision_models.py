"""Offline loading of torchvision models, ImageNet class names and the image-folder reader."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advinterp.datasets.imagenet import ImageFolderDataset, imagenet_classes
from advinterp.exceptions import AdvinterpError, ParameterError
from advinterp.models.torchvision_models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_ARCHS,
    WeightsNotFoundError,
    cam_layer_of,
    load_torchvision_model,
    torchvision_checkpoint_names,
)

tvm = pytest.importorskip("torchvision.models")
ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; returns its hub checkpoints folder (not created)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # in case set_dir was called
    return home / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return tvm.resnet18(weights=None).state_dict()


def _same_params(model: torch.nn.Module, state: dict) -> bool:
    got = model.state_dict()
    return got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


# ---------------------------------------------------------------- architectures
def test_archs_are_torchvision_builders():
    for arch in ("resnet18", "resnet50", "resnet152", "vgg16", "densenet121", "mobilenet_v2",
                 "inception_v3", "efficientnet_b0"):
        assert arch in TORCHVISION_ARCHS
    assert len(set(TORCHVISION_ARCHS)) == len(TORCHVISION_ARCHS)
    for arch in TORCHVISION_ARCHS:
        assert callable(getattr(tvm, arch)), arch


def test_imagenet_stats():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_cam_layer_of():
    assert cam_layer_of("resnet50") == ("layer4", "fc")
    assert cam_layer_of("resnet18") == ("layer4", "fc")
    assert cam_layer_of("densenet121") == ("features", "classifier")
    assert cam_layer_of("mobilenet_v2") == ("features", "classifier.1")
    assert cam_layer_of("efficientnet_b0") == ("features", "classifier.1")
    assert cam_layer_of("vgg16") == ("features", None)
    assert cam_layer_of("inception_v3") == ("Mixed_7c", "fc")
    with pytest.raises(ParameterError):
        cam_layer_of("resnet5O")
    # the names exist, and the linear layer is a Linear (one arch per family; meta tensors)
    for arch in ("resnet18", "wide_resnet50_2", "resnext50_32x4d", "alexnet", "vgg11", "densenet121",
                 "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                 "shufflenet_v2_x1_0", "squeezenet1_1"):
        feature, linear = cam_layer_of(arch)
        with torch.device("meta"):
            kw = {"init_weights": False} if arch in ("inception_v3", "googlenet") else {}
            model = getattr(tvm, arch)(weights=None, **kw)
        model.get_submodule(feature)
        if linear is not None:
            assert isinstance(model.get_submodule(linear), torch.nn.Linear), arch


def test_checkpoint_names_are_known_offline():
    assert torchvision_checkpoint_names("resnet50") == ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")
    assert all(n.endswith(".pth") for n in torchvision_checkpoint_names("efficientnet_b0"))


# ---------------------------------------------------------------- loading
@pytest.mark.parametrize("wrap", ["raw", "module", "state_dict", "model"])
def test_load_from_file(tmp_path, resnet18_state, wrap):
    if wrap == "raw":
        obj = resnet18_state
    elif wrap == "module":
        obj = {f"module.{k}": v for k, v in resnet18_state.items()}
    else:
        obj = {wrap: {f"module.{k}": v for k, v in resnet18_state.items()}, "epoch": 3}
    path = tmp_path / "r18.pth"
    torch.save(obj, path)
    model = load_torchvision_model("resnet18", weights=path)
    assert not model.training
    assert _same_params(model, resnet18_state)
    model2 = load_torchvision_model("ResNet18", weights=str(path))  # str path, any case
    assert _same_params(model2, resnet18_state)


def test_load_from_cache(torch_home, resnet18_state):
    torch_home.mkdir(parents=True)
    torch.save(resnet18_state, torch_home / "resnet18-0123abcd.pth")
    torch.save({k: torch.zeros_like(v) for k, v in resnet18_state.items()}, torch_home / "resnet18-ffff0000.pth")
    (torch_home / "resnet34-aaaa0000.pth").write_bytes(b"not this one")
    model = load_torchvision_model("resnet18")
    assert _same_params(model, resnet18_state)  # the first one, sorted
    assert not model.training


def test_missing_cached_weights_message(torch_home):
    with pytest.raises(WeightsNotFoundError) as info:
        load_torchvision_model("resnet18")
    msg = str(info.value)
    assert isinstance(info.value, AdvinterpError)
    assert "checkpoints" in msg and "resnet18" in msg
    assert str(torch_home) in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "ResNet18_Weights.IMAGENET1K_V1" in msg
    assert "weights=" in msg


def test_missing_file_message(tmp_path):
    with pytest.raises(AdvinterpError, match="does not exist") as info:
        load_torchvision_model("resnet18", weights=tmp_path / "nope.pth")
    assert "nope.pth" in str(info.value) and "checkpoints" in str(info.value)


def test_random_weights(torch_home):
    model = load_torchvision_model("resnet18", weights="random")
    assert isinstance(model, tvm.ResNet) and not model.training
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1000)


def test_unknown_arch_lists_close_names():
    with pytest.raises(ParameterError) as info:
        load_torchvision_model("resnet19", weights="random")
    msg = str(info.value)
    assert "Did you mean" in msg and "'resnet18'" in msg
    assert "densenet121" in msg  # lists the supported ones
    with pytest.raises(ParameterError):
        load_torchvision_model(18, weights="random")


def test_bad_weight_files(tmp_path, resnet18_state):
    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(ParameterError, match="state_dict"):
        load_torchvision_model("resnet18", weights=not_a_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00 definitely not a checkpoint")
    with pytest.raises(ParameterError, match="garbage.pth"):
        load_torchvision_model("resnet18", weights=garbage)
    wrong_arch = tmp_path / "r18.pth"
    torch.save(resnet18_state, wrong_arch)
    with pytest.raises(ParameterError, match="resnet34") as info:
        load_torchvision_model("resnet34", weights=wrong_arch)
    assert "Missing key" in str(info.value)
    with pytest.raises(ParameterError):
        load_torchvision_model("resnet18", weights=123)


def test_num_classes_from_checkpoint(tmp_path):
    torch.manual_seed(1)
    state = tvm.resnet18(weights=None, num_classes=7).state_dict()
    torch.save(state, tmp_path / "ft.pth")
    model = load_torchvision_model("resnet18", weights=tmp_path / "ft.pth")
    assert model.fc.out_features == 7 and _same_params(model, state)


def test_densenet_legacy_keys(tmp_path):
    import re

    torch.manual_seed(2)
    src = tvm.densenet121(weights=None, num_classes=5).eval()
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
              for k, v in src.state_dict().items()}
    assert any(".norm.1." in k for k in legacy)
    torch.save(legacy, tmp_path / "densenet121-00000000.pth")
    model = load_torchvision_model("densenet121", weights=tmp_path / "densenet121-00000000.pth")
    assert _same_params(model, src.state_dict())


# ---------------------------------------------------------------- ImageNet names and folders
def test_imagenet_classes():
    names = imagenet_classes()
    assert isinstance(names, tuple) and len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish"
    assert len(set(names)) == 1000 and all(n and n == n.strip() for n in names)
    assert imagenet_classes() is names


def test_imagenet_classes_match_torchvision():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert list(imagenet_classes()) == list(_IMAGENET_CATEGORIES)


def test_imagenet_module_needs_no_torchvision():
    code = ("import sys; import advinterp.datasets.imagenet as m; assert len(m.imagenet_classes()) == 1000; "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={"PYTHONPATH": str(ROOT)})


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    sizes = {"n01440764": [(20, 30), (24, 24)], "n01443537": [(30, 18), (16, 40)]}
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        for k, (h, w) in enumerate(shapes):
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"img{k}.{'png' if k == 0 else 'PNG'}")
        (root / cls / "notes.txt").write_text("not an image")
    return root


def test_image_folder_dataset(image_folder):
    ds = ImageFolderDataset(image_folder, size=16)
    assert ds.classes == ["n01440764", "n01443537"]
    assert len(ds) == 4 and ds.targets == [0, 0, 1, 1]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert y == ds.targets[i]


def test_image_folder_matches_torchvision_transform(image_folder):
    from PIL import Image
    from torchvision.transforms import v2 as T

    ds = ImageFolderDataset(image_folder, size=16)
    ref = T.Compose([T.Resize(int(16 * 256 / 224)), T.CenterCrop(16)])
    for path, _ in ds.samples:
        expected = torch.from_numpy(np.array(ref(Image.open(path).convert("RGB")))).permute(2, 0, 1) / 255.0
        assert torch.allclose(ds.load_image(path), expected, atol=1.5 / 255)


def test_image_folder_classes_argument(image_folder):
    ds = ImageFolderDataset(image_folder, size=8, classes=["n01443537"])
    assert ds.classes == ["n01443537"] and ds.targets == [0, 0]
    ds = ImageFolderDataset(image_folder, size=8, classes={"n01440764": 0, "n01443537": 1})
    assert ds.targets == [0, 0, 1, 1]
    with pytest.raises(ParameterError, match="n99999999"):
        ImageFolderDataset(image_folder, classes=["n99999999"])


def test_image_folder_errors(tmp_path):
    with pytest.raises(ParameterError, match="missing_dir"):
        ImageFolderDataset(tmp_path / "missing_dir")
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(ParameterError, match="empty_root"):
        ImageFolderDataset(empty)
    (empty / "cls").mkdir()
    with pytest.raises(ParameterError, match="no images"):
        ImageFolderDataset(empty)
    with pytest.raises(ParameterError):
        ImageFolderDataset(empty, size=0)
