"""Core benchmarks: synthetic-world generation and ModelAdapter overhead.

* generation: 10 000 scenes (64x64) vs the issue's budget of one minute;
* Broden export: scenes/second writing the real on-disk format;
* adapter: ``ModelAdapter.logits`` (normalisation + eval-mode guarantee) and a full
  ``preserved()`` block vs a raw ``module(normalised x)`` forward on the shipped model.
"""
import tempfile
import time

import torch

import advinterp
from advinterp.datasets.broden import export_broden
from advinterp.datasets.synthetic import SyntheticWorld
from _util import best_of, print_table


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    world = SyntheticWorld(seed=0)
    t = time.perf_counter()
    world.generate(10_000, "train")
    gen = time.perf_counter() - t
    rows.append({"what": "generate 10k scenes", "seconds": f"{gen:.2f}", "reference": "60 s budget",
                 "ratio": f"{gen / 60:.3f}x of budget"})
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        export_broden(d, world, n=500)
        exp = time.perf_counter() - t
    rows.append({"what": "Broden export 500 scenes", "seconds": f"{exp:.2f}", "reference": "generation of 500",
                 "ratio": f"{exp / (gen / 20):.1f}x"})

    model = advinterp.get_model("synthetic-cnn")
    x = torch.rand(256, 3, 64, 64)
    xn = model.normalize(x)
    with torch.no_grad():
        raw = best_of(lambda: model.module(xn))
        ad = best_of(lambda: model.logits(x))

        def in_preserved():
            with model.preserved(freeze=True):
                model.logits(x)

        pres = best_of(in_preserved)
    rows.append({"what": "raw forward, batch 256", "seconds": f"{raw:.4f}", "reference": "-", "ratio": "1.00x"})
    rows.append({"what": "adapter.logits, batch 256", "seconds": f"{ad:.4f}", "reference": "raw forward",
                 "ratio": f"{ad / raw:.2f}x"})
    rows.append({"what": "preserved()+logits, batch 256", "seconds": f"{pres:.4f}", "reference": "raw forward",
                 "ratio": f"{pres / raw:.2f}x"})
    print_table(rows, ["what", "seconds", "reference", "ratio"])


if __name__ == "__main__":
    main()
