"""`nox -s bench` (or `python benchmarks/bench.py`): how far the harness is from the floor, on this machine, in one run.

Measures, each with the 1-minute load average before and after (on a shared machine a loaded run is slower):

(a) floor: for one ref x env, per variant one plain script in the env's Python (benchmarks/floor.py) that runs the
    ref's own export script for every format, with the environment and patch form that export needs here (read from
    the harness's results of (b)), and one inference per file in its backend. No harness, no eager reference, no
    parity, no out-of-the-box attempt.
(b) harness: `python -m harness run --env E --refs R --force --jobs 1` on the same cells (checkpoint already
    built: the floor gets it for free too), the ratio (b)/(a), and where the harness's time went (seconds per stage,
    summed over every attempt of every cell).
(c) a no-change rerun of the whole default matrix (every env of matrix.toml), after a pass that computes whatever is
    missing from --reports; with `python -m harness run` per env, and through `nox -s matrix` when nox is on PATH.
(d) env creation: warm (uv's wheel cache warm, venv absent: what rebuilding an env costs) and its first use (the
    first import writes the bytecode uv no longer compiles). Cold (an empty uv cache: downloading a few GB of
    wheels, network-bound) only with --cold.
--full: the whole default matrix from an empty results folder, env by env as `nox -s matrix` runs it (default jobs),
    with each env's stage breakdown, then the floor of every ref x env batch of it, and per env the ratio of the
    harness's wall time to the sum of its floors.

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
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.axes import FORMATS  # noqa: E402
from harness.config import Config, EnvSpec, is_local_repo, load_config  # noqa: E402
from harness.envs import proc  # noqa: E402
from harness.envs.build import ensure_env  # noqa: E402
from harness.files import write_json  # noqa: E402
from harness.patch.detect import apply_patch  # noqa: E402
from harness.paths import cache_dir  # noqa: E402
from harness.results import model as results  # noqa: E402
from harness.results.model import CellResult  # noqa: E402
from harness.run import exporters  # noqa: E402
from harness.run.batch import WEIGHTS_NAME  # noqa: E402
from harness.run.matrix import EnvRun, Options, choose_source, probe_env  # noqa: E402
from harness.sources.checkout import Checkout, get_checkout  # noqa: E402

TARGETS = {"ratio": 1.0, "no_change_s": 10.0, "env_warm_s": 15.0, "full_s": 25 * 60.0}
HARNESS = [sys.executable, "-m", "harness"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def used_mb() -> float:
    """Memory in use on the whole machine (MemTotal - MemAvailable): env processes run in process groups of their
    own, so the machine's figure is the one that catches them all (read it on an idle machine)."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


class PeakMemory:
    """Samples used_mb() every half second while a command runs: the peak above what was in use at the start."""

    def __init__(self) -> None:
        self.base = self.peak = used_mb()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, used_mb())

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    @property
    def above_start_mb(self) -> int:
        return round(self.peak - self.base)


class Bench:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def timed(self, name: str, argv: list[str] | None = None, fn: Callable[[], Any] | None = None,
              **extra: Any) -> dict[str, Any]:
        """Run ``argv`` (a command) or ``fn`` once, wall-clock timed, and keep a row."""
        before, t = load(), time.monotonic()
        with PeakMemory() as memory:
            if argv is not None:
                out: Any = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"bench: {name}: {' '.join(argv)} failed ({out.returncode}):\n"
                                     f"{out.stderr[-3000:]}")
            elif fn is not None:
                out = fn()
            else:
                raise ValueError(f"bench: {name}: nothing to time")
        row = {"name": name, "seconds": round(time.monotonic() - t, 2), "load_before": before, "load_after": load(),
               "peak_memory_mb": memory.above_start_mb, "command": " ".join(argv) if argv else None, **extra}
        self.rows.append(row)
        print(f"  {name}: {row['seconds']} s (load {before} -> {row['load_after']})", flush=True)
        row["_out"] = out
        return row


def stage_breakdown(found: list[CellResult]) -> dict[str, float]:
    """Seconds per stage summed over every attempt of every cell: out of the box, each earlier rerun, the last one.
    Steps shared by cells count once: checkout and checkpoint per ref, the patch per ref x variant, an attempt
    another cell ran (``shared_from``) not again."""
    total: defaultdict[str, float] = defaultdict(float)
    once: dict[tuple[str, ...], float] = {}
    for result in found:
        for stage in ("checkout", "checkpoint"):
            once[(stage, result.ref)] = result.timings.get(stage, 0.0)
        once[("patch", result.ref, result.variant)] = result.timings.get("patch", 0.0)
        if not result.first.shared_from:
            for k, v in result.first.timings.items():
                total[f"out-of-the-box {k}"] += v
        for attempt in result.reruns:
            for k, v in attempt.timings.items():
                total[f"workaround {k}"] += v
    for (stage, *_), seconds in once.items():
        total[stage] += seconds
    return {k: round(v, 1) for k, v in sorted(total.items(), key=lambda kv: -kv[1])}


