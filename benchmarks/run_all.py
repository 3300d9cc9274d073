"""Run every benchmark in this folder (``make bench``). Each prints its own table with ratios
against a reference measured in the same run."""
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv):
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("run_all", "_util"))
    for name in names:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(HERE))
        spec.loader.exec_module(mod)
        if not hasattr(mod, "main"):  # a library of the benchmarks (e.g. the NetDissect-Lite port)
            continue
        print(f"\n=== benchmarks/{name}.py ===", flush=True)
        t = time.perf_counter()
        mod.main()
        print(f"({time.perf_counter() - t:.1f}s)")


if __name__ == "__main__":
    main(sys.argv[1:])
