"""harness.config: the real matrix.toml loads, every invalid input gives one actionable line, plans are stable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from harness.config import (
    ALLOWED_FORMATS,
    ALLOWED_VARIANTS,
    Config,
    EnvSpec,
    TargetSpec,
    Timeouts,
    Tolerances,
    load_config,
    validate_ref_name,
)
from harness.errors import ConfigError
from harness.run.plan import Cell, plan

ROOT = Path(__file__).resolve().parents[1]

# A small valid config; each error test changes one thing in it.
BASE = """\
[source]
repo = "https://github.com/ultralytics/yolov5.git"
refs = ["v6.2", "v7.0"]
fallback = "mirror"

[model]
cfg = "yolov5n.yaml"
nc = 80
imgsz = 640
seed = 0

[matrix]
variants = ["native", "1", "3", "4"]
formats = ["onnx", "onnx-dynamic", "torchscript"]

[tolerances]
atol = 1e-3
rtol = 1e-3
min_cosine = 0.9999

[timeouts]
checkpoint = 300
export = 600
verify = 300

[envs.quick]
python = "3.11"
torch = "2.14.1"
torchvision = "0.29.1"
onnx = "1.23.2"
onnxruntime = "1.32.0"
numpy = "2.4.6"
extra = ["onnxscript==0.7.2", "setuptools<81", "pyyaml"]

[envs."py38-torch1.13"]
python = "3.8"
torch = "1.13.1"
torchvision = "0.14.1"
onnx = "1.13.1"
onnxruntime = "1.14.1"
numpy = "1.23.5"
"""


def write(tmp_path: Path, text: str, name: str = "matrix.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, f"test bug: {old!r} not in the base config"
    return text.replace(old, new, 1)


def error_for(tmp_path: Path, text: str, **kwargs: object) -> str:
    """Load ``text`` expecting a ConfigError; return its message after checking it is one line naming the file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert " — " in message, "every message carries a fix after the dash"
    return message


# ---------------------------------------------------------------------------------------------------------------
# Loading what is valid


def test_real_matrix_toml_loads() -> None:
    config = load_config(ROOT / "matrix.toml", env={})
    assert config.source.refs == ("v5.0", "v6.0", "v6.1", "v6.2", "v7.0")
    assert config.source.fallback == "mirror"
    assert config.variants == ALLOWED_VARIANTS[:4]  # every variant but npu, which a team adds (or --profile rockchip)
    assert config.formats == ALLOWED_FORMATS
    assert config.model.imgsz % 32 == 0
    # The env's name is the one cell ids use, e.g. "v7.0__py311-torch2.14__3__onnx-dynamic".
    assert "py311-torch2.14" in config.envs
    env = config.envs["py311-torch2.14"]
    assert env.requirements()[:2] == [f"torch=={env.torch}", f"torchvision=={env.torchvision}"]


def test_base_config_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), env={})
    assert config.path == (tmp_path / "matrix.toml").resolve()
    assert config.source.refs == ("v6.2", "v7.0")
    assert config.model.cfg == "yolov5n.yaml" and config.model.weights is None
    assert list(config.envs) == ["quick", "py38-torch1.13"]
    old = config.envs["py38-torch1.13"]
    assert old.python == "3.8" and old.extra == ()
    assert isinstance(config.timeouts.export, float) and config.timeouts.export == 600.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.imgsz = 320  # type: ignore[misc]


def test_optional_tables_and_keys_take_documented_defaults(tmp_path: Path) -> None:
    text = BASE.split("[tolerances]", maxsplit=1)[0] + "[envs" + BASE.split("[envs", 1)[1]
    text = edit("seed = 0", 'seed = 0\nweights = "/models/mine.pt"', text)
    config = load_config(write(tmp_path, text), env={})
    assert config.tolerances == Tolerances(atol=1e-3, rtol=1e-3, min_cosine=0.9999)
    assert config.timeouts == Timeouts(checkpoint=300, export=600, verify=300)
    assert config.model.weights == "/models/mine.pt"
    # One key of a table given: the others still default.
    partial = edit("[timeouts]\ncheckpoint = 300\nexport = 600\nverify = 300", "[timeouts]\nexport = 1200")
    assert load_config(write(tmp_path, partial), env={}).timeouts == Timeouts(300, 1200, 300)


