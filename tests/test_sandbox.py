"""The sandbox (harness/envs/sandbox.py, harness/worker/confine.py), for real: bwrap/unshare namespaces, Landlock and
PID
namespaces on this machine's kernel, no mocks.

Fast tests first (a plain Python child, seconds): the config key, ``required`` refusing, what one confined step can
read, write and reach. Then the warm worker's jobs (the quick env's Python, preloading nothing): a job's detached
process dies with the job, and signals a job sends itself still name its death. Last, one small matrix run on a
hostile fork whose ``models/yolo.py`` and whose checkpoint's pickle attack the machine on import / load.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from conftest import QUICK_ENV, deciding_attempt, repo_from_tag, result_files

from harness.config import load_config
from harness.envs import bytecode, proc, sandbox
from harness.envs.warm import WarmPool
from harness.errors import ConfigError
from harness.paths import cache_dir

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = Path("/work/shared/upstream/yolov5.bundle")
BOX = sandbox.detect()
needs_box = pytest.mark.skipif(not BOX.tool, reason=f"no namespace sandbox on this machine: {BOX.describe()}")


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts (none may arrive from a box)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(f"{peer}: {conn.recv(100)!r}")
            conn.close()

    def close(self) -> list[str]:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        return self.accepted


def processes_with(marker: str) -> list[str]:
    """Pids of processes whose command line holds ``marker`` (a process a test's hostile code started)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(entry)
            except OSError:
                continue
    return found


# -- the config key and the refusal ----------------------------------------------------------------------------------

def test_sandbox_key_defaults_to_auto_and_names_the_choices(tmp_path: Path) -> None:
    text = (ROOT / "matrix.toml").read_text()
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    assert load_config(path).limits.sandbox == "auto"
    path.write_text(text + '\n[limits]\nsandbox = "strict"\n')
    with pytest.raises(ConfigError, match=r"'limits.sandbox' is 'strict', not one of auto, required, off"):
        load_config(path)
    path.write_text(text + '\n[limits]\nsandbox = "off"\n')
    assert load_config(path).limits.sandbox == "off"


def test_required_refuses_in_one_line_before_any_env_work(tmp_path: Path) -> None:
    """With neither bwrap nor unshare reachable (a PATH holding git only) "required" stops with exit 2 and one line,
    before the env, the source or the results folder is touched."""
    config = tmp_path / "matrix.toml"
    config.write_text((ROOT / "matrix.toml").read_text() + '\n[limits]\nsandbox = "required"\n')
    reports = tmp_path / "reports"
    only_git = tmp_path / "bin"  # gitpython wants git on PATH at import
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    env = {**os.environ, "PATH": str(only_git)}
    t = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--config", str(config),
                           "--reports", str(reports)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith('error: [limits] sandbox = "required", but this machine lacks a network namespace')
    assert "bwrap not installed" in lines[0] and "apt-get install bubblewrap" in lines[0]
    assert not reports.exists() and time.monotonic() - t < 30


# -- one confined step (plain Python, no torch) ----------------------------------------------------------------------

STEP = """
import json, os, socket, sys, urllib.request
targets = json.loads(sys.argv[1])
tried = {}
def attempt(name, action):
    try:
        tried[name] = ["done", action()]
    except BaseException as exc:
        tried[name] = ["failed", "%s: %s" % (type(exc).__name__, exc)]
attempt("read_allowed", lambda: open(targets["readable"]).read())
attempt("read_secret", lambda: open(targets["secret"]).read())
attempt("write_workdir", lambda: open(os.path.join(targets["workdir"], "mine"), "w").write("x"))
attempt("write_outside", lambda: open(targets["outside"], "w").write("x"))
attempt("write_tmp", lambda: open(targets["tmp"], "w").write("x"))
attempt("write_tmpdir", lambda: open(os.path.join(os.environ["TMPDIR"], "t"), "w").write("x"))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", targets["port"]), timeout=5).close())
attempt("github", lambda: urllib.request.urlopen("https://api.github.com/repos/ultralytics/yolov5/releases/latest",
                                                 timeout=60).read())
attempt("token", lambda: os.environ.get("CI_SECRET_TOKEN_FOR_TEST"))
print("TRIED " + json.dumps(tried))
"""


@needs_box
def test_a_confined_step_reads_writes_and_connects_only_where_allowed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "readable").mkdir()
    (tmp_path / "readable" / "file").write_text("fine")
    (tmp_path / "secret").write_text("secret-content")
    monkeypatch.setenv("CI_SECRET_TOKEN_FOR_TEST", "ghp_leak")  # inherited, not on the list: stays out of the box
    workdir = tmp_path / "work"
    outside = cache_dir() / "tests" / f"sandbox-{uuid.uuid4().hex}"  # a folder the step does not own, not in /tmp
    outside.mkdir(parents=True)
    listener = Listener()
    targets = {"readable": str(tmp_path / "readable" / "file"), "secret": str(tmp_path / "secret"),
               "workdir": str(workdir), "outside": str(outside / "file"), "tmp": str(tmp_path / "outside"),
               "port": listener.port}
    jail = sandbox.step_jail(BOX, Path(sys.executable), workdir=workdir, read=[tmp_path / "readable"])
    t = time.monotonic()
    ran = proc.run_process([sys.executable, "-c", STEP, json.dumps(targets)], cwd=workdir, env=proc.child_env(),
                           log=tmp_path / "step.log", watch=proc.Watch(120), jail=jail)
    seconds = time.monotonic() - t
    assert listener.close() == []
    assert ran.failure() is None, ran.text()
    tried = json.loads(next(line for line in ran.text().splitlines() if line.startswith("TRIED "))[6:])
    assert tried["read_allowed"] == ["done", "fine"]
    assert tried["write_workdir"][0] == tried["write_tmpdir"][0] == "done"
    assert tried["token"] == ["done", None]
    for name in ("read_secret", "write_outside", "connect", "github"):
        assert tried[name][0] == "failed", (name, tried[name])
    assert "secret-content" not in ran.text() and list(outside.iterdir()) == []
    shutil.rmtree(outside)
    # /tmp: under bwrap the step has its own empty one (a write there lands in it and vanishes), else it may not
    # write there at all; either way nothing reaches the machine's /tmp.
    assert not (tmp_path / "outside").exists()
    # Offline fails at once (DNS has no route), it does not wait for a timeout.
    assert "Temporary failure in name resolution" in tried["github"][1] or "unreachable" in tried["github"][1]
    assert seconds < 20


