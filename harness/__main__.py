"""`yolov5-export-matrix <command>` (from a checkout: `python -m harness <command>`): the harness's command line.

Each subcommand is one `_add_<name>` function that declares its arguments and sets a handler; add it to
SUBCOMMANDS. Handlers return an exit code (EXIT_CODES); a HarnessError becomes one line on stderr and exit code 2,
any other exception a traceback and exit code 3, so that 1 keeps the one meaning a command gives it (the gate and
upgrade: a failing change) and a crash is never read as a verdict.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from harness import __version__, prog
from harness.errors import EnvError, HarnessError

if TYPE_CHECKING:
    from harness.config import Config, SandboxMode, TargetSpec
    from harness.results.model import CellResult

# Exit code for an expected failure the user can act on (a HarnessError); argparse also uses 2 for usage errors.
EXIT_HARNESS_ERROR = 2
EXIT_INTERNAL_ERROR = 3  # an exception the harness did not expect (a bug): traceback on stderr
EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by SIGINT

EXIT_CODES = f"""exit codes:
  0    done; for `run` also when cells are broken: a broken cell is a result (read it in the report, gate it)
  1    `gate`: a failing change against the baseline; `upgrade`: a failing group of changes from A to B
  {EXIT_HARNESS_ERROR}    a usage or config error, or an env that cannot be built: one line on stderr
  {EXIT_INTERNAL_ERROR}    an internal error (a bug in the harness): traceback on stderr
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM); results saved so far are kept"""

# Each subcommand's help ends with its own exit codes (exit_codes): what 0 and 1 mean where they differ from "done".
EXIT_0 = {
    "run": "every cell ran, also when some are broken: a broken cell is a result (read it in the report, gate it)",
    "gate": "no failing change against the baseline (or the baseline was written)",
    "upgrade": "no failing group of changes from A to B",
    "init": "the starter config was written",
}
EXIT_1 = {
    "gate": "a failing change against the baseline: the table says which",
    "upgrade": "failing groups of changes: the answer says which, their first commit and the edits to make",
}


def exit_codes(command: str) -> str:
    """The exit codes section of ``command``'s help."""
    lines = [f"  0    {EXIT_0.get(command, 'done')}"]
    lines += [f"  1    {EXIT_1[command]}"] if command in EXIT_1 else []
    lines += [f"  {EXIT_HARNESS_ERROR}    a usage or config error, or an env that cannot be built: one line on stderr",
              f"  {EXIT_INTERNAL_ERROR}    an internal error (a bug in the harness): traceback on stderr",
              f"  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM); results saved so far are kept"]
    return "exit codes:\n" + "\n".join(lines)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but keeps the exit codes table's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit codes:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_init(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "init", help="write a commented starter matrix.toml here (never over an existing one)",
        description="Write a starter config: upstream YOLOv5, two refs, variants native and 3, ONNX and TorchScript, "
        "one env (torch 2.14 on Python 3.11), the sandbox on auto; every key commented. Refuses to overwrite a file.")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"),
                        help="where to write it (default: matrix.toml)")
    parser.set_defaults(handler=_run_init)


STARTER = Path(__file__).parent / "starter.toml"