# ---------------------------------------------------------------------------------------------------------------
# Repo override precedence: CLI > $YOLOV5_REPO > file


def test_repo_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    file_repo = "https://github.com/ultralytics/yolov5.git"
    assert load_config(path, env={}).source.repo == file_repo
    assert load_config(path, env={"YOLOV5_REPO": "/srv/y5"}).source.repo == "/srv/y5"
    assert load_config(path, repo="file:///cli", env={"YOLOV5_REPO": "/srv/y5"}).source.repo == "file:///cli"
    assert load_config(path, env={"YOLOV5_REPO": "  "}).source.repo == file_repo, "an empty variable means unset"


def test_repo_override_allows_missing_file_repo(tmp_path: Path) -> None:
    text = edit('repo = "https://github.com/ultralytics/yolov5.git"\n', "")
    assert load_config(write(tmp_path, text), repo="/srv/y5", env={}).source.repo == "/srv/y5"
    assert load_config(write(tmp_path, text), env={"YOLOV5_REPO": "/srv/env"}).source.repo == "/srv/env"
    message = error_for(tmp_path, text)
    assert "missing 'source.repo'" in message and "add repo = " in message


def test_empty_cli_repo_is_refused(tmp_path: Path) -> None:
    assert "--repo" in error_for(tmp_path, BASE, repo=" ")


def test_relative_local_repo_in_file_is_relative_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    text = edit('repo = "https://github.com/ultralytics/yolov5.git"', 'repo = "../mirror/yolov5"')
    config = load_config(write(sub, text), env={})
    assert config.source.repo == str((tmp_path / "mirror" / "yolov5").resolve())
    # On the command line, a relative path is the caller's (resolved later against the working directory).
    assert load_config(write(sub, text), repo="rel/y5", env={}).source.repo == "rel/y5"
    # URLs are never touched.
    scp = edit('repo = "https://github.com/ultralytics/yolov5.git"', 'repo = "git@github.com:ultralytics/yolov5.git"')
    assert load_config(write(sub, scp), env={}).source.repo == "git@github.com:ultralytics/yolov5.git"


# ---------------------------------------------------------------------------------------------------------------
# One line per problem: file, key, fix


def test_malformed_toml_names_line_and_column(tmp_path: Path) -> None:
    text = edit("imgsz = 640", "imgsz = = 640")
    line = text.splitlines().index("imgsz = = 640") + 1
    message = error_for(tmp_path, text)
    assert re.match(rf"^{re.escape(str(tmp_path / 'matrix.toml'))}:{line}:\d+: invalid TOML: ", message), message
    assert message.endswith("fix the syntax at that line")


