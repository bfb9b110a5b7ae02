"""matrix.toml -> a validated, immutable ``Config``, and the plan of cells it describes.

Why one strict loader: every later stage (sources, envs, workers, reports) trusts these values, and a typo in a
config that drives hour-long runs should fail in a second with one line naming the file, the key and the fix,
not as a KeyError deep in a worker. The schema is a table (``_SCHEMA``), so the checks and the messages read
from one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness.axes import FORMAT_NAMES, VARIANTS
from harness.errors import ConfigError

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli keeps the loader usable on older Pythons
    import tomllib
else:  # pragma: no cover - the harness's Python is 3.11, tomli is the documented fallback
    import tomli as tomllib

__all__ = [
    "ALLOWED_FORMATS",
    "ALLOWED_VARIANTS",
    "Artifacts",
    "CompileSpec",
    "Config",
    "EnvSpec",
    "Limits",
    "Model",
    "Source",
    "TargetSpec",
    "Timeouts",
    "Tolerances",
    "did_you_mean",
    "is_local_repo",
    "load_config",
    "ref_problem",
    "validate_ref_name",
]

# What matrix.toml may name: harness/axes.py's tables.
ALLOWED_VARIANTS: tuple[str, ...] = VARIANTS
ALLOWED_FORMATS: tuple[str, ...] = FORMAT_NAMES
FALLBACKS: tuple[str, ...] = ("mirror", "error")
SANDBOXES: tuple[str, ...] = ("auto", "required", "off")  # [limits] sandbox, see harness/envs/sandbox.py
SandboxMode = Literal["auto", "required", "off"]
# Environment variable that overrides [source].repo (the --repo CLI argument overrides both).
REPO_ENV_VAR = "YOLOV5_REPO"
# The largest stride of every YOLOv5 model (P5 heads: 8/16/32); export sizes must be multiples of it.
MAX_STRIDE = 32
# Bump when the meaning of an env's venv changes (layout, installer), so old cached venvs are not reused.
_ENV_KEY_VERSION = 1


@dataclass(frozen=True)
class Source:
    """Where the YOLOv5 code comes from and what to do when it is unreachable."""

    repo: str
    refs: tuple[str, ...]
    fallback: Literal["mirror", "error"]


@dataclass(frozen=True)
class Model:
    """How the checkpoint under test is built (from ``cfg`` with ``seed``) or which one is used (``weights``)."""

    cfg: str
    nc: int
    imgsz: int
    seed: int
    weights: str | None = None


@dataclass(frozen=True)
class Tolerances:
    """Parity thresholds between a backend and eager PyTorch: ``|b - e| <= atol + rtol*|e|`` and cosine."""

    atol: float = 1e-3
    rtol: float = 1e-3
    min_cosine: float = 0.9999


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed per stage of one cell; a stage that overruns costs that cell, not the run."""

    checkpoint: float = 300.0
    export: float = 600.0
    verify: float = 300.0


@dataclass(frozen=True)
class Limits:
    """Resources one env-side step may use; a step over a limit is killed and costs its cell ("out of memory")."""

    memory_mb: int | None = None  # resident memory of the step's processes; None: no limit
    # The box around env processes (harness/envs/sandbox.py): "auto" (the best this machine has), "required" (refuse to
    # run without one), "off" (none).
    sandbox: SandboxMode = "auto"


# What [artifacts] keep may say (harness/run/artifacts.py applies it).
KEEP_POLICIES: tuple[str, ...] = ("failed", "all", "none")


@dataclass(frozen=True)
class Artifacts:
    """[artifacts]: whose exported files stay once every check that reads them ran (harness/run/artifacts.py)."""

    keep: str = "failed"  # "failed", "all" or "none"
    min_free_mb: int = 1024  # a run does not start with less free where the cells write


# What the compile check knows how to drive: tpu-mlir's quantize modes that need no calibration, and the processors
# whose cmodel simulator ships in the tpu_mlir wheel and that take F32 (bm1684x measured; see harness/compile/).
COMPILE_QUANTIZE: tuple[str, ...] = ("F32", "F16", "BF16")
COMPILE_PROCESSORS: tuple[str, ...] = ("bm1684x", "bm1684", "bm1688", "bm1690")


