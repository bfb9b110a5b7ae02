"""Confinement a process applies to itself before it runs a ref's code or loads a pickle (see harness/envs/sandbox.py).

The namespaces around an env process (bwrap or unshare, started by the harness) give it no network and a narrow
view of the disk. What they cannot do cheaply is narrow that view per job: the warm process (harness/envs/warm.py) forks
every job from one process whose mounts are fixed when it starts. So each job narrows itself, in its own process,
right after the fork and before any of the ref's code runs:

- Landlock (Linux >= 5.13, unprivileged, inherited by every child, cannot be undone): reads only below the paths the
  harness lists (system, interpreter, harness code, the job's tree and weights), writes only below the job's own
  directories and its private temp dir, and from ABI 4 no TCP connect or bind, from ABI 6 no signals and no
  abstract unix sockets to processes outside the job.
- no process outlives its parent: the warm process puts everything it forks in a PID namespace of its own (a user
  namespace makes that unprivileged) and kills whatever the kernel hands to that namespace's init, i.e. whatever
  a job left behind or detached, at once; the kernel kills all of it when the warm process ends.
- no capabilities and ``no_new_privs``: a job started by root cannot mount, load modules or gain privileges by exec.

Stdlib and ctypes only, Python 3.8 compatible: it runs in every env's interpreter, including tpu-mlir's.
Also a launcher for one-shot processes: ``python -I -c BOOT POLICY_JSON -- ARGV...`` applies the policy, then execs
ARGV (Landlock and the dropped capabilities survive exec), in a PID namespace of its own when asked.
"""

import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

# Landlock's syscalls have one number on every architecture (include/uapi/asm-generic/unistd.h).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# include/uapi/linux/landlock.h: filesystem rights, by the ABI version that added them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FS_V1 = (1 << 13) - 1  # execute .. make_sym
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 24, 47, 4
_CLONE_NEWUSER, _CLONE_NEWPID = 0x10000000, 0x20000000
_CAP_VERSION_3 = 0x20080522

# Devices a job may write besides its directories (Python, numpy and torch open these).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

class ConfineError(OSError):
    """A restriction the harness asked for could not be applied: the job must not run unconfined."""


def _fail(what):
    err = ctypes.get_errno()
    raise ConfineError(err, f"{what}: {os.strerror(err)}")


def landlock_abi():
    """The kernel's Landlock ABI version (0: no Landlock, or disabled at boot)."""
    version = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return int(version) if version > 0 else 0


def fs_rights(abi):
    """Every filesystem right the kernel's ABI knows: all are handled, so none is left unrestricted."""
    rights = _FS_V1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(read, write, abi=None, listing=()):
    """Restrict this process (and everything it starts) to reading below ``read`` and ``write`` and writing below
    ``write`` only; no TCP (ABI >= 4); no signals or abstract sockets out of the job (ABI >= 6). Below ``listing``
    only directory listings are allowed (Python's importer lists each sys.path entry). Paths that do not exist are
    skipped. Returns the ABI used."""
    abi = landlock_abi() if abi is None else abi
    if abi < 1:
        raise ConfineError(38, "landlock: not available in this kernel")
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)  # the struct as that ABI defines it
    ruleset = _libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        _fail("landlock_create_ruleset")
    try:
        reading = EXECUTE | READ_FILE | READ_DIR
        file_rights = (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV) & handled
        rules = [(p, READ_DIR) for p in listing] + [(p, reading) for p in read] + [(p, handled) for p in write]
        rules += [(p, file_rights) for p in DEVICES]
        for path, wanted in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # absent here: nothing to allow
            try:
                # A file takes file rights only (EINVAL otherwise).
                rights = wanted & handled if os.path.isdir(path) else wanted & file_rights
                rule = _PathBeneathAttr(rights, fd)
                if _libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                 ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    _fail(f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        no_new_privs()
        if _libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def no_new_privs():
    """exec can no longer grant privileges (setuid bits, file capabilities); Landlock requires it."""
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("prctl(PR_SET_NO_NEW_PRIVS)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities():
    """Give up every capability, also for what this process execs (bounding and ambient sets): root in a sandbox
    is then an ordinary user of its files."""
    for cap in range(64):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last cap, EPERM without CAP_SETPCAP: fine
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), data) != 0:
        _fail("capset")


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