def test_malformed_toml_at_end_of_document(tmp_path: Path) -> None:
    text = BASE + 'extra2 = ["unterminated",\n'
    message = error_for(tmp_path, text)
    assert re.search(r":\d+:\d+: invalid TOML: ", message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found — "):
        load_config(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('torch = "2.14.1"', 'torh = "2.14.1"', "unknown key 'envs.quick.torh' — did you mean 'torch'?"),
        ("[matrix]", "[matrx]", "unknown key 'matrx' — did you mean 'matrix'?"),
        (
            "seed = 0",
            "seed = 0\nbanana = 1",
            "unknown key 'model.banana' — allowed keys: cfg, nc, imgsz, seed, weights",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert error_for(tmp_path, edit(old, new)).endswith(expected)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("imgsz = 640", 'imgsz = "640"', "'model.imgsz' must be an integer, got str '640' — write imgsz = 640"),
        ("nc = 80", "nc = true", "'model.nc' must be an integer, got boolean True — write nc = 80"),
        ("seed = 0", "seed = 0.0", "'model.seed' must be an integer, got float 0.0 — write seed = 0"),
        ("atol = 1e-3", 'atol = "1e-3"', "'tolerances.atol' must be a number, got str '1e-3' — write atol = 0.001"),
        ('refs = ["v6.2", "v7.0"]', 'refs = "v7.0"', "got str 'v7.0' — write refs = [\"v7.0\"]"),
        ('variants = ["native", "1", "3", "4"]', "variants = [1, 3]", 'got array [1, 3] — write variants = ["1", "3"]'),
        ('torch = "2.14.1"', "torch = 2", "'envs.quick.torch' must be a string, got int 2 — write torch = \"2\""),
        ('python = "3.11"', "python = 3.10", 'quote it: python = "3.1"'),
    ],
)
def test_wrong_types(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = error_for(tmp_path, edit(old, new))
    assert expected in message, message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('torch = "2.14.1"\n', "", "missing 'envs.quick.torch' — add torch = \"<version>\""),
        ("nc = 80\n", "", "missing 'model.nc' — add nc = 80"),
        ('fallback = "mirror"\n', "", "missing 'source.fallback' — add fallback = \"mirror\""),
        ("[matrix]\n", "[unused]\n", "unknown key 'unused'"),
    ],
)
def test_missing_fields(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in error_for(tmp_path, edit(old, new))


def _schema_keys() -> list[tuple[str, str, str]]:
    """(table, key, example) of every key the config's classes declare, plus a toolkit's options."""
    from harness.config import _TABLES, _options_class, _table_keys  # the schema under test
    from harness.targets.toolkits import TOOLKITS

    keys = [(section, key, f.metadata["example"]) for section, cls in _TABLES.items()
            for key, f in _table_keys(cls).items()]
    keys += [('envs.quick', key, f.metadata["example"]) for key, f in _table_keys(EnvSpec).items()]
    keys += [("targets.rknn", key, f.metadata["example"]) for key, f in _table_keys(TargetSpec).items()]
    keys += [("targets.rknn", key, f.metadata["example"])
             for key, f in _table_keys(_options_class(TOOLKITS["rknn"].defaults)).items()]
    return keys


@pytest.mark.parametrize(("section", "key", "example"), _schema_keys())
def test_every_key_of_the_schema_is_type_checked(tmp_path: Path, section: str, key: str, example: str) -> None:
    """Each field the config's dataclasses declare is read from the file and refused with its own fix when it holds
    the wrong type: a key added to a class is checked without a line of validation code."""
    header = "[envs.quick]" if section == "envs.quick" else f"[{section}]"
    wrong = f"{key} = {{ wrong = 1 }}"
    if header in BASE:
        start = BASE.index(header)
        body = re.sub(rf"(?m)^{key} = .*\n", "", BASE[start:], count=1)
        text = BASE[:start] + body.replace(header, f"{header}\n{wrong}", 1)
    else:
        text = f"{BASE}\n{header}\n{wrong}\n"
    message = error_for(tmp_path, text)
    assert f"'{section}.{key}' must be " in message and f"got table {{'wrong': 1}} — write {key} = {example}" in message


def test_table_of_wrong_type(tmp_path: Path) -> None:
    text = "model = 3\n" + edit('[model]\ncfg = "yolov5n.yaml"\nnc = 80\nimgsz = 640\nseed = 0\n', "")
    assert "'model' must be a table, got int 3 — write [model] and its keys" in error_for(tmp_path, text)


def test_missing_table(tmp_path: Path) -> None:
    text = BASE.replace(
        '[matrix]\nvariants = ["native", "1", "3", "4"]\nformats = ["onnx", "onnx-dynamic", "torchscript"]\n', ""
    )
    assert "missing table '[matrix]' — add a [matrix] table with variants, formats" in error_for(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('refs = ["v6.2", "v7.0"]', "refs = []", "'source.refs' is empty"),
        (
            'variants = ["native", "1", "3", "4"]',
            "variants = []",
            "'matrix.variants' is empty — list at least one of native, 1, 3, 4",
        ),
        ('formats = ["onnx", "onnx-dynamic", "torchscript"]', "formats = []", "'matrix.formats' is empty"),
        (
            'variants = ["native", "1", "3", "4"]',
            'variants = ["native", "2"]',
            "unknown variant '2' in 'matrix.variants' (allowed: native, 1, 3, 4, npu)",
        ),
        (
            'formats = ["onnx", "onnx-dynamic", "torchscript"]',
            'formats = ["onnx_dynamic"]',
            "did you mean 'onnx-dynamic'?",
        ),
        (
            'formats = ["onnx", "onnx-dynamic", "torchscript"]',
            'formats = ["onnx", "onnx"]',
            "'matrix.formats' lists 'onnx' twice",
        ),
        ('refs = ["v6.2", "v7.0"]', 'refs = ["v7.0", "v7.0"]', "'source.refs' lists 'v7.0' twice"),
        ('refs = ["v6.2", "v7.0"]', 'refs = ["../../etc"]', "invalid ref '../../etc' in 'source.refs'"),
        (
            'fallback = "mirror"',
            'fallback = "mirorr"',
            "'source.fallback' is 'mirorr', not one of mirror, error — did you mean 'mirror'?",
        ),
        (
            "imgsz = 640",
            "imgsz = 650",
            "'model.imgsz' must be a positive multiple of 32 (the model's max stride), got 650 — write imgsz = 672",
        ),
        ("imgsz = 640", "imgsz = 0", "must be a positive multiple of 32"),
        ("imgsz = 640", "imgsz = -64", "must be a positive multiple of 32"),
        ("nc = 80", "nc = 0", "'model.nc' must be at least 1, got 0"),
        (
            "min_cosine = 0.9999",
            "min_cosine = 1.5",
            "'tolerances.min_cosine' must be > 0 and <= 1, got 1.5 — write min_cosine = 0.9999",
        ),
        ("atol = 1e-3", "atol = nan", "'tolerances.atol' must be >= 0"),
        ("export = 600", "export = 0", "'timeouts.export' must be > 0, got 0 — write export = 600"),
    ],
)
def test_bad_values(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = error_for(tmp_path, edit(old, new))
    assert expected in message, message


@pytest.mark.parametrize("name", ["py 311", "../up", ".hidden", "-flag", "a/b", "ü"])
def test_env_names_must_be_path_safe(tmp_path: Path, name: str) -> None:
    message = error_for(tmp_path, edit("[envs.quick]", f'[envs."{name}"]'))
    assert f"env name {name!r}" in message and "rename it" in message


def test_dotted_env_name_is_explained(tmp_path: Path) -> None:
    message = error_for(tmp_path, edit('[envs."py38-torch1.13"]', "[envs.py38-torch1.13]"))
    assert "read as env 'py38-torch1' with a sub-table" in message
    assert message.endswith('quote the name: [envs."py38-torch1.13"]')


def test_no_envs(tmp_path: Path) -> None:
    without = BASE.split("[envs.quick]", maxsplit=1)[0]
    assert "missing 'envs'" in error_for(tmp_path, without)
    assert "'envs' is empty" in error_for(tmp_path, without + "[envs]\n")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('torch = "2.14.1"', 'torch = "latest"', "'envs.quick.torch' is not a valid version: 'latest'"),
        ('torch = "2.14.1"', 'torch = "2.*"', "'envs.quick.torch' is not a valid version"),
        ('numpy = "2.4.6"', 'numpy = ">=2"', "'envs.quick.numpy' is not a valid version"),
        ('python = "3.11"', 'python = "three"', "'envs.quick.python' must be a version like 3.11"),
        ('"pyyaml"]', '"pyyaml", "foo=="]', "'envs.quick.extra' entry 'foo==' is not a valid requirement"),
        ('"pyyaml"]', '"pyyaml", "Torch>=2"]', "'envs.quick.extra' pins Torch, which has its own key — set torch ="),
    ],
)
def test_bad_pins(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = error_for(tmp_path, edit(old, new))
    assert expected in message, message


# ---------------------------------------------------------------------------------------------------------------
# EnvSpec


def test_env_requirements_and_key() -> None:
    env = EnvSpec("a", "3.11", "2.14.1", "0.29.1", "1.23.2", "1.32.0", "2.4.6", ("pyyaml", "setuptools<81"))
    assert env.requirements() == [
        "torch==2.14.1",
        "torchvision==0.29.1",
        "onnx==1.23.2",
        "onnxruntime==1.32.0",
        "numpy==2.4.6",
        "pyyaml",
        "setuptools<81",
    ]
    key = env.key()
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert dataclasses.replace(env, name="renamed").key() == key, "the name does not change the venv"
    assert dataclasses.replace(env, extra=("setuptools<81", "pyyaml")).key() == key, "order of extra does not either"
    assert dataclasses.replace(env, torch="2.14.0").key() != key
    assert dataclasses.replace(env, python="3.12").key() != key
    assert dataclasses.replace(env, extra=("pyyaml",)).key() != key


# ---------------------------------------------------------------------------------------------------------------
# Ref names


@pytest.mark.parametrize(
    ("ref", "slug"),
    [
        ("v7.0", "v7.0"),
        ("master", "master"),
        ("release/v7.0", "release~v7.0"),
        ("a" * 40, "a" * 40),
        ("v6.2-rc1+local", "v6.2-rc1+local"),
    ],
)
def test_valid_ref_names(ref: str, slug: str) -> None:
    assert validate_ref_name(ref) == slug


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "..",
        "../x",
        "a/../b",
        "-rf",
        "--upload-pack=x",
        "/abs",
        "a/",
        "a//b",
        "a b",
        "a\tb",
        "a\nb",
        "a\x00b",
        "a\x1bb",
        ".hidden",
        "x/.y",
        "x.lock",
        "x.",
        "@",
        "a~1",
        "a^",
        "a:b",
        "a*",
        "$(id)",
        "`id`",
        "a;b",
        "a\\b",
    ],
)
def test_unsafe_ref_names_are_refused(ref: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_ref_name(ref)
    message = str(info.value)
    assert repr(ref) in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------------------
# Plans


@pytest.fixture
def config(tmp_path: Path) -> Config:
    text = edit('refs = ["v6.2", "v7.0"]', 'refs = ["v6.2", "v7.0", "release/v8"]')
    return load_config(write(tmp_path, text), env={})


def test_plan_is_the_full_product_in_config_order(config: Config) -> None:
    cells = plan(config)
    assert len(cells) == 3 * 2 * 4 * 3
    assert cells[0] == Cell("v6.2", "quick", "native", "onnx")
    assert cells[1] == Cell("v6.2", "quick", "native", "onnx-dynamic")
    assert cells[-1] == Cell("release/v8", "py38-torch1.13", "4", "torchscript")
    assert cells == plan(config)
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9._~+@=,-]+", i) for i in ids)