@dataclass(frozen=True)
class CompileSpec:
    """[compile]: which exported ONNX files go through tpu-mlir, for which processor and quantize modes.

    Off by default: `nox -s tpu_mlir` runs it on request; ``enabled = true`` also runs it after `nox -s matrix`.
    """

    enabled: bool = False
    variants: tuple[str, ...] = ("3", "native")
    quantize: tuple[str, ...] = ("F32",)  # the first is the result's ``compile``, the others ``compile.more``
    processor: str = "bm1684x"
    timeout: float = 3600.0  # seconds per tool run (model_transform, model_deploy)
    min_cosine: float = 0.99  # bmodel vs ONNX Runtime, per output (tpu-mlir's own default tolerance)
    min_euclidean: float = 0.99


@dataclass(frozen=True)
class TargetSpec:
    """[targets.NAME]: a downstream toolkit of harness/targets/toolkits.py (openvino, rknn, ncnn) that compiles and
    runs the artifacts of these variants (in the format the toolkit takes). tpu-mlir's table is a CompileSpec."""

    name: str
    enabled: bool = False
    variants: tuple[str, ...] = ("3", "native", "npu")
    formats: tuple[str, ...] = ()  # the cell formats it compiles; empty: every format the toolkit takes
    options: tuple[tuple[str, Any], ...] = ()  # the toolkit's options as set (defaults filled in), in its order
    timeout: float = 900.0  # seconds for one compile-and-run
    min_cosine: float = 0.999  # per output, against the reference runtime

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.options)


# The keys every [targets.NAME] takes; a toolkit adds its own options (toolkits.py defaults).
_TARGET_FIELDS: dict[str, _Field] = {}  # filled below, once _Field exists
TPU_MLIR = "tpu-mlir"  # the [targets.NAME] of the compile check (harness/compile/), also read as [compile]


@dataclass(frozen=True)
class EnvSpec:
    """One pinned environment: a venv created once from exactly these pins and reused across runs."""

    name: str
    python: str
    torch: str
    torchvision: str
    onnx: str
    onnxruntime: str
    numpy: str
    extra: tuple[str, ...] = ()

    def requirements(self) -> list[str]:
        """Return the pip requirement lines for this env: the core pins first, then ``extra`` as written."""
        core = [f"{name}=={getattr(self, name)}" for name in _CORE_PINS]
        return [*core, *self.extra]

    def key(self) -> str:
        """Return a stable short hash of the python version and requirements, naming the env's cached venv.

        The env's name is left out on purpose: renaming an env must not rebuild its venv, and two envs with the
        same pins share one. Requirements are sorted so reordering ``extra`` does not rebuild either.
        """
        payload = {"v": _ENV_KEY_VERSION, "python": self.python, "requirements": sorted(self.requirements())}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
        return digest[:16]


@dataclass(frozen=True)
class Config:
    """The whole validated matrix.toml (with CLI/env overrides applied)."""

    path: Path
    source: Source
    model: Model
    variants: tuple[str, ...]
    formats: tuple[str, ...]
    tolerances: Tolerances
    timeouts: Timeouts
    envs: dict[str, EnvSpec]
    limits: Limits = Limits()
    artifacts: Artifacts = Artifacts()
    compile: CompileSpec = CompileSpec()
    targets: dict[str, TargetSpec] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# The schema, as data. ``example`` is the right-hand side shown in "add key = ..." fixes.

_Kind = Literal["str", "int", "number", "str_list", "bool"]


@dataclass(frozen=True)
class _Field:
    kind: _Kind
    example: str
    required: bool = True
    default: Any = None


_CORE_PINS: tuple[str, ...] = ("torch", "torchvision", "onnx", "onnxruntime", "numpy")