# PID 1 of a PID namespace made here: reaps whatever is handed to it (PID 1 ignores signals from inside its
# namespace that it has no handler for, so nothing inside can kill it), and dies with the process that started it
# (PR_SET_PDEATHSIG), even one killed outright: the namespace goes with it.
_REAPER = """import ctypes, os, time
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
    except InterruptedError:
        pass
"""


def own_user_namespace():
    """Move this process into a user namespace of its own, mapping only its uid and gid when the kernel allows: it
    then holds every capability there (enough to make a PID namespace) and none outside. Only a single-threaded
    process may (call it before the imports that start thread pools). False when the kernel refuses (user
    namespaces disabled, or a seccomp filter)."""
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(ctypes.c_int(_CLONE_NEWUSER)) != 0:
        return False
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError:
        # Mapping uid 0 needs CAP_SETFCAP (Linux >= 5.12), which root in a bwrap box has dropped. Unmapped, the
        # processes inside see themselves as uid 65534 but keep their real uid towards files.
        pass
    return True


def isolate_children():
    """From now on everything this process starts lives in a new PID namespace, whose PID 1 is a small reaper
    started here; returns the reaper's pid (None when the kernel refuses). When the reaper dies the kernel kills
    every process in the namespace, however it detached. Needs CAP_SYS_ADMIN in this process's user namespace
    (own_user_namespace first).

    This process stays where it is (its pid is the harness's handle on it) and can start no thread any more (the
    kernel refuses a thread outside its process's PID namespace); threads it has keep running, and its children,
    inside the namespace, may start threads."""
    if _libc.unshare(ctypes.c_int(_CLONE_NEWPID)) != 0:
        return None
    # posix_spawn (vfork): the namespace's first process, without copying this process's page tables.
    return os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", _REAPER], dict(os.environ))


def kill_orphans(reaper):
    """Kill every process the kernel has handed to the namespace's ``reaper`` because its parent ended: what a job
    left behind or detached (setsid, double fork). Cheap (one small /proc read): called every poll."""
    try:
        with open(f"/proc/{reaper}/task/{reaper}/children") as fh:
            orphans = [int(pid) for pid in fh.read().split()]
    except (OSError, ValueError):
        return
    for pid in orphans:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)


def run_isolated(command):
    """Run ``command`` in a PID namespace of its own and end as it ended; everything it started dies with it."""
    reaper = isolate_children() if own_user_namespace() else None
    if reaper is None:
        raise ConfineError(1, "own PID namespace: unshare(CLONE_NEWUSER), unshare(CLONE_NEWPID) refused")
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)  # noqa: S606 - the step's own argv, no shell
        finally:
            os._exit(127)
    status = os.waitpid(pid, 0)[1]
    os.kill(reaper, signal.SIGKILL)  # the namespace, and whatever the step left in it, goes
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def enter(policy):
    """Apply ``policy`` (from harness/envs/sandbox.py) to this process; returns a one-line description.

    Keys: ``tmp`` (the private temp dir), ``landlock`` (ABI to use, 0: none) with ``read``, ``write`` and ``list``
    (listing only) path lists. Capabilities are always dropped. A restriction asked for and refused raises
    ConfineError: the caller must not go on unconfined. (``pids`` is the launcher's: see main.)"""
    done = []
    tmp = policy.get("tmp")
    if tmp:
        if not os.path.isdir(tmp):
            os.makedirs(tmp)
        os.environ["TMPDIR"] = tmp
        tempfile.tempdir = None  # gettempdir() may have cached /tmp before the fork
    drop_capabilities()
    done.append("no capabilities")
    abi = int(policy.get("landlock") or 0)
    if abi:
        landlock(policy.get("read", []), policy.get("write", []) + ([tmp] if tmp else []), abi,
                 policy.get("list", []))
        done.append(f"Landlock ABI {abi}")
    else:
        no_new_privs()
    return ", ".join(done)


def main(argv):
    """Launcher: ``POLICY_JSON -- ARGV...``: confine, then exec ARGV with this environment."""
    split = argv.index("--")
    policy, command = json.loads(argv[0]), argv[split + 1:]
    enter(policy)
    if policy.get("pids"):
        run_isolated(command)
    os.execvp(command[0], command)  # noqa: S606 - the step's own argv, no shell
