"""Confinement a process applies to itself before it runs a ref's code or loads a pickle (see harness/sandbox.py).

The namespaces around an env process (bwrap or unshare, started by the harness) give it no network and a narrow
view of the disk. What they cannot do cheaply is narrow that view per job: the warm process (harness/warm.py) forks
every job from one process whose mounts are fixed when it starts. So each job narrows itself, in its own process,
right after the fork and before any of the ref's code runs:

- Landlock (Linux >= 5.13, unprivileged, inherited by every child, cannot be undone): reads only below the paths the
  harness lists (system, interpreter, harness code, the job's tree and weights), writes only below the job's own
  directories and its private temp dir, and from ABI 4 no TCP connect or bind, from ABI 6 no signals and no
  abstract unix sockets to processes outside the job.
- its own PID namespace (a user namespace makes that unprivileged): the job runs as PID 1 of it, so when the job
  ends the kernel kills every process it started, however it detached (setsid, double fork).
- no capabilities and ``no_new_privs``: a job started by root cannot mount, load modules or gain privileges by exec.

Stdlib and ctypes only, Python 3.8 compatible: it runs in every env's interpreter, including tpu-mlir's.
Also a launcher for one-shot processes: ``python -I -c BOOT POLICY_JSON -- ARGV...`` applies the policy, then execs
ARGV (Landlock and the dropped capabilities survive exec).
"""

import ctypes
import json
import os
import shutil
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

# The waiters of a job's PID namespace (see own_pid_namespace) are exec'd, so that they hold none of the warm
# process's memory (the harness sums the resident memory of a job's process group).
_HARNESS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WAIT = ("import sys; sys.path.insert(0, sys.argv[1]); from harness.worker import confine; "
         "confine.wait_main(sys.argv[2:])")


class ConfineError(OSError):
    """A restriction the harness asked for could not be applied: the job must not run unconfined."""


def _fail(what):
    err = ctypes.get_errno()
    raise ConfineError(err, "%s: %s" % (what, os.strerror(err)))


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
                    _fail("landlock_add_rule %s" % path)
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


def own_pid_namespace(waiter=None, cleanup=None):
    """Move the rest of this job into a PID namespace of its own; returns True there. When the job ends, the kernel
    kills every process left in the namespace, however it detached (setsid, double fork).

    Three processes: the caller stays outside as the job's handle (the harness's pid for the job, in its process
    group); the namespace's PID 1 reaps orphans and reports the job's end; the job runs as PID 2, so signals it
    sends itself (abort, kill(getpid())) act as they would anywhere (PID 1 ignores them). Both waiters exec
    ``waiter`` (an interpreter) to wait, or wait here when it is None; the handle ends as the job ended (same exit
    code or signal), after removing the folder ``cleanup`` (the job's temp dir) if given.

    A user namespace (mapping only this uid and gid, when the kernel allows) makes it unprivileged. Returns False,
    changing nothing, when the kernel refuses (user namespaces disabled, or a seccomp filter)."""
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(ctypes.c_int(_CLONE_NEWUSER | _CLONE_NEWPID)) != 0:
        return False
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        _write("/proc/self/gid_map", "%d %d 1" % (gid, gid))
    except OSError:
        # Mapping uid 0 needs CAP_SETFCAP (Linux >= 5.12), which root in a bwrap box has dropped. Unmapped, the
        # job sees itself as uid 65534 but keeps its real uid towards files: what it creates is still ours.
        pass
    report_r, report_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    init = os.fork()
    if init == 0:  # PID 1 of the new namespace
        os.close(report_r)
        job = os.fork()
        if job == 0:
            os.close(report_w)
            return True
        _become(waiter, ["init", str(job), str(report_w)], report_w)
    os.close(report_w)
    _become(waiter, ["handle", str(init), str(report_r)] + ([cleanup] if cleanup else []), report_r)
    return False  # not reached


def _become(waiter, args, fd):
    """Turn this process into the waiter ``args`` (see wait_main), keeping ``fd`` open; never returns."""
    try:
        if waiter:
            os.set_inheritable(fd, True)
            os.execv(waiter, [waiter, "-I", "-S", "-c", _WAIT, _HARNESS_ROOT, *args])  # noqa: S606
        wait_main(args)
    finally:
        os._exit(1)


def wait_main(argv):
    """``init PID FD``: reap every child (orphans included) until PID ends, write its wait status to FD, exit (the
    kernel then kills what is left in the namespace). ``handle PID FD [DIR]``: wait for PID (the init), remove DIR,
    then end as the status read from FD says, or as the init ended when it passed none."""
    role, pid, fd = argv[0], int(argv[1]), int(argv[2])
    if role == "init":
        while True:
            try:
                done, status = os.wait()
            except InterruptedError:
                continue
            if done == pid:
                break
        os.write(fd, b"%d\n" % status)
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    reported = b""
    while True:
        chunk = os.read(fd, 64)
        if not chunk:
            break
        reported += chunk
    if reported.strip():
        status = int(reported)
    if len(argv) > 3:
        shutil.rmtree(argv[3], ignore_errors=True)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def enter(policy, waiter=None):
    """Apply ``policy`` (from harness/sandbox.py) to this process; returns a one-line description.

    Keys: ``pids`` (own PID namespace; ``waiter``: see own_pid_namespace), ``tmp`` (the private temp dir),
    ``landlock`` (ABI to use, 0: none) with ``read``, ``write`` and ``list`` (listing only) path lists. A
    restriction asked for and refused raises ConfineError: the caller must not go on unconfined."""
    done = []
    tmp = policy.get("tmp")
    if policy.get("pids"):
        if not own_pid_namespace(waiter, tmp):
            raise ConfineError(1, "own PID namespace: unshare(CLONE_NEWUSER|CLONE_NEWPID) refused")
        done.append("own PID namespace")
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
        done.append("Landlock ABI %d" % abi)
    else:
        no_new_privs()
    return ", ".join(done)


def main(argv):
    """Launcher: ``POLICY_JSON -- ARGV...``: confine, then exec ARGV with this environment."""
    split = argv.index("--")
    policy, command = json.loads(argv[0]), argv[split + 1:]
    enter(policy)  # one-shot: the PID namespace's waiter is this small process itself
    os.execvp(command[0], command)  # noqa: S606 - the step's own argv, no shell