_SCHEMA: dict[str, dict[str, _Field]] = {
    "source": {
        "repo": _Field("str", '"https://github.com/ultralytics/yolov5.git"'),
        "refs": _Field("str_list", '["v7.0"]'),
        "fallback": _Field("str", '"mirror"'),
    },
    "model": {
        "cfg": _Field("str", '"yolov5s.yaml"'),
        "nc": _Field("int", "80"),
        "imgsz": _Field("int", "640"),
        "seed": _Field("int", "0"),
        "weights": _Field("str", '"/path/to/model.pt"', required=False),
    },
    "matrix": {
        "variants": _Field("str_list", '["native", "1", "3", "4"]'),
        "formats": _Field("str_list", '["onnx", "onnx-dynamic", "torchscript"]'),
    },
    "tolerances": {
        "atol": _Field("number", "1e-3", required=False, default=Tolerances.atol),
        "rtol": _Field("number", "1e-3", required=False, default=Tolerances.rtol),
        "min_cosine": _Field("number", "0.9999", required=False, default=Tolerances.min_cosine),
    },
    "timeouts": {
        "checkpoint": _Field("number", "300", required=False, default=Timeouts.checkpoint),
        "export": _Field("number", "600", required=False, default=Timeouts.export),
        "verify": _Field("number", "300", required=False, default=Timeouts.verify),
    },
    "limits": {
        "memory_mb": _Field("int", "16000", required=False, default=None),
        "sandbox": _Field("str", '"auto"', required=False, default=Limits.sandbox),
    },
    "artifacts": {
        "keep": _Field("str", '"failed"', required=False, default=Artifacts.keep),
        "min_free_mb": _Field("int", "1024", required=False, default=Artifacts.min_free_mb),
    },
    # The downstream compile check (harness/compile/, `nox -s tpu_mlir`); see CompileSpec.
    "compile": {
        "enabled": _Field("bool", "false", required=False, default=CompileSpec.enabled),
        "variants": _Field("str_list", '["3", "native"]', required=False, default=CompileSpec.variants),
        "quantize": _Field("str_list", '["F32"]', required=False, default=CompileSpec.quantize),
        "processor": _Field("str", '"bm1684x"', required=False, default=CompileSpec.processor),
        "timeout": _Field("number", "3600", required=False, default=CompileSpec.timeout),
        "min_cosine": _Field("number", "0.99", required=False, default=CompileSpec.min_cosine),
        "min_euclidean": _Field("number", "0.99", required=False, default=CompileSpec.min_euclidean),
    },
}
# Tables that may be left out entirely (all their keys have defaults).
_OPTIONAL_TABLES = frozenset({"tolerances", "timeouts", "limits", "artifacts", "compile"})

_TARGET_FIELDS.update({
    "enabled": _Field("bool", "true", required=False, default=TargetSpec.enabled),
    "variants": _Field("str_list", '["3", "native", "npu"]', required=False, default=TargetSpec.variants),
    "formats": _Field("str_list", '["onnx"]', required=False, default=TargetSpec.formats),
    "timeout": _Field("number", "900", required=False, default=TargetSpec.timeout),
    "min_cosine": _Field("number", "0.999", required=False, default=TargetSpec.min_cosine),
})
_OPTION_KINDS: dict[type, _Kind] = {bool: "bool", str: "str", int: "int", float: "number"}

_ENV_SCHEMA: dict[str, _Field] = {
    "python": _Field("str", '"3.11"'),
    **{pin: _Field("str", '"<version>"') for pin in _CORE_PINS},
    "extra": _Field("str_list", '["pyyaml"]', required=False, default=()),
}

# Env names become directory and cell-id parts: a conservative character set, no leading dot or dash.
_ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_PYTHON_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")

# Repo strings that are URLs rather than local paths: "scheme://..." or scp-like "[user@]host:path".
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^[^/:]+:")  # git: a ":" before any "/" means ssh, [user@]host:path

# tomllib/tomli put the position in the message: "Invalid value (at line 12, column 5)".
_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$")


# --------------------------------------------------------------------------------------------------------------
# Ref names

# Characters git allows in ref names that we also allow; anything else (shell metacharacters, quotes, '~', '^',
# ':', '?', '*', '[', '\\', whitespace, control characters, non-ASCII) is refused. See git-check-ref-format(1).
_REF_CHARS = re.compile(r"[A-Za-z0-9._+@=,/-]+")
# '/' in a ref becomes '~' in its slug: git forbids '~' in ref names, so distinct refs keep distinct slugs.
_REF_SLASH = "~"
_REF_MAX_LEN = 100


def validate_ref_name(ref: str) -> str:
    """Check that ``ref`` is a safe tag, branch or commit SHA name and return a path-safe slug of it.

    Refs end up in cache paths, cell ids and git command lines, so anything that could escape a directory
    (``..``, a leading ``/``), be read as an option (a leading ``-``) or break a line (control characters,
    whitespace) is refused; the rules are git's own (git-check-ref-format) plus a conservative character set.

    Args:
        ref: the ref as written in matrix.toml or on the command line.

    Returns:
        The slug: ``ref`` with each ``/`` replaced by ``~`` (e.g. ``release/v7`` -> ``release~v7``).

    Raises:
        ConfigError: naming the ref and what is wrong with it.
    """
    problem = ref_problem(ref)
    if problem:
        raise ConfigError(f"invalid ref {ref!r}: {problem} — use a git tag, branch or commit SHA name")
    return ref.replace("/", _REF_SLASH)


