"""YOLOv5 sources: a cached bare clone per repository, refs resolved to SHAs, and a clean tree per commit.

Why a cache keyed by URL and by SHA: a matrix run touches each ref many times (every env x variant x format),
and reruns should not hit the network. Checkouts are extracted with ``git archive`` rather than ``git checkout``
so one bare clone serves any number of concurrent trees, and each tree appears atomically (renamed into place)
so an interrupted or concurrent run never sees half of one.

A git bundle (``git bundle create yolov5.bundle --all``: how code reaches air-gapped machines) is a source like any
repository: git fetches from a bundle file wherever it takes a URL. It is recognised by its first line, recorded as
``bundle:<path>`` (its commits are upstream's own, see ``repo_label``), and the ways a copied file goes wrong
(truncated, corrupt, not a bundle, an incremental bundle missing its base) are named with git's own reason.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import git
from packaging.version import InvalidVersion, Version

from harness import prog
from harness.config import is_local_repo, validate_ref_name
from harness.envs import proc
from harness.errors import ConfigError, SourceError

__all__ = ["Checkout", "bundle_file", "checkout", "get_checkout", "is_reachable", "normalize_url", "open_repo",
           "redact", "repo_label", "resolve"]

# Every git call: never prompt for credentials (a hidden prompt hangs a CI job), fail instead.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
# Only branches and tags: a GitHub `--mirror` clone would also pull thousands of refs/pull/* heads.
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
def _fix() -> str:
    return f"check the URL, or set YOLOV5_REPO to a local mirror ({prog.command('mirror')})"


_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
STANDIN_FILE = "STANDIN.json"
_MAX_CLOSEST = 5
# The first line of a git bundle file (Documentation/gitformat-bundle.txt): v2, or v3 with capabilities.
BUNDLE_SIGNATURES = (b"# v2 git bundle\n", b"# v3 git bundle\n")
BUNDLE_PREFIX = "bundle:"
_BUNDLE_FIX = "copy the bundle again, or make a new one with `git bundle create FILE --all`"
_BUNDLE_FULL = "make a full bundle with `git bundle create FILE --all`"
_LOCAL_FIX = ("point [source] repo (or --repo, YOLOV5_REPO) at a git repository, a bare clone, or a bundle made with "
              "`git bundle create FILE --all`")


@dataclass(frozen=True)
class Checkout:
    """A ref resolved and extracted: what the rest of the pipeline reads.

    Attributes:
        ref: the ref as asked for (tag, branch or SHA).
        commit: the full SHA it resolved to.
        path: the read-only tree of that commit under the cache.
        url: the repository, credentials removed (it goes into reports).
        standin: the parsed STANDIN.json at the tree root when the repo is an offline mirror of PyPI releases
            (e.g. ``{"distribution": "yolov5==5.0.3", "stands_in_for": "v5.0", ...}``), else None.
    """

    ref: str
    commit: str
    path: Path
    url: str
    standin: dict[str, Any] | None


def normalize_url(url: str) -> str:
    """Return ``url`` unchanged if it is a URL, or as an absolute path if it is a local path.

    A ``file://`` URL naming a bundle becomes its path: git reads bundles from paths only (it takes the file behind a
    ``file://`` URL for a ``.git`` file and fails with "too large to be a .git file").
    """
    url = url.strip()
    if url.startswith("file://"):
        path = Path(unquote(urlsplit(url).path))
        if _has_bundle_signature(path):
            url = str(path)
    if is_local_repo(url):
        return str(Path(url).expanduser().resolve())
    return url


def _has_bundle_signature(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(len(BUNDLE_SIGNATURES[0]))
    except OSError:  # missing, a directory, unreadable: not a bundle (git says what it is when it fetches)
        return False
    return head in BUNDLE_SIGNATURES


def bundle_file(url: str) -> Path | None:
    """The bundle file ``url`` names (a local path or ``file://`` URL whose first line is a git bundle's signature),
    or None. Only the signature is read: git checks the rest (prerequisites, the pack) when it fetches."""
    url = normalize_url(url)
    if not is_local_repo(url):
        return None
    path = Path(url)
    return path if _has_bundle_signature(path) else None


def repo_label(url: str) -> str:
    """How results name a repository: ``bundle:<absolute path>`` for a git bundle, else the URL without credentials.

    A bundle's commits are the repository's own (same SHAs as the URL it was made from), so results from it compare
    with results from that URL (harness.decide.gate keys comparability on ``standin``, not on this label); the prefix
    says
    where the code came from, so a reader does not take the path for a clone.
    """
    bundle = bundle_file(url)
    return f"{BUNDLE_PREFIX}{bundle}" if bundle else redact(url)


def redact(url: str) -> str:
    """Drop any ``user:password@`` from an https URL so tokens never reach messages or reports."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def _repo_dir(cache: Path, url: str) -> Path:
    """``cache/repos/<slug>-<hash>``: readable (the repo's name) and unique (the hash of the full URL)."""
    name = re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]) or "repo"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:40] or "repo"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return cache / "repos" / f"{slug}-{digest}"


