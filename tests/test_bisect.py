"""harness.decide.upgrade.bisect: the search with pure probes (edge cases, the probe bound over many shapes), the commit
range on small real git repositories, and one real search whose probes are harness runs on a YOLOv5 history."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import git
import pytest

from harness.decide.upgrade.bisect import (
    CellProbe,
    Commit,
    CommitRange,
    Observation,
    State,
    commit_range,
    max_probes,
    search,
)
from harness.errors import HarnessError, SourceError
from harness.results.model import CellResult

# -- the search, with pure probes -------------------------------------------------------------------------------------


def synthetic(n: int) -> CommitRange:
    """A range of ``n`` commits c1..cn after a base c0 (cn is B); no git needed for the search itself."""
    commits = tuple(Commit(sha=f"{i:040x}", subject=f"c{i}", date=f"2024-01-{i:02d}T00:00:00+00:00")
                    for i in range(1, n + 1))
    base = Commit(sha=f"{0:040x}", subject="c0", date="2024-01-01T00:00:00+00:00")
    return CommitRange(a="A", b="B", a_sha=base.sha, b_sha=commits[-1].sha, base=base, a_is_ancestor=True,
                       commits=commits)


class Oracle:
    """A pure probe: commits before ``change`` are old, from it on new, those in ``skips`` cannot tell. It records
    what it was asked (by commit number) so tests can see the order."""

    def __init__(self, change: int, skips: set[int] | None = None):
        self.change, self.skips = change, skips or set()
        self.asked: list[int] = []

    def __call__(self, commit: Commit) -> Observation:
        i = int(commit.subject[1:])
        self.asked.append(i)
        state: State = "skip" if i in self.skips else "new" if i >= self.change else "old"
        return Observation(state, f"c{i} is {state}")


def test_skipped_commit_moves_the_probe_to_its_neighbour() -> None:
    """17 commits, the change in c11, c8 (the first median) does not build: c8 is skipped, its neighbour c9 probed,
    and the search still ends on c11 within ⌈log2 17⌉ + 1 probes."""
    oracle = Oracle(change=11, skips={8})
    found = search(synthetic(17), oracle)
    assert oracle.asked == [8, 9, 13, 11, 10]
    assert found.first is not None and found.first.subject == "c11"
    assert [s.commit.subject for s in found.skipped] == ["c8"] and found.skipped[0].seen.reason == "c8 is skip"
    assert found.probes == 5 <= found.budget == math.ceil(math.log2(17)) + 1
    assert found.candidates == () and "first in" in found.summary() and "1 skipped" in found.summary()


def test_change_in_the_first_commit() -> None:
    found = search(synthetic(16), Oracle(change=1))
    assert found.first is not None and found.first.subject == "c1"
    assert found.probes == 4 == math.ceil(math.log2(16))


def test_change_in_the_last_commit_is_b_and_b_is_never_probed() -> None:
    oracle = Oracle(change=16)
    found = search(synthetic(16), oracle)
    assert found.first is not None and found.first.subject == "c16"
    assert 16 not in oracle.asked and found.probes == 4


def test_a_single_commit_range_needs_no_probe() -> None:
    oracle = Oracle(change=1)
    found = search(synthetic(1), oracle)
    assert found.first is not None and found.first.subject == "c1" and oracle.asked == [] and found.budget == 0


def test_every_commit_skipped_says_so_and_names_the_range() -> None:
    oracle = Oracle(change=3, skips={1, 2, 3, 4, 5})
    found = search(synthetic(6), oracle)
    assert found.first is None and found.all_skipped
    assert sorted(oracle.asked) == [1, 2, 3, 4, 5] and found.probes == 5 <= found.budget
    assert [c.subject for c in found.candidates] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert found.note.startswith("every commit in A..B before B was skipped (5 of 6: ")
    assert f"{found.span.base.short}..{found.span.b_sha[:12]}" in found.note  # the range, as git log takes it
    assert found.to_json()["first"] is None and len(found.to_json()["skipped"]) == 5


def test_skips_around_the_change_leave_the_candidates() -> None:
    """c5 changed it but c4 and c5 do not build: the answer is one of c4, c5, c6, as git bisect would say."""
    found = search(synthetic(12), Oracle(change=5, skips={4, 5}))
    assert found.first is None and not found.all_skipped
    assert [c.subject for c in found.candidates] == ["c4", "c5", "c6"]
    assert "one of 3 commits" in found.note


@pytest.mark.parametrize("n", [*range(1, 41), 64, 65, 100])
def test_probe_bound_and_answer_over_every_change_and_skip_pattern(n: int) -> None:
    """For every position of the change and every set of at most two skipped commits (all pairs up to N = 20): the
    answer is exact when no skipped commit hides it, else among the candidates, and the probes never exceed
    ⌈log2 N⌉ + the skipped commits."""
    singles: list[set[int]] = [set()] + [{s} for s in range(1, n)]
    pairs = [set(p) for p in itertools.combinations(range(1, n), 2)] if n <= 20 else []
    span = synthetic(n)
    for change in range(1, n + 1):
        for skips in singles + pairs:
            found = search(span, Oracle(change, skips))
            assert found.probes <= max_probes(n, len(found.skipped)), (n, change, skips, found.steps)
            if found.first is not None:
                assert found.first.subject == f"c{change}", (n, change, skips)
            else:
                assert f"c{change}" in [c.subject for c in found.candidates], (n, change, skips)
                *hidden, last = [int(c.subject[1:]) for c in found.candidates]
                assert set(hidden) <= skips and (last == n or (last >= change and last not in skips))


def test_a_right_hint_ends_the_search_in_two_probes() -> None:
    """Another group of the same question found c11: checking it and c10 settles this group too."""
    span = synthetic(64)
    oracle = Oracle(change=11)
    found = search(span, oracle, hints=[span.commits[10]])
    assert oracle.asked == [11, 10] and found.first is not None and found.first.subject == "c11"
    assert found.probes == 2 and found.hints == 1 and found.budget == max_probes(64, 0) + 2


@pytest.mark.parametrize("n", [1, 2, 3, 8, 17, 33])
def test_hints_never_change_the_answer(n: int) -> None:
    """Every change position x every hint position (and a skipped hint or neighbour): the same answer as without the
    hint, within ⌈log2 N⌉ + skips + 2 probes."""
    span = synthetic(n)
    for change in range(1, n + 1):
        for hint in range(1, n + 1):
            for skips in (set(), {hint}, {hint - 1} - {0}):
                plain = search(span, Oracle(change, skips))
                found = search(span, Oracle(change, skips), hints=[span.commits[hint - 1]])
                assert (found.first, found.candidates) == (plain.first, plain.candidates), (n, change, hint, skips)
                assert found.probes <= found.budget <= max_probes(n, len(found.skipped)) + 2, (n, change, hint)


def test_merge_base_probed_first_when_a_is_not_an_ancestor() -> None:
    span = synthetic(8)
    span = CommitRange(**{**span.__dict__, "a_is_ancestor": False})
    asked: list[str] = []

    def probe(state_of_base: State) -> Callable[[Commit], Observation]:
        def answer(commit: Commit) -> Observation:
            asked.append(commit.subject)
            if commit.subject == "c0":
                return Observation(state_of_base, "base")
            return Observation("new" if int(commit.subject[1:]) >= 6 else "old")
        return answer

    found = search(span, probe("old"))
    assert asked[0] == "c0" and found.first is not None and found.first.subject == "c6"
    assert found.probes <= found.budget == max_probes(8, 0) + 1
    asked.clear()
    found = search(span, probe("new"))
    assert asked == ["c0"] and found.first is None and "came from A's side" in found.note


def test_probe_exceptions_propagate() -> None:
    """An env that cannot be built or Ctrl-C are not properties of a commit: the search stops, nothing is skipped."""
    def broken(commit: Commit) -> Observation:
        raise HarnessError("env: cannot build")

    with pytest.raises(HarnessError, match="cannot build"):
        search(synthetic(8), broken)


# -- the commit range, on small real git repositories -----------------------------------------------------------------


def _commit(repo: git.Repo, name: str, text: str, day: int) -> git.Commit:
    path = Path(repo.working_tree_dir or ".") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    repo.index.add([name])
    date = f"{1706788800 + day * 86400} +0000"  # 2024-02-<day+1> 12:00 UTC, in git's internal format
    return repo.index.commit(f"{name}: {text.strip()}", author_date=date, commit_date=date)


@pytest.fixture
def small_repo(tmp_path: Path) -> git.Repo:
    """main: c0 .. c9 with a merged feature branch (f1, f2) at c6; tag a = c2; branch side off c3 with s1, s2."""
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test").set_value("user", "email", "test@example.com")
    for i in range(6):
        _commit(repo, "main.txt", f"c{i}\n", i + 1)
        if i == 2:
            repo.create_tag("a")
        if i == 3:
            repo.create_head("side")
            repo.create_head("feature")
    repo.heads.side.checkout()
    _commit(repo, "side.txt", "s1\n", 10)
    _commit(repo, "side.txt", "s2\n", 11)
    repo.heads.feature.checkout()
    _commit(repo, "feature.txt", "f1\n", 12)
    _commit(repo, "feature.txt", "f2\n", 13)
    repo.heads.main.checkout()
    repo.git.merge("--no-ff", "-m", "c6: merge feature", "feature")
    for i in range(7, 10):
        _commit(repo, "main.txt", f"c{i}\n", i + 14)
    return repo


def test_range_is_first_parent_oldest_first(small_repo: git.Repo) -> None:
    span = commit_range(small_repo, "a", "main")
    assert span.a_is_ancestor and span.notes == ()
    assert span.base.subject == "main.txt: c2" and span.base.sha == small_repo.tags.a.commit.hexsha
    assert [c.subject for c in span.commits] == ["main.txt: c3", "main.txt: c4", "main.txt: c5", "c6: merge feature",
                                                 "main.txt: c7", "main.txt: c8", "main.txt: c9"]
    assert span.commits[-1].sha == span.b_sha == small_repo.heads.main.commit.hexsha
    assert span.commits[0].date == "2024-02-05T12:00:00+00:00"
    short = commit_range(small_repo, span.a_sha[:10], span.commits[1].sha[:8])  # SHAs, full or short, are refs too
    assert [c.subject for c in short.commits] == ["main.txt: c3", "main.txt: c4"]


def test_range_from_a_ref_that_is_not_an_ancestor(small_repo: git.Repo) -> None:
    """side (s1, s2 off c3) is not in main's history: the range starts at the merge base c3 and says so."""
    span = commit_range(small_repo, "side", "main")
    assert not span.a_is_ancestor and span.base.subject == "main.txt: c3"
    assert span.commits[0].subject == "main.txt: c4" and len(span.commits) == 6
    assert "side" in span.notes[0] and "not an ancestor of main" in span.notes[0] and span.base.short in span.notes[0]
    oracle_calls: list[str] = []

    def probe(commit: Commit) -> Observation:
        oracle_calls.append(commit.subject)
        return Observation("new" if commit.subject in ("main.txt: c8", "main.txt: c9") else "old")

    found = search(span, probe)
    assert oracle_calls[0] == "main.txt: c3"  # the merge base is not A: probed first
    assert found.first is not None and found.first.subject == "main.txt: c8"


