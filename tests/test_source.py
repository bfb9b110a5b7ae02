"""harness.sources.checkout against real git repositories built in tmp_path (no network, no mocks)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import git
import pytest

from harness.errors import SourceError
from harness.sources.checkout import Checkout, checkout, get_checkout, is_reachable, open_repo, redact, resolve

ACTOR = git.Actor("Test", "test@example.com")
STANDIN = {"distribution": "yolov5==5.0.3", "stands_in_for": "v5.0", "note": "test"}


@dataclass
class Upstream:
    """A small YOLOv5-shaped repository and the commits its refs point to."""

    path: Path
    repo: git.Repo
    c1: str  # tag v6.0 (lightweight), branch dev
    c2: str  # tag v7.0 (annotated), tag v6.1 (lightweight)
    c3: str  # master; adds STANDIN.json

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        self.repo.index.add(list(files))
        return self.repo.index.commit(message, author=ACTOR, committer=ACTOR).hexsha


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    """Built once per module (commits are the slow part); tests get a copy they may change."""
    path = tmp_path_factory.mktemp("template") / "upstream"
    repo = git.Repo.init(path, initial_branch="master")
    up = Upstream(path, repo, "", "", "")
    up.c1 = up.commit({"models/yolo.py": "# v6.0\n", "export.py": "print('v6')\n"}, "v6.0")
    repo.create_tag("v6.0", ref=up.c1)
    repo.create_head("dev", up.c1)
    up.c2 = up.commit({"models/yolo.py": "# v7.0\n"}, "v7.0")
    repo.create_tag("v7.0", ref=up.c2, message="release v7.0")  # annotated: a tag object, not the commit
    repo.create_tag("v6.1", ref=up.c2)
    up.c3 = up.commit({"STANDIN.json": json.dumps(STANDIN)}, "mirror metadata")
    repo.close()
    return up


@pytest.fixture
def upstream(template: Upstream, tmp_path: Path) -> Upstream:
    path = tmp_path / "upstream"
    shutil.copytree(template.path, path, symlinks=True)
    return Upstream(path, git.Repo(path), template.c1, template.c2, template.c3)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def leftovers(directory: Path) -> list[str]:
    """Temporary entries (half clones, half trees) left in a cache subdirectory."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".")] if directory.exists() else []


# ---------------------------------------------------------------------------------------------------------------
# open_repo


