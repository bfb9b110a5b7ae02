"""The box around every env-side process: a ref's code, a user's pickle and tpu-mlir's tools run without network,
see a narrow read-only part of the disk and write only where their step writes.

The one place that knows bwrap, unshare and Landlock. Two layers:

- **the box** (per process the harness starts, through harness/envs/proc.py): bubblewrap (``bwrap``) where it works,
  else util-linux ``unshare``. Its own network namespace (loopback only: no route anywhere, DNS fails at once),
  IPC and UTS namespaces, no capabilities. bwrap also builds the filesystem view: /usr, a few /etc files, the
  interpreter, the env, the harness code and the trees read-only; the paths the step writes read-write; /tmp and
  /dev/shm private and empty; everything else, the home directory above all, absent.
- **the job** (per job of the warm process, and per one-shot process): harness/worker/confine.py narrows the process
  from inside with Landlock (reads below the system paths, the interpreter, the harness code and the job's own tree
  and weights; writes below the job's directories and its private temp dir only; no TCP) and drops every
  capability. The warm process (harness/envs/warm.py) forks all of an env's jobs from one box whose mounts are fixed, so
  the per-job boundary can only come from there. The warm process puts its jobs in a PID namespace of its own and
  kills any process whose parent has ended (a job's leftovers, however detached); a one-shot step gets a PID
  namespace of its own (bwrap's, or confine.py's).

``[limits] sandbox``: ``auto`` uses the best this machine offers and says which; ``required`` refuses to run without
a network namespace, a write boundary and per-job PID namespaces; ``off`` runs as before this module existed.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from harness.envs import proc
from harness.errors import HarnessError

Tool = Literal["bwrap", "unshare"]

HARNESS_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds harness/
HARNESS_CODE = HARNESS_ROOT / "harness"
# What every confined process may read besides its interpreter and the harness code: the system's programs and
# libraries, the /etc files a Python process and its libraries open (no shadow, no ssh, no sudoers), and the CPU
# facts torch, ONNX Runtime and OpenBLAS size their thread pools from (/proc is the process's own, see below).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group", "nsswitch.conf",
       "host.conf", "hosts", "resolv.conf", "gai.conf", "protocols", "services", "ssl", "ca-certificates",
       "alternatives", "fonts", "mime.types", "os-release", "debian_version", "locale.alias", "matplotlibrc")
SYS = ("/sys/devices/system", "/sys/fs/cgroup")
# Inherited variables that reach a boxed process (the harness's own variables, e.g. those of a CI job, may hold
# tokens; a job's log ends up in its result). Variables the harness sets for a step always pass.
ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH",
                       "MPLBACKEND", "NO_COLOR", "COLUMNS"})
ENV_PREFIXES = ("LC_", "PYTHON", "OMP_", "MKL_", "OPENBLAS_", "GOTO_", "KMP_", "GOMP_", "NUMEXPR_", "TORCH",
                "PYTORCH_", "CUDA_", "NVIDIA_", "CUBLAS_", "CUDNN_", "ORT_", "ONNX", "OPENCV_", "YOLOV5_", "TPU")
# Job fields naming what the job reads, and files it writes (their folders are writable): harness/worker's jobs and
# harness/targets/envside's checks.
JOB_READS = ("tree", "weights", "image", "artifact", "photos")
JOB_WRITES = ("out", "progress", "weights_out")
PROBE_TIMEOUT = 30.0

# The confinement of a process, applied from inside it: harness/worker/confine.py, then exec.
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from harness.worker import confine; confine.main(sys.argv[2:])"
# A PID namespace, as harness/worker/confine.py makes it (user namespace first: unprivileged).
_PIDS_PROBE = ("--user", "--pid", "--fork")


@dataclass(frozen=True)
class Box:
    """The confinement this machine offers, found once per run (:func:`choose`)."""

    mode: str = "off"
    tool: Tool | None = None
    version: str = ""  # e.g. "bubblewrap 0.8.0"
    landlock: int = 0  # the kernel's Landlock ABI (0: none)
    pids: bool = False  # a job can have its own PID namespace
    missing: tuple[str, ...] = ()  # what was looked for and not found, and why

    @property
    def on(self) -> bool:
        return self.tool is not None or self.landlock > 0 or self.pids

    @property
    def label(self) -> str:
        """Short, for each result: "bubblewrap 0.8.0 + Landlock ABI 7 + PID namespace", "off", "none available"."""
        if self.mode == "off":
            return "off"
        if not self.on:
            return "none available"
        parts = [self.version or self.tool] if self.tool else []
        parts += [f"Landlock ABI {self.landlock}"] if self.landlock else []
        parts += ["PID namespace"] if self.pids else []
        return " + ".join(parts)

    def describe(self) -> str:
        """One line for the run's first lines: what is in force, and what is not."""
        if self.mode == "off":
            return 'sandbox: off ([limits] sandbox = "off"): env processes run with the harness\'s own rights'
        if not self.on:
            return (f"sandbox: NONE available ({'; '.join(self.missing)}): env processes run with the harness's own "
                    f"rights — install bubblewrap (Debian: apt-get install bubblewrap)")
        parts = []
        if self.tool == "bwrap":
            parts.append(f"{self.version or 'bwrap'}: no network, read-only system/env/trees/harness code, home "
                         f"hidden, private /tmp, writes only below the env's work folder")
        elif self.tool == "unshare":
            files = "Landlock alone bounds files" if self.landlock else "NO FILE BOUNDARY (no Landlock either)"
            parts.append(f"unshare: no network; no filesystem view (bwrap not usable), so {files}")
        else:
            parts.append("NETWORK OPEN (neither bwrap nor unshare works)")
        job = []
        if self.landlock:
            job.append(f"Landlock ABI {self.landlock} (reads: system, env, its tree and weights; writes: its own "
                       f"cell folders and temp dir; no TCP)")
        job.append("no process outlives it (PID namespace)" if self.pids
                   else "NO PID namespace (what it leaves behind is killed by process group only)")
        job.append("no capabilities")
        note = f"; missing: {'; '.join(self.missing)}" if self.missing else ""
        return f"sandbox: {parts[0]}; per job: {', '.join(job)}{note}"


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 without Landlock (the ABI query of landlock_create_ruleset, syscall 444
    on every architecture)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return int(version) if version > 0 else 0