def _run_init(args: argparse.Namespace) -> int:
    path: Path = args.config
    if path.exists():
        raise HarnessError(f"init: {path} already exists — edit it, or pass --config OTHER.toml to write a new one")
    try:
        with path.open("x", encoding="utf-8") as fh:  # "x": never over a file that appeared meanwhile
            fh.write(STARTER.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HarnessError(f"init: cannot write {path} ({exc.strerror or exc}) — pass --config with a writable "
                           f"path") from None
    config = "" if path == Path("matrix.toml") else f" --config {path}"
    print(f"init: wrote {path} — edit it, then run `{prog.command('run --env all' + config)}` and open "
          f"reports/index.html")
    return 0


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
    from harness.sources import mirror

    dest = mirror.build_mirror(args.dest if args.dest is not None else mirror.default_mirror_dir())
    tags = ", ".join(f"{s.tag} ({s.distribution})" for s in mirror.STANDINS)
    print(f"mirror: {len(mirror.STANDINS)} stand-ins tagged at {dest}: {tags}")
    return 0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the matrix cells of one env, a list of envs or all (`nox -s matrix` calls it per env)",
        description="Check out each ref, patch Detect per variant, export with the ref's own script in the env's "
        "venv, verify counts, shapes and parity, and write one result JSON per cell under <reports>/results. "
        "Exits 0 when every cell ran, also when some are broken: verdicts are results, not errors (see `report` "
        "and `gate`); 2 when the env or the selection cannot run.",
    )
    parser.add_argument("--env", required=True, type=_csv, metavar="ENV,...|all",
                        help="env names from matrix.toml [envs.NAME], comma-separated, or `all` (in the file's order)")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"), help="config file (default: matrix.toml)")
    parser.add_argument("--repo", default=None, help="YOLOv5 git URL or path (overrides $YOLOV5_REPO and the file)")
    parser.add_argument("--refs", type=_csv, default=None, help="comma-separated subset of the configured refs")
    parser.add_argument("--variants", type=_csv, default=None, help="subset of variants, e.g. 1,3")
    parser.add_argument("--formats", type=_csv, default=None, help="subset of formats, e.g. onnx,torchscript")
    parser.add_argument("--profile", default=None, metavar="VENDOR",
                        help="run what a vendor's guide does instead of [matrix] variants and formats, on its target "
                             "when the harness has it: sophgo (variants 1,3,4; onnx, onnx-dynamic, torchscript; "
                             "tpu-mlir), rockchip (npu; onnx; rknn)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="results directory (default: reports)")
    parser.add_argument("--force", action="store_true", help="rerun cells whose inputs did not change")
    parser.add_argument("--fetch", action="store_true", help="fetch the repository before resolving refs")
    parser.add_argument("--jobs", type=int, default=None, help="batches run side by side (default: CPU count)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads per batch for torch and ONNX Runtime (default: the CPU count shared "
                             "among --jobs; 0: the libraries' own default)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="run only shard K of N (same split on every machine; merge with `report`)")
    parser.add_argument("--exhaustive", action="store_true",
                        help="search workarounds one at a time in every cell, even where another variant of the "
                             "same ref, in this run or an earlier one in this env, already found the chain that works")
    _add_targets_arg(parser, "after each env's cells, check them on these [targets.NAME] (default: the enabled ones; "
                             "`none` for none)")
    parser.add_argument("--keep-artifacts", choices=("failed", "all", "none"), default=None,
                        help="whose exported files stay after the checks that read them (default: [artifacts] keep, "
                             "`failed`: those of broken and error cells)")
    _add_sandbox_arg(parser)
    parser.set_defaults(handler=_run_run)


def _add_targets_arg(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--targets", type=_csv, default=None, metavar="NAME,...", help=text)


def _chosen_targets(config: Config, names: list[str] | None) -> dict[str, TargetSpec]:
    """The [targets.NAME] specs ``--targets`` names (the enabled ones when not given); one line for a wrong name."""
    from harness.config import TargetSpec
    from harness.targets.toolkits import TOOLKITS

    if names is None:
        return {name: spec for name, spec in config.targets.items() if spec.enabled}
    if names == ["none"]:
        return {}
    known = [*TOOLKITS, "tpu-mlir"]
    for name in names:
        if name == "tpu-mlir":
            raise HarnessError(f"--targets: tpu-mlir has its own command: {prog.command('compile')}")
        if name not in TOOLKITS:
            raise HarnessError(f"--targets: unknown target {name!r} — use one of {', '.join(known)}")
    return {name: config.targets.get(name) or TargetSpec(name=name, options=tuple(TOOLKITS[name].defaults.items()))
            for name in names}


def _with_profile(config: Config, name: str | None) -> tuple[Config, list[str] | None]:
    """``config`` running a vendor profile's variants and formats (harness/patch/profiles.py), and the targets it
    asks for (None: the config's enabled ones)."""
    if name is None:
        return config, None
    from dataclasses import replace

    from harness import config as config_mod
    from harness.patch.profiles import PROFILES
    from harness.targets.toolkits import TOOLKITS

    profile = PROFILES.get(name)
    if profile is None:
        raise HarnessError(f"--profile: unknown vendor profile {name!r} — {config_mod.did_you_mean(name, PROFILES)}")
    print(f"profile {name}: {profile.vendor}: variants {', '.join(profile.variants)}, formats "
          f"{', '.join(profile.formats)}, target {profile.target} (from {profile.guide})",
          file=sys.stderr)
    if profile.target not in TOOLKITS:
        print(f"profile {name}: its target {profile.target} runs after the matrix: {prog.command('compile')}",
              file=sys.stderr)
    return (replace(config, variants=profile.variants, formats=profile.formats),
            [profile.target] if profile.target in TOOLKITS else None)


def _add_sandbox_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sandbox", choices=("auto", "required", "off"), default=None,
                        help="override [limits] sandbox; `required` refuses to run without the box (CI on forks)")


def _with_sandbox(config: Config, mode: str | None) -> Config:
    """``config`` with [limits] sandbox replaced by ``--sandbox`` when given."""
    if not mode:
        return config
    from dataclasses import replace

    return replace(config, limits=replace(config.limits, sandbox=cast("SandboxMode", mode)))


def _run_run(args: argparse.Namespace) -> int:
    from harness import config as config_mod
    from harness.paths import cache_dir
    from harness.results import model as results
    from harness.run import artifacts
    from harness.run import matrix as run

    config = _with_sandbox(config_mod.load_config(args.config, repo=args.repo), args.sandbox)
    config, profile_targets = _with_profile(config, args.profile)
    envs = list(config.envs) if args.env == ["all"] else args.env
    unknown = [env for env in envs if env not in config.envs]
    if unknown or not envs:
        raise HarnessError(f"{args.config}: no env {', '.join(map(repr, unknown)) or 'given'} — choose from "
                           f"{', '.join(config.envs)}, or `all`")
    opts = run.Options(reports=args.reports, cache=cache_dir(), refs=args.refs, variants=args.variants,
                       formats=args.formats, force=args.force, fetch=args.fetch, learn=not args.exhaustive)
    if args.jobs:
        opts.jobs = args.jobs
    opts.threads = args.threads
    if args.shard:
        from harness.run.shard import parse_shard

        opts.shard = parse_shard(args.shard)
    targets = _chosen_targets(config, args.targets if args.targets is not None else profile_targets)
    failed: list[str] = []
    for env in envs:
        try:
            done = run.run_env(config, env, opts, log=run.log_stderr)
            if targets:
                from harness.targets.check import run_targets

                run_targets(targets, args.reports, opts.cache, cells={r.cell for r in done}, force=args.force,
                            log=run.log_stderr, sandbox_mode=config.limits.sandbox, jobs=opts.jobs)
            if not config.compile.enabled:  # else tpu-mlir still reads the ONNX files: `compile` prunes after it
                artifacts.prune([results.result_path(args.reports, r.cell) for r in done],
                                args.keep_artifacts or config.artifacts.keep, log=run.log_stderr,
                                store=artifacts.store_dir(opts.cache))
        except EnvError as exc:  # this env cannot be built: the others still run (a config error stops them all)
            if len(envs) == 1:
                raise
            print(f"error: [{env}] {exc}", file=sys.stderr)
            failed.append(env)
            continue
        print(f"[{env}] {len(done)} cells: {run.summary(done)}; results in {args.reports / 'results'}")
    if failed:
        raise HarnessError(f"{len(failed)} of {len(envs)} envs could not run ({', '.join(failed)}): see the error "
                           f"lines above; the other envs' results are saved")
    return 0


def _add_results_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="reports directory; every results/ folder below it is read (default: reports)")
    parser.add_argument("--from", dest="extra", type=Path, action="append", default=[], metavar="DIR",
                        help="another directory with results (a shard or CI artifact); repeatable")


def _merged(args: argparse.Namespace) -> list[CellResult]:
    from harness.results import model as results

    roots = [args.reports, *args.extra]
    found = results.merge_results(roots)
    if not found:
        raise HarnessError(f"no results under {', '.join(map(str, roots))} — run the matrix first "
                           f"({prog.command('run --env all')})")
    return found


def _add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="render every result into one HTML page and JUnit XML",
        description="Merge the result JSONs of any number of runs, shards or machines into <reports>/index.html "
        "(one self-contained file, which also carries the merged results for download), <reports>/results.json "
        "(the merged results) and <reports>/junit.xml (one testcase per cell).")
    _add_results_args(parser)
    parser.add_argument("--out", type=Path, default=None, help="HTML file (default: <reports>/index.html)")
    parser.add_argument("--junit", type=Path, default=None, help="JUnit XML file (default: <reports>/junit.xml)")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"),
                        help="config whose tolerances the page shows (default: matrix.toml; skipped if absent)")
    parser.add_argument("--if-changed", action="store_true",
                        help="render only when a result, the upgrade section, the config or the report's code is newer "
                        "than the page (what `nox -s matrix` does after each env); no results yet is not an error")
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from harness import config as config_mod
    from harness.report import html, junit, merged
    from harness.report.view import build

    out = args.out or args.reports / "index.html"
    if args.if_changed:
        saved = list(args.reports.glob("**/results/*.json"))
        if not saved:
            print(f"report: no results in {args.reports} yet: nothing to render", file=sys.stderr)
            return 0
        # What the page shows: the results, the merged file and upgrade section beside them, the config.
        if not args.extra and html.is_current(out, [*saved, *args.reports.glob("*.json"), args.config]):
            print(f"report: {out} is newer than every result, the config and the report code: kept", file=sys.stderr)
            return 0
    found = _merged(args)
    tolerances = None
    if args.config.exists():
        try:
            tolerances = asdict(config_mod.load_config(args.config).tolerances)
        except HarnessError as exc:
            print(f"warning: tolerances not shown: {exc}", file=sys.stderr)
    from harness.decide.upgrade import render

    upgrade = render.read(args.reports)  # the section of the last `upgrade` into this folder, kept on a re-render
    text = merged.text(found)
    data = merged.write(out.parent / merged.FILE_NAME, text)  # before the page: nox's freshness check reads both
    page = html.write(out, found, tolerances=tolerances, upgrade=upgrade, merged_text=text)
    xml = junit.write(args.junit or args.reports / "junit.xml", found)
    counts = build(found).counts
    print(f"report: {len(found)} cells ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}) -> {page}, "
          f"{xml}, {data}")
    return 0


