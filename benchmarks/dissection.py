"""Network dissection: ``advinterp_dissect.dissect`` vs the per-unit Python-loop reference.

Both dissect one layer of the shipped ``synthetic-cnn`` over a Broden export of the embedded
world (64x64 images, labels at 64x64), at two dataset sizes. The reference
(``advinterp_dissect.reference.dissect_reference``) is NetDissect-Lite's algorithm: it keeps
every activation for an exact quantile and tallies one image and one unit at a time; ours
streams both passes (fixed-size histogram quantiles, batched mask x label products).

Each (method, layer, size) runs in a fresh subprocess (``--repeat`` times, the fastest kept)
so that its peak memory can be read:
``peak MB`` = the process's peak resident set (``VmHWM``) minus its resident set just
before the call (model loaded, one warm-up forward done). Printed: images/second (both
passes, data loading included), peak MB, the speed ratio in wall time and in process CPU
time (steadier on a shared machine), and the largest IoU difference between the two results
(from the streaming thresholds' tolerance only). Our peak is set by ``batch_size`` (the
forward pass, the label and mask tensors of one batch: about 2 MB per image of the batch at
64x64 plus a fixed ~70 MB of first-use allocations), not by the number of images; the
reference's grows with it (every activation is kept).

``python benchmarks/dissection.py [--sizes 100 400] [--layers layer1 layer4] [--quantiles 0.005 0.05]
[--batch-size 32] [--repeat 2]``
"""
import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = {"sizes": [100, 400], "layers": ["layer1", "layer4"], "batch_size": 32, "repeat": 2,
            "quantiles": [0.005, 0.05]}


def _status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _worker(method, root, layer, batch_size, out, repeat, quantile):
    import numpy as np
    import torch

    import advinterp
    from advinterp_dissect import dissect
    from advinterp_dissect.reference import dissect_reference

    model = advinterp.get_model("synthetic-cnn")
    model.activations(torch.rand(2, 3, 64, 64), [layer])  # warm-up (thread pools, allocator)
    base = _status_kb("VmRSS")
    wall = cpu = float("inf")
    for _ in range(repeat):  # the fastest of `repeat` runs (the machine may be shared)
        t, c = time.perf_counter(), time.process_time()
        if method == "dissect":
            d = dissect(model, root, [layer], batch_size=batch_size, quantile=quantile, progress=False)
        else:
            d = dissect_reference(model, root, [layer], quantile=quantile)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    peak = _status_kb("VmHWM")
    np.save(out, d[layer].iou())
    print(json.dumps({"seconds": wall, "cpu": cpu, "peak_mb": max(0, peak - base) / 1024, "n": d.n_images}))


def _run(method, root, layer, batch_size, out, repeat=1, quantile=0.005):
    cmd = [sys.executable, __file__, "--worker", method, str(root), layer, str(batch_size), str(out), str(repeat),
           repr(quantile)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=DEFAULTS["sizes"])
    p.add_argument("--layers", nargs="+", default=DEFAULTS["layers"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--repeat", type=int, default=DEFAULTS["repeat"], help="runs per case; the fastest is kept")
    p.add_argument("--quantiles", type=float, nargs="+", default=DEFAULTS["quantiles"],
                   help="top quantiles T_k (0.005 NetDissect's, 0.05 the PSE paper's text)")
    a = p.parse_args([] if argv is None else argv)
    try:
        import advinterp_dissect  # noqa: F401
    except ImportError:
        print("advinterp-dissect is not installed: skipped")
        return
    import numpy as np
    import torch

    from advinterp.datasets.broden import export_broden
    from advinterp.datasets.synthetic import SyntheticWorld
    from _util import print_table

    print(f"synthetic-cnn, Broden export of the embedded world (64x64, labels 64x64), batch {a.batch_size}, "
          f"torch threads={torch.get_num_threads()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {n: export_broden(tmp / f"broden{n}", SyntheticWorld(size=64), n=n, split="val") for n in a.sizes}
        for q, layer, n in itertools.product(a.quantiles, a.layers, a.sizes):
            res = {m: _run(m, roots[n], layer, a.batch_size, tmp / f"{m}.npy", a.repeat, q)
                   for m in ("dissect", "reference")}
            diff = float(np.abs(np.load(tmp / "dissect.npy") - np.load(tmp / "reference.npy")).max())
            ours, ref = res["dissect"], res["reference"]
            rows.append({"quantile": q, "layer": layer, "images": n,
                         "dissect img/s": f"{n / ours['seconds']:.1f}", "reference img/s": f"{n / ref['seconds']:.1f}",
                         "speedup": f"{ref['seconds'] / ours['seconds']:.1f}x",
                         "speedup (CPU s)": f"{ref['cpu'] / ours['cpu']:.1f}x",
                         "dissect peak MB": f"{ours['peak_mb']:.0f}", "reference peak MB": f"{ref['peak_mb']:.0f}",
                         "max |dIoU|": f"{diff:.1e}"})
            print(f"  q={q} {layer} n={n}: dissect {ours['seconds']:.2f}s, reference {ref['seconds']:.2f}s", flush=True)
    print()
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], int(sys.argv[7]),
                float(sys.argv[8]))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main(sys.argv[1:])
