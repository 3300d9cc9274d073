"""The ``advinterp`` command: ``advinterp list`` and ``advinterp demo``."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import KINDS, list_components, list_plugins

    plugins = list_plugins()
    print("plugins:")
    w = max([len(p.name) for p in plugins] + [8])
    for p in plugins:
        state = "loaded" if p.loaded else ("disabled" if p.disabled else "UNAVAILABLE")
        print(f"  {p.name:<{w}}  {state:<11}  {p.source}")
        if not p.loaded:
            print(f"  {'':<{w}}  reason: {p.error}")
            if p.hint:
                print(f"  {'':<{w}}  fix:    {p.hint}")
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        items = list_components(kind)
        print(f"\n{kind}s ({len(items)}):")
        if not items:
            print("  (none)")
        wn = max([len(i.name) for i in items] + [4])
        for i in items:
            print(f"  {i.name:<{wn}}  [{i.plugin}]  {i.description}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, n=args.n, n_attack=args.n_attack, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="advinterp", description="Interpret adversarial examples.")
    p.add_argument("--version", action="version", version=f"advinterp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("list", help="plugins (loaded / unavailable and why) and components by kind")
    pl.add_argument("kind", nargs="?", choices=["attack", "explainer", "analyzer", "dataset", "model"])
    pl.set_defaults(func=_cmd_list)
    pd = sub.add_parser("demo", help="run the main job on the embedded world and shipped models")
    pd.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    pd.add_argument("--n", type=int, default=1000, help="test scenes (default 1000)")
    pd.add_argument("--n-attack", type=int, default=200, help="scenes attacked (default 200)")
    pd.add_argument("--seed", type=int, default=0)
    pd.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .exceptions import AdvinterpError

    try:
        return args.func(args)
    except AdvinterpError as e:
        print(f"advinterp: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