def _add_gate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gate", help="compare the results with a baseline; exit 1 on a failing change",
        description="Compare today's results with a saved baseline and print the changes grouped (as `upgrade` "
        "does). Exit 1 when a group fails: a cell that worked no longer does, now needs a workaround, exports other "
        "outputs (count, names, shapes, dtypes, dynamic axes), another opset, IR version or external data, lost "
        "parity, no longer compiles, or has no current result; 0 otherwise; 2 on a usage error.")
    _add_results_args(parser)
    parser.add_argument("--baseline", type=Path, required=True, help="baseline file (JSON)")
    parser.add_argument("--write-baseline", action="store_true", help="save the current results as the baseline")
    parser.add_argument("--ref", action="append", default=[], metavar="OLD=NEW",
                        help="compare the baseline's OLD ref with the current NEW one (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="OLD=NEW",
                        help="compare the baseline's OLD env with the current NEW one (repeatable)")
    parser.add_argument("--allow-source-change", action="store_true",
                        help="compare cells although one side ran upstream code and the other a PyPI stand-in")
    parser.add_argument("--accept-workarounds", action="store_true",
                        help="a newly needed workaround is a note, not a failing change")
    parser.add_argument("--allow-missing", action="store_true",
                        help="a baseline cell with no current result is a note, not a failing change")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                        help="also write the grouped changes as Markdown (a job summary or pull-request comment)")
    parser.set_defaults(handler=_run_gate)