def _reason(exc: git.GitCommandError) -> str:
    """git's own explanation in one line: its first ``fatal:`` (else ``error:``, else last) stderr line."""
    text = str(exc.stderr or "").strip()
    # GitPython formats stderr as "stderr: '<git's output>'"; unwrap it.
    text = text.removeprefix("stderr:").strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("fatal:", "error:"):
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    return lines[-1] if lines else f"git exited with status {exc.status}"


def _bundle_reason(exc: git.GitCommandError) -> str:
    """git's reason for a bundle it cannot read: every ``fatal:``/``error:`` line joined (a missing prerequisite is
    one line saying so and one per missing commit), at most 300 characters."""
    text = str(exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'")
    lines = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.strip().startswith(("fatal:", "error:"))]
    joined = ""
    for line in lines:  # "lacks these prerequisite commits:" is followed by one line per commit
        joined += ("" if not joined else " " if joined.endswith(":") else "; ") + line
    joined = joined or _reason(exc)
    return joined if len(joined) <= 300 else joined[:299] + "…"


@contextlib.contextmanager
def _translate(action: str, url: str, fix: str | None = None) -> Iterator[None]:
    """The one boundary where git errors become a one-line SourceError: what failed, git's reason, the fix.

    A bundle gets its own wording: git's complaint about a cut pack ("early EOF") does not say that the file is
    truncated, nor that copying it again is the fix.
    """
    try:
        yield
    except git.GitCommandError as exc:
        bundle = bundle_file(url)
        if bundle is not None:
            reason = " ".join(_bundle_reason(exc).split())
            if "prerequisite" in reason:
                what, fix = "an incremental bundle: it needs commits it does not hold", _BUNDLE_FULL
            else:
                what, fix = "the file is truncated or corrupt", _BUNDLE_FIX
            raise SourceError(f"source: cannot read the git bundle {bundle}: {reason} ({what}) — {fix}") from exc
        reason = " ".join(_reason(exc).split())
        raise SourceError(f"source: cannot {action} {redact(url)}: {reason} — {fix or _fix()}") from exc


def open_repo(url: str, *, cache: Path, fetch: bool = False) -> git.Repo:
    """Return a cached bare clone of ``url`` with all its branches and tags, cloning it on first use.

    Args:
        url: an https/ssh/file:// URL or a local path (made absolute, so the cache key does not depend on cwd).
        cache: the cache root (see ``harness.paths.cache_dir``); the clone lives in ``cache/repos/``.
        fetch: update an existing clone (branches, tags, pruning what upstream deleted). A fresh clone is
            already current, so it is not fetched twice.

    Raises:
        SourceError: the repository cannot be cloned or fetched (one line with git's reason and the fix).
    """
    url = normalize_url(url)
    target = _repo_dir(Path(cache), url)
    if target.is_dir():
        try:
            repo = git.Repo(target)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise SourceError(
                f"source: the cached clone of {redact(url)} at {target} is damaged — delete that directory"
            ) from None
        if fetch:
            _check_file(url)
            _fetch(repo, url)
        return repo

    _check_file(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o755)  # noqa: S103 -- mkdtemp's 0700 would hide the clone from other users of a shared cache
    try:
        # init + remote + fetch rather than `git clone --mirror`: same result, but with our refspecs.
        repo = git.Repo.init(tmp, bare=True)
        with repo.config_writer() as cw:
            cw.set_value('remote "origin"', "url", url)
            cw.set_value('remote "origin"', "fetch", _REFSPECS[0])
            cw.add_value('remote "origin"', "fetch", _REFSPECS[1])
        with _translate("clone", url, _LOCAL_FIX if is_local_repo(url) else _fix()):
            _fetch_raw(repo)
        if not repo.git.for_each_ref("--count=1", "refs/heads", "refs/tags"):
            raise SourceError(  # noqa: TRY301 -- the handler below removes the half-made clone, as for git's errors
                f"source: cannot clone {redact(url)}: it has no branches or tags — {_fix()}")
        repo.close()
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            # Another run cloned the same URL meanwhile: use theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return git.Repo(target)


