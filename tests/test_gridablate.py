"""advinterp-gridablate: the compiled ablate / scatter_mean ops against the core's pure-PyTorch
references (bit for bit), opcheck and gradcheck, input errors, the backend hook, and the
fallback (with its reason) when the compiled modules are missing.

``grid_scores_to_map`` (the core's reference of scatter_mean) is tested here too, without the
plugin. The CUDA tests run where a GPU is present and are skipped otherwise.
"""
import os
import shutil
import sys

import pytest
import torch

from advinterp.ablation import ReferenceGridAblation, grid_boxes, grid_scores_to_map
from advinterp.registry import get_ablation_backend
from advinterp.exceptions import ParameterError

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
_INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of ``t`` (so NaN payloads, -0.0 and infinities compare exactly)."""
    return t.contiguous().view(_INT_VIEW[t.element_size()])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device, (a.shape, b.shape, a.dtype, b.dtype)
    diff = bits(a) != bits(b)
    assert not diff.any(), f"{int(diff.sum())} of {a.numel()} elements differ (first at {diff.nonzero()[0].tolist()})"


def images(n, c, h, w, dtype=torch.float32, device="cpu", seed=0, special=True):
    """``(x_adv, x0)``; with ``special``, x_adv starts with NaN, inf and -0.0 (copied exactly)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    xa = (x0 + 0.1 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    if special:
        xa.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0], dtype=torch.float64)
    return xa.to(device, dtype), x0.to(device, dtype)


# 11 x 13 image: overlapping sliding windows flush with the border, plus hand-made windows on
# each border, the whole image, single pixels and an empty one.
H, W = 11, 13
EXTRA = torch.tensor([[0, 0, 1, W], [H - 1, 0, H, W], [0, W - 1, H, W], [0, 0, H, W], [5, 6, 6, 7],
                      [H - 1, W - 1, H, W], [3, 4, 3, 9]])
BOXES = torch.cat([grid_boxes(H, W, (4, 5), (3, 2)), EXTRA])  # 4x5 windows + 7 extra = 27


# ----------------------------------------------------------------- the core's reference scatter
def test_grid_scores_to_map_by_hand():
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])
    out = grid_scores_to_map(torch.tensor([[1.0, 3.0], [2.0, -2.0]]), boxes, 4, 4)
    assert torch.equal(out[0], torch.tensor([[1.0, 1, 0, 0], [1, 2, 3, 0], [0, 3, 3, 0], [0, 0, 0, 0]]))
    assert torch.equal(out[1], torch.tensor([[2.0, 2, 0, 0], [2, 0, -2, 0], [0, -2, -2, 0], [0, 0, 0, 0]]))
    one = grid_scores_to_map(torch.tensor([1.0, 3.0], dtype=torch.float64), boxes, 4, 4)
    assert one.shape == (4, 4) and one.dtype == torch.float64 and one[1, 1] == 2


def test_grid_scores_to_map_accumulates_half_in_float32():
    # 2048 + 1 + 1 in float16 steps would stay 2048 (spacing 2); in float32 it is 2050 -> mean 683.33
    boxes = torch.tensor([[0, 0, 1, 1]] * 3)
    out = grid_scores_to_map(torch.tensor([2048.0, 1.0, 1.0], dtype=torch.float16), boxes, 1, 1)
    assert out.dtype == torch.float16 and out.item() == torch.tensor(2050.0 / 3).half().item()


@pytest.mark.parametrize("args,match", [
    ((torch.ones(2, 3), torch.tensor([[0, 0, 2, 2]] * 2), 4, 4), "one score per box"),
    ((torch.ones(1, 1), torch.tensor([[0, 0, 5, 2]]), 4, 4), r"boxes\[0\]"),
    ((torch.ones(1, 1), torch.tensor([[0, 3, 2, 2]]), 4, 4), r"boxes\[0\]"),
    ((torch.ones(1, 1), torch.tensor([[0, 0, 2.0, 2]]), 4, 4), "integer"),
    ((torch.ones(1, 1), torch.tensor([0, 0, 2, 2]), 4, 4), r"\(m, 4\)"),
    ((torch.ones(1, 1, dtype=torch.long), torch.tensor([[0, 0, 2, 2]]), 4, 4), "floating-point"),
    ((torch.ones(1, 1), torch.tensor([[0, 0, 2, 2]]), 0, 4), "positive"),
])
def test_grid_scores_to_map_errors(args, match):
    with pytest.raises(ParameterError, match=match):
        grid_scores_to_map(*args)


