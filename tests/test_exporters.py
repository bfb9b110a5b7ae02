"""Each stand-in's own export script is found by its code shape, with its flags and default opset."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import git
import pytest

from harness.errors import HarnessError
from harness.run import exporters

# tag -> (script, opset the script asks for by default), read from the stand-ins' export scripts.
EXPECTED = {"v5.0": ("models/export.py", 12), "v6.0": ("export.py", 13), "v6.1": ("export.py", 13),
            "v6.2": ("export.py", 12), "v7.0": ("export.py", 12)}


def _tree(repo: Path, tag: str, dest: Path) -> Path:
    data = git.Repo(repo).git.archive(tag, stdout_as_string=False)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    return dest


@pytest.mark.parametrize("tag", sorted(EXPECTED))
def test_detects_each_stand_ins_exporter(mirror_repo: Path, tmp_path: Path, tag: str) -> None:
    tree = _tree(mirror_repo, tag, tmp_path / tag)
    shape = exporters.detect_exporter(tree, tag)
    script, opset = EXPECTED[tag]
    assert shape.script == script
    assert exporters.requested_opset(shape, tree) == opset
    argv = exporters.command(shape, tree, "model.pt", 640, "onnx-dynamic")
    assert argv[0] == str(tree / script) and "--dynamic" in argv and "model.pt" in argv


def test_a_tree_without_an_export_script_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"no known export script at v3\.0"):
        exporters.detect_exporter(tmp_path, "v3.0")


def test_failure_line_picks_the_cells_format() -> None:
    log = ("\x1b[34mTorchScript:\x1b[0m export failure: XNNPACK is not enabled\n"
           "\x1b[34mONNX:\x1b[0m export failure: Failed to decompose the FX graph\n"
           "## Exception summary\n<class 'ValueError'>: Cannot assign non-leaf Tensor\n")
    assert exporters.failure_line(log, "torchscript") == "TorchScript: export failure: XNNPACK is not enabled"
    onnx = exporters.failure_line(log, "onnx")
    assert onnx is not None and onnx.startswith("ONNX: export failure") and "non-leaf" in onnx
    assert exporters.failure_line("Traceback\nValueError: boom\n", "onnx") == "ValueError: boom"


def test_artifacts_by_suffix() -> None:
    files = [Path(n) for n in ("m.onnx", "m.onnx.data", "m.torchscript.pt", "m.torchscript.ptl", "m.mlmodel")]
    assert exporters.artifacts(files, "onnx") == [Path("m.onnx")]
    assert exporters.artifacts(files, "torchscript") == [Path("m.torchscript.pt")]
