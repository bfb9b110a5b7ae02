"""Resume, for real: a run killed with SIGKILL, then one interrupted with SIGINT, lose no saved cell; the next run
keeps every cell whose inputs did not change and redoes the rest; --force redoes everything; a corrupt result is
redone with a warning naming its file.

Two cells (v7.0 stand-in, variants 1 and 3, TorchScript) in two batches run one after the other (--jobs 1), so there
is a moment when the first result has landed and the second cell is still exporting: that is when the kill comes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import result_files

from harness.paths import cache_dir
from harness.results.model import result_path

pytestmark = [pytest.mark.slow, pytest.mark.torch]

ROOT = Path(__file__).resolve().parent.parent
CELLS = ("v7.0__py311-torch2.14__1__torchscript", "v7.0__py311-torch2.14__3__torchscript")


def created(reports: Path) -> dict[str, float]:
    """Cell id -> the `created` stamp of its result file, for every readable result."""
    return {r["cell"]: r["created"] for r in result_files(reports)}


def start_and_stop_after_first_result(argv: list[str], env: dict[str, str], reports: Path, sig: int,
                                      before: dict[str, float]) -> tuple[subprocess.Popen[str], str]:
    """Start a run; as soon as one result newer than ``before`` lands, send ``sig``; return the process and stderr."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        now = created(reports) if (reports / "results").is_dir() else {}
        if any(now.get(c, 0) > before.get(c, 0) for c in CELLS):
            proc.send_signal(sig)
            break
        time.sleep(0.2)
    _, err = proc.communicate(timeout=120)
    return proc, err


def workers(cache_marker: str) -> dict[str, str]:
    """pid -> command line of every harness worker alive that belongs to this cache."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "harness.worker" in cmd and cache_marker in cmd:
            found[entry.name] = cmd
    return found


def workers_left(cache_marker: str, before: frozenset[str]) -> list[str]:
    """Workers still alive that were not there before this test's run (none may outlive it): on a shared cache,
    other runs' workers are not this run's."""
    return [cmd for pid, cmd in workers(cache_marker).items() if pid not in before]


def said_kept(cell: str, stderr: str) -> bool:
    """Whether the run's progress said it kept ``cell``: "v7.0 variant 1 onnx [stand-in]: unchanged, kept (...)"."""
    ref, _, variant, fmt = cell.split("__")
    return any(f"{ref} variant {variant} {fmt}" in line and ": unchanged, kept (" in line
               for line in stderr.splitlines())


def test_kill_then_resume_then_interrupt_then_force(small_weights: Path, small_matrix, harness_run, mirror_repo: Path,
                                                    tmp_path: Path) -> None:
    config = small_matrix(tmp_path / "matrix.toml", repo=mirror_repo, refs=["v7.0"], weights=small_weights,
                          variants=("1", "3"))
    reports = tmp_path / "reports"
    argv, env = harness_run(config, reports, "--jobs", "1")

    # 1. SIGKILL once the first cell is saved: it stays, whole; the other cell has no result; no worker survives.
    others = frozenset(workers(str(cache_dir())))
    proc, err = start_and_stop_after_first_result(argv, env, reports, signal.SIGKILL, {})
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    first = created(reports)
    assert len(first) == 1, (first, err[-2000:])
    done_cell = next(iter(first))
    assert not list((reports / "results").glob(".*.tmp"))
    deadline = time.monotonic() + 60  # env-side workers notice their supervisor is gone and exit (seen: 7 s)
    while workers_left(str(cache_dir()), others) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workers_left(str(cache_dir()), others)

    # 2. The next run keeps that cell and does the other one.
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert said_kept(done_cell, proc.stderr), proc.stderr
    second = created(reports)
    assert set(second) == set(CELLS) and second[done_cell] == first[done_cell]
    other = next(c for c in CELLS if c != done_cell)

    # 3. --force reruns cells whose inputs did not change; SIGINT once the first is saved: exit 130, one line, and
    #    the cell in flight keeps its previous result.
    proc, err = start_and_stop_after_first_result([*argv, "--force"], env, reports, signal.SIGINT, second)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: results saved so far are kept; rerun the same command to do the rest" in err
    assert "Traceback" not in err
    third = created(reports)
    rerun = [c for c in CELLS if third[c] > second[c]]
    assert len(rerun) == 1, (second, third)  # --force redid one cell before the interrupt, the other is as it was
    for path in (reports / "results").iterdir():
        json.loads(path.read_text())  # every file whole

    # 4. A corrupt result is skipped with a warning naming the file, and redone; the intact one is kept.
    broken = result_path(reports, other)
    broken.write_text('{"schema": 1, "status": "pa')
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"warning: skipping {broken}: not a readable result" in proc.stderr
    assert said_kept(done_cell, proc.stderr), proc.stderr
    fourth = created(reports)
    assert fourth[done_cell] == third[done_cell] and fourth[other] > third[other]
    # Both work (variant 3 with the adapted patch form: the guide's list x aborts v7.0's export.py).
    assert {r["cell"]: r["verdict"].split(" ")[0] for r in result_files(reports)} == dict.fromkeys(CELLS, "works")