def floor_jobs(config: Config, checkout: Checkout, weights: Path, found: list[CellResult],
               workroot: Path) -> list[dict[str, Any]]:
    """One floor job per variant: the cells' export argv, and the env, shims and patch form the harness found each
    export needs."""
    model = config.model
    by_variant: dict[str, list[CellResult]] = {}
    for result in found:
        by_variant.setdefault(result.variant, []).append(result)
    jobs = []
    for variant, cells in sorted(by_variant.items()):
        fixes = [r.deciding for r in cells if r.decided]
        form = next((f.patch_form for f in fixes if f.patch_form), None) or "guide"
        # The harness's patched copy (reused).
        tree = cache_dir() / "patched" / checkout.commit / (variant if form == "guide" else f"{variant}+{form}")
        apply_patch(checkout.path, tree, variant, checkout.ref, form)
        shape = exporters.detect_exporter(tree, checkout.ref)
        env: dict[str, str] = {}
        shims: list[str] = []
        specs = []
        for result in sorted(cells, key=lambda r: r.format):
            fix = result.deciding if result.decided else None
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


def checkpoint_of(config: Config, env: str, checkout: Checkout, cache: Path) -> Path:
    """The checkpoint both sides start from (cached per commit x env; built here if missing)."""
    run = EnvRun(config, env, Options(reports=Path(tempfile.mkdtemp()), cache=cache), log=lambda m: None)
    try:
        weights, _, failure, _ = run.checkpoint(checkout)
    finally:
        run.ctx.workers.close()
    if failure or weights is None:
        raise SystemExit(f"bench: no checkpoint for {checkout.ref} in {env}: {failure}")
    return weights


def floor(config: Config, env: str, checkout: Checkout, found: list[CellResult], cache: Path) -> dict[str, Any]:
    """(a) for one ref x env: the floor jobs run one after another; their total seconds and per-cell timings."""
    spec = config.envs[env]
    python = ensure_env(spec, cache, log=print)
    weights = checkpoint_of(config, env, checkout, cache)
    root = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    jobs = floor_jobs(config, checkout, weights, found, root)
    floor_env = proc.child_env({"YOLOV5_CONFIG_DIR": str(cache / "yolov5-config")}, pythonpath=str(ROOT))
    total, imports = 0.0, []
    per_cell: dict[str, dict[str, Any]] = {}
    before = load()
    for job in jobs:
        path = root / f"{job['variant']}.json"
        path.write_text(json.dumps(job))
        t = time.monotonic()
        out = subprocess.run([str(python), str(ROOT / "benchmarks" / "floor.py"), str(path)],
                             capture_output=True, text=True, env=floor_env, cwd=root, check=False)
        total += time.monotonic() - t
        if out.returncode != 0:
            raise SystemExit(f"bench: floor for variant {job['variant']} failed:\n{out.stderr[-3000:]}")
        timing = json.loads(out.stdout.strip().splitlines()[-1])
        imports.append(timing["import"])
        per_cell.update({c: {k: round(v, 2) if isinstance(v, float) else v for k, v in t.items()}
                         for c, t in timing["cells"].items()})
    shutil.rmtree(root, ignore_errors=True)
    return {"name": f"(a) floor, {checkout.ref} x {env} batch", "seconds": round(total, 2), "load_before": before,
            "load_after": load(), "command": f"{python} benchmarks/floor.py <variant job>, once per variant",
            "processes": len(jobs), "import_s": [round(i, 2) for i in imports],
            "cells": sum(len(j["cells"]) for j in jobs), "env": jobs[0]["env"] if jobs else {}, "per_cell": per_cell}


