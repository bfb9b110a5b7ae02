"""What a run keeps of the files it exported, and the disk it needs.

Every export writes its artifact (an ONNX or TorchScript file: ~8 MB for yolov5n, ~30 MB for yolov5s) into the
cell's folder under ``<cache>/work/<env>``; a full default matrix leaves ~14 GB there if nothing is removed.
``[artifacts] keep`` (or ``run --keep-artifacts``) says whose files stay once every check that reads them has run
(parity and decode in the cell; the downstream targets and tpu-mlir after it):

- ``failed`` (default): broken and error cells keep the file their verdict is about (the deciding attempt's export
  in the cell's format, with its external data), for a person to look at; the others' files go, and so do earlier
  attempts' and by-products (v5.0's export.py writes TorchScript beside every ONNX).
- ``all``: everything stays (what a downstream check run later by hand needs).
- ``none``: every cell's exported files go.

Logs, answers and the patch diff always stay; results under reports/ are never touched. A cell whose files went
says so (``artifacts_kept`` false) and the report gives the command that makes them again.

What stays is stored once per content: every kept export is hashed and hard-linked to its copy in
``<cache>/work/.store/<sha256>``, so the same bytes exported by two cells, two attempts or two runs into other
reports folders take their size once. Nothing writes into an export after it is made (a rerun of a cell starts
from an emptied folder), so a shared inode is never changed under another cell. A stored file no cell links to any
more is removed at the next prune.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from harness import prog
from harness.axes import FORMATS
from harness.errors import HarnessError
from harness.files import write_json
from harness.results import model as results
from harness.results.model import CellResult
from harness.results.verdict import WORKING

# Files a cell's folder keeps whatever the policy: small, and what a person reads first.
ALWAYS_KEPT = (".log", ".json", ".txt", ".diff", ".yaml")
# Below this much free space where the cells write, a run does not start: one yolov5s cell's export, its
# workaround reruns and their logs take up to ~150 MB, and a few cells run side by side.
MIN_FREE_MB = 1024
# Exports smaller than this are not worth a hash and a link (logs, small by-products).
STORE_MIN_BYTES = 1 << 20
# Where the disk ran out mid-run (harness/verify/causes.py names it): the run stops rather than fail every next cell.
DISK_FULL = "disk full"


def removable(result: CellResult, keep: str) -> bool:
    """Whether ``keep`` lets every exported file of the cell go."""
    return keep == "none" or (keep == "failed" and result.outcome() in WORKING)


def verdict_files(result: CellResult) -> set[Path]:
    """The files a broken cell's verdict is about: its deciding attempt's export in the cell's format (an ONNX file
    with its external data, or the TorchScript module)."""
    attempt = result.deciding
    if attempt.export is None or not attempt.export.log:
        return set()
    folder = Path(attempt.export.log).parent
    suffixes = FORMATS[result.format].suffixes if result.format in FORMATS else ()
    names = [str(f.get("name", "")) for f in attempt.export.files]
    main = [n for n in names if n.endswith(suffixes)]
    return {folder / n for n in names if any(n == m or n.startswith(m + ".") for m in main)}


def prune(paths: Iterable[Path], keep: str, log: Callable[[str], None] = print, store: Path | None = None) -> int:
    """Remove the exported files ``keep`` does not keep of the cells at ``paths`` (result files), mark the results
    of cells left without them, link what stays into ``store`` (one copy per content), and return the bytes
    freed."""
    freed, cells, kept = 0, 0, []
    for path in paths:
        result = results.read_result(path)
        if result is None or not result.artifacts_kept or not result.artifacts_dir:
            continue
        if keep == "all":
            kept.append(Path(result.artifacts_dir))
            continue
        whole = removable(result, keep)
        spared = set() if whole else verdict_files(result)
        for file in Path(result.artifacts_dir).rglob("*"):
            if file.suffix in ALWAYS_KEPT or file in spared or not (file.is_file() or file.is_symlink()):
                continue
            freed += 0 if file.is_symlink() else file.lstat().st_size  # links (the checkpoint) cost nothing here
            file.unlink()
        if whole:
            result.artifacts_kept = False
            write_json(path, result.to_json())
            cells += 1
        else:
            kept.append(Path(result.artifacts_dir))
    if freed:
        log(f"artifacts: removed the exported files of {cells} cell(s) and earlier attempts' of the others "
            f"([artifacts] keep = \"{keep}\"): {freed / 2**20:.0f} MB freed")
    if store is not None:
        shared = link_identical((f for folder in kept for f in folder.rglob("*")), store)
        if shared:
            log(f"artifacts: {shared / 2**20:.0f} MB of identical exports stored once ({store})")
        freed += shared + drop_unlinked(store)
    return freed


def store_dir(cache: Path) -> Path:
    """Where kept exports are stored once per content (beside the env folders of ``<cache>/work``)."""
    return cache / "work" / ".store"


def link_identical(files: Iterable[Path], store: Path) -> int:
    """Hard-link each export among ``files`` to the one copy of its content in ``store``; the bytes that saves."""
    saved = 0
    for file in files:
        if file.is_symlink() or not file.is_file() or file.suffix in ALWAYS_KEPT:
            continue
        stat = file.stat()
        if stat.st_size < STORE_MIN_BYTES:
            continue
        blob = store / content_hash(file)
        if not blob.exists():
            store.mkdir(parents=True, exist_ok=True)
            try:
                os.link(file, blob)
                continue
            except FileExistsError:  # another run stored the same bytes just now
                pass
        if blob.stat().st_ino == stat.st_ino:
            continue
        tmp = file.with_name(file.name + ".link")
        os.link(blob, tmp)
        os.replace(tmp, file)  # atomic: a reader sees the old copy or the stored one, never no file
        saved += stat.st_size if stat.st_nlink == 1 else 0  # a copy still linked elsewhere frees nothing yet
    return saved


def drop_unlinked(store: Path) -> int:
    """Remove stored contents no cell links to any more (their cells were pruned or rerun); the bytes freed."""
    freed = 0
    for blob in store.iterdir() if store.is_dir() else ():
        stat = blob.stat()
        if stat.st_nlink == 1:
            blob.unlink()
            freed += stat.st_size
    return freed


def content_hash(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def regenerate(result: CellResult) -> str:
    """The command that makes a cell's files again."""
    return prog.command(f"run --env {result.env} --refs {result.ref} --variants {result.variant} "
                        f"--formats {result.format} --force --keep-artifacts all")


def check_free(folder: Path, need_mb: int = MIN_FREE_MB) -> None:
    """Stop before a run that cannot fit: one line naming the folder, what it has, what it needs and the fix."""
    free = free_mb(folder)
    if free < need_mb:
        raise HarnessError(disk_full(folder, free, need_mb))


def free_mb(folder: Path) -> int:
    """MB free where ``folder`` is or would be made (its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free // 2**20


def disk_full(folder: Path, free_mb: int, need_mb: int | None = None) -> str:
    """The one line of a run stopped for space: before it started (``need_mb``), or when a cell ran out."""
    what = (f"has {free_mb} MB free, a run needs about {need_mb} MB" if need_mb is not None else
            f"ran out of space ({free_mb} MB free now)")
    return (f"disk full: {folder} {what} — free space there or run `{prog.command('cache --prune')}`, then rerun "
            f"(results saved so far are kept)")
