"""The ``advinterp`` command: ``list``, ``run STUDY.toml``, ``report RUN_DIR``, ``demo`` and
``pairs build`` / ``pairs check`` (folders of clean/adversarial pairs)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from .kinds import KINDS
    from .registry import list_components, list_plugins

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
    kinds = [k for k in KINDS if not args.kind or k.name == args.kind]
    for kind in kinds:
        items = list_components(kind.name)
        print(f"\n{kind.plural} ({len(items)}): {kind.doc}")
        if not items:
            print("  (none)")
        wn = max([len(i.name) for i in items] + [4])
        for i in items:
            print(f"  {i.name:<{wn}}  [{i.plugin}]  {i.description}")
    return 0


def _vars(pairs: Sequence[str]) -> dict:
    from .exceptions import ParameterError
    from .study.spec import parse_value

    out = {}
    for item in pairs or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError("advinterp run", "--set", item, "NAME=VALUE (e.g. --set n=48)")
        out[name.strip()] = parse_value(value.strip())
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from .exceptions import ParameterError
    from .study import Study

    if args.resume:
        if args.study is not None:
            raise ParameterError("advinterp run", "STUDY", args.study, "no study file with --resume",
                                 "--resume RUN_DIR reruns the study saved in RUN_DIR (with its --set values); to run "
                                 "another study into that folder, use: advinterp run STUDY --out RUN_DIR.")
        study, out = Study.resume(args.resume, _vars(args.set)), args.resume
    else:
        if args.study is None:
            raise ParameterError("advinterp run", "STUDY", None, "a study file (or --resume RUN_DIR)")
        study, out = Study.from_file(args.study, _vars(args.set)), args.out
    if args.check:
        study.check()
        print(f"{study.spec.path}: OK ({len(study.steps)} steps: {', '.join(s.id for s in study.steps)})")
        return 0
    study.run(out, engine=_engine(args))
    return 0


def _engine(args: argparse.Namespace):
    """``--engine`` as a name, or with ``--address`` the executor configured with it."""
    if args.address is None:
        return args.engine
    from .registry import get_executor

    return get_executor(args.engine, address=args.address)


def _cmd_report(args: argparse.Namespace) -> int:
    from .study.report import report_from_folder

    print(report_from_folder(args.run_dir))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_STUDY, run_demo

    if args.print_study:
        print(DEMO_STUDY.read_text(), end="")
        return 0
    run_demo(out=args.out, n=args.n, n_attack=args.n_attack, seed=args.seed, engine=_engine(args))
    return 0


def _json_arg(option: str, text: str | None) -> dict:
    """``--params``-style JSON object (``{}`` when not given)."""
    import json

    from .exceptions import ParameterError

    example = "a JSON object, e.g. '{\"eps\": 0.03}'"
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ParameterError("advinterp pairs build", option, text, example, f"({e})") from None
    if not isinstance(value, dict):
        raise ParameterError("advinterp pairs build", option, text, example)
    return value


def _cmd_pairs_build(args: argparse.Namespace) -> int:
    from .datasets.pairs_writer import build_pairs, read_manifest

    pairs = build_pairs(args.attack, args.model, args.data, args.out, params=_json_arg("--params", args.params),
                        model_params=_json_arg("--model-params", args.model_params),
                        data_params=_json_arg("--data-params", args.data_params), shard_size=args.shard_size,
                        seed=args.seed, n=args.n, start=args.start, progress=not args.no_progress)
    m = read_manifest(args.out) or {}
    rate = m.get("success_rate")
    print(f"{args.out}: {len(pairs)} pairs ({m.get('n')} recorded in {len(m.get('shards', {}))} shard(s)); "
          f"attack success on the 8-bit images: {'n/a' if rate is None else f'{rate:.3f}'}")
    return 0


def _cmd_pairs_check(args: argparse.Namespace) -> int:
    import warnings

    from .datasets.pairs import PairsFolder
    from .datasets.pairs_writer import read_manifest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped files are printed below
        pairs = PairsFolder(args.dir, size="original", clean=args.clean, adversarial=args.adversarial,
                            labels=args.labels, match=args.match, unmatched="skip")
    lost = pairs.skipped
    print(f"{args.dir}: {len(pairs)} matched pair(s) (match={args.match!r}); "
          f"{len(lost['clean'])} clean and {len(lost['adversarial'])} adversarial image(s) without a partner")
    for side in ("clean", "adversarial"):
        if lost[side]:
            more = f" ... ({len(lost[side]) - 5} more)" if len(lost[side]) > 5 else ""
            print(f"  unmatched {side}: {', '.join(lost[side][:5])}{more}")
    named = f" of {len(pairs.classes)} named" if pairs.classes is not None else ""
    print(f"  labels: {len(set(pairs.targets))} class(es) in use{named}")
    m = read_manifest(args.dir) if args.clean is None and args.adversarial is None else None
    if m is not None:
        rate = m.get("success_rate")
        print(f"  manifest: attack {m.get('attack')} {m.get('params')}, model {m.get('model')} "
              f"({str(m.get('model_fingerprint'))[:12]}), seed {m.get('seed')}, data {m.get('data')}")
        print(f"  shards: {len(m.get('shards', {}))} done (size {m.get('shard_size')}), {m.get('n')} pairs, "
              f"attack success on the 8-bit images {'n/a' if rate is None else f'{rate:.3f}'}")
    return 1 if lost["clean"] or lost["adversarial"] else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .kinds import KIND_NAMES

    p = argparse.ArgumentParser(prog="advinterp", description="Interpret adversarial examples.")
    p.add_argument("--version", action="version", version=f"advinterp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("list", help="plugins (loaded / unavailable and why) and components by kind")
    pl.add_argument("kind", nargs="?", choices=list(KIND_NAMES))
    pl.set_defaults(func=_cmd_list)

    pr = sub.add_parser("run", help="run a study file into a (resumable) run folder with a report")
    pr.add_argument("study", nargs="?", help="the study file (TOML); see docs/studies.md")
    pr.add_argument("--out", default=None, help="run folder (default runs/<title>-<time>); results already "
                                                "there are reused")
    pr.add_argument("--resume", metavar="RUN_DIR", default=None,
                    help="continue the run in RUN_DIR: its saved study.toml with that run's --set values")
    pr.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                    help="override a [vars] entry (or seed, shard_size); repeatable")
    pr.add_argument("--engine", default="local", help="shard executor (local; plugins add others, e.g. ray)")
    pr.add_argument("--address", default=None, help="the engine's cluster (--engine ray: a Ray head's address; "
                                                   "default $RAY_ADDRESS, else a local cluster); see docs/scale-out.md")
    pr.add_argument("--check", action="store_true", help="check the study (names, params, files, models) and stop")
    pr.set_defaults(func=_cmd_run)

    prep = sub.add_parser("report", help="rebuild index.html and summary.json of a run folder from its results")
    prep.add_argument("run_dir")
    prep.set_defaults(func=_cmd_report)

    pd = sub.add_parser("demo", help="run the shipped default study on the embedded world and models")
    pd.add_argument("--out", default=None, help="run directory (default runs/advinterp_demo-<time>)")
    pd.add_argument("--n", type=int, default=1000, help="test scenes (default 1000)")
    pd.add_argument("--n-attack", type=int, default=200, help="scenes attacked with PGD per model (default 200)")
    pd.add_argument("--seed", type=int, default=0)
    pd.add_argument("--engine", default="local", help="shard executor (local; plugins add others, e.g. ray)")
    pd.add_argument("--address", default=None, help="the engine's cluster (--engine ray: a Ray head's address)")
    pd.add_argument("--print-study", action="store_true", help="print the demo's study file and exit")
    pd.set_defaults(func=_cmd_demo)

    pp = sub.add_parser("pairs", help="folders of clean/adversarial pairs: build one with an attack, or check one")
    psub = pp.add_subparsers(dest="pairs_command", required=True)
    pb = psub.add_parser("build", help="attack a dataset and write DIR/clean, DIR/adversarial (8-bit PNG) and "
                                      "DIR/manifest.json; resumable by shard")
    pb.add_argument("--attack", required=True, help="a registered attack (advinterp list attack)")
    pb.add_argument("--params", default=None, help="the attack's parameters as JSON, e.g. '{\"eps\": 0.03}'")
    pb.add_argument("--model", required=True, help="a registered model (advinterp list model)")
    pb.add_argument("--model-params", default=None, help="the model's parameters as JSON")
    pb.add_argument("--data", required=True, help="a registered dataset (advinterp list dataset)")
    pb.add_argument("--data-params", default=None,
                    help="the dataset's parameters as JSON, e.g. '{\"n\": 64, \"split\": \"test\"}'")
    pb.add_argument("--out", required=True, help="the pairs folder (a build of the same run there is resumed)")
    pb.add_argument("--shard-size", type=int, default=64, help="images per shard, the unit of resumption (default 64)")
    pb.add_argument("--seed", type=int, default=0, help="seeds the attack and random targets (default 0)")
    pb.add_argument("--n", type=int, default=None, help="how many images (default all)")
    pb.add_argument("--start", type=int, default=0, help="first image (default 0)")
    pb.add_argument("--no-progress", action="store_true", help="no progress bar")
    pb.set_defaults(func=_cmd_pairs_build)
    pc = psub.add_parser("check", help="count a folder's pairs, list files without a partner, summarise its "
                                      "manifest.json (exit 1 when some file has no partner)")
    pc.add_argument("dir", help="the pairs folder (holding clean/ and adversarial/, or the folder the relative "
                                "paths below are taken in)")
    pc.add_argument("--clean", default=None, help="the clean images' folder (default DIR/clean)")
    pc.add_argument("--adversarial", default=None, help="the adversarial images' folder (default DIR/adversarial)")
    pc.add_argument("--labels", default=None, help="a labels file ('name label' lines, or CSV file,label)")
    pc.add_argument("--match", default="stem", choices=["stem", "path", "name"],
                    help="how files pair: stem (default: same relative path, any extension), path, name")
    pc.set_defaults(func=_cmd_pairs_check)
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