def part_env(bench: Bench, spec: EnvSpec, cache: Path, cold: bool) -> None:
    print("(d) env creation", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-env-", dir=cache) as tmp:
        python = Path(bench.timed("env create, warm (uv wheel cache warm, no venv)",
                                  fn=lambda: ensure_env(spec, Path(tmp), log=lambda m: None))["_out"])
        bench.timed("env first use (probe: first import writes bytecode)",
                    fn=lambda: probe_env(python, Path(tmp) / "probe", Path(tmp) / "yolov5-config"))
    if cold:
        with tempfile.TemporaryDirectory(prefix="bench-env-cold-", dir=cache) as tmp:
            os.environ["UV_CACHE_DIR"] = str(Path(tmp) / "uv")
            try:
                bench.timed("env create, cold (empty uv cache: downloads)",
                            fn=lambda: ensure_env(spec, Path(tmp), log=lambda m: None))
            finally:
                os.environ.pop("UV_CACHE_DIR")


def part_batch(bench: Bench, config: Config, env: str, ref: str, cache: Path, config_arg: list[str],
               facts: dict[str, Any]) -> None:
    """(b) then (a) on one ref x env, and their ratio."""
    source = choose_source(config, cache, print)
    checkout = get_checkout(source, ref, cache=cache, fetch=is_local_repo(source))
    checkpoint_of(config, env, checkout, cache)
    reports = Path(tempfile.mkdtemp(prefix="bench-harness-"))
    print(f"(b) harness on {ref} x {env}", flush=True)
    # --jobs 1: the floor runs its variants one after another, so the harness does too (by default it runs one
    # batch per core side by side, which would flatter the ratio on an idle machine).
    row = bench.timed(f"(b) harness, {ref} x {env} batch", [
        *HARNESS, "run", "--env", env, "--refs", ref, "--force", "--jobs", "1", "--reports", str(reports),
        "--repo", source, *config_arg])
    done = results.load_results(reports)
    row["cells"] = len(done)
    row["verdicts"] = sorted({r.verdict for r in done})
    row["stages"] = stage_breakdown(done)
    print(f"(a) floor on {ref} x {env}", flush=True)
    floor_row = floor(config, env, checkout, done, cache)
    bench.rows.insert(len(bench.rows) - 1, floor_row)
    print(f"  {floor_row['name']}: {floor_row['seconds']} s", flush=True)
    total, imports = floor_row["seconds"], floor_row["import_s"]
    one_import = total - sum(sorted(imports)[:-1]) if imports else total
    facts["ratio"] = round(row["seconds"] / total, 2) if total else None
    facts["ratio_vs_floor_with_one_import"] = round(row["seconds"] / one_import, 2) if one_import else None
    shutil.rmtree(reports, ignore_errors=True)


def part_rerun(bench: Bench, config: Config, reports: Path, fill: bool, config_arg: list[str],
               config_path: Path) -> None:
    """(c) a no-change rerun of every env, after computing what is missing."""
    print(f"(c) no-change rerun of the default matrix ({', '.join(config.envs)}) -> {reports}", flush=True)
    if fill:
        for name in config.envs:
            row = bench.timed(f"(c) fill: compute missing results, {name}",
                              [*HARNESS, "run", "--env", name, "--reports", str(reports), *config_arg])
            row["computed"] = sum(1 for line in row["_out"].stderr.splitlines()
                                  if line.startswith(f"[{name}] [") and "unchanged, kept" not in line)
    for name in config.envs:
        row = bench.timed(f"(c) no-change rerun, {name} (python -m harness run)",
                          [*HARNESS, "run", "--env", name, "--reports", str(reports), *config_arg])
        row["kept"] = (row["_out"].stdout + row["_out"].stderr).count("unchanged, kept")
    nox = shutil.which("nox", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if nox:
        sessions = [f"matrix({name})" for name in config.envs]
        row = bench.timed("(c) no-change rerun, whole matrix (nox -s matrix)", [
            nox, "-f", str(ROOT / "noxfile.py"), "-s", *sessions, "--", "--config", str(config_path),
            "--reports", str(reports)])
        row["kept"] = (row["_out"].stdout + row["_out"].stderr).count("unchanged, kept")


def part_full(bench: Bench, config: Config, cache: Path, config_arg: list[str], facts: dict[str, Any],
              keep: Path | None = None) -> None:
    """The whole default matrix from an empty results folder, env by env, then the floor of every ref x env batch.
    ``keep``: an empty folder to write the results to and leave behind (for the report); else a temporary one."""
    if keep is not None and any(keep.glob("**/results/*.json")):
        raise SystemExit(f"bench: --keep {keep} already holds results; --full starts from an empty folder")
    reports = keep or Path(tempfile.mkdtemp(prefix="bench-full-"))
    started = time.time()
    print(f"(full) the default matrix, {len(config.envs)} envs, from an empty {reports}", flush=True)
    env_rows: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(config.envs, 1):
        row = bench.timed(f"(full) harness, {name}", [*HARNESS, "run", "--env", name, "--reports", str(reports),
                                                       *config_arg], )
        found = [r for r in results.load_results(reports) if r.env == name]
        row.update(cells=len(found), outcomes=dict(Counter(r.outcome() for r in found)),
                   stages=stage_breakdown(found), env_position=f"{k}/{len(config.envs)}")
        env_rows[name] = row
    facts["full_s"] = round(time.time() - started, 1)
    facts["full_peak_memory_mb"] = max((row["peak_memory_mb"] for row in env_rows.values()), default=0)
    source = choose_source(config, cache, print)
    floors: dict[str, float] = {}
    for name in config.envs:
        floors[name] = 0.0
        for ref in config.source.refs:
            checkout = get_checkout(source, ref, cache=cache, fetch=is_local_repo(source))
            found = [r for r in results.load_results(reports) if r.env == name and r.ref == ref]
            row = floor(config, name, checkout, found, cache)
            row["name"] = f"(full) floor, {ref} x {name}"
            bench.rows.append(row)
            print(f"  {row['name']}: {row['seconds']} s", flush=True)
            floors[name] += row["seconds"]
    facts["full_floor_sum_s"] = round(sum(floors.values()), 1)
    facts["full_per_env"] = {n: {"harness_s": row["seconds"], "floor_sum_s": round(floors[n], 1),
                                 "peak_memory_mb": row["peak_memory_mb"],
                                 "ratio": round(row["seconds"] / floors[n], 2) if floors[n] else None}
                             for n, row in env_rows.items()}
    if keep is None:
        shutil.rmtree(reports, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "matrix.toml")
    parser.add_argument("--env", default=None, help="env for (a), (b), (d) (default: the first in matrix.toml)")
    parser.add_argument("--ref", default=None, help="ref for (a), (b) (default: the last configured ref)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports",
                        help="results of the whole default matrix for (c) (default: reports/)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a, b, c, d")
    parser.add_argument("--no-fill", action="store_true", help="(c): do not compute missing results first")
    parser.add_argument("--cold", action="store_true", help="(d): also build the env with an empty uv cache")
    parser.add_argument("--full", action="store_true",
                        help="the whole default matrix from an empty results folder, with the sum of the floors "
                             "beside each env (about an hour here); the other parts are skipped")
    parser.add_argument("--keep", type=Path, default=None,
                        help="--full: write the results to this (empty) folder and keep them, e.g. for a report")
    args = parser.parse_args(argv)
    skip = {"a", "b", "c", "d"} if args.full else set(filter(None, args.skip.split(",")))
    config = load_config(args.config)
    env = args.env or next(iter(config.envs))
    ref = args.ref or config.source.refs[-1]
    cache = cache_dir()
    bench = Bench()
    facts: dict[str, Any] = {"env": env, "ref": ref, "cache": str(cache), "cpus": os.cpu_count(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                      capture_output=True, text=True,
                                                      check=False).stdout.strip() or None}
    config_arg = ["--config", str(args.config.resolve())]
    print(f"bench: env {env}, ref {ref}, cache {cache}, {os.cpu_count()} CPUs, load {load()}", flush=True)
    if "d" not in skip:
        part_env(bench, config.envs[env], cache, args.cold)
    if not {"a", "b"} <= skip:
        part_batch(bench, config, env, ref, cache, config_arg, facts)
    if "c" not in skip:
        part_rerun(bench, config, args.reports.resolve(), not args.no_fill, config_arg, args.config.resolve())
    if args.full:
        part_full(bench, config, cache, config_arg, facts, args.keep)
    report(bench, facts, args.out)
    return 0


def report(bench: Bench, facts: dict[str, Any], out: Path) -> None:
    for row in bench.rows:
        row.pop("_out", None)
    write_json(out, {"facts": facts, "targets": TARGETS, "rows": bench.rows})
    print()
    print(f"{'measurement':<62} {'seconds':>8} {'load':>12}  notes")
    for row in bench.rows:
        notes = ", ".join(f"{k}={row[k]}" for k in ("cells", "processes", "kept", "computed") if k in row)
        print(f"{row['name']:<62} {row['seconds']:>8} {row['load_before']:>5}->{row['load_after']:<5}  {notes}")
        if row.get("stages"):
            print("      stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in list(row["stages"].items())[:8]))
    if facts.get("ratio") is not None:
        print(f"{'harness / floor':<62} {facts['ratio']:>8}x  (target <= {TARGETS['ratio']}; vs a floor that "
              f"imports torch once: {facts['ratio_vs_floor_with_one_import']}x)")
    for name, row in (facts.get("full_per_env") or {}).items():
        print(f"{'full: ' + name + ' harness / sum of floors':<62} {row['ratio']:>8}x  "
              f"({row['harness_s']:.0f} s / {row['floor_sum_s']:.0f} s; peak memory {row['peak_memory_mb']} MB)")
    if "full_s" in facts:
        print(f"{'full: the whole default matrix':<62} {facts['full_s']:>8}  (target <= {TARGETS['full_s']:.0f} s; "
              f"floors summed: {facts['full_floor_sum_s']} s; peak memory {facts['full_peak_memory_mb']} MB)")
    print(f"written: {out}")


if __name__ == "__main__":
    sys.exit(main())
