"""advinterp-gridablate's window ops ``crop`` / ``paste`` (the incremental executor's per-sample
window gather and paste-back) and the fused ``crop_paste`` (a window with a patch written into it)
against the core's pure-PyTorch reference ``advinterp.patches``,
bit for bit; the reference itself against a brute-force Python loop; opcheck; the wrappers'
input errors; the backends' ``crop`` / ``paste`` / ``crop_paste`` methods.

The reference tests run without the plugin; the compiled-op tests are skipped where the
extension is not built, the CUDA ones where no GPU is present.
"""
import math
import shutil

import pytest
import torch

import advinterp_gridablate as gridablate
from advinterp.ablation import GridAblationBackend, ReferenceGridAblation
from advinterp.exceptions import ParameterError
from advinterp.patches import crop_paste_patches, crop_patches, paste_patches
from advinterp.registry import get_ablation_backend
from advinterp_gridablate import _ext

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FILLS = [0.0, -math.inf]
_INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}

needs_ext = pytest.mark.skipif(not gridablate.available() or not _ext.STATE.window_device_types(),
                               reason=f"advinterp-gridablate crop/paste: {gridablate.status()}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
op = torch.ops.advinterp_gridablate if gridablate.available() else None


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of ``t`` (NaN payloads, -0.0 and infinities compare exactly)."""
    return t.contiguous().view(_INT_VIEW[t.element_size()])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device, (a.shape, b.shape, a.dtype, b.dtype)
    diff = bits(a) != bits(b)
    assert not diff.any(), f"{int(diff.sum())} of {a.numel()} elements differ (first at {diff.nonzero()[0].tolist()})"


def same_format(out: torch.Tensor, maps: torch.Tensor) -> bool:
    """``out`` has the layout the ops promise: channels-last iff ``maps`` is (and is not plainly
    contiguous), contiguous otherwise."""
    cl = not maps.is_contiguous() and maps.is_contiguous(memory_format=torch.channels_last)
    return out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def maps(m, c, h, w, dtype=torch.float32, device="cpu", seed=0, layout="contiguous", special=True):
    """Random ``(m, c, h, w)`` maps starting (with ``special``) with NaN, inf, -0.0, in ``layout``
    (``contiguous``, ``channels_last`` or ``strided``: a non-contiguous slice)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, c, h, w + (3 if layout == "strided" else 0), generator=g, dtype=torch.float64)
    if special:
        x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0], dtype=torch.float64)
    x = x.to(device, dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        return x[..., 1:w + 1]
    return x


def windows(b, m, h_map, w_map, h, w, seed):
    """``(index, offsets)``: map indices with repeats, corners from fully outside (above/left
    and below/right) through partly outside to inside."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, m, (b,), generator=g)
    oy = torch.randint(-h - 2, h_map + 3, (b,), generator=g)
    ox = torch.randint(-w - 2, w_map + 3, (b,), generator=g)
    return index, torch.stack([oy, ox], 1)


# -------------------------------------------------------------- the reference, by brute force
def brute_crop(src, index, offsets, height, width, fill):
    b, c = len(index), src.shape[1]
    out = torch.full((b, c, height, width), fill, dtype=torch.float64)
    for k in range(b):
        oy, ox = offsets[k].tolist()
        for i in range(height):
            for j in range(width):
                y, x = oy + i, ox + j
                if 0 <= y < src.shape[2] and 0 <= x < src.shape[3]:
                    out[k, :, i, j] = src[int(index[k]), :, y, x].double()
    return out.to(src.dtype)


def brute_paste(base, index, patch, offsets):
    out = torch.stack([base[int(i)] for i in index]).double() if len(index) else \
        torch.empty(0, *base.shape[1:], dtype=torch.float64)
    for k in range(len(index)):
        oy, ox = offsets[k].tolist()
        for i in range(patch.shape[2]):
            for j in range(patch.shape[3]):
                y, x = oy + i, ox + j
                if 0 <= y < base.shape[2] and 0 <= x < base.shape[3]:
                    out[k, :, y, x] = patch[k, :, i, j].double()
    return out.to(base.dtype)


def test_reference_by_hand():
    src = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)  # map 1 holds 12..23
    out = crop_patches(src, torch.tensor([1, 0]), torch.tensor([[-1, 2], [2, -1]]), 2, 3, fill=-1.0)
    assert torch.equal(out[0, 0], torch.tensor([[-1.0, -1, -1], [14, 15, -1]]))
    assert torch.equal(out[1, 0], torch.tensor([[-1.0, 8, 9], [-1, -1, -1]]))
    pasted = paste_patches(src, torch.tensor([1, 1]), torch.full((2, 1, 2, 2), 99.0), torch.tensor([[2, 3], [5, 0]]))
    assert torch.equal(pasted[0, 0], torch.tensor([[12.0, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 99]]))
    assert torch.equal(pasted[1, 0], src[1, 0])  # the whole patch falls below the map


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reference_equals_brute_force(layout):
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        m, c, h_map, w_map, b, h, w = (int(v) for v in torch.randint(1, 6, (7,), generator=g))
        src = maps(m, c, h_map, w_map, seed=seed, layout=layout)
        index, offsets = windows(b, m, h_map, w_map, h, w, seed)
        fill = FILLS[seed % 2]
        out = crop_patches(src, index, offsets, h, w, fill)
        assert same_format(out, src)
        assert_bitwise_equal(out, brute_crop(src, index, offsets, h, w, fill))
        patch = maps(b, c, h + 1, w + 2, seed=seed + 100)  # may be larger than the map
        pasted = paste_patches(src, index, patch, offsets)
        assert same_format(pasted, src)
        assert_bitwise_equal(pasted, brute_paste(src, index, patch, offsets))


def test_reference_empty_batch_and_fill_checks():
    src = maps(2, 3, 4, 5)
    none, no_off = torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long)
    assert crop_patches(src, none, no_off, 2, 2).shape == (0, 3, 2, 2)
    assert paste_patches(src, none, torch.zeros(0, 3, 1, 1), no_off).shape == (0, 3, 4, 5)
    with pytest.raises(ParameterError, match=r"fill=100000.0 is invalid.*representable in torch.float16"):
        crop_patches(src.half(), torch.tensor([0]), torch.tensor([[9, 9]]), 2, 2, 1e5)
    with pytest.raises(ParameterError, match=r"fill=.*a number"):
        crop_patches(src, torch.tensor([0]), torch.tensor([[0, 0]]), 2, 2, "0")
    inf = crop_patches(src.half(), torch.tensor([0]), torch.tensor([[9, 9]]), 2, 2, -math.inf)
    assert bool((inf == -math.inf).all())


def test_reference_backend_methods():
    ref = ReferenceGridAblation()
    src, index, offsets = maps(3, 2, 5, 6), torch.tensor([2, 0, 2]), torch.tensor([[-1, 1], [3, 4], [0, 0]])
    assert_bitwise_equal(ref.crop(src, index, offsets, 3, 4, -math.inf),
                         crop_patches(src, index, offsets, 3, 4, -math.inf))
    patch = maps(3, 2, 3, 4, seed=1)
    assert_bitwise_equal(ref.paste(src, index, patch, offsets), paste_patches(src, index, patch, offsets))
    assert isinstance(ref, GridAblationBackend)

    class Minimal:  # crop / paste are optional for third-party backends
        name = "minimal"

        def ablate(self, x_adv, x0, boxes, start, count):
            return x_adv

    assert isinstance(Minimal(), GridAblationBackend) and getattr(Minimal(), "crop", None) is None


# -------------------------------------------------------------------------- the compiled ops
def test_window_kernels_are_compiled_where_a_compiler_exists():
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler: the plugin installs with the pure-PyTorch fallback")
    st = gridablate.status()
    assert "cpu" in st.window_device_types(), f"a C++ compiler is present but {st}"
    if shutil.which("nvcc") and torch.version.cuda is not None:  # no GPU needed: registration only
        assert st.cuda, st.cuda_reason
        for name in ("crop", "paste", "crop_paste"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"advinterp_gridablate::{name}", "CUDA")
        assert "cuda" in st.window_device_types() and "cuda" in st.fused_device_types()
    assert "cpu" in st.fused_device_types()


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_crop_and_paste_equal_reference_bit_for_bit(device, dtype):
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        m, c = (int(v) for v in torch.randint(1, 5, (2,), generator=g))
        h_map, w_map, h, w = (int(v) for v in torch.randint(1, 10, (4,), generator=g))
        b = int(torch.randint(1, 7, (), generator=g))
        index, offsets = windows(b, m, h_map, w_map, h, w, seed)
        patch = maps(b, c, h, w, dtype, device, seed=seed + 50)
        for layout in ("contiguous", "channels_last", "strided"):
            src = maps(m, c, h_map, w_map, dtype, device, seed=seed, layout=layout)
            for fill in FILLS + [float("nan")]:
                out = op.crop(src, index, offsets, h, w, fill)
                assert same_format(out, src)
                assert_bitwise_equal(out, crop_patches(src, index, offsets, h, w, fill))
            out = op.paste(src, index, patch, offsets)
            assert same_format(out, src)
            assert_bitwise_equal(out, paste_patches(src, index, patch, offsets))
            # a patch in another layout than the maps'
            patch_cl = patch.contiguous(memory_format=torch.channels_last)
            assert_bitwise_equal(op.paste(src, index, patch_cl, offsets), paste_patches(src, index, patch, offsets))
    # index and offsets on the maps' device
    assert_bitwise_equal(op.crop(src, index.to(device), offsets.to(device), h, w, 0.0),
                         crop_patches(src, index, offsets, h, w))
    assert_bitwise_equal(op.paste(src, index.to(device), patch, offsets.to(device)),
                         paste_patches(src, index, patch, offsets))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_edge_windows(device):
    src = maps(2, 3, 5, 7, device=device, layout="channels_last")
    index = torch.tensor([1, 1, 0, 1, 0, 1])
    big = 2 ** 62
    offsets = torch.tensor([[-4, -3], [5, 0], [0, 7], [-big, big], [big, -big], [-1, -2]])  # wholly outside, ...
    for fill in FILLS:
        out = gridablate.crop(src, index, offsets, 4, 9, fill)
        assert_bitwise_equal(out, crop_patches(src, index, offsets, 4, 9, fill))
        assert bool((out[:5] == fill).all()) and bool((out[5] != fill).any())
    patch = maps(6, 3, 4, 9, device=device, seed=3)
    out = gridablate.paste(src, index, patch, offsets)
    assert_bitwise_equal(out, paste_patches(src, index, patch, offsets))
    assert_bitwise_equal(out[:5], src[index[:5].to(device)])  # nothing lands in the map
    # a window covering the whole map and more; a patch larger than the map
    whole = gridablate.crop(src, index[:1], torch.tensor([[-2, -1]]), 9, 11)
    assert_bitwise_equal(whole[:, :, 2:7, 1:8], src[1:2])
    assert_bitwise_equal(gridablate.paste(src, index[:1], whole, torch.tensor([[-2, -1]])), src[1:2])
    # empty batch, empty windows
    none, no_off = torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long)
    assert gridablate.crop(src, none, no_off, 3, 3).shape == (0, 3, 3, 3)
    assert gridablate.paste(src, none, patch[:0], no_off).shape == (0, 3, 5, 7)
    assert gridablate.crop(src, index, offsets, 0, 4).shape == (6, 3, 0, 4)
    assert_bitwise_equal(gridablate.paste(src, index, patch[:, :, :0], offsets), src[index.to(device)])


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    index, offsets = torch.tensor([2, 0, 2, 1]), torch.tensor([[-1, 3], [2, -4], [0, 0], [9, 9]])
    for layout in ("contiguous", "channels_last"):
        src = maps(3, 4, 6, 8, torch.float64, device, layout=layout, special=False)  # (opcheck: NaN != NaN)
        patch = maps(4, 4, 3, 5, torch.float64, device, seed=1, special=False)
        for idx, off in ((index, offsets), (index.to(device), offsets.to(device))):
            torch.library.opcheck(op.crop.default, (src, idx, off, 3, 5, -math.inf))
            torch.library.opcheck(op.paste.default, (src, idx, patch, off))


@needs_ext
def test_compiled_backend_methods():
    backend = get_ablation_backend("cpu")
    assert backend.name == "gridablate-cpu"
    src, index, offsets = maps(3, 2, 5, 6), torch.tensor([2, 0, 2]), torch.tensor([[-1, 1], [3, 4], [0, 0]])
    patch = maps(3, 2, 3, 4, seed=1)
    assert_bitwise_equal(backend.crop(src, index, offsets, 3, 4, -math.inf),
                         crop_patches(src, index, offsets, 3, 4, -math.inf))
    assert_bitwise_equal(backend.paste(src, index, patch, offsets), paste_patches(src, index, patch, offsets))
    # int32 index / offsets are converted by the wrappers
    assert_bitwise_equal(gridablate.crop(src, index.int(), offsets.int(), 3, 4),
                         crop_patches(src, index, offsets, 3, 4))


# ----------------------------------------------------------------------------- input errors
SRC = maps(3, 2, 5, 6)
IDX = torch.tensor([0, 2])
OFF = torch.tensor([[0, 1], [-2, 3]])


@needs_ext
@pytest.mark.parametrize("kwargs,match", [
    ({"src": SRC[0]}, r"src=.*\(M, C, H, W\)"),
    ({"src": SRC.long()}, r"src=.*float32.*src.float\(\)"),
    ({"src": SRC.to("meta")}, r"src=.*compiled kernel"),
    ({"index": IDX.float()}, r"index=.*integer \(B,\).*torch.zeros"),
    ({"index": IDX[None]}, r"index=.*\(B,\)"),
    ({"index": torch.tensor([0, 3])}, r"index\[1\]=3 is invalid; expected a map index in \[0, 3\)"),
    ({"index": torch.tensor([-1, 0])}, r"index\[0\]=-1"),
    ({"index": IDX.to("meta")}, r"index=.*on the CPU or on src's device"),
    ({"offsets": OFF[:, :1]}, r"offsets=.*\(2, 2\) tensor of \[oy, ox\]"),
    ({"offsets": OFF[:1]}, r"offsets=.*\(2, 2\)"),
    ({"offsets": OFF.double()}, r"offsets=.*integer"),
    ({"height": -1}, r"height/width=\(-1, 3\).*>= 0"),
    ({"width": 2.5}, r"width=2.5.*integer"),
    ({"fill": 1e300}, r"fill=1e\+300.*representable in torch.float32"),
    ({"fill": None}, r"fill=None.*a number"),
    ({"src": SRC.clone().requires_grad_()}, r"src=.*does not require grad.*torch.no_grad\(\)"),
])
def test_crop_errors(kwargs, match):
    args = {"src": SRC, "index": IDX, "offsets": OFF, "height": 4, "width": 3, "fill": 0.0, **kwargs}
    with pytest.raises(ParameterError, match=match):
        gridablate.crop(**args)


@needs_ext
@pytest.mark.parametrize("kwargs,match", [
    ({"base": SRC[:, 0]}, r"base=.*\(M, C, H, W\)"),
    ({"index": torch.tensor([5, 0])}, r"index\[0\]=5.*\[0, 3\)"),
    ({"patch": torch.zeros(2, 3, 2, 2)}, r"patch=.*\(2, 2, h, w\)"),
    ({"patch": torch.zeros(1, 2, 2, 2)}, r"patch=.*\(2, 2, h, w\)"),
    ({"patch": torch.zeros(2, 2, 2)}, r"patch=.*\(2, 2, h, w\)"),
    ({"patch": torch.zeros(2, 2, 2, 2, dtype=torch.float64)}, r"patch=.*base's dtype and device.*patch.to\(base\)"),
    ({"offsets": torch.zeros(3, 2, dtype=torch.long)}, r"offsets=.*an integer \(2, 2\) tensor"),
    ({"patch": torch.zeros(2, 2, 2, 2, requires_grad=True)}, r"patch=.*does not require grad"),
])
def test_paste_errors(kwargs, match):
    args = {"base": SRC, "index": IDX, "patch": torch.zeros(2, 2, 3, 3), "offsets": OFF, **kwargs}
    with pytest.raises(ParameterError, match=match):
        gridablate.paste(**args)


@needs_ext
def test_no_grad_mode_allows_inputs_requiring_grad():
    src = SRC.clone().requires_grad_()
    with torch.no_grad():
        out = gridablate.crop(src, IDX, OFF, 4, 3)
        assert_bitwise_equal(out, crop_patches(SRC, IDX, OFF, 4, 3))
        assert out.shape == (2, 2, 4, 3)


@needs_ext
def test_the_ops_check_their_inputs_themselves():
    # called without the wrappers, the kernels still refuse bad input instead of reading out of bounds
    with pytest.raises(ValueError, match=r"index\[1\] = 3 is not a map index in \[0, 3\)"):
        op.crop(SRC, torch.tensor([0, 3]), OFF, 2, 2, 0.0)
    with pytest.raises(ValueError, match=r"index\[0\] = -1"):
        op.paste(SRC, torch.tensor([-1, 0]), torch.zeros(2, 2, 1, 1), OFF)
    with pytest.raises(ValueError, match="offsets must be an int64"):
        op.crop(SRC, IDX, OFF.int(), 2, 2, 0.0)
    with pytest.raises(ValueError, match="index must be an int64"):
        op.crop(SRC, IDX.int(), OFF, 2, 2, 0.0)
    with pytest.raises(ValueError, match="height=-1"):
        op.crop(SRC, IDX, OFF, -1, 2, 0.0)
    with pytest.raises(ValueError, match="patch must be"):
        op.paste(SRC, IDX, torch.zeros(2, 3, 1, 1), OFF)
    with pytest.raises(ValueError, match="same dtype and device"):
        op.paste(SRC, IDX, torch.zeros(2, 2, 1, 1, dtype=torch.float64), OFF)
    with pytest.raises(RuntimeError, match="overflow"):  # as torch.full
        op.crop(SRC.half(), IDX, OFF, 2, 2, 1e10)


@needs_ext
def test_a_module_without_the_window_kernels_asks_for_a_rebuild(monkeypatch):
    monkeypatch.setattr(_ext.ExtensionState, "window_device_types", lambda self: ())
    with pytest.raises(gridablate.ExtensionUnavailableError, match="crop/paste kernel.*rebuild"):
        gridablate.crop(SRC, IDX, OFF, 2, 2)



# ------------------------------------------------------------------------------- crop_paste
def patch_windows(b, h, w, ph, pw, seed):
    """``(B, 2)`` patch corners relative to an ``h x w`` window: wholly outside on every side,
    partly outside, inside."""
    g = torch.Generator().manual_seed(seed + 1000)
    py = torch.randint(-ph - 2, h + 3, (b,), generator=g)
    px = torch.randint(-pw - 2, w + 3, (b,), generator=g)
    return torch.stack([py, px], 1)


def composed(src, index, offsets, h, w, fill, patch, patch_offsets):
    """The definition of crop_paste: crop, then paste into the windows."""
    return paste_patches(crop_patches(src, index, offsets, h, w, fill), torch.arange(len(index)), patch,
                         patch_offsets)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_crop_paste_reference_equals_brute_force(layout):
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        m, c, h_map, w_map, b, h, w, ph, pw = (int(v) for v in torch.randint(1, 6, (9,), generator=g))
        src = maps(m, c, h_map, w_map, seed=seed, layout=layout)
        index, offsets = windows(b, m, h_map, w_map, h, w, seed)
        patch = maps(b, c, ph, pw, seed=seed + 100)
        patch_offsets = patch_windows(b, h, w, ph, pw, seed)
        fill = FILLS[seed % 2]
        out = crop_paste_patches(src, index, offsets, h, w, fill, patch, patch_offsets)
        assert same_format(out, src)
        brute = brute_paste(brute_crop(src, index, offsets, h, w, fill), torch.arange(b), patch, patch_offsets)
        assert_bitwise_equal(out, brute)


def test_crop_paste_reference_by_hand_and_errors():
    src = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    out = crop_paste_patches(src, torch.tensor([0]), torch.tensor([[-1, 1]]), 3, 4, -1.0,
                             torch.full((1, 1, 2, 2), 99.0), torch.tensor([[2, -1]]))
    assert torch.equal(out[0, 0], torch.tensor([[-1.0, -1, -1, -1], [1, 2, 3, -1], [99, 6, 7, -1]]))
    ref = ReferenceGridAblation()
    args = (src, torch.tensor([0]), torch.tensor([[0, 0]]), 2, 2, 0.0)
    assert_bitwise_equal(ref.crop_paste(*args, torch.zeros(1, 1, 1, 1), torch.tensor([[1, 1]])),
                         crop_paste_patches(*args, torch.zeros(1, 1, 1, 1), torch.tensor([[1, 1]])))
    with pytest.raises(ParameterError, match=r"crop_paste_patches: patch=.*\(1, 1, h, w\)"):
        crop_paste_patches(*args, torch.zeros(1, 2, 1, 1), torch.tensor([[0, 0]]))
    with pytest.raises(ParameterError, match=r"crop_paste_patches: patch=.*src's dtype"):
        crop_paste_patches(*args, torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.tensor([[0, 0]]))
    with pytest.raises(ParameterError, match=r"crop_paste_patches: patch_offsets=.*int64 \(1, 2\)"):
        crop_paste_patches(*args, torch.zeros(1, 1, 1, 1), torch.tensor([[0, 0]]).int())


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_crop_paste_equals_composed_references_bit_for_bit(device, dtype):
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        m, c = (int(v) for v in torch.randint(1, 5, (2,), generator=g))
        h_map, w_map, h, w, ph, pw = (int(v) for v in torch.randint(1, 10, (6,), generator=g))
        b = int(torch.randint(1, 7, (), generator=g))
        index, offsets = windows(b, m, h_map, w_map, h, w, seed)
        patch_offsets = patch_windows(b, h, w, ph, pw, seed)
        patch = maps(b, c, ph, pw, dtype, device, seed=seed + 50)
        for layout in ("contiguous", "channels_last", "strided"):
            src = maps(m, c, h_map, w_map, dtype, device, seed=seed, layout=layout)
            for fill in FILLS + [float("nan")]:
                want = composed(src, index, offsets, h, w, fill, patch, patch_offsets)
                out = op.crop_paste(src, index, offsets, h, w, fill, patch, patch_offsets)
                assert same_format(out, src)
                assert_bitwise_equal(out, want)
                assert_bitwise_equal(out, crop_paste_patches(src, index, offsets, h, w, fill, patch, patch_offsets))
                # the two compiled ops it replaces
                two = op.paste(op.crop(src, index, offsets, h, w, fill), torch.arange(b), patch, patch_offsets)
                assert_bitwise_equal(out, two)
            # a patch in another layout than the maps'; index and offsets on the maps' device
            patch_cl = patch.contiguous(memory_format=torch.channels_last)
            assert_bitwise_equal(op.crop_paste(src, index, offsets, h, w, 0.0, patch_cl, patch_offsets),
                                 composed(src, index, offsets, h, w, 0.0, patch, patch_offsets))
            assert_bitwise_equal(op.crop_paste(src, index.to(device), offsets.to(device), h, w, 0.0, patch,
                                               patch_offsets.to(device)),
                                 composed(src, index, offsets, h, w, 0.0, patch, patch_offsets))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_crop_paste_edge_windows(device):
    src = maps(2, 3, 5, 7, device=device, layout="channels_last")
    index = torch.tensor([1, 1, 0, 1, 0, 1])
    big = 2 ** 62
    offsets = torch.tensor([[-4, -3], [5, 0], [0, 7], [-big, big], [big, -big], [-1, -2]])
    patch = maps(6, 3, 2, 3, device=device, seed=3)
    for poff in (torch.tensor([[0, 0], [3, 7], [-2, 1], [big, -big], [-big, big], [1, -1]]),  # partly / wholly out
                 torch.tensor([[1, 1]] * 6), torch.tensor([[-big, -big]] * 6)):
        for fill in FILLS:
            out = gridablate.crop_paste(src, index, offsets, 4, 9, fill, patch, poff)
            assert same_format(out, src)
            assert_bitwise_equal(out, composed(src, index, offsets, 4, 9, fill, patch, poff))
    # a patch larger than the window covers it all
    huge = maps(6, 3, 8, 12, device=device, seed=4)
    out = gridablate.crop_paste(src, index, offsets, 4, 9, 0.0, huge, torch.tensor([[-2, -1]] * 6))
    assert_bitwise_equal(out, huge[:, :, 2:6, 1:10].contiguous(memory_format=torch.channels_last))
    # empty batch, empty windows, empty patches
    none, no_off = torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long)
    assert gridablate.crop_paste(src, none, no_off, 3, 3, 0.0, patch[:0], no_off).shape == (0, 3, 3, 3)
    assert gridablate.crop_paste(src, index, offsets, 0, 4, 0.0, patch, offsets).shape == (6, 3, 0, 4)
    assert_bitwise_equal(gridablate.crop_paste(src, index, offsets, 4, 9, -math.inf, patch[:, :, :0], offsets),
                         crop_patches(src, index, offsets, 4, 9, -math.inf))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_crop_paste_opcheck(device):
    index, offsets = torch.tensor([2, 0, 2, 1]), torch.tensor([[-1, 3], [2, -4], [0, 0], [9, 9]])
    poff = torch.tensor([[1, 1], [-1, 2], [2, 4], [0, 0]])
    for layout in ("contiguous", "channels_last"):
        src = maps(3, 4, 6, 8, torch.float64, device, layout=layout, special=False)  # (opcheck: NaN != NaN)
        patch = maps(4, 4, 2, 3, torch.float64, device, seed=1, special=False)
        for idx, off, po in ((index, offsets, poff), (index.to(device), offsets.to(device), poff.to(device))):
            torch.library.opcheck(op.crop_paste.default, (src, idx, off, 3, 5, -math.inf, patch, po))


@needs_ext
def test_compiled_backend_crop_paste(monkeypatch):
    backend = get_ablation_backend("cpu")
    src, index, offsets = maps(3, 2, 5, 6), torch.tensor([2, 0, 2]), torch.tensor([[-1, 1], [3, 4], [0, 0]])
    patch, poff = maps(3, 2, 2, 2, seed=1), torch.tensor([[0, 0], [2, -1], [1, 3]])
    want = crop_paste_patches(src, index, offsets, 3, 4, -math.inf, patch, poff)
    assert_bitwise_equal(backend.crop_paste(src, index, offsets, 3, 4, -math.inf, patch, poff), want)
    assert_bitwise_equal(ReferenceGridAblation().crop_paste(src, index, offsets, 3, 4, -math.inf, patch, poff), want)
    # int32 index / offsets are converted by the wrapper
    assert_bitwise_equal(gridablate.crop_paste(src, index.int(), offsets.int(), 3, 4, -math.inf, patch, poff.int()),
                         want)
    # a module without the crop_paste kernel: the backend has no crop_paste (the executor then
    # crops and pastes), and the wrapper asks for a rebuild
    monkeypatch.setattr(_ext.ExtensionState, "fused_device_types", lambda self: ())
    assert getattr(gridablate.backend_for("cpu"), "crop_paste", None) is None
    assert gridablate.backend_for("cpu").crop is not None
    with pytest.raises(gridablate.ExtensionUnavailableError, match="crop_paste kernel.*rebuild"):
        gridablate.crop_paste(src, index, offsets, 3, 4, 0.0, patch, poff)


PATCH = torch.zeros(2, 2, 2, 2)
POFF = torch.tensor([[1, 0], [0, -1]])


@needs_ext
@pytest.mark.parametrize("kwargs,match", [
    ({"src": SRC[0]}, r"src=.*\(M, C, H, W\)"),
    ({"src": SRC.long()}, r"src=.*float32.*src.float\(\)"),
    ({"index": torch.tensor([0, 3])}, r"index\[1\]=3 is invalid; expected a map index in \[0, 3\)"),
    ({"offsets": OFF[:1]}, r"offsets=.*\(2, 2\) tensor of \[oy, ox\]"),
    ({"height": -1}, r"height/width=\(-1, 3\).*>= 0"),
    ({"fill": 1e300}, r"fill=1e\+300.*representable in torch.float32"),
    ({"fill": None}, r"fill=None.*a number"),
    ({"patch": torch.zeros(2, 3, 2, 2)}, r"patch=.*\(2, 2, h, w\).*src's channels"),
    ({"patch": torch.zeros(2, 2, 2)}, r"patch=.*\(2, 2, h, w\)"),
    ({"patch": torch.zeros(2, 2, 2, 2, dtype=torch.float64)}, r"patch=.*src's dtype and device.*patch.to\(src\)"),
    ({"patch_offsets": POFF[:1]}, r"patch_offsets=.*\(2, 2\) tensor of \[py, px\]"),
    ({"patch_offsets": POFF.double()}, r"patch_offsets=.*integer"),
    ({"patch_offsets": POFF.to("meta")}, r"patch_offsets=.*on the CPU or on src's device"),
    ({"patch": torch.zeros(2, 2, 2, 2, requires_grad=True)}, r"patch=.*does not require grad"),
    ({"src": SRC.clone().requires_grad_()}, r"src=.*does not require grad.*torch.no_grad\(\)"),
])
def test_crop_paste_errors(kwargs, match):
    args = {"src": SRC, "index": IDX, "offsets": OFF, "height": 4, "width": 3, "fill": 0.0, "patch": PATCH,
            "patch_offsets": POFF, **kwargs}
    with pytest.raises(ParameterError, match=match):
        gridablate.crop_paste(**args)


@needs_ext
def test_crop_paste_op_checks_its_inputs_itself():
    args = (SRC, IDX, OFF, 2, 2, 0.0)
    with pytest.raises(ValueError, match=r"crop_paste: index\[1\] = 3 is not a map index"):
        op.crop_paste(SRC, torch.tensor([0, 3]), OFF, 2, 2, 0.0, PATCH, POFF)
    with pytest.raises(ValueError, match="patch_offsets must be an int64"):
        op.crop_paste(*args, PATCH, POFF.int())
    with pytest.raises(ValueError, match="patch_offsets must be an int64"):
        op.crop_paste(*args, PATCH, POFF[:1])
    with pytest.raises(ValueError, match="patch must be"):
        op.crop_paste(*args, torch.zeros(2, 3, 1, 1), POFF)
    with pytest.raises(ValueError, match="src Float on cpu; they must have the same dtype and device"):
        op.crop_paste(*args, PATCH.double(), POFF)
    with pytest.raises(ValueError, match="height=-1"):
        op.crop_paste(SRC, IDX, OFF, -1, 2, 0.0, PATCH, POFF)
    with pytest.raises(RuntimeError, match="overflow"):  # as torch.full
        op.crop_paste(SRC.half(), IDX, OFF, 2, 2, 1e10, PATCH.half(), POFF)
