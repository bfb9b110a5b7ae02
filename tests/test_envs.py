"""Pinned envs: every default env finds its interpreter on this machine without PATH edits, and a pin workaround's
sibling env is keyed by its pins (so it shares a venv with an env that has the same pins)."""

from __future__ import annotations

import subprocess

import pytest

from harness.envs.build import derive, env_dir, find_python


def test_every_default_env_finds_its_python(config) -> None:
    # pyenv's versions/ (or PATH, or uv-managed): the interpreter must really be that version.
    for spec in config.envs.values():
        python = find_python(spec.python, spec.name)
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == spec.python, (spec.name, python)


def test_a_missing_python_says_how_to_get_one(config) -> None:
    from dataclasses import replace

    from harness.errors import EnvError

    spec = replace(next(iter(config.envs.values())), python="3.99")
    with pytest.raises(EnvError, match=r"^env 'x': no Python 3\.99 found .*uv python install 3\.99"):
        find_python(spec.python, "env 'x'")


def test_a_pinned_sibling_shares_the_venv_of_an_env_with_those_pins(config, tmp_path) -> None:
    base = config.envs["py38-torch1.8"]
    newer = derive(base, {"numpy": "1.24.4"})
    assert newer.numpy == "1.24.4" and newer.name == "py38-torch1.8+numpy==1.24.4"
    back = derive(newer, {"numpy": base.numpy})
    assert back.key() == base.key() and env_dir(back, tmp_path).name.endswith(base.key())
    # A package outside the core pins replaces its line in extra.
    pinned = derive(base, {"protobuf": "3.20.1"})
    assert [x for x in pinned.extra if x.startswith("protobuf")] == ["protobuf==3.20.1"]
    assert pinned.key() != base.key()