@needs_box
def test_an_env_gets_the_bytecode_of_its_preloads_once_though_the_box_keeps_it_read_only(tmp_path: Path) -> None:
    """In the box an env is read-only, so a confined import never caches its bytecode (every warm process compiled
    torch & co again); bytecode.ensure's step, the same jail plus write access to the venv, writes it once."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    for name in ("first", "second"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("VALUE = 1\n")
    workdir = tmp_path / "work"
    jail = sandbox.step_jail(BOX, python, workdir=workdir)

    def compiled(name: str) -> list[Path]:
        return sorted((site / name).glob("__pycache__/*.pyc"))

    ran = proc.run_process([str(python), "-c", "import first; print(first.VALUE)"], cwd=workdir,
                           env=proc.child_env(), log=tmp_path / "import.log", watch=proc.Watch(60), jail=jail)
    assert ran.failure() is None and "1" in ran.text(), ran.text()
    assert compiled("first") == []  # imported fine, but nothing written into the env
    bytecode.ensure(python, ["first", "second"], jail, workdir)
    assert compiled("first") and compiled("second"), (workdir / "bytecode.log").read_text()
    assert json.loads((venv / bytecode.MARK).read_text()) == ["first", "second"]
    (workdir / "bytecode.log").unlink()
    bytecode.ensure(python, ["second"], jail, workdir)  # there already: no step runs
    assert not (workdir / "bytecode.log").exists()
    # Unconfined, a process writes its own bytecode: nothing to do.
    bytecode.ensure(python, ["third"], None, workdir)
    assert not (workdir / "bytecode.log").exists() and "third" not in (venv / bytecode.MARK).read_text()


# -- jobs of a warm process (the quick env's Python, nothing preloaded) ----------------------------------------------

JOB_SCRIPT = """
import os, subprocess, sys, time
mode, marker = sys.argv[1], sys.argv[2]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker], start_new_session=True)
open("daemon.pid", "w").write(str(child.pid))
if mode == "abort":
    os.abort()
