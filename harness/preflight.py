"""Checks that fail a run in its first second instead of after an hour: can results be written, is the user's
weights file a checkpoint at all, can the configured repository be opened. Each failure is one line naming the
problem and the fix, raised before any env is built and before any result is written.

The weights check reads the file's container format only (a torch.save zip archive, or the legacy pickle's magic
number); it never unpickles it: a checkpoint is a pickle and loading one runs code, so that happens only in the env's
subprocess (README, Security).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from harness.config import is_local_repo
from harness.errors import ConfigError, HarnessError, SourceError
from harness.results import results_dir
from harness.source import is_reachable, normalize_url, open_repo

# torch.serialization's legacy format starts with a pickled MAGIC_NUMBER (0x1950a86a20f9469cfc6c) after the pickle
# protocol header; the zip format (torch>=1.6's default) holds <name>/data.pkl.
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def check_reports(reports: Path) -> None:
    """Create ``reports``/results and write (then remove) a byte there: a read-only or full disk fails now."""
    folder = results_dir(reports)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        try:
            os.write(fd, b"1")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise HarnessError(f"reports: cannot write to {folder}: {exc.strerror or exc} — pass --reports a writable "
                           f"directory with free space") from None


def check_weights(weights: str | None, config_label: str = "matrix.toml") -> None:
    """``[model] weights`` must be a PyTorch checkpoint file (checked by format, never loaded here)."""
    if not weights:
        return
    path = Path(weights).expanduser()
    fix = "point it at a .pt file saved by torch.save (e.g. YOLOv5's train.py), or remove the key to build one"
    if not path.is_file():
        raise ConfigError(f"{config_label}: model.weights {path} {'is a directory' if path.is_dir() else 'not found'}"
                          f" — {fix}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith("data.pkl") for name in archive.namelist()):
                    return
        else:
            with path.open("rb") as fh:
                head = fh.read(64)
            if head[:1] == b"\x80" and _LEGACY_MAGIC in head:
                return
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{config_label}: model.weights {path} cannot be read ({exc}) — {fix}") from None
    raise ConfigError(f"{config_label}: model.weights {path} is not a PyTorch checkpoint (neither a torch.save zip "
                      f"archive nor a legacy torch pickle) — {fix}")


def check_source(url: str, cache: Path, fallback: str = "mirror") -> None:
    """The configured repository must open before any env is built: a source that cannot be opened at all is a
    configuration error, not one broken result per cell (issue 13).

    A local path (a repository, a bare clone, a git bundle) is cloned into the cache, or fetched when a clone is there:
    the run does the same a moment later, so this costs nothing extra (a fetch with nothing new takes milliseconds)
    and catches a missing path, a directory that is not a repository, and a truncated, corrupt or incremental bundle
    with git's reason. Local paths are never replaced by the stand-ins, whatever ``fallback`` says: the user named
    that path. A remote URL is only listed (``git ls-remote``), and only when ``fallback = "error"``: otherwise an
    unreachable one falls back to the stand-in mirror during the run.

    Raises:
        SourceError: one line naming the repository, git's reason and the fix.
    """
    if is_local_repo(normalize_url(url)):
        open_repo(url, cache=cache, fetch=True).close()
    elif fallback == "error" and not is_reachable(url):
        raise SourceError(f"source: {url} is unreachable — check the network, or set fallback = \"mirror\" in [source] "
                          f"or YOLOV5_REPO to a local mirror (python -m harness mirror)")