def _check_file(url: str) -> None:
    """A local path must exist, and a file must be a git bundle. Said here because git's own errors name neither
    ("does not appear to be a git repository" for a missing path, "invalid gitfile format" for another file)."""
    if not is_local_repo(url):
        return
    path = Path(url)
    if not path.exists():
        raise SourceError(f"source: {path} does not exist — {_LOCAL_FIX}")
    if path.is_file() and bundle_file(url) is None:
        what = "empty" if path.stat().st_size == 0 else "a file that does not start with '# v2 git bundle'"
        raise SourceError(f"source: {path} is {what}: not a git repository or git bundle — {_LOCAL_FIX}")


def _fetch_raw(repo: git.Repo) -> None:
    with repo.git.custom_environment(**_GIT_ENV):
        repo.git.fetch("--prune", "--force", "origin")


def _fetch(repo: git.Repo, url: str) -> None:
    with _translate("fetch", url):
        _fetch_raw(repo)


def is_reachable(url: str, timeout: float = 10) -> bool:
    """Return True if ``git ls-remote`` can list the repository within ``timeout`` seconds.

    Used to choose between the real repo and the offline mirror before any long work starts. The whole
    process group is killed on timeout, since git leaves helpers (git-remote-https, ssh) behind otherwise.
    """
    url = normalize_url(url)
    return proc.capture(["git", "ls-remote", "--heads", "--", url], timeout=timeout,
                        env={**os.environ, **_GIT_ENV}).returncode == 0


def _origin_url(repo: git.Repo) -> str:
    try:
        return redact(repo.remotes.origin.url)
    except (AttributeError, IndexError, ValueError):
        return str(repo.git_dir)


def _rev_parse_commit(repo: git.Repo, name: str) -> str | None:
    """The commit SHA ``name`` points to (peeling annotated tags), or None. ``name`` is never an option."""
    try:
        out = repo.git.rev_parse("--verify", "--quiet", f"{name}^{{commit}}")
    except git.GitCommandError:
        return None
    return out.strip() or None


def resolve(repo: git.Repo, ref: str) -> str:
    """Return the full commit SHA of a tag (annotated or not), a branch, or a full or short commit SHA.

    Names are looked up explicitly as ``refs/tags/<ref>`` then ``refs/heads/<ref>`` then as a SHA, never as
    general rev-parse syntax, so ``ref`` cannot select something unexpected (``v7.0^``, ``:/message``).

    Raises:
        SourceError: the ref is unknown (the message lists the closest tags) or an ambiguous short SHA.
    """
    try:
        # Only plain names: no revision syntax (v7.0^, master~1, :/text, @{...}), nothing read as an option.
        validate_ref_name(ref)
    except ConfigError as exc:
        raise SourceError(f"source: {exc}") from None
    for full in (f"refs/tags/{ref}", f"refs/heads/{ref}"):
        sha = _rev_parse_commit(repo, full)
        if sha:
            return sha
    if _HEX.fullmatch(ref):
        sha = _rev_parse_commit(repo, ref.lower())
        if sha:
            return sha
        if _is_ambiguous(repo, ref.lower()):
            raise SourceError(
                f"source: ref {ref!r} is an ambiguous short SHA in {_origin_url(repo)} — give more hex digits"
            )
    tags = _tags(repo)
    if tags:
        hint = "closest tags: " + ", ".join(_closest(ref, tags))
    else:
        hint = "the repository has no tags; use a branch or a commit SHA"
    raise SourceError(f"source: unknown ref {ref!r} in {_origin_url(repo)} — {hint}")


def _is_ambiguous(repo: git.Repo, prefix: str) -> bool:
    try:
        repo.git.rev_parse("--verify", f"{prefix}^{{commit}}")
    except git.GitCommandError as exc:
        return "ambiguous" in str(exc.stderr)
    return False


def _tags(repo: git.Repo) -> list[str]:
    out = repo.git.for_each_ref("--format=%(refname:lstrip=2)", "refs/tags")
    return [line for line in out.splitlines() if line]


def _as_version(name: str) -> Version | None:
    try:
        return Version(name)  # accepts a leading "v"
    except InvalidVersion:
        return None


