"""A target's env: a venv with the target's toolkit pins (toolkits.py), built once into the cache like the matrix's
envs (the same builder, harness/envs/build.py) and keyed by its pins, so a toolkit bump builds a new one."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.envs.build import build_venv, find_python
from harness.files import write_json
from harness.targets.toolkits import Toolkit

MARKER = "harness-env.json"
_LOCK = threading.Lock()


def env_dir(kit: Toolkit, cache: Path) -> Path:
    payload = json.dumps({"python": kit.python, "requirements": sorted(kit.requirements)}, sort_keys=True)
    return cache / "envs" / f"target-{kit.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def ensure_env(kit: Toolkit, cache: Path, *, log: Callable[[str], None] = print) -> Path:
    """The target env's python, building the venv first unless a complete one (its marker written) exists."""
    target = env_dir(kit, cache)
    with _LOCK:
        if (target / MARKER).is_file():
            return target / "bin" / "python"
        owner = f"target env {kit.name!r}"
        start = time.monotonic()
        python = build_venv(target, find_python(kit.python, owner), list(kit.requirements), owner,
                            f"the pins are harness/targets/toolkits.py TOOLKITS[{kit.name!r}]", log)
        write_json(target / MARKER, {"requirements": list(kit.requirements), "python": kit.python,
                                     "seconds": round(time.monotonic() - start, 1)})
        return python