# ------------------------------------------------------------------------ the plugin itself
import advinterp_gridablate as gridablate  # noqa: E402  (shipped: a failed import is an error, not a skip)
from advinterp_gridablate import _ext, ops  # noqa: E402

needs_ext = pytest.mark.skipif(not gridablate.available(), reason=f"advinterp-gridablate: {gridablate.status()}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
op = torch.ops.advinterp_gridablate if gridablate.available() else None


def test_compiled_module_is_built_where_a_compiler_exists():
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler: the plugin installs with the pure-PyTorch fallback")
    assert gridablate.available(), f"a C++ compiler is present but {gridablate.status()}"
    assert gridablate.status().build_info.get("torch") == torch.__version__


@pytest.mark.skipif(shutil.which("nvcc") is None or torch.version.cuda is None,
                    reason="needs nvcc and a CUDA build of torch")
def test_cuda_kernels_are_compiled_and_registered_where_nvcc_exists():
    # no GPU needed: the CUDA kernels compile with nvcc and register for the CUDA dispatch key
    st = gridablate.status()
    assert st.cuda, f"nvcc is present but the CUDA kernels are not loaded: {st.cuda_reason}"
    assert st.build_info["modules"]["_C_cuda"]["built"]
    for name in ("ablate", "scatter_mean"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"advinterp_gridablate::{name}", "CUDA")
    assert "cuda" in st.device_types()


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ablate_equals_reference_bit_for_bit(device, dtype):
    ref = ReferenceGridAblation()
    m = len(BOXES)
    for (n, c), (start, count) in zip([(3, 2), (1, 1), (2, 4)], [(0, m), (5, 17), (m - 3, 3)]):
        xa, x0 = images(n, c, H, W, dtype, device, seed=n)
        out = op.ablate(xa, x0, BOXES, start, count)
        assert out.shape == (n, count, c, H, W) and out.is_contiguous()
        assert_bitwise_equal(out, ref.ablate(xa, x0, BOXES, start, count))
    # boxes on the images' device too, and an empty range
    assert_bitwise_equal(op.ablate(xa, x0, BOXES.to(device), 4, 6), ref.ablate(xa, x0, BOXES, 4, 6))
    assert op.ablate(xa, x0, BOXES, m, 0).shape == (2, 0, 4, H, W)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_ablate_non_contiguous_inputs(device):
    big_a, big_0 = images(3, 5, 2 * H + 1, W + 4, torch.float32, device, seed=7)
    xa = big_a[:, 1:4, ::2, 2:W + 2]            # strided slices
    x0 = big_0.transpose(2, 3).contiguous().transpose(2, 3)[:, 1:4, ::2, 2:W + 2]
    cl = images(2, 3, H, W, torch.float64, device, seed=8)
    boxes = torch.cat([BOXES, torch.zeros(len(BOXES), 1, dtype=torch.long)], 1)[:, :4]  # strided boxes
    assert not (xa.is_contiguous() or x0.is_contiguous() or boxes.is_contiguous())
    ref = ReferenceGridAblation()
    assert_bitwise_equal(op.ablate(xa, x0, boxes, 2, 20), ref.ablate(xa.contiguous(), x0.contiguous(), BOXES, 2, 20))
    xa_cl, x0_cl = (t.to(memory_format=torch.channels_last) for t in cl)
    assert_bitwise_equal(op.ablate(xa_cl, x0_cl, BOXES, 0, 9), ref.ablate(*cl, BOXES, 0, 9))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_mean_equals_reference_bit_for_bit(device, dtype):
    g = torch.Generator().manual_seed(1)
    uncovered = grid_boxes(H, W, (4, 5), 3, cover=False)  # the last row and 2 columns are in no box
    for boxes in (BOXES, uncovered):
        scores = torch.randn(4, len(boxes), generator=g, dtype=torch.float64).to(device, dtype)
        out = op.scatter_mean(scores, boxes, H, W)
        assert out.shape == (4, H, W) and out.dtype == dtype
        assert_bitwise_equal(out, grid_scores_to_map(scores, boxes, H, W))
    assert bool((out[:, H - 1:, :] == 0).all()) and bool((out[:, :, W - 2:] == 0).all())
    assert bool((out[:, :H - 1, :W - 2] != 0).all())
    # non-contiguous scores, boxes on the device, 1-D scores through the wrapper
    scores_t = torch.randn(len(BOXES), 3, generator=g, dtype=torch.float64).to(device, dtype).t()
    assert not scores_t.is_contiguous()
    assert_bitwise_equal(op.scatter_mean(scores_t, BOXES.to(device), H, W), grid_scores_to_map(scores_t, BOXES, H, W))
    one = scores_t[0]
    assert_bitwise_equal(gridablate.scatter_mean(one, BOXES, H, W), grid_scores_to_map(one, BOXES, H, W))


@needs_ext
def test_scatter_mean_by_hand():
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])
    out = gridablate.scatter_mean(torch.tensor([[1.0, 3.0]]), boxes, 4, 4)
    assert torch.equal(out[0], torch.tensor([[1.0, 1, 0, 0], [1, 2, 3, 0], [0, 3, 3, 0], [0, 0, 0, 0]]))
    # half scores accumulate in float32 (2048 + 1 + 1 would stay 2048 in float16 steps)
    half = gridablate.scatter_mean(torch.tensor([2048.0, 1.0, 1.0], dtype=torch.float16),
                                   torch.tensor([[0, 0, 1, 1]] * 3), 1, 1)
    assert half.item() == torch.tensor(2050.0 / 3).half().item()


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    boxes = grid_boxes(7, 9, (3, 4), (2, 3))
    for requires_grad in (False, True):
        xa, x0 = (t.requires_grad_(requires_grad) for t in images(2, 3, 7, 9, torch.float64, device, special=False))
        torch.library.opcheck(op.ablate.default, (xa, x0, boxes.to(device), 1, 4))
        scores = torch.rand(2, len(boxes), dtype=torch.float64, device=device, requires_grad=requires_grad)
        torch.library.opcheck(op.scatter_mean.default, (scores, boxes.to(device), 7, 9))