def _run_gate(args: argparse.Namespace) -> int:
    from harness.decide import gate
    from harness.decide.upgrade import render

    found = _merged(args)
    if args.write_baseline:
        n = gate.write_baseline(args.baseline, found)
        print(f"gate: baseline of {n} cells written to {args.baseline}")
        return 0
    baseline = gate.read_baseline(args.baseline)
    label = (f"gate: {len(found)} cells against {args.baseline} ({len(baseline['cells'])} cells, "
             f"{baseline.get('created')})")
    model = gate.answer(baseline, found, label=label, refs=gate.parse_renames(args.ref, "ref"),
                        envs=gate.parse_renames(args.env, "env"), allow_source_change=args.allow_source_change,
                        accept_workarounds=args.accept_workarounds, allow_missing=args.allow_missing)
    print(render.console(model))
    if args.markdown:
        from harness.files import write_atomic

        write_atomic(args.markdown, render.markdown(model))
    return int(model["exit_code"])


def _add_upgrade(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upgrade", help="ref A -> ref B (or env X -> env Y): grouped changes, the commit of each, the edits to make",
        description="Run what is missing of both sides (results are reused like any run), compare each cell pair, "
        "group identical changes, find the first commit of each failing group by bisecting the first-parent history "
        "between the refs (probes are cached cells: a rerun resumes), and say what to edit downstream. Writes "
        "<reports>/upgrade.md, upgrade.json and index.html (section \"Upgrade A -> B\"). Exit codes: 0 no failing "
        "group, 1 failing groups, 2 a usage error, 3 an internal error, 130 interrupted (rerun: it resumes).")
    parser.add_argument("--from", dest="from_ref", required=True, metavar="A",
                        help="the ref deployed today (tag, branch or SHA)")
    parser.add_argument("--to", dest="to_ref", default=None, metavar="B",
                        help="the ref to upgrade to (default: --from, with --from-env/--to-env)")
    parser.add_argument("--envs", type=_csv, default=None, help="envs to compare in (default: every env of the config)")
    parser.add_argument("--variants", type=_csv, default=None, help="subset of variants, e.g. native,3")
    parser.add_argument("--formats", type=_csv, default=None, help="subset of formats, e.g. onnx")
    parser.add_argument("--from-env", default=None, metavar="X", help="a torch upgrade: the env deployed today")
    parser.add_argument("--to-env", default=None, metavar="Y", help="a torch upgrade: the env to upgrade to")
    parser.add_argument("--accept-workarounds", action="store_true",
                        help="a newly needed workaround is a note, not a failing change")
    parser.add_argument("--no-bisect", action="store_true",
                        help="do not search where each group comes from (its first commit, or its first env)")
    parser.add_argument("--no-pin-names", action="store_true",
                        help="compare ONNX output names as exported, also the ones the exporter made up")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="stdout: the answer as text (default), or upgrade.json for scripts")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"), help="config file (default: matrix.toml)")
    parser.add_argument("--repo", default=None, help="YOLOv5 git URL or path (overrides $YOLOV5_REPO and the file)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="results directory (default: reports)")
    _add_sandbox_arg(parser)
    parser.set_defaults(handler=_run_upgrade)


def _run_upgrade(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from harness import config as config_mod
    from harness.decide.upgrade import render
    from harness.decide.upgrade.question import Question, ask
    from harness.paths import cache_dir
    from harness.report import html
    from harness.results import model as results
    from harness.run import matrix as run

    if args.to_ref is None and args.from_env is None:
        raise HarnessError("upgrade: --to is missing — pass the ref to upgrade to (--from v6.1 --to v7.0), or "
                           "--from-env/--to-env for a torch upgrade on one ref")
    config = _with_sandbox(config_mod.load_config(args.config, repo=args.repo), args.sandbox)
    question = Question(args.from_ref, args.to_ref or args.from_ref, args.from_env, args.to_env,
                        envs=tuple(args.envs) if args.envs else None,
                        variants=tuple(args.variants) if args.variants else None,
                        formats=tuple(args.formats) if args.formats else None,
                        accept_workarounds=args.accept_workarounds, bisect=not args.no_bisect,
                        pin_names=not args.no_pin_names)
    answer = ask(config, question, args.reports, cache_dir(), log=run.log_stderr)
    model = answer.to_json()
    written = render.write(model, args.reports)
    page = html.write(args.reports / "index.html", results.merge_results([args.reports]),
                      tolerances=asdict(config.tolerances), upgrade=model)
    summary = render.step_summary(model)  # in GitHub Actions: the job's summary page
    if args.format == "json":
        print(json.dumps(model, indent=1, ensure_ascii=False))
    else:
        print(render.console(model))
    written += [page, *([summary] if summary else [])]
    print(f"upgrade: exit {answer.exit_code}; written {', '.join(map(str, written))}", file=sys.stderr)
    return answer.exit_code


def _add_compile(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compile", help="compile the exported ONNX and TorchScript files with tpu-mlir and compare the bmodel "
        "(`nox -s tpu_mlir`)",
        description="For each ONNX or TorchScript result of the [compile] variants and formats: tpu-mlir "
        "model_transform + model_deploy (bmodel run in the cmodel simulator), bmodel outputs vs ONNX Runtime or "
        "torch.jit, verdict joined into the result JSON as `compile`. Builds the tpu-mlir env (Python 3.10) into the "
        "cache on first use.")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"), help="config file (default: matrix.toml)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="results directory (default: reports)")
    parser.add_argument("--env", type=_csv, default=None, help="only results of these envs")
    parser.add_argument("--refs", type=_csv, default=None, help="only results of these refs")
    parser.add_argument("--variants", type=_csv, default=None, help="variants (default: [compile] variants)")
    parser.add_argument("--formats", type=_csv, default=None, help="onnx, torchscript (default: [compile] formats)")
    parser.add_argument("--quantize", type=_csv, default=None, help="modes, e.g. F32,F16 (default: [compile])")
    parser.add_argument("--force", action="store_true", help="recompile cells whose inputs did not change")
    parser.add_argument("--keep", action="store_true", help="keep tpu-mlir's intermediate files (~0.5 GB a cell)")
    parser.add_argument("--if-enabled", action="store_true",
                        help="do nothing unless [compile] enabled = true (what `nox -s matrix` calls)")
    parser.set_defaults(handler=_run_compile)


def _run_compile(args: argparse.Namespace) -> int:
    from harness import config as config_mod
    from harness.compile import run as compile_run
    from harness.paths import cache_dir

    config = config_mod.load_config(args.config)
    spec = config.compile
    if args.if_enabled and not spec.enabled:
        return 0
    for mode in args.quantize or ():
        if mode not in config_mod.COMPILE_QUANTIZE:
            known = ", ".join(config_mod.COMPILE_QUANTIZE)
            raise HarnessError(f"--quantize: unknown mode {mode!r} — use one of {known}")
    for fmt in args.formats or ():
        if fmt not in config_mod.COMPILE_FORMATS:
            known = ", ".join(config_mod.COMPILE_FORMATS)
            raise HarnessError(f"--formats: tpu-mlir does not take {fmt!r} — use {known}")
    if args.formats:
        spec = dataclasses.replace(spec, formats=tuple(args.formats))
    for variant in args.variants or ():
        if variant not in config_mod.ALLOWED_VARIANTS:
            known = ", ".join(config_mod.ALLOWED_VARIANTS)
            raise HarnessError(f"--variants: unknown variant {variant!r} — use {known}")
    done = compile_run.run_compile(
        spec, args.reports, cache_dir(), envs=args.env, refs=args.refs,
        variants=tuple(args.variants) if args.variants else None,
        quantize=tuple(args.quantize) if args.quantize else None, force=args.force, keep=args.keep,
        log=lambda line: print(line, file=sys.stderr, flush=True), sandbox_mode=config.limits.sandbox)
    print(f"compile: {len(done)} cells: {compile_run.summary(done)}; verdicts joined into {args.reports / 'results'}")
    if args.if_enabled:  # after the matrix: the last check that reads the ONNX files has run
        from harness.results import model as results
        from harness.run import artifacts

        artifacts.prune(sorted(results.results_dir(args.reports).glob("*.json")), config.artifacts.keep,
                        log=lambda line: print(line, file=sys.stderr, flush=True),
                        store=artifacts.store_dir(cache_dir()))
    return 0


def _add_targets(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "targets", help="compile and run the exported files on downstream targets (OpenVINO, RKNN, ncnn)",
        description="For each result whose artifact a [targets.NAME] takes (its variants; ONNX for openvino and "
        "rknn, TorchScript for ncnn): compile with the target's toolkit in its own env, run on the cell's input, "
        "compare every output with ONNX Runtime (TorchScript for ncnn), and join the verdict into the result JSON "
        "as targets.NAME. Builds each target's env into the cache on first use.")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"), help="config file (default: matrix.toml)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="results directory (default: reports)")
    _add_targets_arg(parser, "which targets (default: the enabled [targets.NAME])")
    parser.add_argument("--force", action="store_true", help="recheck cells whose inputs did not change")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="checks run side by side (default: CPU count)")
    parser.set_defaults(handler=_run_targets)


