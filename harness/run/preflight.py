"""Checks that fail a run in its first second instead of after an hour: can results be written, is the user's
weights file a checkpoint at all, can the configured repository be opened. Each failure is one line naming the
problem and the fix, raised before any env is built and before any result is written.

The weights check reads the file's container format (a torch.save zip archive, or the legacy pickle's magic number)
and lists the classes its pickle names, with ``pickletools.genops``; it never unpickles it: a checkpoint is a pickle and
loading one runs code, so that happens only in the env's subprocess (docs/security.md).
"""

from __future__ import annotations

import io
import os
import pickletools
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, cast

from harness import prog
from harness.config import is_local_repo
from harness.errors import ConfigError, HarnessError, SourceError
from harness.results.model import results_dir
from harness.sources.checkout import is_reachable, normalize_url, open_repo

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
    """``[model] weights`` must be a PyTorch checkpoint holding a YOLOv5 model (checked by format and by the class
    names in its pickle, never loaded here). This catches mistakes, not attacks: a crafted file can name any class;
    it is only ever unpickled in the env's subprocess (docs/security.md)."""
    if not weights:
        return
    path = Path(weights).expanduser()
    fix = "point it at a .pt file saved by torch.save (e.g. YOLOv5's train.py), or remove the key to build one"
    if not path.is_file():
        raise ConfigError(f"{config_label}: model.weights {path} {'is a directory' if path.is_dir() else 'not found'}"
                          f" — {fix}")
    try:
        classes = _checkpoint_classes(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{config_label}: model.weights {path} cannot be read ({exc}) — {fix}") from None
    except ValueError as exc:  # pickletools: an opcode it does not know, a string cut short
        raise ConfigError(f"{config_label}: model.weights {path} is a damaged PyTorch checkpoint (its pickle does not "
                          f"parse: {exc}) — {fix}") from None
    if classes is None:
        raise ConfigError(f"{config_label}: model.weights {path} is not a PyTorch checkpoint (neither a torch.save "
                          f"zip archive nor a legacy torch pickle) — {fix}")
    if not any(module.split(".")[0] == "models" for module, _ in classes):
        raise ConfigError(f"{config_label}: model.weights {path} has no YOLOv5 model in it (its pickle names no "
                          f"models.* class: a state_dict?), and the refs' export scripts load a pickled model — save "
                          f"it as train.py does, torch.save({{'model': model}}, path), or remove the key to build one")


# How much of a pickle the check reads: a YOLOv5 checkpoint's pickle (the module tree, tensors stored beside it) is
# well under 1 MB; a larger one is read no further than this.
_PICKLE_LIMIT = 64 << 20


def _checkpoint_classes(path: Path) -> set[tuple[str, str]] | None:
    """The (module, name) of every class or function the checkpoint's pickle names, or None when ``path`` is not a
    torch.save file. A YOLOv5 checkpoint names ``models.yolo.Model`` (or ``DetectionModel``) and its layers; a
    state_dict names only torch's tensor rebuilders and ``collections.OrderedDict``."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pickles = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
            if not pickles:
                return None
            with archive.open(pickles[0]) as member:
                return _pickle_globals(io.BytesIO(member.read(_PICKLE_LIMIT)))
    with path.open("rb") as fh:
        head = fh.read(64)
        if not (head[:1] == b"\x80" and _LEGACY_MAGIC in head):
            return None
        # The legacy format is a run of pickles: magic number, protocol version, system info, then the object.
        fh.seek(0)
        stream = io.BytesIO(fh.read(_PICKLE_LIMIT))
    for _ in range(3):
        _pickle_globals(stream)
    return _pickle_globals(stream)


def _pickle_globals(stream: IO[bytes]) -> set[tuple[str, str]]:
    """The globals one pickle (up to its STOP) refers to, read from its opcodes without executing any of them.

    Safe on any input: ``pickletools.genops`` is a parser. It decodes each opcode and its inline argument from the
    bytes and yields them; it never resolves a name (no ``find_class``, no import), never builds an object and never
    calls anything (no ``__reduce__``, no ``__setstate__``), which is what makes unpickling dangerous. A malformed
    stream raises ValueError; memory is bounded by the bytes read (``_PICKLE_LIMIT``).
    """
    found: set[tuple[str, str]] = set()
    # STACK_GLOBAL (protocol 4+) takes module and name from the stack: the two values pushed last, strings written
    # inline or fetched from the memo. Every other push is recorded as None, so nothing is mistaken for a name.
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    for opcode, arg, _pos in pickletools.genops(stream):
        name, value = opcode.name, cast(Any, arg)
        if name == "GLOBAL":  # protocols 0-3 (torch.save's default is 2): "module name" inline
            module, _, attr = str(value).partition(" ")
            found.add((module, attr))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module_name = pushed[-2:]
            if len(module_name) == 2 and module_name[0] is not None and module_name[1] is not None:
                found.add((module_name[0], module_name[1]))
            pushed.append(None)
        elif name == "MEMOIZE":  # stores the top of the stack under the next index
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(value)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(value)))
        elif isinstance(value, str) and "UNICODE" in name:
            pushed.append(value)
        elif opcode.stack_after:
            pushed.append(None)
    return found


def check_source(url: str, cache: Path, fallback: str = "mirror") -> None:
    """The configured repository must open before any env is built: a source that cannot be opened at all is a
    configuration error, not one broken result per cell.

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
                          f"or YOLOV5_REPO to a local mirror ({prog.command('mirror')})")
