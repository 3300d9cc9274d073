"""The spread over seeds of the PSE paper's findings (issue 13, item 3).

Runs ``examples/studies/xu.toml`` once per seed (other scenes, other random targets, other
PGD starts), then sets, for every finding of the ``xu2019`` comparison, the spread of its gap
over the seeds (standard deviation) against the standard error each run reports from its own
images. When the two agree, one run's standard error is an honest measure of how much the
ordering would move with other images, and the study's sizes (``n_targeted``, ``n_pse``, ...)
are large enough for the gaps whose verdict is "reproduced".

    python examples/xu_seeds.py --seeds 0 1 2 --out runs/xu-seeds [--set n_targeted=96 ...]

Runs are folders ``<out>/seed-<k>``; an existing one is reused (the study layer recomputes
nothing that is there), so the script can be stopped and run again.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from advinterp.study import Study

STUDY = Path(__file__).resolve().parent / "studies" / "xu.toml"


def _num(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/xu-seeds")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a [vars] entry")
    a = p.parse_args(argv)
    overrides = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        overrides[k] = int(v) if v.lstrip("-").isdigit() else v
    rows: dict[str, list[tuple[float, float, str]]] = {}
    for seed in a.seeds:
        out = Path(a.out) / f"seed-{seed}"
        Study.from_file(STUDY, {**overrides, "seed": seed}).run(out, log=lambda m: print(f"[seed {seed}] {m}"))
        for r in json.loads((out / "summary.json").read_text())["papers"]["xu2019"]:
            rows.setdefault(r["finding"], []).append((_num(r["gap"]), _num(r["SE"]), r["verdict"]))
    print(f"\n{'finding':<78} {'mean gap':>9} {'SD over seeds':>13} {'mean SE':>8}  verdicts")
    for finding, got in rows.items():
        gaps = [g for g, _, _ in got if math.isfinite(g)]
        ses = [s for _, s, _ in got if math.isfinite(s)]
        mean = sum(gaps) / len(gaps) if gaps else math.nan
        sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)) if len(gaps) > 1 else math.nan
        se = sum(ses) / len(ses) if ses else math.nan
        verdicts = ", ".join(v for _, _, v in got)
        print(f"{finding[:78]:<78} {mean:>+9.3g} {sd:>13.2g} {se:>8.2g}  {verdicts}")


if __name__ == "__main__":
    main()