def test_range_from_a_ref_merged_in_off_the_first_parent_chain(small_repo: git.Repo) -> None:
    span = commit_range(small_repo, "feature", "main")
    assert span.a_is_ancestor and "first-parent" in span.notes[0]
    assert [c.subject for c in span.commits][:3] == ["main.txt: c4", "main.txt: c5", "c6: merge feature"]


def test_range_bad_input(small_repo: git.Repo) -> None:
    with pytest.raises(HarnessError, match=r"^upgrade: a and a are the same commit .* pass two different refs"):
        commit_range(small_repo, "a", "a")
    with pytest.raises(HarnessError, match=r"^upgrade: a \(\w{12}\) is an ancestor of main .* swap --from and --to"):
        commit_range(small_repo, "main", "a")
    with pytest.raises(SourceError, match=r"unknown ref 'v9' .* closest tags: a"):
        commit_range(small_repo, "a", "v9")
    small_repo.git.checkout("--orphan", "elsewhere")
    small_repo.git.rm("-rf", ".")
    _commit(small_repo, "other.txt", "unrelated\n", 28)
    with pytest.raises(HarnessError, match=r"have no common history"):
        commit_range(small_repo, "a", "elsewhere")


# -- a real search: probes are harness runs on a YOLOv5 history -------------------------------------------------------