def _works(argv: list[str]) -> bool:
    return proc.capture(argv, timeout=PROBE_TIMEOUT).returncode == 0


_BWRAP_FLAGS = ("--die-with-parent", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL")
_UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--ipc", "--uts")
_BWRAP_PROBE = (*_BWRAP_FLAGS, "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--")


@functools.cache
def detect() -> Box:
    """What works here, tried for real (an installed tool may still be refused by the kernel or a container's
    seccomp filter): bwrap, else unshare, else neither; whether a PID namespace can be made inside it; Landlock's
    ABI. A few processes, no Python: tens of milliseconds."""
    landlock, missing = landlock_abi(), []
    if not landlock:
        missing.append("no Landlock in this kernel")
    true = shutil.which("true") or "/bin/true"
    unshare = shutil.which("unshare")
    pids_probe = [unshare, *_PIDS_PROBE, true] if unshare else []
    for tool, flags in (("bwrap", _BWRAP_PROBE), ("unshare", (*_UNSHARE_FLAGS, "--"))):
        path = shutil.which(tool)
        if not path:
            missing.append(f"{tool} not installed")
            continue
        pids = bool(pids_probe) and _works([path, *flags, *pids_probe])
        if pids or _works([path, *flags, true]):
            version = ""
            if tool == "bwrap":
                version = proc.capture([path, "--version"], timeout=PROBE_TIMEOUT).stdout
            return Box("auto", cast(Tool, tool), version.strip(), landlock, pids, tuple(missing))
        missing.append(f"{tool} refused to start (user namespaces or mounts not allowed here)")
    return Box("auto", None, "", landlock, bool(pids_probe) and _works(pids_probe), tuple(missing))


def choose(mode: str) -> Box:
    """The box for a run under ``[limits] sandbox = mode``; ``required`` raises a one-line HarnessError (exit 2)
    when this machine cannot give a network namespace, a write boundary (bwrap, or Landlock) and PID namespaces."""
    if mode == "off":
        return Box("off")
    box = detect()
    box = Box(mode, box.tool, box.version, box.landlock, box.pids, box.missing)
    if mode == "required" and not (box.tool and (box.tool == "bwrap" or box.landlock) and box.pids):
        lacking = [what for what, ok in (("a network namespace (bwrap or unshare)", box.tool),
                                         ("a write boundary (bwrap, or Landlock)", box.tool == "bwrap" or box.landlock),
                                         ("per-job PID namespaces", box.pids)) if not ok]
        raise HarnessError(f'[limits] sandbox = "required", but this machine lacks {", ".join(lacking)} '
                           f"({'; '.join(box.missing) or 'see harness/envs/sandbox.py'}) — install bubblewrap (Debian: "
                           f'apt-get install bubblewrap) or set sandbox = "auto" in matrix.toml')
    return box


def interpreter_paths(python: Path) -> list[Path]:
    """What running ``python`` reads: its venv (or installation) and the base interpreter a venv points at."""
    paths = []
    venv = python.parent.parent
    paths.append(venv)
    cfg = venv / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                paths.append(Path(value.strip()).parent)
    real = Path(os.path.realpath(python))
    paths.append(real.parent.parent)
    return _unique(paths)


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in paths:
        seen.setdefault(str(path), path)
    return list(seen.values())


def _etc() -> list[Path]:
    return [Path("/etc") / name for name in ETC]


# Inside bwrap: the box's own empty tmpfs mounts (nothing of the machine's shows through).
BOX_TMP, BOX_SHM = Path("/tmp"), Path("/dev/shm")  # noqa: S108


@dataclass
class Jail:
    """How one process the harness starts is confined: the machine's box plus the paths of this step.

    ``read``: what the process may read besides the system, its interpreter and the harness code; ``write``: where
    it may write (the box binds these read-write); ``shared``: what every job of a warm process may read besides its
    own tree and weights (the font folder, matplotlib's cache). ``pids``: its own PID namespace for the whole
    process (one-shot steps); a warm process gives one to each job instead, so the harness keeps addressing jobs by
    their pid. ``tmp``: its private temp dir ($TMPDIR), chosen when it starts (see private_tmp).
    """

    box: Box
    python: Path
    write: tuple[Path, ...] = ()
    read: tuple[Path, ...] = ()
    shared: tuple[Path, ...] = ()
    pids: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    tmp: Path | None = None

    def private_tmp(self) -> Path:
        """Under bwrap the box's own /tmp; elsewhere a fresh folder in the machine's /tmp, removed by cleanup().
        Short on purpose: a unix socket's path (multiprocessing's, in $TMPDIR) must fit in 108 bytes."""
        if self.tmp is None:
            self.tmp = BOX_TMP if self.box.tool == "bwrap" else Path(tempfile.mkdtemp(prefix="ymx-"))
        return self.tmp

    def cleanup(self) -> None:
        """Remove the private temp dir this jail made (the process has ended)."""
        if self.tmp is not None and self.tmp != BOX_TMP:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def base_reads(self) -> list[Path]:
        return [*(Path(p) for p in SYSTEM_DIRS), *_etc(), Path("/proc"), *(Path(p) for p in SYS),
                *interpreter_paths(self.python), HARNESS_CODE]

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` without the inherited variables not on the list, with the private temp dir."""
        kept = {k: v for k, v in env.items()
                if k in ENV_NAMES or k.startswith(ENV_PREFIXES) or os.environ.get(k) != v}
        return {**kept, **self.extra_env, "TMPDIR": str(self.private_tmp())}

    def policy(self, read: Iterable[Path], write: Iterable[Path], pids: bool, tmp: Path | None) -> dict[str, Any]:
        """The JSON policy harness/worker/confine.py applies."""
        return {"pids": pids, "tmp": str(tmp) if tmp else None, "landlock": self.box.landlock,
                "read": [str(p) for p in _unique([*self.base_reads(), *read])],
                "write": [str(p) for p in _unique(write)],
                "list": [str(HARNESS_ROOT)]}  # PYTHONPATH: Python lists it to find harness/ (names, no contents)

    def command(self, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[list[str], dict[str, str]]:
        """``argv`` and ``env`` to start the confined process with."""
        if not self.box.on:
            return argv, env
        for path in self.write:
            path.mkdir(parents=True, exist_ok=True)  # bwrap binds them; Landlock rules need them to exist
        tmp = self.private_tmp()
        # One-shot steps get their PID namespace from bwrap (--unshare-pid: the step runs under bwrap's init, which
        # takes every process of the box down with it), else from confine.py; a warm process makes one for its jobs
        # itself, after its imports (see isolate).
        tool_pids = self.pids and self.box.tool == "bwrap"
        # Under bwrap /tmp and /dev/shm are the box's own empty tmpfs: tools that hard-code them (tpu-mlir's
        # /tmp/cmodel_so.lock, Intel OpenMP's registration in /dev/shm) may write there. Elsewhere they are the
        # machine's, and only the private temp dir is writable. (A warm process's jobs share its box, so each job
        # gets a folder of its own in there instead: see job.)
        private = [BOX_TMP, BOX_SHM] if self.box.tool == "bwrap" else [tmp]
        policy = self.policy([*self.read, *self.shared], [*self.write, *private], self.pids and not tool_pids, None)
        inner = [str(self.python), "-I", "-c", _BOOT, str(HARNESS_ROOT), json.dumps(policy), "--", *argv]
        if self.box.tool == "bwrap":
            return [*self.bwrap(cwd, tool_pids), "--", *inner], self.environment(env)
        if self.box.tool == "unshare":
            return ["unshare", *_UNSHARE_FLAGS, "--", *inner], self.environment(env)
        return inner, self.environment(env)

    def bwrap(self, cwd: Path, pids: bool) -> list[str]:
        """bwrap's arguments: the namespaces, then the filesystem view (ro system, ro reads, rw writes)."""
        out = ["bwrap", *_BWRAP_FLAGS, *(["--unshare-pid"] if pids else [])]
        for top in SYSTEM_DIRS:
            if os.path.islink(top):
                out += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                out += ["--ro-bind", top, top]
        for etc in _etc():
            out += ["--ro-bind-try", str(etc), str(etc)]
        out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", str(BOX_TMP), "--tmpfs", str(BOX_SHM)]
        for sys_dir in SYS:
            out += ["--ro-bind-try", sys_dir, sys_dir]
        reads = _unique([*interpreter_paths(self.python), HARNESS_CODE, *self.read, *self.shared])
        for path in sorted(reads, key=lambda p: len(p.parts)):
            out += ["--ro-bind-try", str(path), str(path)]
        for path in sorted(_unique(self.write), key=lambda p: len(p.parts)):
            out += ["--bind", str(path), str(path)]
        return [*out, "--remount-ro", "/", "--chdir", str(cwd)]

    @property
    def isolate(self) -> bool:
        """Whether a warm process in this jail puts its jobs in a PID namespace of its own
        (harness/worker/serve.py, confine.isolate_children)."""
        return self.box.on and self.box.pids

    def job(self, job: dict[str, Any], workdir: Path) -> dict[str, Any] | None:
        """The policy one job of a warm process applies to itself after the fork (harness/worker/serve.py): reads
        of its tree and weights, writes to its folders (those of the job's answer and progress file, of its cells,
        of a checkpoint it builds) and to a temp dir of its own (removed when the job ends)."""
        if not self.box.on:
            return None
        reads = [Path(job[k]) for k in JOB_READS if job.get(k)]
        writes = [workdir, *(Path(job[k]).parent for k in JOB_WRITES if job.get(k))]
        writes += [Path(cell["workdir"]) for cell in job.get("cells", []) if cell.get("workdir")]
        tmp = self.private_tmp() / f"job-{uuid.uuid4().hex[:8]}"
        return self.policy([*reads, *self.shared], writes, False, tmp)  # PID namespace: the warm process's (isolate)


def _matplotlib(workroot: Path) -> dict[str, str]:
    """matplotlib's config and font cache in a box: in the env's work folder, built once per env (the home
    directory it would use is hidden)."""
    return {"MPLCONFIGDIR": str(workroot / "matplotlib")}


def warm_jails(box: Box, *, cache: Path, workroot: Path, read: Iterable[Path] = (),
               shared: Iterable[Path] = ()) -> Callable[[Path, Path], Jail | None]:
    """The jail of each warm process of an env run (harness/envs/warm.py), given its interpreter and folder: it reads
    the
    cache's trees and checkpoints, ``read`` (a user's weights) and ``shared`` (also readable by every job: the
    font folder), and writes below ``workroot`` only; its jobs each get less (see Jail.job)."""
    if not box.on:
        return lambda python, root: None
    trees = [cache / "checkouts", cache / "patched", cache / "checkpoints"]
    for folder in trees:
        folder.mkdir(parents=True, exist_ok=True)  # bound into the box now: later subfolders show through
    extra = _matplotlib(workroot)
    common = (*shared, *(Path(v) for v in extra.values()))
    for folder in common:
        folder.mkdir(parents=True, exist_ok=True)
    return lambda python, root: Jail(box, python, write=(workroot,), read=(*trees, *read), shared=common, pids=False,
                                     extra_env=extra)


def step_jail(box: Box, python: Path, *, workdir: Path, write: Iterable[Path] = (), read: Iterable[Path] = (),
              workroot: Path | None = None) -> Jail | None:
    """The jail of a one-shot step (the env probe, a tpu-mlir tool): writes below ``workdir`` and ``write``, reads
    ``read``; its own PID namespace. ``workroot``: where matplotlib's cache lives (see _matplotlib)."""
    if not box.on:
        return None
    extra = _matplotlib(workroot) if workroot else {}
    return Jail(box, python, write=(workdir, *write, *(Path(v) for v in extra.values())), read=tuple(read), pids=True,
                extra_env=extra)
