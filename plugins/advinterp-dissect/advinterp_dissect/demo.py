"""The dissection step of ``advinterp demo``: export, dissect, attack, test, draw (A8-A10)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from advinterp.report import Section

__all__ = ["demo_dissection"]


def demo_dissection(out: str | Path, model: Any, seed: int = 0, n: int = 200, size: int = 64,
                    n_pairs: int = 64, n_draws: int = 2000, log: Callable[[str], None] = print,
                    summary: dict | None = None) -> Section:
    """Run A8-A10 on ``model`` over the embedded world and return the report section.

    Exports ``n`` validation scenes of the embedded world as a Broden dataset under
    ``out/dissection/broden``, dissects every feature stage of ``model``, attacks the first
    ``n_pairs`` of the same images with untargeted PGD (l_inf 8/255, 10 x 2/255, random
    start), measures the unit sensitivity on those pairs and runs the significance test
    (``n_draws`` draws), then writes
    ``out/dissection/tally_<layer>.csv``, ``out/results/{dissection,unit_sensitivity}.pt``,
    the figures and ``out/dissection/summary.json`` (also merged into ``summary`` when given).
    """
    from advinterp.datasets.broden import BrodenDataset, export_broden
    from advinterp.datasets.synthetic import SyntheticWorld

    from .analysis import default_attack, sensitivity_analysis
    from .dissection import dissect, images_to_tensor
    from .report import dissection_section
    from .views import choose_images, choose_units, detector_views

    out = Path(out)
    t0 = time.perf_counter()
    root = export_broden(out / "dissection" / "broden", SyntheticWorld(size=size, seed=seed), n=n, split="val")
    ds = BrodenDataset(root)
    d = dissect(model, ds)
    t1 = time.perf_counter()
    log(f"dissection: {n} Broden scenes, layers {', '.join(d.layers)} ({t1 - t0:.1f}s): " + "; ".join(
        f"{r['layer']} {r['detectors']}/{r['units']} detectors" for r in d.rows()))
    x = torch.cat([images_to_tensor(images, torch.device("cpu"), torch.float32) for images in ds.image_batches(64)])
    batch = default_attack().generate(model, x[:n_pairs])
    analysis = sensitivity_analysis(model, d, batch, n_draws=n_draws, seed=seed)
    t2 = time.perf_counter()
    log(f"unit sensitivity: PGD success {analysis.success_rate:.2f} on {len(batch)} pairs; p-values " + "; ".join(
        f"{name} " + ", ".join(f"N={int(k)}: {p:.3g}" for k, p in zip(ls.test.ns, ls.test.p_values))
        for name, ls in analysis.layers.items()) + f" ({t2 - t1:.1f}s)")
    units = choose_units(d, per_layer=2, sensitivity={k: v.sensitivity for k, v in analysis.layers.items()})
    pick = torch.as_tensor(choose_images(model, d, batch.x0, units, n=2))
    views = detector_views(model, d, batch.x0[pick], batch.x_adv[pick], units=units)
    tallies = d.write_tally(out / "dissection")
    d.save(out / "results" / "dissection.pt")
    analysis.save(out / "results" / "unit_sensitivity.pt")
    result = {"layers": d.rows(), "p_values": analysis.rows(), "detectors_top_n": analysis.detector_rows(),
               "tally": {k: str(p.relative_to(out)) for k, p in tallies.items()},
               "seconds": round(time.perf_counter() - t0, 2)}
    (out / "dissection" / "summary.json").write_text(json.dumps(result, indent=2))
    if summary is not None:
        summary.update(result)
    section = dissection_section(out, d, analysis, views)
    section.text.append("NetDissect-Lite tally files: " + ", ".join(result["tally"].values()) + ".")
    return section
