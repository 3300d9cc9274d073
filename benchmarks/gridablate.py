"""Compiled grid ablation (advinterp-gridablate) vs the core's pure-PyTorch references.

``ablate``: the PSE analysis's batches of ``x' - delta_{G_i}`` (x' with the pixels of grid i
from x0), ``N`` images times ``count`` grids per call, compiled op vs
``advinterp.ablation.ReferenceGridAblation``; printed as ablated images per second.
``scatter_mean``: per-grid scores ``(N, m)`` to a per-pixel mean map, compiled op vs
``advinterp.ablation.grid_scores_to_map``; printed as maps per second. The outputs are
checked to be bitwise equal before timing. ``crop + paste``: the incremental executor's
per-sample window gather and paste-back, ``--windows`` (B) windows of ``--window`` x
``--window`` from ``--maps`` cached ``--channels`` x ``--side`` x ``--side`` maps (index
``b % maps``, corners spread over the map, some reaching past it, ``fill=-inf``), compiled
``crop`` then ``paste`` vs ``advinterp.patches.crop_patches`` / ``paste_patches``, contiguous
and channels-last; printed as windows per second. ``crop_paste``: the executor's region of a
changed box, the window with a ``--window - 4`` square patch written into it (corners 0..4 in
the window), fused op vs ``advinterp.patches.crop_paste_patches``; and ``crop_paste vs
crop+paste``: the fused op against the two compiled calls it replaces (``crop``, then
``paste`` into the windows; in the "reference /s" column). On the CPU (torch threads as set) and, where
present, on CUDA (synchronised). Override the sizes, e.g.
``python benchmarks/gridablate.py --n 8 --count 32 --repeat 3 --windows 32``.
"""
import argparse

import torch

from advinterp.ablation import ReferenceGridAblation, grid_boxes, grid_scores_to_map
from advinterp.patches import crop_paste_patches, crop_patches, paste_patches
from _util import best_of, print_table

# (label, C, H, W, window, stride): the synthetic world's 64x64 scenes and ImageNet crops
CASES = [("64x64, 8x8 windows stride 4", 3, 64, 64, 8, 4), ("224x224, 16x16 windows stride 8", 3, 224, 224, 16, 8)]
DEFAULTS = {"n": 4, "count": 64, "repeat": 5, "windows": 64, "window": 18, "channels": 256, "side": 56, "maps": 4}


def _timer(device):
    def run(fn):
        def call():
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
        return call
    return run