def ref_problem(ref: str) -> str | None:
    """Return why ``ref`` is unsafe or not a git ref name, or None when it is fine."""
    if not isinstance(ref, str) or not ref:
        return "it is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in ref):
        return "it contains a control character"
    if any(c.isspace() for c in ref):
        return "it contains whitespace"
    bad = sorted({c for c in ref if not _REF_CHARS.fullmatch(c)})
    if bad:
        return f"it contains {''.join(bad)!r}"
    if len(ref) > _REF_MAX_LEN:
        return f"it is longer than {_REF_MAX_LEN} characters"
    if ref.startswith("-"):
        return "it starts with '-' (would be read as an option)"
    if ref.startswith("/") or ref.endswith("/") or "//" in ref:
        return "it has an empty path component"
    if ".." in ref:
        return "it contains '..'"
    if ref == "@":
        return "'@' alone is not a ref name"
    for part in ref.split("/"):
        if part.startswith("."):
            return "a component starts with '.'"
        if part.endswith(".lock"):
            return "a component ends with '.lock'"
    if ref.endswith("."):
        return "it ends with '.'"
    return None


# --------------------------------------------------------------------------------------------------------------
# Loading


def is_local_repo(repo: str) -> bool:
    """Return True when ``repo`` is a filesystem path rather than a URL (``scheme://`` or ``user@host:path``)."""
    return not (_URL_SCHEME.match(repo) or _SCP_LIKE.match(repo))


def load_config(path: Path, *, repo: str | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Load and validate matrix.toml.

    Args:
        path: the config file. Messages name it as given, so pass it the way the user wrote it.
        repo: the ``--repo`` CLI value; beats ``$YOLOV5_REPO``, which beats ``[source].repo``.
        env: the environment to read ``YOLOV5_REPO`` from (injectable so tests need not touch os.environ).

    Returns:
        The validated config. A relative local repo path written in the file is taken relative to the file;
        one given on the command line or in the environment is left for the caller's working directory.

    Raises:
        ConfigError: one line naming the file, the key and the fix.
    """
    path = Path(path)
    label = str(path)
    doc = _read_toml(path, label)
    check = _Checker(label)
    override = _repo_override(label, repo, env)
    check.tables(doc, override_repo=override is not None)
    mtx = doc["matrix"]
    return Config(
        path=path.resolve(),
        source=check.source(doc["source"], override, path),
        model=check.model(doc["model"]),
        variants=check.choices("matrix.variants", mtx["variants"], ALLOWED_VARIANTS),
        formats=check.choices("matrix.formats", mtx["formats"], ALLOWED_FORMATS),
        tolerances=check.tolerances(doc.get("tolerances", {})),
        timeouts=check.timeouts(doc.get("timeouts", {})),
        envs={name: check.env(name, table) for name, table in doc["envs"].items()},
        limits=check.limits(doc.get("limits", {})),
        artifacts=check.artifacts(doc.get("artifacts", {})),
        compile=check.compile_spec(*check.compile_table(doc)),
        targets=check.targets(doc.get("targets", {})),
    )


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    """Parse the file, turning I/O and syntax problems into one-line ConfigErrors with line:column."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found — run from the project root or pass the config's path") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc} — check the path and permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 (byte {exc.start}) — save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg, line, col = _toml_position(exc, text)
        raise ConfigError(f"{label}:{line}:{col}: invalid TOML: {msg} — fix the syntax at that line") from None


def _toml_position(exc: Exception, text: str) -> tuple[str, int, int]:
    """Return (message, line, column) of a TOML error; tomllib has them only in the message before 3.14."""
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    raw = getattr(exc, "msg", None) or str(exc)
    match = _TOML_POSITION.match(str(exc))
    if match:
        raw = match["msg"]
        if match["line"]:
            line, col = int(match["line"]), int(match["col"])
    if line is None or col is None:  # "at end of document": point past the last character
        lines = text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    return " ".join(raw.split()), int(line), int(col)


def _repo_override(label: str, repo: str | None, env: Mapping[str, str]) -> str | None:
    """Apply the documented precedence: CLI ``repo`` > ``$YOLOV5_REPO`` > the file (None: use the file)."""
    if repo is not None:
        if not repo.strip():
            raise ConfigError(f"{label}: the --repo override is empty — pass a git URL or a local path")
        return repo.strip()
    from_env = env.get(REPO_ENV_VAR, "").strip()
    return from_env or None  # an empty variable means "not set", as shells make unsetting awkward


