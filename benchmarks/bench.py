"""`nox -s bench` (or `python benchmarks/bench.py`): how far the harness is from the floor, on this machine, in one run.

Measures, each with the 1-minute load average before and after (on a shared machine a loaded run is slower):

(a) floor: for one ref x env, per variant one plain script in the env's Python (benchmarks/floor.py) that runs the
    ref's own export script for every format, with the environment that export needs here, and one inference per
    file in its backend. No harness, no eager reference, no parity, no out-of-the-box attempt.
(b) harness: `python -m harness run --env E --refs R --force --jobs 1` on the same cells (checkpoint already
    built: the floor gets it for free too), and the ratio (b)/(a).
(c) a no-change rerun of the whole default matrix (every env of matrix.toml), after a pass that computes whatever is
    missing from --reports; with `python -m harness run` per env, and through `nox -s matrix` when nox is on PATH.
(d) env creation: warm (uv's wheel cache warm, venv absent: what rebuilding an env costs) and its first use (the
    first import writes the bytecode uv no longer compiles). Cold (an empty uv cache: downloading a few GB of
    wheels, network-bound) only with --cold.

Prints a table and writes JSON (default reports/bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import exporters, proc, results  # noqa: E402
from harness.axes import FORMATS  # noqa: E402
from harness.batch import WEIGHTS_NAME  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.envs import ensure_env  # noqa: E402
from harness.patch import apply_patch  # noqa: E402
from harness.paths import cache_dir  # noqa: E402
from harness.files import write_json  # noqa: E402
from harness.run import EnvRun, Options, choose_source, probe_env  # noqa: E402
from harness.source import get_checkout, is_local_repo  # noqa: E402

TARGETS = {"ratio": 1.2, "no_change_s": 10.0, "env_warm_s": 15.0}


def load() -> float:
    return round(os.getloadavg()[0], 2)


class Bench:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def timed(self, name: str, argv: list[str] | None = None, fn=None, **extra: Any) -> dict[str, Any]:
        """Run ``argv`` (a command) or ``fn`` once, wall-clock timed, and keep a row."""
        before, t = load(), time.monotonic()
        out = None
        if argv is not None:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench: {name}: {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            out = done
        else:
            out = fn()
        row = {"name": name, "seconds": round(time.monotonic() - t, 2), "load_before": before, "load_after": load(),
               "command": " ".join(argv) if argv else None, **extra}
        self.rows.append(row)
        print(f"  {name}: {row['seconds']} s (load {before} -> {row['load_after']})", flush=True)
        row["_out"] = out
        return row


def floor_jobs(config, spec, checkout, weights: Path, reports: Path, workroot: Path) -> list[dict[str, Any]]:
    """One floor job per variant: the cells' export argv, and the env/shims the harness found each export needs."""
    model = config.model
    by_variant: dict[str, list[results.CellResult]] = {}
    for result in results.load_results(reports):
        by_variant.setdefault(result.variant, []).append(result)
    jobs = []
    for variant, cells in sorted(by_variant.items()):
        tree = cache_dir() / "patched" / checkout.commit / variant  # the harness's patched copy (reused)
        apply_patch(checkout.path, tree, variant, checkout.ref)
        shape = exporters.detect_exporter(tree, checkout.ref)
        env: dict[str, str] = {}
        shims: list[str] = []
        specs = []
        for result in sorted(cells, key=lambda r: r.format):
            fix = result.workaround if result.status != "pass" else None
            if fix:
                env.update(fix.env)
                shims += [s for s in fix.shims if s not in shims]
            specs.append({"id": result.cell, "format": result.format,
                          "argv": exporters.command(shape, tree, WEIGHTS_NAME, model.imgsz, result.format),
                          "suffixes": list(FORMATS[result.format].suffixes),
                          "workdir": str(workroot / variant / result.format)})
        jobs.append({"variant": variant, "tree": str(tree), "weights": str(weights), "imgsz": model.imgsz,
                     "env": env, "shims": shims, "cells": specs})
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "matrix.toml")
    parser.add_argument("--env", default=None, help="env for (a), (b), (d) (default: the first in matrix.toml)")
    parser.add_argument("--ref", default=None, help="ref for (a), (b) (default: the last configured ref)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports",
                        help="results of the whole default matrix for (c) (default: reports/)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a, b, c, d")
    parser.add_argument("--no-fill", action="store_true", help="(c): do not compute missing results first")
    parser.add_argument("--cold", action="store_true", help="(d): also build the env with an empty uv cache")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    config = load_config(args.config)
    env = args.env or next(iter(config.envs))
    spec = config.envs[env]
    ref = args.ref or config.source.refs[-1]
    cache = cache_dir()
    bench = Bench()
    facts: dict[str, Any] = {"env": env, "ref": ref, "cache": str(cache), "cpus": os.cpu_count(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                      capture_output=True, text=True).stdout.strip() or None}
    harness = [sys.executable, "-m", "harness"]
    config_arg = ["--config", str(args.config.resolve())]
    print(f"bench: env {env}, ref {ref}, cache {cache}, {os.cpu_count()} CPUs, load {load()}", flush=True)

    if "d" not in skip:
        print("(d) env creation", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-env-", dir=cache) as tmp:
            python = Path(bench.timed("env create, warm (uv wheel cache warm, no venv)",
                                      fn=lambda: ensure_env(spec, Path(tmp), log=lambda m: None))["_out"])
            bench.timed("env first use (probe: first import writes bytecode)",
                        fn=lambda: probe_env(python, Path(tmp) / "probe", Path(tmp) / "yolov5-config"))
        if args.cold:
            with tempfile.TemporaryDirectory(prefix="bench-env-cold-", dir=cache) as tmp:
                os.environ["UV_CACHE_DIR"] = str(Path(tmp) / "uv")
                try:
                    bench.timed("env create, cold (empty uv cache: downloads)",
                                fn=lambda: ensure_env(spec, Path(tmp), log=lambda m: None))
                finally:
                    os.environ.pop("UV_CACHE_DIR")

    if not {"a", "b"} <= skip:
        python = ensure_env(spec, cache, log=print)
        source = choose_source(config, cache, print)
        checkout = get_checkout(source, ref, cache=cache, fetch=is_local_repo(source))
        run = EnvRun(config, env, Options(reports=Path(tempfile.mkdtemp()), cache=cache), log=lambda m: None)
        try:  # the checkpoint both sides start from (cached per commit x env)
            weights, _, failure = run.checkpoint(checkout)
        finally:
            run.ctx.workers.close()
        if failure or weights is None:
            raise SystemExit(f"bench: no checkpoint for {ref}: {failure}")
        batch_reports = Path(tempfile.mkdtemp(prefix="bench-harness-"))
        print(f"(b) harness on {ref} x {env}", flush=True)
        # --jobs 1: the floor runs its variants one after another, so the harness does too (by default it runs one
        # batch per core side by side, which would flatter the ratio on an idle machine).
        row = bench.timed(f"(b) harness, {ref} x {env} batch", harness + [
            "run", "--env", env, "--refs", ref, "--force", "--jobs", "1", "--reports", str(batch_reports),
            "--repo", source, *config_arg])
        done = results.load_results(batch_reports)
        row["cells"] = len(done)
        row["verdicts"] = sorted({r.verdict for r in done})
        print(f"(a) floor on {ref} x {env}", flush=True)
        floor_root = Path(tempfile.mkdtemp(prefix="bench-floor-"))
        jobs = floor_jobs(config, spec, checkout, weights, batch_reports, floor_root)
        floor_env = proc.child_env({"YOLOV5_CONFIG_DIR": str(cache / "yolov5-config")}, pythonpath=str(ROOT))
        total, imports, procs = 0.0, [], 0
        per_cell: dict[str, dict[str, Any]] = {}
        before = load()
        for job in jobs:
            path = floor_root / f"{job['variant']}.json"
            path.write_text(json.dumps(job))
            t = time.monotonic()
            out = subprocess.run([str(python), str(ROOT / "benchmarks" / "floor.py"), str(path)],
                                 capture_output=True, text=True, env=floor_env, cwd=floor_root)
            total += time.monotonic() - t
            procs += 1
            if out.returncode != 0:
                raise SystemExit(f"bench: floor for variant {job['variant']} failed:\n{out.stderr[-3000:]}")
            timing = json.loads(out.stdout.strip().splitlines()[-1])
            imports.append(timing["import"])
            per_cell.update({c: {k: round(v, 2) if isinstance(v, float) else v for k, v in t.items()}
                             for c, t in timing["cells"].items()})
        floor_row = {"name": f"(a) floor, {ref} x {env} batch", "seconds": round(total, 2), "load_before": before,
                     "load_after": load(), "command": f"{python} benchmarks/floor.py <variant job>, once per variant",
                     "processes": procs, "import_s": [round(i, 2) for i in imports], "cells": sum(
                         len(j["cells"]) for j in jobs), "env": jobs[0]["env"] if jobs else {}, "per_cell": per_cell}
        bench.rows.insert(len(bench.rows) - 1, floor_row)
        print(f"  {floor_row['name']}: {floor_row['seconds']} s", flush=True)
        one_import = total - sum(sorted(imports)[:-1]) if imports else total
        facts["ratio"] = round(row["seconds"] / total, 2) if total else None
        facts["ratio_vs_floor_with_one_import"] = round(row["seconds"] / one_import, 2) if one_import else None
        shutil.rmtree(floor_root, ignore_errors=True)
        shutil.rmtree(batch_reports, ignore_errors=True)

    if "c" not in skip:
        print(f"(c) no-change rerun of the default matrix ({', '.join(config.envs)}) -> {args.reports}", flush=True)
        reports = args.reports.resolve()
        if not args.no_fill:
            for name in config.envs:
                row = bench.timed(f"(c) fill: compute missing results, {name}", harness + [
                    "run", "--env", name, "--reports", str(reports), *config_arg])
                row["computed"] = sum(1 for line in row["_out"].stderr.splitlines()
                                      if line.startswith(f"[{name}] ") and "unchanged, kept" not in line)
        for name in config.envs:
            row = bench.timed(f"(c) no-change rerun, {name} (python -m harness run)", harness + [
                "run", "--env", name, "--reports", str(reports), *config_arg])
            row["kept"] = (row["_out"].stdout + row["_out"].stderr).count("unchanged, kept")
        nox = shutil.which("nox", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if nox:
            sessions = [f"matrix({name})" for name in config.envs]
            row = bench.timed("(c) no-change rerun, whole matrix (nox -s matrix)", [
                nox, "-f", str(ROOT / "noxfile.py"), "-s", *sessions, "--", "--config", str(args.config.resolve()),
                "--reports", str(reports)])
            row["kept"] = (row["_out"].stdout + row["_out"].stderr).count("unchanged, kept")

    for row in bench.rows:
        row.pop("_out", None)
    report = {"facts": facts, "targets": TARGETS, "rows": bench.rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print()
    print(f"{'measurement':<62} {'seconds':>8} {'load':>12}  notes")
    for row in bench.rows:
        notes = ", ".join(f"{k}={row[k]}" for k in ("cells", "processes", "kept", "computed") if k in row)
        print(f"{row['name']:<62} {row['seconds']:>8} {row['load_before']:>5}->{row['load_after']:<5}  {notes}")
    if facts.get("ratio") is not None:
        print(f"{'harness / floor':<62} {facts['ratio']:>8}x  (target <= {TARGETS['ratio']}; vs a floor that "
              f"imports torch once: {facts['ratio_vs_floor_with_one_import']}x)")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
