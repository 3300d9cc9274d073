"""Network dissection end to end: ``advinterp_dissect.dissect`` vs NetDissect-Lite's pipeline.

The baseline is :mod:`netdissect_lite` (this folder): a port of NetDissect-Lite's
``FeatureOperator`` with its own structure -- a ``multiprocessing`` prefetch pool of
``cpu_count()`` workers, the *full* model forward with hooks, every feature kept in a
float64 memmap, the per-unit percentile, and the per-image, per-unit ``tally_job`` loop with
PIL's ``imresize``. Both dissect the same layer of the shipped ``synthetic-cnn`` over the
same Broden export of the embedded world (``--n`` scenes of ``--size`` px, labels at each
``--seg-sizes``; labels smaller than the maps exercise the antialiased shrink), at the same
quantile (0.005), with their defaults otherwise (dissect: batch 32, its own decoding workers
and activation cache; the baseline: batch 128).

Each run is a fresh subprocess (``--repeat`` times, the fastest kept), timed end to end
(both passes, PNG decoding included, nothing cached between runs) with its peak memory:
``peak MB`` = the process's peak resident set (``VmHWM``) minus its resident set before the
call. dissect's peak is measured at ``n/2`` and ``n`` images to show it flat in the number of
images (the baseline's grows: it memory-maps every feature). ``max |dIoU|`` compares the
IoUs of the two when the baseline is given dissect's thresholds (its exact percentile
differs from dissect's streaming one by less than one histogram bin): 0 means equal to the
last bit. With a CUDA device, dissect also runs on it (``GPU s``).

``python benchmarks/dissection.py [--n 400] [--size 64] [--seg-sizes 64 32]
[--layers layer1 layer4] [--repeat 2]``
"""
import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = {"n": 400, "size": 64, "seg_sizes": [64, 32], "layers": ["layer1", "layer4"], "repeat": 2}


def _status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _worker(method, root, layer, out, repeat, device, thresholds):
    import numpy as np
    import torch

    import advinterp
    from advinterp_dissect import dissect

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from netdissect_lite import netdissect_lite

    model = advinterp.get_model("synthetic-cnn").to(device)
    model.activations(torch.rand(2, 3, 64, 64, device=device), [layer], truncate=False)  # warm-up
    base = _status_kb("VmRSS")
    wall = float("inf")
    thr = None if thresholds == "-" else {layer: np.load(thresholds)}
    for _ in range(repeat):  # the fastest of `repeat` runs (the machine may be shared)
        t = time.perf_counter()
        if method == "dissect":
            d = dissect(model, root, [layer], progress=False)
            iou, T = d[layer].iou_by_label(), d[layer].thresholds
        else:
            r = netdissect_lite(model, root, [layer], thresholds=thr)[layer]
            iou, T = r["iou"], r["thresholds"]
        if device == "cuda":
            torch.cuda.synchronize()
        wall = min(wall, time.perf_counter() - t)
    peak = _status_kb("VmHWM")
    np.save(out + ".iou.npy", iou)
    np.save(out + ".thr.npy", T)
    print(json.dumps({"seconds": wall, "peak_mb": max(0, peak - base) / 1024}))


def _run(method, root, layer, out, repeat=1, device="cpu", thresholds="-"):
    cmd = [sys.executable, __file__, "--worker", method, str(root), layer, str(out), str(repeat), device,
           str(thresholds)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{method} {layer} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=DEFAULTS["n"], help="scenes in the export (>= 400 for the target)")
    p.add_argument("--size", type=int, default=DEFAULTS["size"], help="image size (px)")
    p.add_argument("--seg-sizes", type=int, nargs="+", default=DEFAULTS["seg_sizes"], help="label map sizes (px)")
    p.add_argument("--layers", nargs="+", default=DEFAULTS["layers"])
    p.add_argument("--repeat", type=int, default=DEFAULTS["repeat"], help="runs per case; the fastest is kept")
    a = p.parse_args([] if argv is None else argv)
    try:
        import advinterp_dissect  # noqa: F401
    except ImportError:
        print("advinterp-dissect is not installed: skipped")
        return
    import os

    import numpy as np
    import torch

    from advinterp.datasets.broden import export_broden
    from advinterp.datasets.synthetic import SyntheticWorld
    from _util import print_table

    gpu = torch.cuda.is_available()
    print(f"synthetic-cnn, Broden export of the embedded world: {a.n} scenes of {a.size}px, labels at "
          f"{a.seg_sizes} px; quantile 0.005; {os.cpu_count()} CPUs, torch threads={torch.get_num_threads()}"
          f"{', GPU: ' + torch.cuda.get_device_name() if gpu else ', no GPU'}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {}
        for seg in a.seg_sizes:
            roots[seg] = export_broden(tmp / f"b{seg}", SyntheticWorld(size=a.size), n=a.n, split="val", seg_size=seg)
        half = {seg: export_broden(tmp / f"h{seg}", SyntheticWorld(size=a.size), n=a.n // 2, split="val", seg_size=seg)
                for seg in a.seg_sizes}
        for seg, layer in itertools.product(a.seg_sizes, a.layers):
            ours = _run("dissect", roots[seg], layer, str(tmp / "d"), a.repeat)
            ours_half = _run("dissect", half[seg], layer, str(tmp / "dh"), 1)
            ref = _run("netdissect", roots[seg], layer, str(tmp / "r"), a.repeat)
            _run("netdissect", roots[seg], layer, str(tmp / "rt"), 1, thresholds=str(tmp / "d.thr.npy"))
            diff = float(np.abs(np.load(tmp / "d.iou.npy") - np.load(tmp / "rt.iou.npy")).max())
            row = {"labels": f"{seg}px", "layer": layer, "images": a.n,
                   "dissect s": f"{ours['seconds']:.2f}", "NetDissect-Lite s": f"{ref['seconds']:.2f}",
                   "speedup": f"{ref['seconds'] / ours['seconds']:.2f}x",
                   "dissect img/s": f"{a.n / ours['seconds']:.0f}",
                   f"dissect peak MB (n/2, n)": f"{ours_half['peak_mb']:.0f}, {ours['peak_mb']:.0f}",
                   "NetDissect-Lite peak MB": f"{ref['peak_mb']:.0f}", "max |dIoU|": f"{diff:.1e}"}
            if gpu:
                g = _run("dissect", roots[seg], layer, str(tmp / "g"), a.repeat, device="cuda")
                row["GPU s"] = f"{g['seconds']:.2f}"
            rows.append(row)
            print(f"  labels {seg}px {layer}: dissect {ours['seconds']:.2f}s, NetDissect-Lite {ref['seconds']:.2f}s",
                  flush=True)
    print()
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7], sys.argv[8])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main(sys.argv[1:])
