"""Bytecode for a sandboxed env: its preloaded modules compiled once, into the env, by a step allowed to write there.

In the sandbox an env is read-only (harness/envs/sandbox.py), so Python can never cache the bytecode of what a warm
process imports: every warm process of every run compiled torch & co from source again. In the box on py311-torch2.1,
importing the warm set took 10.0 s without bytecode and 4.1 s with it. Here a one-shot step, jailed like the process
it prepares plus write access to the venv, imports those modules once; a mark in the venv records which, so each env
pays it once per module list (an env is never changed after its build, harness/envs/build.py). Only the env's own
packages run in that step, never a ref's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from harness.envs import proc
from harness.envs.sandbox import Jail

MARK = "harness-bytecode.json"  # in the venv: the modules whose bytecode is there
TIMEOUT = 600.0

# Imports each module in turn; one that fails is left to the process that needs it (it will say why).
_IMPORT_ALL = """import sys
for name in sys.argv[1:]:
    try:
        __import__(name)
    except BaseException:
        pass
"""


def venv_of(python: Path) -> Path | None:
    """The venv ``python`` belongs to (``<venv>/bin/python``), or None for an interpreter outside one."""
    venv = python.parent.parent
    return venv if (venv / "pyvenv.cfg").is_file() else None


def compiled(venv: Path) -> set[str]:
    try:
        return set(json.loads((venv / MARK).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def ensure(python: Path, modules: Iterable[str], jail: Jail | None, workdir: Path) -> None:
    """Write the bytecode of ``modules`` into ``python``'s venv unless it is there. Unconfined (``jail`` None),
    processes write their own bytecode as they import: nothing to do. A step that fails costs only the speed-up."""
    venv = venv_of(python)
    wanted = set(modules)
    if jail is None or venv is None or wanted <= compiled(venv):
        return
    step = dataclasses.replace(jail, write=(*jail.write, venv), pids=True, tmp=None)
    ran = proc.run_process([str(python), "-c", _IMPORT_ALL, *sorted(wanted)], cwd=workdir,
                           env=proc.child_env(pythonpath=str(proc.HARNESS_ROOT)), log=workdir / "bytecode.log",
                           watch=proc.Watch(TIMEOUT), jail=step)
    if ran.returncode == 0:
        with contextlib.suppress(OSError):  # an env the harness may not write: the next process tries again
            (venv / MARK).write_text(json.dumps(sorted(wanted | compiled(venv))))