def test_cell_id() -> None:
    assert Cell("v7.0", "py311-torch2.14", "3", "onnx-dynamic").id == "v7.0__py311-torch2.14__3__onnx-dynamic"
    assert Cell("release/v8", "e", "native", "onnx").id == "release~v8__e__native__onnx"


def test_plan_narrowing_keeps_config_order(config: Config) -> None:
    cells = plan(config, refs=["v7.0", "v6.2"], variants=["4", "native"], formats=["torchscript"], envs=["quick"])
    assert [(c.ref, c.variant) for c in cells] == [("v6.2", "native"), ("v6.2", "4"), ("v7.0", "native"), ("v7.0", "4")]
    assert {(c.env, c.format) for c in cells} == {("quick", "torchscript")}
    assert [c.env for c in plan(config, envs=["py38-torch1.13"])] == ["py38-torch1.13"] * 3 * 4 * 3


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"refs": ["-x"]}, "ref '-x' in the selection it starts with '-'"),
        ({"variants": ["2"]}, "unknown variant '2' in the selection — choose from native, 1, 3, 4"),
        (
            {"formats": ["tflite"]},
            "unknown format 'tflite' in the selection — choose from onnx, onnx-dynamic, torchscript",
        ),
        ({"envs": ["quik"]}, "choose from quick, py38-torch1.13 (did you mean 'quick'?)"),
        ({"refs": []}, "the ref selection is empty"),
    ],
)
def test_plan_narrowing_rejects_unknown_names(config: Config, kwargs: dict[str, list[str]], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan(config, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith("matrix.toml: ") and expected in str(info.value), str(info.value)


def test_plan_takes_any_ref_name_after_the_configured_ones(config: Config) -> None:
    # A branch or SHA to try without editing matrix.toml: whether it exists is the source's question, per ref.
    cells = plan(config, refs=["my-branch", "v7.0", "0123abcd"], variants=["3"], formats=["onnx"], envs=["quick"])
    assert [c.ref for c in cells] == ["v7.0", "my-branch", "0123abcd"]


def test_plan_refuses_colliding_ids(config: Config) -> None:
    # "a__b" x env "c" and "a" x env "b__c" would write to the same result file.
    spec = config.envs["quick"]
    clash = dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, refs=("a__b", "a")),
        envs={"c": dataclasses.replace(spec, name="c"), "b__c": dataclasses.replace(spec, name="b__c")},
    )
    with pytest.raises(ConfigError, match="share the id 'a__b__c__native__onnx'"):
        plan(clash)