if mode == "segv":
    os.kill(os.getpid(), 11)
"""


def job_tree(root: Path) -> Path:
    tree = root / "trees" / "t"
    (tree / "models").mkdir(parents=True)
    (tree / "models" / "__init__.py").write_text("")
    (tree / "export.py").write_text(JOB_SCRIPT)
    return tree


@needs_box
@pytest.mark.torch
def test_a_job_leaves_no_process_behind_and_its_signals_still_name_its_death(env_python: Path,
                                                                              tmp_path: Path) -> None:
    tree = job_tree(tmp_path)
    jails = sandbox.warm_jails(BOX, cache=tmp_path / "cache", workroot=tmp_path / "work", read=[tree.parent])
    pool = WarmPool(tmp_path / "work" / "warm", {}, preload=[], jail=jails)
    marker = f"left-behind-{uuid.uuid4().hex}"
    try:
        endings = {}
        for mode in ("exit", "abort", "segv"):
            workdir = tmp_path / "work" / mode
            workdir.mkdir(parents=True)
            (workdir / "progress.jsonl").touch()
            cell = {"id": mode, "variant": "1", "format": "onnx", "workdir": str(workdir),
                    "argv": [str(tree / "export.py"), mode, marker], "suffixes": [".onnx"]}
            job = {"task": "attempt", "tree": str(tree), "weights": str(tree / "none.pt"), "imgsz": 64, "atol": 0.1,
                   "rtol": 0.1, "progress": str(workdir / "progress.jsonl"), "shims": [], "cells": [cell]}
            _, ran = pool.run_worker(env_python, job, workdir=workdir, watch=proc.Watch(120))
            assert (workdir / "daemon.pid").is_file(), ran.text()  # the detached process was started ...
            time.sleep(0.3)
            assert processes_with(marker) == [], mode  # ... and died with its job
            endings[mode] = ran.failure()
            assert "harness: job confined: no capabilities" in ran.text()
    finally:
        pool.close()
    # The job is not its namespace's PID 1 (which ignores signals it sends itself): abort() and kill(getpid())
    # end it as they would unconfined, so a cell's cause reads the same with the sandbox on or off.
    assert endings == {"exit": None, "abort": "died with signal SIGABRT", "segv": "died with signal SIGSEGV"}


# -- a hostile fork and a hostile checkpoint in a real run -----------------------------------------------------------

# Runs at import of the fork's models/yolo.py and on every load of the checkpoint (pickle). Each attack is recorded;
# the record goes to the cell's work directory, the one place the box lets it write.
PAYLOAD = textwrap.dedent('''
    def _hostile(source, targets):
        import json, os, socket, subprocess, sys
        tried = {}
        def attempt(name, action):
            try:
                tried[name] = ["done", action()]
            except BaseException as exc:
                tried[name] = ["failed", "%s: %s" % (type(exc).__name__, exc)]
        def write(path):
            with open(path, "a") as fh:
                fh.write("written by the hostile %s\\n" % source)
        attempt("write_home", lambda: write(os.path.join(targets["home"], "pwned-" + source)))
        attempt("write_other_result", lambda: write(targets["other_result"]))
        attempt("write_other_cell", lambda: write(targets["other_cell"]))
        attempt("read_ssh", lambda: open(targets["ssh"]).read())
        attempt("connect", lambda: socket.create_connection(("127.0.0.1", targets["port"]), timeout=5).close())
        attempt("token", lambda: os.environ.get("CI_SECRET_TOKEN_FOR_TEST"))
        beat = os.path.join(os.getcwd(), "heartbeat-" + source)
        attempt("detach", lambda: subprocess.Popen([sys.executable, "-c", targets["daemon"], beat, str(targets["port"]),
                                                    targets["marker"]], start_new_session=True).pid)
        try:
            with open("probe-%s.json" % source, "w") as fh:
                json.dump(tried, fh)
        except OSError:
            pass
        print("hostile %s: %s" % (source, json.dumps(tried)), flush=True)
''')
# The detached process: for two minutes, a heartbeat in the cell's folder and a connection attempt every 0.2 s.
DAEMON = textwrap.dedent('''
    import socket, sys, time
    beat, port = sys.argv[1], int(sys.argv[2])
    end = time.time() + 120
    while time.time() < end:
        try:
            with open(beat, "a") as fh:
                fh.write("%f\\n" % time.time())
        except OSError:
            pass
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        time.sleep(0.2)
''')
ATTACKS = ("write_home", "write_other_result", "write_other_cell", "read_ssh", "connect")
PLANTED_KEY = "-----BEGIN OPENSSH PRIVATE KEY----- planted-by-test_sandbox"  # a fake, for the box to hide


def hostile_checkpoint(source: Path, target: Path, code: str) -> None:
    """``source`` (a torch.save zip) with one more key in its top-level dict whose unpickling runs ``code``: the
    pickle opcodes of ``ckpt["hostile"] = exec(code)`` inserted before the final STOP (no torch needed)."""
    def text(value: str) -> bytes:
        raw = value.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert data.endswith(b".")  # STOP, with the checkpoint dict on the stack
                # key, GLOBAL builtins.exec, (code,), REDUCE, SETITEM
                data = data[:-1] + text("hostile") + b"cbuiltins\nexec\n" + text(code) + b"\x85R" + b"s."
            zout.writestr(info, data)


def payload_call(source: str, targets: dict) -> str:
    return f"{PAYLOAD}\n_hostile({source!r}, {json.dumps(targets)})\n"


@pytest.fixture(scope="module")
def base_repo(mirror_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Upstream YOLOv5 (a clone of the bundle) when it is here, else the PyPI stand-in mirror."""
    if not BUNDLE.is_file():
        return mirror_repo
    clone = tmp_path_factory.mktemp("upstream") / "yolov5.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(BUNDLE), str(clone)], check=True, timeout=300)
    return clone