def _number(table: Mapping[str, Any], section: str, key: str) -> float:
    """A key of an optional table, or its documented default."""
    return float(table.get(key, _SCHEMA[section][key].default))


class _Checker:
    """Type and value checks that phrase every failure as ``<file>: <what> — <fix>``."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, what: str, fix: str) -> ConfigError:
        return ConfigError(" ".join(f"{self.label}: {what} — {fix}".split()))

    # -- structure ---------------------------------------------------------------------------------------------

    def tables(self, doc: Mapping[str, Any], *, override_repo: bool) -> None:
        """Check every table's presence, keys and value types against the schema (values are checked later)."""
        self.unknown_keys("", doc, [*_SCHEMA, "envs", "targets"])
        for section, fields in _SCHEMA.items():
            if section not in doc:
                if section in _OPTIONAL_TABLES:
                    continue
                keys = ", ".join(k for k, f in fields.items() if f.required)
                raise self.error(f"missing table '[{section}]'", f"add a [{section}] table with {keys}")
            table = doc[section]
            if not isinstance(table, dict):
                raise self.error(
                    f"'{section}' must be a table, got {_describe(table)}", f"write [{section}] and its keys"
                )
            skip = frozenset({"repo"}) if section == "source" and override_repo else frozenset()
            self.fields(section, table, fields, skip_required=skip)
        envs = doc.get("envs")
        if envs is None:
            raise self.error(
                "missing 'envs' (no environments)", 'add an [envs.<name>] table with python = "3.11" and the pins'
            )
        if not isinstance(envs, dict):
            raise self.error(f"'envs' must be a table of tables, got {_describe(envs)}", "write [envs.<name>] tables")
        if not envs:
            raise self.error("'envs' is empty", 'add an [envs.<name>] table with python = "3.11" and the pins')
        for name, table in envs.items():
            if not _ENV_NAME.fullmatch(name):
                raise self.error(
                    f"env name {name!r} may only use letters, digits, '.', '_' and '-' (not first) as it names paths",
                    f"rename it, e.g. [envs.{_env_slug(name)}]",
                )
            if not isinstance(table, dict):
                raise self.error(
                    f"'envs.{name}' must be a table, got {_describe(table)}", f"write [envs.{name}] and its keys"
                )
            self.dotted_env_name(name, table)
            self.fields(f"envs.{name}", table, _ENV_SCHEMA)

    def dotted_env_name(self, name: str, table: Mapping[str, Any]) -> None:
        """Catch ``[envs.py311-torch2.14]``: a bare '.' in a table name nests tables, so the env is "py311-torch2"
        with a sub-table "14". Easy to write (versions have dots), so it gets its own message and fix."""
        parts = [name]
        while len(table) == 1 and isinstance(next(iter(table.values())), dict):
            sub = next(iter(table))
            parts.append(sub)
            table = table[sub]
        if len(parts) > 1 and "python" in table:
            dotted = ".".join(parts)
            raise self.error(
                f"env '{dotted}' was read as env {name!r} with a sub-table (a bare '.' in a table name nests tables)",
                f'quote the name: [envs."{dotted}"]',
            )

    def unknown_keys(self, prefix: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                fix = f"did you mean '{close[0]}'?" if close else "allowed keys: " + ", ".join(allowed)
                raise self.error(f"unknown key '{prefix}{key}'", fix)

    def fields(
        self,
        section: str,
        table: Mapping[str, Any],
        fields: Mapping[str, _Field],
        skip_required: frozenset[str] = frozenset(),
    ) -> None:
        self.unknown_keys(f"{section}.", table, fields)
        for key, field in fields.items():
            if key not in table:
                if field.required and key not in skip_required:
                    raise self.error(f"missing '{section}.{key}'", f"add {key} = {field.example}")
                continue
            value = table[key]
            if not _is_kind(value, field.kind):
                raise self.error(
                    f"'{section}.{key}' must be {_KIND_NAMES[field.kind]}, got {_describe(value)}",
                    _type_fix(key, field, value),
                )

    # -- values -----------------------------------------------------------------------------------------------

    def non_empty(self, key: str, value: str) -> str:
        if not value.strip():
            raise self.error(f"'{key}' is empty", f"write {key.rsplit('.', 1)[-1]} = {_field(key).example}")
        return value

    def at_least(self, key: str, value: int, low: int) -> int:
        if value < low:
            raise self.error(
                f"'{key}' must be at least {low}, got {value}", f"write {key.rsplit('.', 1)[-1]} = {max(low, 0)}"
            )
        return value

    def in_range(
        self, key: str, value: float, *, low: float, high: float | None = None, low_open: bool = False
    ) -> float:
        too_low = value <= low if low_open else value < low
        too_high = high is not None and value > high
        if not math.isfinite(value) or too_low or too_high:
            bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            default = _field(key).default
            raise self.error(f"'{key}' must be {bound}, got {value:g}", f"write {key.rsplit('.', 1)[-1]} = {default:g}")
        return value

    def one_of(self, key: str, value: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.error(f"'{key}' is {value!r}, not one of {', '.join(allowed)}", did_you_mean(value, allowed))
        return value

    def choices(self, key: str, values: list[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
        name = key.rsplit(".", 1)[-1]
        if not values:
            raise self.error(f"'{key}' is empty", f"list at least one of {', '.join(allowed)}")
        for value in values:
            if value not in allowed:
                what = name.removesuffix("s")
                raise self.error(
                    f"unknown {what} {value!r} in '{key}' (allowed: {', '.join(allowed)})",
                    did_you_mean(value, allowed),
                )
        self.no_duplicates(key, values)
        return tuple(values)

    def no_duplicates(self, key: str, values: list[str]) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise self.error(f"'{key}' lists {value!r} twice", "remove the duplicate")
            seen.add(value)

    def refs(self, refs: list[str]) -> tuple[str, ...]:
        if not refs:
            raise self.error("'source.refs' is empty", 'list at least one tag, branch or SHA, e.g. refs = ["v7.0"]')
        for ref in refs:
            problem = ref_problem(ref)
            if problem:
                raise self.error(
                    f"invalid ref {ref!r} in 'source.refs': {problem}", "use a git tag, branch or commit SHA name"
                )
        self.no_duplicates("source.refs", refs)
        return tuple(refs)

    def source(self, src: Mapping[str, Any], override: str | None, path: Path) -> Source:
        """[source]; a relative local repo path written in the file is taken relative to the file, one given on the
        command line or in the environment is left for the caller's working directory."""
        if override is not None:
            repo = override
        else:
            repo = self.non_empty("source.repo", src["repo"])
            if is_local_repo(repo) and not Path(repo).expanduser().is_absolute():
                repo = str((path.parent / repo).resolve())
        fallback = self.one_of("source.fallback", src["fallback"], FALLBACKS)
        return Source(repo=repo, refs=self.refs(src["refs"]), fallback=cast(Literal["mirror", "error"], fallback))

    def model(self, mdl: Mapping[str, Any]) -> Model:
        imgsz = mdl["imgsz"]
        if imgsz <= 0 or imgsz % MAX_STRIDE:
            up = max(MAX_STRIDE, math.ceil(imgsz / MAX_STRIDE) * MAX_STRIDE)
            raise self.error(
                f"'model.imgsz' must be a positive multiple of {MAX_STRIDE} (the model's max stride), got {imgsz}",
                f"write imgsz = {up}",
            )
        weights = mdl.get("weights")
        return Model(cfg=self.non_empty("model.cfg", mdl["cfg"]), nc=self.at_least("model.nc", mdl["nc"], 1),
                     imgsz=imgsz, seed=self.at_least("model.seed", mdl["seed"], 0),
                     weights=None if weights is None else self.non_empty("model.weights", weights))

    def tolerances(self, tol: Mapping[str, Any]) -> Tolerances:
        return Tolerances(
            atol=self.in_range("tolerances.atol", _number(tol, "tolerances", "atol"), low=0.0),
            rtol=self.in_range("tolerances.rtol", _number(tol, "tolerances", "rtol"), low=0.0),
            min_cosine=self.in_range("tolerances.min_cosine", _number(tol, "tolerances", "min_cosine"), low=0.0,
                                     high=1.0, low_open=True),
        )

    def timeouts(self, tmo: Mapping[str, Any]) -> Timeouts:
        return Timeouts(**{k: self.in_range(f"timeouts.{k}", _number(tmo, "timeouts", k), low=0.0,
                                            low_open=True) for k in _SCHEMA["timeouts"]})

    def limits(self, table: Mapping[str, Any]) -> Limits:
        memory_mb = table.get("memory_mb")
        if memory_mb is not None:
            # Below a few hundred MB not even the interpreter with torch imported fits: every cell would die.
            self.at_least("limits.memory_mb", memory_mb, 256)
        sandbox = self.one_of("limits.sandbox", table.get("sandbox", Limits.sandbox), SANDBOXES)
        return Limits(memory_mb=memory_mb, sandbox=cast(SandboxMode, sandbox))

    def artifacts(self, table: Mapping[str, Any]) -> Artifacts:
        keep = self.one_of("artifacts.keep", table.get("keep", Artifacts.keep), KEEP_POLICIES)
        return Artifacts(keep=keep, min_free_mb=self.at_least("artifacts.min_free_mb",
                                                              table.get("min_free_mb", Artifacts.min_free_mb), 0))

    def compile_table(self, doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        """tpu-mlir's table and the name it was given: [targets.tpu-mlir], or the older [compile] (still read, with
        a deprecation line on stderr); both at once is an error."""
        targets = doc.get("targets")
        new = targets.get(TPU_MLIR) if isinstance(targets, dict) else None
        if new is not None and "compile" in doc:
            raise self.error(f"both [compile] and [targets.{TPU_MLIR}] configure tpu-mlir",
                             f"keep [targets.{TPU_MLIR}] and delete [compile]")
        if "compile" in doc:
            print(f"{self.label}: [compile] is deprecated: rename it [targets.{TPU_MLIR}] (same keys)", file=sys.stderr)
            return doc["compile"], "compile"
        if new is None:
            return {}, "compile"
        if not isinstance(new, dict):
            raise self.error(f"'targets.{TPU_MLIR}' must be a table, got {_describe(new)}",
                             f"write [targets.{TPU_MLIR}] and its keys")
        self.fields(f"targets.{TPU_MLIR}", new, _SCHEMA["compile"])
        return new, f"targets.{TPU_MLIR}"

    def compile_spec(self, table: Mapping[str, Any], where: str = "compile") -> CompileSpec:
        """Check tpu-mlir's values (types are already checked); ``where`` names the table in messages."""
        value = {key: table.get(key, field.default) for key, field in _SCHEMA["compile"].items()}
        return CompileSpec(
            enabled=value["enabled"],
            variants=self.choices(f"{where}.variants", list(value["variants"]), ALLOWED_VARIANTS),
            quantize=self.choices(f"{where}.quantize", list(value["quantize"]), COMPILE_QUANTIZE),
            processor=self.one_of(f"{where}.processor", value["processor"], COMPILE_PROCESSORS),
            timeout=self.in_range(f"{where}.timeout", float(value["timeout"]), low=0.0, low_open=True),
            min_cosine=self.in_range(f"{where}.min_cosine", float(value["min_cosine"]), low=0.0, high=1.0),
            min_euclidean=self.in_range(f"{where}.min_euclidean", float(value["min_euclidean"]), low=-1e9, high=1.0),
        )

    def targets(self, tables: Any) -> dict[str, TargetSpec]:
        """[targets.NAME] for the toolkits of harness/targets/toolkits.py (tpu-mlir's is read by compile_table)."""
        from harness.targets.toolkits import TOOLKITS

        if not isinstance(tables, dict):
            raise self.error(f"'targets' must be a table of tables, got {_describe(tables)}",
                             "write [targets.<name>] tables")
        known = (*TOOLKITS, TPU_MLIR)
        specs = {}
        for name, table in tables.items():
            if name == TPU_MLIR:
                continue
            if name not in TOOLKITS:
                raise self.error(f"unknown target '{name}' in [targets.{name}]",
                                 f"{did_you_mean(name, known)} (targets: {', '.join(known)})")
            if not isinstance(table, dict):
                raise self.error(f"'targets.{name}' must be a table, got {_describe(table)}",
                                 f"write [targets.{name}] and its keys")
            kit = TOOLKITS[name]
            options = {key: _Field(_OPTION_KINDS[type(default)], repr(default).lower() if isinstance(default, bool)
                                   else f'"{default}"' if isinstance(default, str) else str(default),
                                   required=False, default=default) for key, default in kit.defaults.items()}
            self.fields(f"targets.{name}", table, {**_TARGET_FIELDS, **options})
            chosen = {key: table.get(key, default) for key, default in kit.defaults.items()}
            for key, allowed in kit.choices.items():
                self.one_of(f"targets.{name}.{key}", chosen[key], allowed)
            specs[name] = TargetSpec(
                name=name, enabled=table.get("enabled", TargetSpec.enabled),
                variants=self.choices(f"targets.{name}.variants", list(table.get("variants", TargetSpec.variants)),
                                      ALLOWED_VARIANTS),
                formats=self.target_formats(name, table.get("formats"), kit.formats),
                options=tuple(chosen.items()),
                timeout=self.in_range(f"targets.{name}.timeout", float(table.get("timeout", TargetSpec.timeout)),
                                      low=0.0, low_open=True),
                min_cosine=self.in_range(f"targets.{name}.min_cosine",
                                         float(table.get("min_cosine", TargetSpec.min_cosine)), low=0.0, high=1.0))
        return specs

    def target_formats(self, name: str, listed: list[str] | None, takes: tuple[str, ...]) -> tuple[str, ...]:
        """[targets.NAME] formats: known formats, and only those the toolkit compiles (an ONNX toolkit asked for
        TorchScript is a config error before any work, naming what it takes)."""
        if listed is None:
            return ()
        formats = self.choices(f"targets.{name}.formats", list(listed), ALLOWED_FORMATS)
        for fmt in formats:
            if fmt not in takes:
                quoted = ", ".join(f'"{f}"' for f in takes)
                raise self.error(f"target '{name}' does not take {fmt} exports (it takes {', '.join(takes)})",
                                 f"write formats = [{quoted}] in [targets.{name}], or drop the key")
        return formats

    def env(self, name: str, table: Mapping[str, Any]) -> EnvSpec:
        """Check an env's pins (already type-checked by ``tables``) and build its spec."""
        key = f"envs.{name}"
        python = table["python"]
        if not _PYTHON_VERSION.fullmatch(python):
            raise self.error(f"'{key}.python' must be a version like 3.11, got {python!r}", 'write python = "3.11"')
        pins = {}
        for pin in _CORE_PINS:
            value = table[pin]
            try:
                Version(value)
            except InvalidVersion:
                raise self.error(
                    f"'{key}.{pin}' is not a valid version: {value!r}",
                    f'write an exact version, e.g. {pin} = "1.2.3" (it is pinned with ==)',
                ) from None
            pins[pin] = value
        extra = table.get("extra", ())
        for line in extra:
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                first = str(exc).splitlines()[0] if str(exc) else "invalid"
                raise self.error(
                    f"'{key}.extra' entry {line!r} is not a valid requirement ({first})",
                    'write it as pip would, e.g. "pyyaml>=5.3"',
                ) from None
            if canonicalize_name(req.name) in _CORE_PINS:
                raise self.error(
                    f"'{key}.extra' pins {req.name}, which has its own key",
                    f'set {canonicalize_name(req.name)} = "<version>" instead',
                )
        self.no_duplicates(f"{key}.extra", list(extra))
        return EnvSpec(name=name, python=python, extra=tuple(extra), **pins)


_KIND_NAMES: dict[str, str] = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "str_list": "a list of strings",
    "bool": "true or false",
}


def _field(dotted: str) -> _Field:
    section, key = dotted.rsplit(".", 1)
    if section == f"targets.{TPU_MLIR}":
        return _SCHEMA["compile"][key]
    if section.startswith("targets."):
        return _TARGET_FIELDS[key]
    return _SCHEMA[section][key]


def _is_kind(value: Any, kind: _Kind) -> bool:
    # bool is an int subclass in Python, but `imgsz = true` is never meant as 1.
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _describe(value: Any) -> str:
    """``str '640'``, ``int 3``, ``table {...}``: the TOML type and a short repr, for "got ..." messages."""
    names = {dict: "table", list: "array", bool: "boolean"}
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{names.get(type(value), type(value).__name__)} {text}"


def _type_fix(key: str, field: _Field, value: Any) -> str:
    """The corrected line when the intent is clear (``write imgsz = 640``), else the schema's example."""
    if field.kind == "int":
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return f"write {key} = {int(value)}"
        if isinstance(value, float) and value.is_integer():
            return f"write {key} = {int(value)}"
    elif field.kind == "number" and isinstance(value, str):
        try:
            return f"write {key} = {float(value)!r}"
        except ValueError:
            pass
    elif field.kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        # Unquoted versions are the usual cause: TOML reads 3.10 as the float 3.1, so ask to check the digits.
        return (
            f'quote it: {key} = "{value}" (check the digits: unquoted 3.10 reads as 3.1)'
            if isinstance(value, float)
            else f'write {key} = "{value}"'
        )
    elif field.kind == "str_list":
        if isinstance(value, str):
            return f"write {key} = {json.dumps([value])}"
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return f"write {key} = {json.dumps([str(v) for v in value])}"
    return f"write {key} = {field.example}"


def did_you_mean(value: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(allowed)}"


def _env_slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")
    return slug or "py311"