@needs_ext
def test_gradients():
    boxes = grid_boxes(5, 6, (2, 3), (2, 2))
    xa, x0 = (torch.rand(2, 2, 5, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, c: gridablate.ablate(a, c, boxes, 1, 5), (xa, x0))
    scores = torch.rand(2, len(boxes), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: gridablate.scatter_mean(s, boxes, 5, 6), (scores,))
    # and the same gradients as the reference's
    g = torch.randn(2, 5, 2, 5, 6, dtype=torch.float64)
    ours = torch.autograd.grad(gridablate.ablate(xa, x0, boxes, 1, 5), (xa, x0), g)
    theirs = torch.autograd.grad(ReferenceGridAblation().ablate(xa, x0, boxes, 1, 5), (xa, x0), g)
    assert all(torch.allclose(a, b) for a, b in zip(ours, theirs))


# ----------------------------------------------------------------------------- input errors
@needs_ext
@pytest.mark.parametrize("mutate,match", [
    (lambda a: {**a, "x0": a["x0"][:, :, :-1]}, r"x0=.*the shape of x_adv"),
    (lambda a: {**a, "x0": a["x0"].double()}, r"x0=.*dtype and device"),
    (lambda a: {**a, "x_adv": a["x_adv"][0]}, r"x_adv=.*\(N, C, H, W\)"),
    (lambda a: {**a, "x_adv": a["x_adv"].long(), "x0": a["x0"].long()}, r"x_adv=.*float32"),
    (lambda a: {**a, "boxes": torch.tensor([[0, 0, 3, 3], [2, 2, 12, 5]]), "start": 0, "count": 2},
     r"boxes\[1\]=\[2, 2, 12, 5\].*inside the 11x13 image.*grid_boxes"),
    (lambda a: {**a, "boxes": torch.tensor([[0, 0, 3, 3], [-1, 2, 4, 5]]), "start": 0, "count": 2}, r"boxes\[1\]"),
    (lambda a: {**a, "boxes": torch.tensor([[0, 5, 3, 3]]), "start": 0, "count": 1}, r"boxes\[0\]"),
    (lambda a: {**a, "boxes": BOXES[:, :3]}, r"boxes=.*\(m, 4\)"),
    (lambda a: {**a, "boxes": BOXES.float()}, r"boxes=.*integer"),
    (lambda a: {**a, "boxes": BOXES[0]}, r"boxes=.*\(m, 4\)"),
    (lambda a: {**a, "count": len(BOXES)}, r"count=27 is invalid; expected 0 <= count <= 25.*chunks"),
    (lambda a: {**a, "count": -1}, r"count=-1"),
    (lambda a: {**a, "start": len(BOXES) + 1}, r"start=28.*\[0, 27\]"),
    (lambda a: {**a, "start": 1.5}, r"start=1.5.*integer"),
    (lambda a: {**a, "x_adv": a["x_adv"].to("meta"), "x0": a["x0"].to("meta")}, r"x_adv=.*compiled kernel"),
])
def test_ablate_errors(mutate, match):
    xa, x0 = images(2, 3, H, W)
    args = mutate({"x_adv": xa, "x0": x0, "boxes": BOXES, "start": 2, "count": 4})
    with pytest.raises(ParameterError, match=match):
        gridablate.ablate(**args)


@needs_ext
def test_ablate_bad_box_outside_the_range_is_not_used():
    xa, x0 = images(1, 1, H, W)
    boxes = torch.cat([BOXES[:3], torch.tensor([[0, 0, 99, 99]])])
    assert gridablate.ablate(xa, x0, boxes, 0, 3).shape == (1, 3, 1, H, W)
    assert gridablate.ablate(xa, x0, boxes.int(), 0, 3).shape == (1, 3, 1, H, W)  # int32 boxes are converted


@needs_ext
@pytest.mark.parametrize("args,match", [
    ((torch.ones(2, 3), BOXES, H, W), r"scores=.*one score per box \(27 boxes\)"),
    ((torch.ones(2, 1), torch.tensor([[0, 0, 12, 1]]), H, W), r"boxes\[0\]=\[0, 0, 12, 1\]"),
    ((torch.ones(2, 1), torch.tensor([[0, 0, 1]]), H, W), r"boxes=.*\(m, 4\)"),
    ((torch.ones(2, 1, dtype=torch.long), torch.tensor([[0, 0, 1, 1]]), H, W), r"scores=.*float32"),
    ((torch.ones(2, 1), torch.tensor([[0, 0, 1, 1]]), 0, W), r"height/width"),
    ((torch.ones(2, 1, 1), torch.tensor([[0, 0, 1, 1]]), H, W), r"scores=.*\(N, m\)"),
])
def test_scatter_mean_errors(args, match):
    with pytest.raises(ParameterError, match=match):
        gridablate.scatter_mean(*args)


@needs_ext
def test_the_ops_check_their_inputs_themselves():
    # called directly (no wrapper), the C++ kernels still refuse bad input instead of reading out of bounds
    xa, x0 = images(1, 2, H, W)
    with pytest.raises(ValueError, match=r"boxes\[1\] = \[0, 0, 12, 1\] is not a window inside the 11x13"):
        op.ablate(xa, x0, torch.tensor([[0, 0, 1, 1], [0, 0, 12, 1]]), 0, 2)
    with pytest.raises(ValueError, match="x0 has shape"):
        op.ablate(xa, x0[:, :1], BOXES, 0, 1)
    with pytest.raises(ValueError, match="start=26, count=2"):
        op.ablate(xa, x0, BOXES, 26, 2)
    with pytest.raises(ValueError, match="int64"):
        op.ablate(xa, x0, BOXES.int(), 0, 1)
    with pytest.raises(ValueError, match="one score per box"):
        op.scatter_mean(torch.ones(1, 3), BOXES, H, W)


# ------------------------------------------------------------------------ hook and fallback
@needs_ext
def test_hook_returns_the_compiled_backend():
    from advinterp_gridablate import plugin

    backend = plugin.advinterp_grid_ablation_backend(torch.device("cpu"))
    assert backend.name == "gridablate-cpu"
    chosen = get_ablation_backend("cpu")
    assert chosen.name == "gridablate-cpu"
    xa, x0 = images(2, 3, H, W)
    assert_bitwise_equal(chosen.ablate(xa, x0, BOXES, 3, 8), ReferenceGridAblation().ablate(xa, x0, BOXES, 3, 8))
    scores = torch.randn(2, len(BOXES))
    assert_bitwise_equal(chosen.scatter_mean(scores, BOXES, H, W), grid_scores_to_map(scores, BOXES, H, W))
    # no kernel for other device types: the plugin passes and the core's reference answers
    assert plugin.advinterp_grid_ablation_backend(torch.device("meta")) is None
    assert get_ablation_backend("meta").name == "reference"
    cuda = plugin.advinterp_grid_ablation_backend(torch.device("cuda"))
    assert (cuda is not None and cuda.name == "gridablate-cuda") == gridablate.status().cuda


def _failing_importer(fail):
    def importer(name):
        if name.rsplit(".", 1)[1] in fail:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return __import__(name)
    return importer


def test_load_reports_why_a_module_is_missing():
    info = {"torch": torch.__version__, "modules": {"_C": {"built": False, "reason": "RuntimeError: no compiler"}}}
    st = _ext.load(_failing_importer({"_C", "_C_cuda"}), info)
    assert not st.available and st.device_types() == ()
    assert "advinterp_gridablate._C was not built: RuntimeError: no compiler" in st.reason
    assert "--no-build-isolation" in st.reason and "unavailable" in str(st)
    st = _ext.load(_failing_importer({"_C"}), {})
    assert "no compiled module found" in st.reason
    if gridablate.available():
        st = _ext.load(_failing_importer({"_C_cuda"}),
                       {"modules": {"_C_cuda": {"built": False, "reason": "torch is not a CUDA build"}}})
        assert st.available and not st.cuda and "torch is not a CUDA build" in st.cuda_reason
        assert "CUDA kernels not loaded (advinterp_gridablate._C_cuda was not built: torch is not" in str(st)

    def broken(name):
        raise OSError("_C.so: undefined symbol: _ZN3c10...")
    st = _ext.load(broken, {"torch": "0.0.1", "modules": {"_C": {"built": True}}})
    assert "built for torch 0.0.1 but torch" in st.reason and "undefined symbol" in st.reason


def test_fallback_to_the_reference_with_the_reason_shown(monkeypatch, fresh_registry, capsys):
    from advinterp import cli

    missing = _ext.load(_failing_importer({"_C", "_C_cuda"}),
                        {"modules": {"_C": {"built": False, "reason": "simulated build failure"}}})
    monkeypatch.setattr(_ext, "STATE", missing)
    monkeypatch.delitem(sys.modules, "advinterp_gridablate.plugin", raising=False)  # re-run the entry point
    monkeypatch.delenv("ADVINTERP_DISABLE_PLUGINS", raising=False)
    # the package imports, reports, and refuses with the reason
    assert not gridablate.available() and "simulated build failure" in str(gridablate.status())
    assert gridablate.backend_for("cpu") is None
    with pytest.raises(gridablate.ExtensionUnavailableError, match="simulated build failure"):
        gridablate.ablate(*images(1, 1, H, W), BOXES, 0, 1)
    # the plugin is recorded as unavailable with the reason, and the reference answers
    fresh_registry.reload_plugins()
    statuses = {p.name: p for p in fresh_registry.list_plugins()}
    assert not statuses["gridablate"].loaded and "simulated build failure" in statuses["gridablate"].error
    assert get_ablation_backend("cpu").name == "reference"
    assert cli.main(["list", "analyzer"]) == 0
    out = capsys.readouterr().out
    line = next(i for i, ln in enumerate(out.splitlines()) if ln.strip().startswith("gridablate"))
    assert "UNAVAILABLE" in out.splitlines()[line] and "simulated build failure" in out.splitlines()[line + 1]


@needs_ext
def test_hook_passes_when_the_state_changes_after_loading(monkeypatch):
    from advinterp_gridablate import plugin

    monkeypatch.setattr(_ext, "STATE", _ext.ExtensionState(False, "simulated"))
    assert plugin.advinterp_grid_ablation_backend(torch.device("cpu")) is None


@pytest.mark.skipif(os.environ.get("ADVINTERP_DISABLE_PLUGINS"), reason="plugins disabled in this environment")
def test_plugin_listed_with_its_state():
    from advinterp.registry import list_plugins

    st = {p.name: p for p in list_plugins()}["gridablate"]
    assert st.loaded == gridablate.available()
    if not st.loaded:
        assert gridablate.status().reason in st.error
