"""A warm worker: import torch & co once, then fork one child per job (``python -m harness.worker`` task ``serve``).

Importing torch, torchvision, ONNX, ONNX Runtime and YOLOv5's plotting stack costs 5-25 s per process on a small
machine, and a matrix run used to pay it for every ref x variant x attempt. Here one process per env pays it once
and forks: each child starts with those modules loaded but with nothing of any ref (the ref's ``models``/``utils``
are imported by the child, from the child's own tree), so variants, attempts and workaround shims never see each
other's modules, patched classes or monkeypatches. A child that crashes or hangs costs only its job; the parent
keeps serving.

Protocol (files in ``job["queue"]``, written atomically by the harness): ``N.json`` is job N (a normal worker job
with its ``out`` path and an ``env`` of variables to set in the child); the parent answers with ``N.pid`` when the
child starts and ``N.exit`` (``{"returncode": ...}``, negative for a signal) when it is reaped. The child's output
goes to ``N.log``. A ``stop`` file, or the harness going away, ends the parent.

Sandboxed (harness/envs/sandbox.py), the serve job asks to ``isolate``: after the imports, every child goes into a PID
namespace of the warm process's own, and whatever the kernel hands to that namespace's init (a process whose parent
ended: a job's leftovers, however detached) is killed at the next poll. A job may carry a ``confine`` policy: its
child applies it (harness/worker/confine.py: no capabilities, Landlock) right after the fork, before the job's code
runs; a child that cannot apply it fails its job rather than run unconfined. When a job's child has been reaped,
whatever is left of its process group is killed and its private temp dir removed.

Forking after these imports is safe because none of them starts a thread pool that a child would miss: torch's
intra-op pool starts on the first parallel op (never run here), and OpenBLAS re-initialises after fork.
"""

import contextlib
import gc
import json
import os
import shutil
import signal
import sys
import time
import traceback

from harness.worker import confine

# Imported once in the parent. Third-party modules only (never the ref's code): what every YOLOv5 ref and the
# harness's runners import, heaviest first (pkg_resources and IPython: v6.0+'s utils). A module missing from an env is
# skipped; the child then meets the same ImportError the ref would.
PRELOAD = (
    "torch", "torchvision", "numpy", "onnx", "onnxruntime", "cv2", "onnxscript", "torch.onnx",
    "torch.utils.mobile_optimizer", "matplotlib", "matplotlib.pyplot", "pandas", "seaborn", "scipy", "yaml", "PIL",
    "PIL.Image", "tqdm", "requests", "psutil", "pkg_resources", "IPython", "harness.worker.attempt",
    "harness.worker.runners", "harness.worker.compare", "harness.worker.inputs", "harness.worker.checkpoint",
)

POLL = 0.05


def preload(names):
    loaded: dict[str, object] = {}
    for name in names:
        t = time.time()
        try:
            __import__(name)
            loaded[name] = round(time.time() - t, 3)
        except BaseException as exc:  # a module this env lacks, or one that fails to import: the child will say
            loaded[name] = type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0]
    return loaded


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def child(job, log_path, run_job):
    """In the forked child: own session and process group (the harness kills it alone), own log, own env; never
    returns. A session, not just a group: with Linux's scheduler autogroups (on by default) CPU is shared fairly
    between sessions, so children left in the warm process's session would split one share on a busy machine
    (measured: exports 1.5-1.9x slower than in one-shot workers, each of which had its own session)."""
    code = 0
    try:
        os.setsid()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.environ.update(job.get("env") or {})
        if job.get("confine"):  # restricted before any of the ref's code runs
            sys.stderr.write("harness: job confined: " + confine.enter(job["confine"]) + "\n")
        run_job(job)
    except BaseException:
        code = 1
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def reap(queue, running):
    """Write ``N.exit`` for each job whose child has ended; kill what it left in its process group, remove its
    temp dir."""
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        if pid not in running:
            continue  # not a job: the reaper, which only ends with this process
        n, started, tmp = running.pop(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        with contextlib.suppress(OSError):  # what the job started and left in its group dies with it
            os.killpg(pid, signal.SIGKILL)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        write_json(os.path.join(queue, f"{n}.exit"), {"returncode": code, "seconds": time.time() - started})


def serve(job, run_job):
    queue = job["queue"]
    parent = os.getppid()
    # A user namespace before the imports start threads (only a single-threaded process may enter one), the PID
    # namespace after them (a process whose children are isolated may start no thread).
    isolate = job.get("isolate") and confine.own_user_namespace()
    loaded = preload(job["preload"])
    if hasattr(gc, "freeze"):  # 3.7+: the preloaded heap leaves the collector, so children neither rescan it nor
        gc.freeze()  # copy its pages by touching it (copy-on-write)
    reaper = confine.isolate_children() if isolate else None
    if job.get("isolate") and reaper is None:
        raise confine.ConfineError(1, "own PID namespace for the jobs: unshare(CLONE_NEWUSER), (CLONE_NEWPID) refused")
    write_json(os.path.join(queue, "ready"), {"pid": os.getpid(), "preloaded": loaded, "reaper": reaper})
    running = {}  # pid -> (job number, start time, the job's private temp dir)
    n = 1
    while True:
        path = os.path.join(queue, f"{n}.json")
        if os.path.exists(path):
            with open(path) as fh:
                task = json.load(fh)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(task, os.path.join(queue, f"{n}.log"), run_job)
            running[pid] = n, time.time(), (task.get("confine") or {}).get("tmp")
            write_json(os.path.join(queue, f"{n}.pid"), {"pid": pid})
            n += 1
            continue
        reap(queue, running)
        if reaper:
            confine.kill_orphans(reaper)  # a process whose parent ended: what a job left behind or detached
        if os.getppid() != parent or (os.path.exists(os.path.join(queue, "stop")) and not running):
            break  # the harness is gone (kill what we started), or it has no more jobs
        time.sleep(POLL)
    for pid in running:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    if reaper:
        with contextlib.suppress(OSError):
            os.kill(reaper, signal.SIGKILL)  # its end takes the namespace, and anything left in it, down
    return {"jobs": n - 1, "preloaded": loaded}