def _run_targets(args: argparse.Namespace) -> int:
    from harness import config as config_mod
    from harness.paths import cache_dir
    from harness.targets.check import run_targets

    config = config_mod.load_config(args.config)
    specs = _chosen_targets(config, args.targets)
    if not specs:
        print("targets: none enabled — set enabled = true in a [targets.NAME] or pass --targets NAME",
              file=sys.stderr)
        return 0
    done = run_targets(specs, args.reports, cache_dir(), force=args.force,
                       log=lambda line: print(line, file=sys.stderr, flush=True), sandbox_mode=config.limits.sandbox,
                       jobs=args.jobs)
    counts = Counter(section.outcome() for section in done)
    print(f"targets: {len(done)} checks ({', '.join(f'{n} {o}' for o, n in counts.items()) or 'none run'}); "
          f"verdicts joined into {args.reports / 'results'}")
    return 0


def _add_cache(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cache", help="list what the cache holds, and prune it (`nox -s cache`)",
        description="Each part of the harness's cache (envs, work folders, checkpoints, checkouts, targets, ...) with "
        "its size, and uv's wheel cache beside it. --prune removes the venvs of envs the config no longer names and, "
        "with --older-than DAYS, the rebuildable entries not written to for that long. Results under reports/ are "
        "never touched.")
    parser.add_argument("--config", type=Path, default=Path("matrix.toml"), help="config file (default: matrix.toml)")
    parser.add_argument("--prune", action="store_true", help="remove what the config no longer uses")
    parser.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                        help="with --prune: also remove work folders, checkpoints, checkouts, patched trees and "
                             "target outputs not written to for DAYS days (0: all of them)")
    parser.set_defaults(handler=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from harness import cache
    from harness import config as config_mod
    from harness.paths import cache_dir

    root = cache_dir()
    if args.older_than is not None and (args.older_than < 0 or not args.prune):
        raise HarnessError("--older-than: takes DAYS >= 0, with --prune (e.g. --prune --older-than 7)")
    if args.prune:
        config = config_mod.load_config(args.config)
        freed = cache.prune(root, config, args.older_than, log=lambda line: print(line, file=sys.stderr))
        print(f"cache: pruned {freed / 2**30:.2f} GB from {root}")
    print(cache.table(cache.listing(root)))
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _add_init,
    _add_mirror,
    _add_run,
    _add_report,
    _add_gate,
    _add_upgrade,
    _add_compile,
    _add_targets,
    _add_cache,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered (separate from main() so tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog=prog.name(), description="yolov5-export-matrix: YOLOv5 ref x torch env export checks.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"yolov5-export-matrix {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    for command, sub in subparsers.choices.items():
        sub.formatter_class = _HelpFormatter
        sub.epilog = "\n\n".join(filter(None, [sub.epilog, exit_codes(command)]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand, and turn a HarnessError into a one-line message.

    Args:
        argv: Arguments without the program name; default sys.argv[1:].

    Returns:
        The process exit code (EXIT_CODES): the handler's, 2 after a HarnessError, 3 after any other exception.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # progress goes to stderr
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            # The disk filled up in the harness's own writes (a step's log, a job file) rather than in a step: the
            # same one line as a cell that ran out of space.
            print(f"error: {_disk_full(exc)}", file=sys.stderr)
            return EXIT_HARNESS_ERROR
        return _internal_error(args.command)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: steps were killed, saved results stay (harness.run.matrix.run_env)
        print("interrupted: results saved so far are kept; rerun the same command to do the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - a bug: keep the traceback, but never exit 1, which `gate` reserves for a regression
        return _internal_error(args.command)


def _internal_error(command: str) -> int:
    traceback.print_exc()
    print(f"error: internal error in `{command}` (a bug in the harness, traceback above); exit code "
          f"{EXIT_INTERNAL_ERROR}", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def _disk_full(exc: OSError) -> str:
    from harness.run.artifacts import disk_full, free_mb

    folder = Path(exc.filename).parent if exc.filename else Path.cwd()
    return disk_full(folder, free_mb(folder))


if __name__ == "__main__":
    sys.exit(main())
