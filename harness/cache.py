"""The harness's cache, visible: what each part holds and what pruning frees.

Everything the harness downloads or builds lives under one folder (harness/paths.py): env venvs (hard links into
uv's own cache, which is listed beside it), clones and checkouts, patched trees, checkpoints, each cell's work folder,
and the downstream targets' and tpu-mlir's folders. Results under reports/ are not in it and are never touched.
``prune`` removes what the current config no longer uses (venvs of envs it does not name) and, with ``older_than``,
what has not been written to for that many days (a run in progress writes to its folders, so a day or more never
takes them; 0 takes everything rebuildable, for a machine where nothing else runs).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.config import Config
from harness.envs import proc
from harness.envs.build import env_dir, uv_binary
from harness.run.artifacts import drop_unlinked, store_dir

# The parts of the cache, in the order a person reads them, and what each holds.
PARTS: dict[str, str] = {
    "envs": "the matrix's env venvs, sibling envs for pin workarounds, target and tpu-mlir envs",
    "work": "each env's cell folders (exported files, logs) and warm worker folders",
    "checkpoints": "checkpoints built from each ref's cfg",
    "patched": "patched trees, one per ref commit and variant",
    "checkouts": "checked-out trees, one per ref commit",
    "repos": "bare clones of the configured repositories",
    "targets": "the downstream targets' compiled models and logs",
    "compile": "tpu-mlir's compiled bmodels and logs",
    "learned": "workaround chains each env's runs found, tried whole first by its next run (`run --exhaustive` not)",
    "mirror": "the PyPI stand-in repository",
    "wheels": "the yolov5 wheels the stand-ins are built from",
}
# Parts whose entries are rebuilt on demand at no cost but time, so an age-based prune may take them.
AGEABLE = ("work", "checkpoints", "patched", "checkouts", "targets", "compile", "learned")


@dataclass
class Part:
    name: str
    path: Path
    bytes: int
    own: int  # of which not hard links shared with another folder (uv's cache): what removing it frees
    entries: int
    what: str


def sizes(path: Path) -> tuple[int, int]:
    """Bytes on disk below ``path`` (each hard-linked file once), and those whose file has no other link (env venvs
    are mostly links into uv's cache: removing one frees only the rest)."""
    seen: set[tuple[int, int]] = set()
    total = own = 0
    for file in [path] if path.is_file() else path.rglob("*"):
        try:
            info = file.lstat()
        except OSError:
            continue
        if file.is_symlink() or not file.is_file() or (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        total += info.st_blocks * 512
        own += info.st_blocks * 512 if info.st_nlink == 1 else 0
    return total, own


def size_of(path: Path) -> int:
    return sizes(path)[0]


def listing(cache: Path) -> list[Part]:
    """Each part of the cache with its size, plus uv's own cache (what the envs are linked from)."""
    parts = []
    for name, what in PARTS.items():
        folder = cache / name
        total, own = sizes(folder) if folder.exists() else (0, 0)
        parts.append(Part(name, folder, total, own, len(list(folder.iterdir())) if folder.is_dir() else 0, what))
    uv = uv_dir()
    if uv is not None:
        total, own = sizes(uv)
        parts.append(Part("uv cache", uv, total, own, 0, "uv's wheel cache (`uv cache prune` trims it)"))
    return parts


def uv_dir() -> Path | None:
    uv = uv_binary()
    if not uv:
        return None
    found = proc.capture([uv, "cache", "dir"], timeout=60)
    path = Path(found.stdout.strip()) if found.returncode == 0 else None
    return path if path and path.is_dir() else None


def unused_envs(cache: Path, config: Config) -> list[Path]:
    """Venvs of matrix envs the config does not name (sibling, extended, target and tpu-mlir envs are kept: their
    names start with a configured env's, or with target-/tpu-mlir-)."""
    folder = cache / "envs"
    if not folder.is_dir():
        return []
    keep = {env_dir(spec, cache).name for spec in config.envs.values()}
    names = tuple(f"{name}+" for name in config.envs) + tuple(f"{name}-" for name in config.envs)
    return [p for p in folder.iterdir() if p.is_dir() and p.name not in keep and not p.name.startswith(
        (*names, "target-", "tpu-mlir-"))]


def stale(cache: Path, days: float, now: float | None = None) -> list[Path]:
    """Entries of the AGEABLE parts not written to for ``days`` days."""
    cutoff = (now if now is not None else time.time()) - days * 86400
    found = []
    for part in AGEABLE:
        folder = cache / part
        if folder.is_dir():
            # Dot-entries (work/.store) hold what other entries link to: pruned by their links, not their age.
            found += [p for p in folder.iterdir() if not p.name.startswith(".") and _newest(p) < cutoff]
    return found


def _newest(path: Path) -> float:
    try:
        times = [path.lstat().st_mtime, *(p.lstat().st_mtime for p in path.rglob("*"))] if path.is_dir() else \
            [path.lstat().st_mtime]
    except OSError:
        return time.time()  # changing under us: in use
    return max(times)


def prune(cache: Path, config: Config, older_than: float | None, log: Callable[[str], None] = print) -> int:
    """Remove unused envs, and AGEABLE entries older than ``older_than`` days; returns the bytes freed."""
    doomed = unused_envs(cache, config) + (stale(cache, older_than) if older_than is not None else [])
    return remove(doomed, cache, log) + drop_unlinked(store_dir(cache))


def remove(paths: Iterable[Path], cache: Path, log: Callable[[str], None]) -> int:
    freed = 0
    for path in paths:
        size = size_of(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        freed += size
        log(f"cache: removed {path.relative_to(cache)} ({size / 2**20:.0f} MB)")
    return freed


def table(parts: list[Part]) -> str:
    """One line per part: its size, what removing it would free (hard links shared with uv's cache stay), what it
    holds and where."""
    width = max(len(p.name) for p in parts)
    lines = [f"{'part':<{width}}  {'size':>9}  {'own':>9}  holds"]
    lines += [f"{p.name:<{width}}  {p.bytes / 2**30:6.2f} GB  {p.own / 2**30:6.2f} GB  {p.what} ({p.path})"
              for p in parts]
    own = sum(p.own for p in parts if p.name != "uv cache")
    return "\n".join([*lines, f"the harness's cache frees {own / 2**30:.2f} GB if removed whole (uv's cache aside)"])