def _window_rows(a, device, timed, g):
    """crop + paste rows: the incremental executor's window round trip, compiled vs reference."""
    import advinterp_gridablate as ga

    b, k, c, side, m = a.windows, a.window, a.channels, a.side, a.maps
    index = torch.arange(b) % m
    offsets = torch.randint(-k // 2, side - k // 2 + 1, (b, 2), generator=g)  # some windows reach past the map
    patch_offsets = torch.randint(0, 5, (b, 2), generator=g)  # the changed box inside the window (crop_paste)
    arange = torch.arange(b)
    rows = []
    for layout in ("contiguous", "channels_last"):
        cached = torch.randn(m, c, side, side, generator=g).to(device)
        if layout == "channels_last":
            cached = cached.contiguous(memory_format=torch.channels_last)
        patch = torch.randn(b, c, k - 4, k - 4, generator=g).to(device)
        if layout == "channels_last":
            patch = patch.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            win = ga.crop(cached, index, offsets, k, k, float("-inf"))
            assert torch.equal(win, crop_patches(cached, index, offsets, k, k, float("-inf")))
            assert torch.equal(ga.paste(cached, index, win, offsets), paste_patches(cached, index, win, offsets))
            fused_ok = device in ga.status().fused_device_types()  # (not in a module built before crop_paste)
            if fused_ok:
                fused = ga.crop_paste(cached, index, offsets, k, k, 0.0, patch, patch_offsets)
                assert torch.equal(fused, crop_paste_patches(cached, index, offsets, k, k, 0.0, patch, patch_offsets))
                assert torch.equal(fused, ga.paste(ga.crop(cached, index, offsets, k, k, 0.0), arange, patch,
                                                   patch_offsets))
            pairs = {
                "crop": (lambda: ga.crop(cached, index, offsets, k, k, float("-inf")),
                         lambda: crop_patches(cached, index, offsets, k, k, float("-inf"))),
                "paste": (lambda: ga.paste(cached, index, win, offsets),
                          lambda: paste_patches(cached, index, win, offsets)),
                "crop+paste": (lambda: ga.paste(cached, index, ga.crop(cached, index, offsets, k, k, float("-inf")),
                                                offsets),
                               lambda: paste_patches(cached, index, crop_patches(cached, index, offsets, k, k,
                                                                                 float("-inf")), offsets)),
            }
            if fused_ok:
                fused_op = lambda: ga.crop_paste(cached, index, offsets, k, k, 0.0, patch, patch_offsets)  # noqa: E731
                pairs["crop_paste"] = (
                    fused_op, lambda: crop_paste_patches(cached, index, offsets, k, k, 0.0, patch, patch_offsets))
                pairs["crop_paste vs crop+paste"] = (  # "reference /s": the two compiled calls it replaces
                    fused_op,
                    lambda: ga.paste(ga.crop(cached, index, offsets, k, k, 0.0), arange, patch, patch_offsets))
            for name, (ext, ref) in pairs.items():
                t_op = best_of(timed(ext), repeat=a.repeat)
                t_ref = best_of(timed(ref), repeat=a.repeat)
                rows.append({"device": device, "op": name, "case": f"{b} {k}x{k} windows of {m}x{c}x{side}x{side} "
                             f"maps, {layout.replace('_', '-')}", "per": "windows",
                             "compiled /s": f"{b / t_op:,.0f}", "reference /s": f"{b / t_ref:,.0f}",
                             "speed-up": f"{t_ref / t_op:.1f}x"})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k, type=type(v), default=v)
    a = p.parse_args([] if argv is None else argv)
    try:
        import advinterp_gridablate as ga
    except ImportError:
        print("advinterp-gridablate is not installed: skipped")
        return
    if not ga.available():
        print(f"advinterp-gridablate: {ga.status()}: skipped")
        return
    devices = [d for d in ga.status().device_types() if d != "cuda" or torch.cuda.is_available()]
    print(f"N={a.n} images per call, {a.count} grids per ablate call, float32, "
          f"torch threads={torch.get_num_threads()}, devices: {', '.join(devices)}")
    ref = ReferenceGridAblation()
    rows = []
    g = torch.Generator().manual_seed(0)
    for device in devices:
        timed = _timer(device)
        for label, c, h, w, size, stride in CASES:
            boxes = grid_boxes(h, w, size, stride)
            m = len(boxes)
            count = min(a.count, m)
            x0 = torch.rand(a.n, c, h, w, generator=g).to(device)
            xa = (x0 + 0.03 * torch.randn(a.n, c, h, w, generator=g).to(device)).clamp(0, 1)
            assert torch.equal(ga.ablate(xa, x0, boxes, 0, count), ref.ablate(xa, x0, boxes, 0, count))
            t_op = best_of(timed(lambda: ga.ablate(xa, x0, boxes, 0, count)), repeat=a.repeat)
            t_ref = best_of(timed(lambda: ref.ablate(xa, x0, boxes, 0, count)), repeat=a.repeat)
            n_img = a.n * count
            rows.append({"device": device, "op": "ablate", "case": f"{label} ({m} grids)", "per": "images",
                         "compiled /s": f"{n_img / t_op:,.0f}", "reference /s": f"{n_img / t_ref:,.0f}",
                         "speed-up": f"{t_ref / t_op:.1f}x"})
            scores = torch.randn(a.n, m, generator=g).to(device)
            assert torch.equal(ga.scatter_mean(scores, boxes, h, w), grid_scores_to_map(scores, boxes, h, w))
            t_op = best_of(timed(lambda: ga.scatter_mean(scores, boxes, h, w)), repeat=a.repeat)
            t_ref = best_of(timed(lambda: grid_scores_to_map(scores, boxes, h, w)), repeat=a.repeat)
            rows.append({"device": device, "op": "scatter_mean", "case": f"{label} ({m} grids)", "per": "maps",
                         "compiled /s": f"{a.n / t_op:,.0f}", "reference /s": f"{a.n / t_ref:,.0f}",
                         "speed-up": f"{t_ref / t_op:.1f}x"})
        if device in ga.status().window_device_types():
            rows += _window_rows(a, device, timed, g)
    print_table(rows, ["device", "op", "case", "per", "compiled /s", "reference /s", "speed-up"])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
