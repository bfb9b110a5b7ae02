"""`python -m harness <command>`: the harness's command line.

Each subcommand is one `_add_<name>` function that declares its arguments and sets a handler; add it to
SUBCOMMANDS. Handlers return an exit code; a HarnessError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.errors import HarnessError

# Exit code for an expected failure the user can act on (a HarnessError); argparse also uses 2 for usage errors.
EXIT_HARNESS_ERROR = 2


def _add_mirror(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mirror",
        help="build the offline stand-in repository from PyPI's yolov5 releases",
        description="Build a local git repository that stands in for ultralytics/yolov5 when GitHub is "
        "unreachable: one commit per PyPI yolov5 release, tagged like the upstream tag it stands in for.",
    )
    parser.add_argument("--dest", type=Path, default=None, help="mirror directory (default: <cache>/mirror)")
    parser.set_defaults(handler=_run_mirror)


def _run_mirror(args: argparse.Namespace) -> int:
    from harness import mirror

    dest = mirror.build_mirror(args.dest if args.dest is not None else mirror.default_mirror_dir())
    tags = ", ".join(f"{s.tag} ({s.distribution})" for s in mirror.STANDINS)
    print(f"mirror: {len(mirror.STANDINS)} stand-ins tagged at {dest}: {tags}")
    return 0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the matrix cells of one env (what `nox -s matrix` calls per env)",
        description="Check out each ref, patch Detect per variant, export with the ref's own script in the env's "
        "venv, verify counts, shapes and parity, and write one result JSON per cell under <reports>/results.",
    )
    parser.add_argument("--env", required=True, help="env name from matrix.toml [envs.NAME]")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"), help="config file (default: matrix.toml)")
    parser.add_argument("--repo", default=None, help="YOLOv5 git URL or path (overrides $YOLOV5_REPO and the file)")
    parser.add_argument("--refs", type=_csv, default=None, help="comma-separated subset of the configured refs")
    parser.add_argument("--variants", type=_csv, default=None, help="subset of variants, e.g. 1,3")
    parser.add_argument("--formats", type=_csv, default=None, help="subset of formats, e.g. onnx,torchscript")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="results directory (default: reports)")
    parser.add_argument("--force", action="store_true", help="rerun cells whose inputs did not change")
    parser.add_argument("--fetch", action="store_true", help="fetch the repository before resolving refs")
    parser.add_argument("--jobs", type=int, default=None, help="batches run side by side (default: CPU count)")
    parser.set_defaults(handler=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    from harness import config as config_mod
    from harness import run
    from harness.paths import cache_dir

    config = config_mod.load_config(args.config, repo=args.repo)
    if args.env not in config.envs:
        raise HarnessError(f"{args.config}: no env '{args.env}' — choose one of: {', '.join(config.envs)}")
    opts = run.Options(reports=args.reports, cache=cache_dir(), refs=args.refs, variants=args.variants,
                       formats=args.formats, force=args.force, fetch=args.fetch)
    if args.jobs:
        opts.jobs = args.jobs
    done = run.run_env(config, args.env, opts, log=run.log_stderr)
    print(f"[{args.env}] {len(done)} cells: {run.summary(done)}; results in {args.reports / 'results'}")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _add_mirror,
    _add_run,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered (separate from main() so tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="yolov5-export-matrix: YOLOv5 ref x torch env export checks."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand, and turn a HarnessError into a one-line message.

    Args:
        argv: Arguments without the program name; default sys.argv[1:].

    Returns:
        The process exit code: the handler's, or 2 after a HarnessError.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # progress goes to stderr
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR


if __name__ == "__main__":
    sys.exit(main())