@pytest.fixture(scope="module")
def hostile(base_repo: Path, small_weights: Path, small_matrix, harness_run,
            tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run: ref ``hostile`` (v7.0 whose models/yolo.py attacks at import) and ref ``clean`` (v7.0 as is), both
    with a checkpoint whose pickle attacks on load; HOME is a folder holding a planted ~/.ssh key."""
    from harness.paths import cache_dir
    from harness.run.matrix import cell_root

    if not BOX.tool:
        pytest.skip(f"no namespace sandbox on this machine: {BOX.describe()}")
    root = tmp_path_factory.mktemp("hostile")
    home, reports = root / "home", root / "reports"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(PLANTED_KEY)
    other_result = reports / "results" / f"v9.9__{QUICK_ENV}__3__onnx.json"
    other_result.parent.mkdir(parents=True)
    other_result.write_text('{"planted": "another cell\'s result"}')
    other_cell = cell_root(cache_dir() / "work" / QUICK_ENV, reports) / f"v9.9__{QUICK_ENV}__3__onnx" / "planted.txt"
    other_cell.parent.mkdir(parents=True, exist_ok=True)
    other_cell.write_text("another cell's artifact")
    listener = Listener()
    targets = {"home": str(home), "other_result": str(other_result), "other_cell": str(other_cell),
               "ssh": str(home / ".ssh" / "id_ed25519"), "port": listener.port, "daemon": DAEMON,
               "marker": f"hostile-daemon-{uuid.uuid4().hex}"}

    repo = repo_from_tag(base_repo, "v7.0", root / "repo")
    repo.create_tag("clean")
    weights = root / "hostile.pt"
    hostile_checkpoint(small_weights, weights, payload_call("pickle", targets))
    yolo = root / "repo" / "models" / "yolo.py"
    yolo.write_text(payload_call("fork", targets) + yolo.read_text())
    repo.index.add(["models/yolo.py"])
    repo.index.commit("a fork whose models/yolo.py attacks at import")
    repo.create_tag("hostile")

    config = small_matrix(root / "matrix.toml", repo=root / "repo", refs=["hostile", "clean"], weights=weights,
                          timeouts={"export": 600, "verify": 300, "checkpoint": 300})
    argv, env = harness_run(config, reports, "--jobs", "2", "--keep-artifacts", "all")  # the probes read its files
    env = {**env, "HOME": str(home), "YOLOV5_MATRIX_CACHE": str(cache_dir()), "CI_SECRET_TOKEN_FOR_TEST": "ghp_leak"}
    started = time.time()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
    time.sleep(1.0)  # a connection from a process that outlived its job would arrive now
    results = {r["ref"]: r for r in result_files(reports) if r.get("ref") in ("hostile", "clean")}
    # When the hostile ref's job ended: its progress file's last event (the cell's measurements) is its last write.
    progress = [p for p in (cache_dir() / "work" / QUICK_ENV / "jobs").glob("*/progress.jsonl")
                if p.stat().st_mtime > started and '"hostile__' in p.read_text()]
    return {"hostile_job_end": max((p.stat().st_mtime for p in progress), default=0.0),
            "done": done, "results": results, "accepted": listener.close(), "left": processes_with(targets["marker"]),
            "home": home, "reports": reports, "other_result": other_result, "other_cell": other_cell,
            "started": started}


def probes(result: dict) -> dict[str, dict]:
    workdir = Path(result["artifacts_dir"]) / "out-of-the-box"
    return {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in workdir.glob("probe-*.json")}


@pytest.mark.slow
@pytest.mark.torch
def test_the_run_says_which_sandbox_and_every_cell_gets_its_verdict(hostile: dict) -> None:
    done = hostile["done"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines()[0] == BOX.describe()
    assert set(hostile["results"]) == {"hostile", "clean"}
    for ref, result in hostile["results"].items():
        attempt = deciding_attempt(result)
        assert attempt["status"] == "pass", (ref, attempt["message"], attempt["log_tail"][-2000:])


@pytest.mark.slow
@pytest.mark.torch
def test_every_attack_fails_inside_the_box(hostile: dict) -> None:
    seen = {ref: probes(result) for ref, result in hostile["results"].items()}
    assert set(seen["hostile"]) == {"fork", "pickle"} and set(seen["clean"]) == {"pickle"}
    for ref, by_source in seen.items():
        for source, tried in by_source.items():
            failed = {name for name in ATTACKS if tried[name][0] == "failed"}
            if not BOX.landlock:  # bwrap alone: the env's whole work folder is writable, other cells' too
                failed.add("write_other_cell")
            assert failed == set(ATTACKS), (ref, source, tried)
            assert tried["token"] == ["done", None]  # the harness's inherited variables stay outside
            assert tried["detach"][0] == "done"  # starting a process works; it must not outlive the job (below)


@pytest.mark.slow
@pytest.mark.torch
def test_planted_files_are_untouched_and_nothing_leaked(hostile: dict) -> None:
    home: Path = hostile["home"]
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == [".ssh", ".ssh/id_ed25519"]
    assert (home / ".ssh" / "id_ed25519").read_text() == PLANTED_KEY
    assert hostile["other_result"].read_text() == '{"planted": "another cell\'s result"}'
    assert hostile["other_cell"].read_text() == "another cell's artifact"
    written = [hostile["reports"], *(Path(r["artifacts_dir"]) for r in hostile["results"].values())]
    for folder in written:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert PLANTED_KEY not in path.read_text(errors="replace"), path


@pytest.mark.slow
@pytest.mark.torch
def test_no_connection_and_no_process_outlived_its_job(hostile: dict) -> None:
    assert hostile["accepted"] == []
    assert hostile["left"] == []
    assert hostile["hostile_job_end"], "the hostile ref's job left no progress file"
    # The detached process beat in the hostile cell's folder while its job ran; the beats stop when the job ends,
    # not when the run (or the warm process) does.
    workdir = Path(hostile["results"]["hostile"]["artifacts_dir"]) / "out-of-the-box"
    beats = [float(x) for x in (workdir / "heartbeat-fork").read_text().split()]
    assert beats and max(beats) < hostile["hostile_job_end"] + 1.0