def test_clone_by_local_path_has_all_branches_and_tags(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    assert repo.bare
    assert Path(repo.git_dir).parent == cache / "repos"
    assert Path(repo.git_dir).name.startswith("upstream-")
    assert {h.name for h in repo.heads} == {"master", "dev"}
    assert {t.name for t in repo.tags} == {"v6.0", "v6.1", "v7.0"}
    assert leftovers(cache / "repos") == []


def test_clone_is_reused_and_local_paths_are_made_absolute(
    upstream: Upstream, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Path(open_repo(str(upstream.path), cache=cache).git_dir)
    monkeypatch.chdir(upstream.path.parent)
    again = Path(open_repo("upstream", cache=cache).git_dir)
    assert again == first
    assert len(list((cache / "repos").iterdir())) == 1


def test_clone_by_file_url(upstream: Upstream, cache: Path) -> None:
    url = upstream.path.as_uri()
    assert url.startswith("file://")
    repo = open_repo(url, cache=cache)
    assert resolve(repo, "v7.0") == upstream.c2
    assert repo.remotes.origin.url == url
    # A different URL for the same repository is a different cache entry.
    assert Path(open_repo(str(upstream.path), cache=cache).git_dir) != Path(repo.git_dir)


def test_fetch_picks_up_new_tags_and_prunes_deleted_ones(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    c4 = upstream.commit({"models/yolo.py": "# v8.0\n"}, "v8.0")
    upstream.repo.create_tag("v8.0", ref=c4, message="release v8.0")
    upstream.repo.delete_tag(upstream.repo.tags["v6.1"])

    stale = open_repo(str(upstream.path), cache=cache)  # no fetch: the cache is what it was
    with pytest.raises(SourceError, match=r"unknown ref 'v8\.0'"):
        resolve(stale, "v8.0")
    assert resolve(stale, "master") == upstream.c3

    fresh = open_repo(str(upstream.path), cache=cache, fetch=True)
    assert Path(fresh.git_dir) == Path(repo.git_dir)
    assert resolve(fresh, "v8.0") == c4
    assert resolve(fresh, "master") == c4, "branches move with upstream"
    assert "v6.1" not in {t.name for t in fresh.tags}, "tags deleted upstream are pruned"


LOCAL_FIX = ("point [source] repo (or --repo, YOLOV5_REPO) at a git repository, a bare clone, or a bundle made with "
             "`git bundle create FILE --all`")
URL_FIX = "check the URL, or set YOLOV5_REPO to a local mirror (python -m harness mirror)"


@pytest.mark.parametrize(("kind", "fix"), [("missing file url", URL_FIX), ("not a repo", LOCAL_FIX),
                                           ("refused https", URL_FIX)])
def test_unreachable_repo_is_one_line_source_error(tmp_path: Path, cache: Path, kind: str, fix: str) -> None:
    (tmp_path / "plain").mkdir()
    url = {
        "missing file url": (tmp_path / "missing").as_uri(),
        "not a repo": str(tmp_path / "plain"),
        "refused https": "https://127.0.0.1:9/yolov5.git",  # nothing listens on the discard port: fails at once
    }[kind]
    with pytest.raises(SourceError) as info:
        open_repo(url, cache=cache)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"source: cannot clone {url}: ")
    assert message.endswith(f"— {fix}")
    reason = message.split(": ", 2)[2].split(" — ", maxsplit=1)[0]
    assert reason.strip(), "git's reason is carried"
    assert not (cache / "repos").exists() or list((cache / "repos").iterdir()) == [], "no half clone is left"


def test_a_missing_local_path_says_so(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_repo(str(tmp_path / "missing"), cache=cache)
    assert str(info.value) == f"source: {tmp_path / 'missing'} does not exist — {LOCAL_FIX}"
    assert not (cache / "repos").exists()


def test_a_cached_clone_outlives_its_source_until_fetched(upstream: Upstream, cache: Path) -> None:
    open_repo(str(upstream.path), cache=cache)
    shutil.rmtree(upstream.path)
    assert resolve(open_repo(str(upstream.path), cache=cache), "v7.0") == upstream.c2  # no fetch: the cache serves
    with pytest.raises(SourceError, match=f"source: {upstream.path} does not exist — point"):
        open_repo(str(upstream.path), cache=cache, fetch=True)


def test_is_reachable(upstream: Upstream, tmp_path: Path) -> None:
    assert is_reachable(str(upstream.path))
    assert is_reachable(upstream.path.as_uri(), timeout=5)
    assert not is_reachable(str(tmp_path / "missing"))
    assert not is_reachable("https://127.0.0.1:9/yolov5.git", timeout=5)


def test_redact_removes_credentials() -> None:
    assert redact("https://user:s3cret@example.com/y5.git") == "https://example.com/y5.git"
    assert redact("/srv/mirror") == "/srv/mirror"


# ---------------------------------------------------------------------------------------------------------------
# resolve


@pytest.mark.parametrize(
    ("ref", "commit"),
    [
        ("v6.0", "c1"),  # lightweight tag
        ("v7.0", "c2"),  # annotated tag: the commit, not the tag object
        ("v6.1", "c2"),
        ("dev", "c1"),  # branch (a local head in the bare clone)
        ("master", "c3"),
    ],
)
def test_resolve_names(upstream: Upstream, cache: Path, ref: str, commit: str) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    assert resolve(repo, ref) == getattr(upstream, commit)


def test_resolve_shas(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    assert upstream.repo.tags["v7.0"].tag is not None, "fixture: v7.0 is annotated"
    assert resolve(repo, upstream.c2) == upstream.c2
    assert resolve(repo, upstream.c2[:7]) == upstream.c2
    assert resolve(repo, upstream.c1[:10].upper()) == upstream.c1


def test_unknown_ref_lists_closest_tags(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    with pytest.raises(SourceError) as info:
        resolve(repo, "v6.3")
    assert str(info.value) == f"source: unknown ref 'v6.3' in {upstream.path} — closest tags: v6.1, v6.0, v7.0"


@pytest.mark.parametrize("ref", ["v7.0^", "master~1", ":/v6.0", "HEAD@{0}", "deadbeef", "-h", "a b"])
def test_resolve_takes_names_not_revision_syntax(upstream: Upstream, cache: Path, ref: str) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    with pytest.raises(SourceError):
        resolve(repo, ref)


# ---------------------------------------------------------------------------------------------------------------
# checkout


def test_checkout_matches_the_commit_and_is_read_only(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    tree = checkout(repo, upstream.c1, cache=cache)
    assert tree == cache / "checkouts" / upstream.c1
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert files == ["export.py", "models/yolo.py"]
    commit = upstream.repo.commit(upstream.c1)
    for name in files:
        assert (tree / name).read_bytes() == commit.tree[name].data_stream.read()
        assert stat.S_IMODE((tree / name).stat().st_mode) & 0o222 == 0, f"{name} is writable"
    assert not (tree / ".git").exists()
    assert leftovers(cache / "checkouts") == []


def test_checkout_is_reused(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    tree = checkout(repo, upstream.c2, cache=cache)
    inode = tree.stat().st_ino
    (tree / "marker").write_text("still here")  # the root stays writable; a re-extraction would drop this
    assert checkout(repo, upstream.c2, cache=cache) == tree
    assert tree.stat().st_ino == inode and (tree / "marker").exists()
    assert (tree / "models" / "yolo.py").read_text() == "# v7.0\n"


@pytest.mark.parametrize("sha", ["v7.0", "abc1234", "../" + "a" * 38])
def test_checkout_wants_a_full_sha(upstream: Upstream, cache: Path, sha: str) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    with pytest.raises(SourceError, match="not a full commit SHA"):
        checkout(repo, sha, cache=cache)


def test_checkout_of_a_missing_commit_leaves_nothing(upstream: Upstream, cache: Path) -> None:
    repo = open_repo(str(upstream.path), cache=cache)
    with pytest.raises(SourceError, match=f"cannot extract {'0' * 40} from"):
        checkout(repo, "0" * 40, cache=cache)
    assert list((cache / "checkouts").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# get_checkout


def test_get_checkout_combines_and_parses_standin(upstream: Upstream, cache: Path) -> None:
    got = get_checkout(upstream.path.as_uri(), "master", cache=cache)
    assert got == Checkout(
        ref="master",
        commit=upstream.c3,
        path=cache / "checkouts" / upstream.c3,
        url=upstream.path.as_uri(),
        standin=STANDIN,
    )
    plain = get_checkout(str(upstream.path), "v7.0", cache=cache)
    assert plain.standin is None and plain.commit == upstream.c2
    assert (plain.path / "models" / "yolo.py").read_text() == "# v7.0\n"


def test_get_checkout_fetches_once_for_an_unknown_ref(upstream: Upstream, cache: Path) -> None:
    get_checkout(str(upstream.path), "v7.0", cache=cache)
    c4 = upstream.commit({"models/yolo.py": "# v8.0\n"}, "v8.0")
    upstream.repo.create_tag("v8.0", ref=c4)
    assert get_checkout(str(upstream.path), "v8.0", cache=cache).commit == c4
    with pytest.raises(SourceError, match=r"unknown ref 'v9\.0' .* closest tags: v8\.0, v7\.0"):
        get_checkout(str(upstream.path), "v9.0", cache=cache)


def test_malformed_standin_is_a_source_error(upstream: Upstream, cache: Path) -> None:
    c4 = upstream.commit({"STANDIN.json": "{not json"}, "broken mirror")
    with pytest.raises(SourceError, match=r"STANDIN\.json is not valid JSON .* — regenerate the mirror"):
        get_checkout(str(upstream.path), c4, cache=cache)


def test_concurrent_get_checkout_shares_one_clone_and_tree(upstream: Upstream, cache: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: get_checkout(str(upstream.path), "v7.0", cache=cache), range(4)))
    assert {r.path for r in results} == {cache / "checkouts" / upstream.c2}
    assert len(list((cache / "repos").iterdir())) == 1
    assert leftovers(cache / "repos") == [] and leftovers(cache / "checkouts") == []
    assert os.listdir(cache / "checkouts") == [upstream.c2]