def _closest(ref: str, tags: list[str]) -> list[str]:
    """Up to five tags nearest ``ref``: by version distance when both parse as versions (v6.3 -> v6.2, v6.1,
    v6.0, v7.0, ...; newer first on ties), else by string similarity."""
    wanted = _as_version(ref)
    scored: list[tuple[int, tuple[Any, ...], str]] = []
    for tag in tags:
        have = _as_version(tag)
        if wanted is not None and have is not None:
            a, b = wanted.release, have.release
            width = max(len(a), len(b))
            a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
            distance = tuple(abs(x - y) for x, y in zip(a, b, strict=True))
            scored.append((0, (distance, tuple(-x for x in b)), tag))
        else:
            ratio = difflib.SequenceMatcher(None, ref, tag).ratio()
            scored.append((1, (-ratio, tag), tag))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [tag for _, _, tag in scored[:_MAX_CLOSEST]]


def checkout(repo: git.Repo, sha: str, *, cache: Path) -> Path:
    """Return a clean, read-only tree of commit ``sha`` at ``cache/checkouts/<sha>``, extracting it if needed.

    The tree comes from ``git archive`` (no .git inside, nothing untracked) into a temporary sibling directory
    that is renamed into place only when complete. Files are made read-only so no stage edits the shared tree
    by accident: copy it to patch it.

    Args:
        repo: a repository containing the commit (see ``open_repo``).
        sha: the full commit SHA (see ``resolve``); short names are refused as they would make ambiguous paths.
        cache: the cache root.

    Raises:
        SourceError: ``sha`` is not a full SHA or not a commit in ``repo``.
    """
    if not _FULL_SHA.fullmatch(sha):
        raise SourceError(f"source: {sha!r} is not a full commit SHA — resolve the ref first (source.resolve)")
    target = Path(cache) / "checkouts" / sha
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o755)  # noqa: S103 -- the tree's root, like its subdirectories, is readable by all
    try:
        with _translate(
            f"extract {sha} from", _origin_url(repo), "resolve the ref in this repo first (source.resolve)"
        ):
            _extract(repo, sha, tmp)
        _make_read_only(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            _remove_tree(tmp)  # a concurrent run extracted it first: identical content, keep theirs
    except BaseException:
        _remove_tree(tmp)
        raise
    return target


def _extract(repo: git.Repo, sha: str, dest: Path) -> None:
    """Extract ``git archive`` of ``sha`` into ``dest``.

    The archive goes through a temporary file, not a pipe: a tar reader that stops early on a pipe would leave
    git blocked on write. Tar's "data" filter (PEP 706) refuses members escaping ``dest`` (untrusted repos).
    """
    with tempfile.TemporaryFile(dir=dest.parent) as tar_file:
        repo.git.archive("--format=tar", sha, output_stream=tar_file)
        tar_file.seek(0)
        try:
            with tarfile.open(fileobj=tar_file, mode="r:") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, filter="data")
                else:  # pragma: no cover - Pythons without PEP 706; git's own archive of a commit
                    tar.extractall(dest)  # noqa: S202
        except (tarfile.TarError, OSError) as exc:
            raise SourceError(f"source: cannot extract {sha}: {exc} — delete {dest.parent} and retry") from None


def _make_read_only(root: Path) -> None:
    """Clear the write bits of every file (directories stay writable so the cache can be deleted normally)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _read_standin(tree: Path) -> dict[str, Any] | None:
    path = tree / STANDIN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(
            f"source: {path} is not valid JSON ({exc}) — regenerate the mirror ({prog.command('mirror')})"
        ) from None
    if not isinstance(data, dict):
        raise SourceError(f"source: {path} must hold a JSON object — regenerate the mirror "
                          f"({prog.command('mirror')})")
    return data


def get_checkout(url: str, ref: str, *, cache: Path, fetch: bool = False) -> Checkout:
    """Clone or reuse ``url``, resolve ``ref`` and return its cached tree: the one call most stages need.

    When ``ref`` is unknown to an existing clone and ``fetch`` was not asked for, the clone is fetched once and
    the lookup retried, so adding a new release tag to matrix.toml just works; if that fetch fails (offline),
    the unknown-ref error is what is reported.

    Args:
        url: repository URL or local path.
        ref: tag, branch or (short) commit SHA.
        cache: the cache root.
        fetch: fetch the existing clone before resolving.

    Raises:
        SourceError: clone/fetch failure, unknown ref, or a malformed STANDIN.json.
    """
    url = normalize_url(url)
    repo = open_repo(url, cache=cache, fetch=fetch)
    try:
        try:
            sha = resolve(repo, ref)
        except SourceError:
            if fetch:
                raise
            with contextlib.suppress(SourceError):  # offline: report the unknown ref, not the fetch
                _fetch(repo, url)
            sha = resolve(repo, ref)
        path = checkout(repo, sha, cache=cache)
    finally:
        repo.close()
    return Checkout(ref=ref, commit=sha, path=path, url=redact(url), standin=_read_standin(path))
