"""The `[model] weights` check reads which classes a checkpoint's pickle names, without unpickling it: every pickle
protocol, torch.save's zip archive and its legacy format, and a payload that would run code if it were loaded.

No torch here: the pickles are written with Python's own pickle module in the layouts torch.save uses (a zip
archive holding `<name>/data.pkl`; the legacy format's four pickles: magic number, protocol version, system info,
the object). tests/test_weights.py checks files saved by torch itself.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.run.preflight import _checkpoint_classes, check_weights

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


@pytest.fixture
def models_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An importable `models.yolo` with a `Model` class, as in a YOLOv5 tree, for pickle.dumps to name."""
    (tmp_path / "pkg" / "models").mkdir(parents=True)
    (tmp_path / "pkg" / "models" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "models" / "yolo.py").write_text(
        "class Detect:\n    pass\n\nclass Model:\n    def __init__(self):\n        self.model = [Detect()]\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    for name in ("models", "models.yolo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import models.yolo

    return models.yolo


def zip_checkpoint(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    return path


def legacy_checkpoint(path: Path, obj: object) -> Path:
    with path.open("wb") as fh:
        for part in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}, obj):
            pickle.dump(part, fh, protocol=2)
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_names_the_model_classes(models_package, tmp_path: Path, protocol: int) -> None:
    checkpoint = {"epoch": -1, "model": models_package.Model(), "ema": None}
    path = zip_checkpoint(tmp_path / "best.pt", pickle.dumps(checkpoint, protocol=protocol))
    assert {("models.yolo", "Model"), ("models.yolo", "Detect")} <= _checkpoint_classes(path)
    check_weights(str(path))


def test_legacy_format(models_package, tmp_path: Path) -> None:
    path = legacy_checkpoint(tmp_path / "old.pt", {"model": models_package.Model()})
    assert ("models.yolo", "Model") in _checkpoint_classes(path)
    check_weights(str(path))
    state = legacy_checkpoint(tmp_path / "state.pt", OrderedDict(weight=[0.0]))
    with pytest.raises(ConfigError, match="has no YOLOv5 model in it"):
        check_weights(str(state))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_state_dict_is_refused(tmp_path: Path, protocol: int) -> None:
    state = OrderedDict([("model.0.conv.weight", [0.5]), ("model.24.anchors", [1.0])])
    path = zip_checkpoint(tmp_path / "state.pt", pickle.dumps(state, protocol=protocol))
    assert _checkpoint_classes(path) == {("collections", "OrderedDict")}
    with pytest.raises(ConfigError) as info:
        check_weights(str(path), "m.toml")
    assert str(info.value).startswith(f"m.toml: model.weights {path} has no YOLOv5 model in it")
    assert "\n" not in str(info.value)


class Payload:
    """What a hostile checkpoint carries: unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_payload_is_read_not_run(models_package, tmp_path: Path) -> None:
    """A checkpoint-shaped file that would run code when loaded: the check lists os.system among its names (and
    accepts the file: it names a YOLOv5 model), and nothing runs."""
    marker = tmp_path / "pwned"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = zip_checkpoint(tmp_path / f"evil{protocol}.pt",
                              pickle.dumps({"model": models_package.Model(), "x": Payload(marker)}, protocol=protocol))
        names = _checkpoint_classes(path)
        assert (os.system.__module__, "system") in names and ("models.yolo", "Model") in names
        check_weights(str(path))
    assert not marker.exists()


def test_a_damaged_pickle_is_one_line(tmp_path: Path) -> None:
    path = zip_checkpoint(tmp_path / "cut.pt", pickle.dumps({"a": "b" * 100}, protocol=2)[:40])
    with pytest.raises(ConfigError, match=r"is a damaged PyTorch checkpoint \(its pickle does not parse: "):
        check_weights(str(path))