# Real upstream history (a git bundle), when this machine has one; a user's clone falls back to the stand-in mirror.
BUNDLE = Path(os.environ.get("YOLOV5_UPSTREAM_BUNDLE", "/work/shared/upstream/yolov5.bundle"))
N_COMMITS = 17  # c1..c17 after the base c0
BROKEN, DETECT = 8, 11  # c8 imports a helper that only c9 adds; c11 makes Detect return one output when exported


@pytest.fixture(scope="module")
def yolov5_tags(request: pytest.FixtureRequest) -> Path:
    """A repository with the tag v6.1: the upstream bundle's cached clone when present, else the stand-in mirror."""
    if BUNDLE.is_file():
        from harness.paths import cache_dir
        from harness.sources.checkout import open_repo

        return Path(open_repo(str(BUNDLE), cache=cache_dir()).git_dir)
    return Path(request.getfixturevalue("mirror_repo"))


def _edit(path: Path, anchor: str, new: str, *, replace: bool = False) -> None:
    """Put ``new`` after (or instead of) the one line holding ``anchor``, with that line's indentation."""
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if anchor in line]
    assert len(hits) == 1, f"{path.name}: {anchor!r} found {len(hits)} times"
    i = hits[0]
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    lines[i:i + 1] = [f"{indent}{new}\n"] if replace else [lines[i], f"{indent}{new}\n"]
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def history(yolov5_tags: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """c0 (tag A) is v6.1's tree; c1..c17 (c17 = tag B) step from it to a tree whose Detect returns one output when
    exported: c11 makes upstream's change of that kind (#7259: an ``export`` flag on Detect, set by export.py, and a
    1-tuple return under it); c8 imports a helper module from export.py that c9 adds, so c8 does not export, for a
    cause that has nothing to do with Detect. The other commits edit a changelog."""
    from conftest import repo_from_tag

    root = tmp_path_factory.mktemp("history") / "yolov5"
    with pytest.MonkeyPatch.context() as mp:
        # Fixed dates: the same SHAs in every session, so the shared cache's trees and the test checkpoint are reused.
        mp.setenv("GIT_AUTHOR_DATE", "1700000000 +0000")
        mp.setenv("GIT_COMMITTER_DATE", "1700000000 +0000")
        repo = repo_from_tag(yolov5_tags, "v6.1", root)
        _steps(repo, root)
    return root


def _steps(repo: git.Repo, root: Path) -> None:
    repo.create_tag("A")
    for i in range(1, N_COMMITS + 1):
        with (root / "CHANGES.md").open("a") as fh:
            fh.write(f"- step {i}\n")
        subject = f"c{i}: changelog"
        if i == BROKEN:
            _edit(root / "export.py", "from models.yolo import Detect", "from utils.export_notes import NOTE  # noqa")
            subject = f"c{i}: export notes (the helper comes in the next commit)"
        if i == BROKEN + 1:
            (root / "utils" / "export_notes.py").write_text('NOTE = "exported by export.py"\n')
            subject = f"c{i}: add utils/export_notes.py"
        if i == DETECT:
            _edit(root / "models" / "yolo.py", "onnx_dynamic = False", "export = False  # export mode")
            _edit(root / "models" / "yolo.py", "return x if self.training else (torch.cat(z, 1), x)",
                  "return x if self.training else (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)",
                  replace=True)
            _edit(root / "export.py", "m.onnx_dynamic = dynamic", "m.export = True")
            subject = f"c{i}: export a single output"
        repo.git.add("-A")
        repo.index.commit(subject)
    repo.create_tag("B")


@pytest.fixture(scope="module")
def history_weights(history: Path, env_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolov5n checkpoint of the base tree, built once by the harness's worker: every probe names it as [model]
    weights, so a probe costs its export only (the model's yaml is the same in every commit)."""
    from harness.envs import proc
    from harness.paths import cache_dir
    from harness.run import matrix as run
    from harness.sources.checkout import get_checkout

    checkout = get_checkout(str(history), "A", cache=cache_dir())
    tree = checkout.path
    # Keyed by the base commit (fixed: see history) and the checkpoint code: built once per cache, like the harness's.
    key = f"{checkout.commit[:12]}-{run.harness_fingerprint(run.CHECKPOINT_SOURCES)[:8]}"
    out = cache_dir() / "tests" / "bisect" / f"{key}.pt"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.with_suffix(f".{os.getpid()}.tmp")
    # Upstream v6.1 fetches a font at import unless YOLOV5_CONFIG_DIR holds it: the env probe puts it there (offline).
    config_dir = cache_dir() / "yolov5-config"
    run.probe_env(env_python, tmp_path_factory.mktemp("probe"), config_dir)
    job = {"task": "checkpoint", "tree": str(tree), "cfg": "yolov5n.yaml", "nc": 80, "seed": 0,
           "weights_out": str(building)}
    answer, ran = proc.run_worker(env_python, job, workdir=tmp_path_factory.mktemp("weights-job"),
                                  watch=proc.Watch(600), env_extra={"YOLOV5_CONFIG_DIR": str(config_dir)})
    assert answer and answer.get("ok") and building.is_file(), ran.tail()
    os.replace(building, out)  # complete or absent, also when two sessions build it at once
    return out


def output_count(result: CellResult) -> int | None:
    """The group's attribute here: how many outputs the deciding attempt exported; None when it did not export."""
    return len(result.deciding.outputs) if result.outcome() in ("works", "workaround") else None


@pytest.mark.slow
@pytest.mark.torch
def test_real_search_finds_the_detect_commit_and_skips_the_broken_one(
        history: Path, history_weights: Path, small_matrix: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Native TorchScript of yolov5n at 160 in the quick env: v6.1's tree exports 4 outputs, B's 1 (the values the
    comparison of A and B would give the group; the probes on either side of c11 show both). The search finds c11 and
    skips c8 (its export dies on the missing helper) within ⌈log2 17⌉ + 2 probes; interrupted after two probes it
    resumes from them, and asked again it runs nothing."""
    from conftest import QUICK_ENV

    from harness.config import load_config
    from harness.paths import cache_dir

    # torch >= 2.6's weights_only default is not this test's subject: one attempt per probe (tests/conftest.py).
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    config = load_config(small_matrix(tmp_path / "matrix.toml", repo=history, refs=["A", "B"],
                                      weights=history_weights, variants=("native",), formats=("torchscript",)))
    reports = tmp_path / "reports"
    before, after = 4, 1
    span = commit_range(git.Repo(history), "A", "B")
    assert len(span.commits) == N_COMMITS and span.a_is_ancestor
    lines: list[str] = []
    probe = CellProbe(config, QUICK_ENV, "native", "torchscript", reports=reports / "upgrade" / "probes",
                      cache=cache_dir(), value=output_count, before=before, after=after,
                      show=lambda v: f"{v} output(s)", log=lines.append)

    class Interrupted(KeyboardInterrupt):
        pass

    asked: list[str] = []

    def stop_after_two(commit: Commit) -> Observation:
        if len(asked) == 2:
            raise Interrupted  # what Ctrl-C does between two probes
        asked.append(commit.sha)
        return probe(commit)

    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        search(span, stop_after_two)
    first_s = time.monotonic() - t0
    t0 = time.monotonic()
    found = search(span, probe, log=lines.append)
    resumed_s = time.monotonic() - t0
    t0 = time.monotonic()
    again = search(span, probe)
    again_s = time.monotonic() - t0

    subjects = [s.commit.subject for s in found.steps]
    print(f"\ninterrupted after 2 probes {first_s:.1f} s; resumed {resumed_s:.1f} s "
          f"({found.probes} probes: {subjects}); again {again_s:.1f} s")
    assert found.first is not None and found.first.subject == f"c{DETECT}: export a single output"
    assert found.first.sha == span.commits[DETECT - 1].sha
    assert [s.commit.subject for s in found.skipped] == [
        f"c{BROKEN}: export notes (the helper comes in the next commit)"]
    assert "utils.export_notes" in found.skipped[0].seen.reason  # why it was skipped: the cell's verdict and message
    assert found.probes <= math.ceil(math.log2(N_COMMITS)) + 2
    assert [s.commit.sha for s in found.steps[:2]] == asked and found.cached == 2  # resumed from the two probes made
    seen = {state: {s.seen.reason for s in found.steps if s.seen.state == state} for state in ("old", "new")}
    assert seen == {"old": {"4 output(s)"}, "new": {"1 output(s)"}}  # both ends' values, seen on either side of c11
    assert again.first == found.first and again.cached == again.probes == found.probes  # the same question: free
    assert again_s < 30, again_s
    # Probe results are ordinary results of cells named by commit.
    assert (reports / "upgrade" / "probes" / "results" / f"{found.first.sha}__{QUICK_ENV}__native__torchscript.json"
            ).is_file()
