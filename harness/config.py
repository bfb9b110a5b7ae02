"""matrix.toml -> a validated, immutable ``Config``, and the plan of cells it describes.

Why one strict loader: every later stage (sources, envs, workers, reports) trusts these values, and a typo in a
config that drives hour-long runs should fail in a second with one line naming the file, the key and the fix,
not as a KeyError deep in a worker. The schema is the config's own dataclasses: each key is a field made with
``_key`` (its type, its default, the example its fixes show), read by cattrs; a new key is added there and nowhere
else.
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
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import cattrs
from cattrs.errors import AttributeValidationNote
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
    "Axes",
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
T = TypeVar("T")


def _key(example: str, default: Any = dataclasses.MISSING) -> Any:
    """A matrix.toml key: its default (none: the key is required) and the right-hand side that "add key = ..." and
    "write key = ..." fixes show. Only fields made with it are read from the file."""
    return dataclasses.field(default=default, metadata={"example": example})


@dataclass(frozen=True)
class Source:
    """Where the YOLOv5 code comes from and what to do when it is unreachable."""

    repo: str = _key('"https://github.com/ultralytics/yolov5.git"')
    refs: tuple[str, ...] = _key('["v7.0"]')
    fallback: Literal["mirror", "error"] = _key('"mirror"')


@dataclass(frozen=True)
class Model:
    """How the checkpoint under test is built (from ``cfg`` with ``seed``) or which one is used (``weights``)."""

    cfg: str = _key('"yolov5s.yaml"')
    nc: int = _key("80")
    imgsz: int = _key("640")
    seed: int = _key("0")
    weights: str | None = _key('"/path/to/model.pt"', None)


@dataclass(frozen=True)
class Axes:
    """[matrix]: the variants and formats every (ref, env) pair is exported in."""

    variants: tuple[str, ...] = _key('["native", "1", "3", "4"]')
    formats: tuple[str, ...] = _key('["onnx", "onnx-dynamic", "torchscript"]')


@dataclass(frozen=True)
class Tolerances:
    """Parity thresholds between a backend and eager PyTorch: ``|b - e| <= atol + rtol*|e|`` and cosine."""

    atol: float = _key("1e-3", 1e-3)
    rtol: float = _key("1e-3", 1e-3)
    min_cosine: float = _key("0.9999", 0.9999)


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed per stage of one cell; a stage that overruns costs that cell, not the run."""

    checkpoint: float = _key("300", 300.0)
    export: float = _key("600", 600.0)
    verify: float = _key("300", 300.0)


@dataclass(frozen=True)
class Limits:
    """Resources one env-side step may use; a step over a limit is killed and costs its cell ("out of memory")."""

    memory_mb: int | None = _key("16000", None)  # resident memory of the step's processes; None: no limit
    # The box around env processes (harness/envs/sandbox.py): "auto" (the best this machine has), "required" (refuse to
    # run without one), "off" (none).
    sandbox: SandboxMode = _key('"auto"', "auto")


# What [artifacts] keep may say (harness/run/artifacts.py applies it).
KEEP_POLICIES: tuple[str, ...] = ("failed", "all", "none")


@dataclass(frozen=True)
class Artifacts:
    """[artifacts]: whose exported files stay once every check that reads them ran (harness/run/artifacts.py)."""

    keep: str = _key('"failed"', "failed")  # "failed", "all" or "none"
    min_free_mb: int = _key("1024", 1024)  # a run does not start with less free where the cells write


# What the compile check knows how to drive: tpu-mlir's quantize modes that need no calibration, and the processors
# whose cmodel simulator ships in the tpu_mlir wheel and that take F32 (bm1684x measured; see harness/compile/).
COMPILE_QUANTIZE: tuple[str, ...] = ("F32", "F16", "BF16")
COMPILE_PROCESSORS: tuple[str, ...] = ("bm1684x", "bm1684", "bm1688", "bm1690")
# What model_transform takes from a cell: the static ONNX file and the TorchScript module (Sophgo's guide, 2.2 and 2.3).
COMPILE_FORMATS: tuple[str, ...] = ("onnx", "torchscript")


@dataclass(frozen=True)
class CompileSpec:
    """[compile]: which exported ONNX and TorchScript files go through tpu-mlir, for which processor and modes.

    Off by default: `nox -s tpu_mlir` runs it on request; ``enabled = true`` also runs it after `nox -s matrix`.
    """

    enabled: bool = _key("false", False)
    variants: tuple[str, ...] = _key('["3", "native"]', ("3", "native"))
    formats: tuple[str, ...] = _key('["onnx", "torchscript"]', COMPILE_FORMATS)
    # The first is the result's ``compile``, the others ``compile.more``.
    quantize: tuple[str, ...] = _key('["F32"]', ("F32",))
    processor: str = _key('"bm1684x"', "bm1684x")
    timeout: float = _key("3600", 3600.0)  # seconds per tool run (model_transform, model_deploy)
    # bmodel vs ONNX Runtime, per output (tpu-mlir's own default tolerance)
    min_cosine: float = _key("0.99", 0.99)
    min_euclidean: float = _key("0.99", 0.99)


@dataclass(frozen=True)
class TargetSpec:
    """[targets.NAME]: a downstream toolkit of harness/targets/toolkits.py (openvino, rknn, ncnn) that compiles and
    runs the artifacts of these variants (in the format the toolkit takes). tpu-mlir's table is a CompileSpec.
    Its ``name`` is the table's; ``options`` are the toolkit's own keys, checked against toolkits.py's defaults."""

    name: str
    enabled: bool = _key("true", False)
    variants: tuple[str, ...] = _key('["3", "native", "npu"]', ("3", "native", "npu"))
    formats: tuple[str, ...] = _key('["onnx"]', ())  # the cell formats it compiles; empty: every format it takes
    options: tuple[tuple[str, Any], ...] = ()  # the toolkit's options as set (defaults filled in), in its order
    timeout: float = _key("900", 900.0)  # seconds for one compile-and-run
    min_cosine: float = _key("0.999", 0.999)  # per output, against the reference runtime

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.options)


TPU_MLIR = "tpu-mlir"  # the [targets.NAME] of the compile check (harness/compile/), also read as [compile]


@dataclass(frozen=True)
class EnvSpec:
    """One pinned environment: a venv created once from exactly these pins and reused across runs."""

    name: str
    python: str = _key('"3.11"')
    torch: str = _key('"<version>"')
    torchvision: str = _key('"<version>"')
    onnx: str = _key('"<version>"')
    onnxruntime: str = _key('"<version>"')
    numpy: str = _key('"<version>"')
    extra: tuple[str, ...] = _key('["pyyaml"]', ())

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


_CORE_PINS: tuple[str, ...] = ("torch", "torchvision", "onnx", "onnxruntime", "numpy")


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
# The schema is the dataclasses above: a field made with ``_key`` is a key of its table, its type is what the file
# must hold and its default makes it optional. cattrs reads each table into its class (types, missing keys, lists
# to tuples); unknown keys, value ranges and the one-line messages are checked here.

# The top-level tables and their classes; [envs.NAME] and [targets.NAME] are tables of tables, checked on their own.
_TABLES: dict[str, type] = {"source": Source, "model": Model, "matrix": Axes, "tolerances": Tolerances,
                            "timeouts": Timeouts, "limits": Limits, "artifacts": Artifacts, "compile": CompileSpec}

# How a type reads in "must be ..." messages.
_TYPE_NAMES: dict[Any, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                               tuple: "a list of strings"}


def _table_keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The keys a table of ``cls`` may hold, in the class's order."""
    return {f.name: f for f in dataclasses.fields(cls) if "example" in f.metadata}


def _required(cls: type) -> list[str]:
    return [name for name, f in _table_keys(cls).items() if f.default is dataclasses.MISSING]


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int, ``Literal["a"]`` -> str, ``tuple[str, ...]`` -> tuple: the TOML type a key takes."""
    if get_origin(annotation) is Literal:
        return str
    if get_origin(annotation) in (Union, types.UnionType):
        return next(a for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) or annotation


def _strict_converter() -> cattrs.Converter:
    """TOML values as they are: no "640" read as 640, no true as 1, no string read as a list of its characters.
    A Literal is read as any string: its value is checked with a "did you mean" hint afterwards."""
    converter = cattrs.Converter()

    def exact(kind: type) -> Callable[[Any, Any], Any]:
        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise TypeError(kind.__name__)
            return value
        return hook

    def number(value: Any, _: Any) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError("float")
        return float(value)

    def strings(value: Any, _: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("list of strings")
        return tuple(value)

    for kind in (str, int, bool):
        converter.register_structure_hook(kind, exact(kind))
    converter.register_structure_hook(float, number)
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], strings)
    converter.register_structure_hook_func(lambda t: get_origin(t) is cast(Any, Literal), exact(str))
    return converter


_STRICT = _strict_converter()

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
    check.tables(doc)
    axes = check.axes(doc["matrix"])
    return Config(
        path=path.resolve(),
        source=check.source(doc["source"], override, path),
        model=check.model(doc["model"]),
        variants=axes.variants,
        formats=axes.formats,
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


class _Checker:
    """Type and value checks that phrase every failure as ``<file>: <what> — <fix>``."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, what: str, fix: str) -> ConfigError:
        return ConfigError(" ".join(f"{self.label}: {what} — {fix}".split()))

    # -- structure ---------------------------------------------------------------------------------------------

    def tables(self, doc: Mapping[str, Any]) -> None:
        """Check that the tables are there and are tables (their keys are read by ``structure``)."""
        self.unknown_keys("", doc, [*_TABLES, "envs", "targets"])
        for section, cls in _TABLES.items():
            if section not in doc:
                if not _required(cls):
                    continue
                raise self.error(f"missing table '[{section}]'",
                                 f"add a [{section}] table with {', '.join(_required(cls))}")
            if not isinstance(doc[section], dict):
                raise self.error(
                    f"'{section}' must be a table, got {_describe(doc[section])}", f"write [{section}] and its keys"
                )
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

    def structure(self, cls: type[T], table: Mapping[str, Any], where: str, *, also: Iterable[str] = (),
                  **given: Any) -> T:
        """Read one table into ``cls`` with cattrs: an unknown key, a missing key or a value of the wrong type is one
        line naming it and the fix. ``also``: keys read elsewhere (a toolkit's options); ``given``: fields the file
        does not spell (an env's name)."""
        keys = _table_keys(cls)
        self.unknown_keys(f"{where}.", table, [*keys, *also])
        try:
            return _STRICT.structure({**{k: v for k, v in table.items() if k in keys}, **given}, cls)
        except cattrs.ClassValidationError as exc:
            first = exc.exceptions[0]
            name = next(n.name for n in getattr(first, "__notes__", ()) if isinstance(n, AttributeValidationNote))
            example = keys[name].metadata["example"]
            if isinstance(first, KeyError):
                raise self.error(f"missing '{where}.{name}'", f"add {name} = {example}") from None
            kind, value = _base_type(get_type_hints(cls)[name]), table[name]
            raise self.error(f"'{where}.{name}' must be {_TYPE_NAMES[kind]}, got {_describe(value)}",
                             _type_fix(name, kind, example, value)) from None

    # -- values -----------------------------------------------------------------------------------------------

    def non_empty(self, key: str, value: str) -> str:
        if not value.strip():
            raise self.error(f"'{key}' is empty", f"write {key.rsplit('.', 1)[-1]} = {_field(key).metadata['example']}")
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

    def choices(self, key: str, values: Iterable[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
        values = list(values)
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

    def no_duplicates(self, key: str, values: Iterable[str]) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise self.error(f"'{key}' lists {value!r} twice", "remove the duplicate")
            seen.add(value)

    def refs(self, refs: tuple[str, ...]) -> tuple[str, ...]:
        if not refs:
            raise self.error("'source.refs' is empty", 'list at least one tag, branch or SHA, e.g. refs = ["v7.0"]')
        for ref in refs:
            problem = ref_problem(ref)
            if problem:
                raise self.error(
                    f"invalid ref {ref!r} in 'source.refs': {problem}", "use a git tag, branch or commit SHA name"
                )
        self.no_duplicates("source.refs", refs)
        return refs

    def source(self, table: Mapping[str, Any], override: str | None, path: Path) -> Source:
        """[source]; a relative local repo path written in the file is taken relative to the file, one given on the
        command line or in the environment is left for the caller's working directory."""
        src = self.structure(Source, {**table, "repo": override} if override is not None else table, "source")
        repo = src.repo
        if override is None:
            repo = self.non_empty("source.repo", repo)
            if is_local_repo(repo) and not Path(repo).expanduser().is_absolute():
                repo = str((path.parent / repo).resolve())
        fallback = self.one_of("source.fallback", src.fallback, FALLBACKS)
        return Source(repo=repo, refs=self.refs(src.refs), fallback=cast(Literal["mirror", "error"], fallback))

    def model(self, table: Mapping[str, Any]) -> Model:
        mdl = self.structure(Model, table, "model")
        if mdl.imgsz <= 0 or mdl.imgsz % MAX_STRIDE:
            up = max(MAX_STRIDE, math.ceil(mdl.imgsz / MAX_STRIDE) * MAX_STRIDE)
            raise self.error(
                f"'model.imgsz' must be a positive multiple of {MAX_STRIDE} (the model's max stride), got {mdl.imgsz}",
                f"write imgsz = {up}",
            )
        self.non_empty("model.cfg", mdl.cfg)
        self.at_least("model.nc", mdl.nc, 1)
        self.at_least("model.seed", mdl.seed, 0)
        if mdl.weights is not None:
            self.non_empty("model.weights", mdl.weights)
        return mdl

    def axes(self, table: Mapping[str, Any]) -> Axes:
        axes = self.structure(Axes, table, "matrix")
        return Axes(variants=self.choices("matrix.variants", axes.variants, ALLOWED_VARIANTS),
                    formats=self.choices("matrix.formats", axes.formats, ALLOWED_FORMATS))

    def tolerances(self, table: Mapping[str, Any]) -> Tolerances:
        tol = self.structure(Tolerances, table, "tolerances")
        self.in_range("tolerances.atol", tol.atol, low=0.0)
        self.in_range("tolerances.rtol", tol.rtol, low=0.0)
        self.in_range("tolerances.min_cosine", tol.min_cosine, low=0.0, high=1.0, low_open=True)
        return tol

    def timeouts(self, table: Mapping[str, Any]) -> Timeouts:
        tmo = self.structure(Timeouts, table, "timeouts")
        for key in _table_keys(Timeouts):
            self.in_range(f"timeouts.{key}", getattr(tmo, key), low=0.0, low_open=True)
        return tmo

    def limits(self, table: Mapping[str, Any]) -> Limits:
        limits = self.structure(Limits, table, "limits")
        if limits.memory_mb is not None:
            # Below a few hundred MB not even the interpreter with torch imported fits: every cell would die.
            self.at_least("limits.memory_mb", limits.memory_mb, 256)
        self.one_of("limits.sandbox", limits.sandbox, SANDBOXES)
        return limits

    def artifacts(self, table: Mapping[str, Any]) -> Artifacts:
        artifacts = self.structure(Artifacts, table, "artifacts")
        self.one_of("artifacts.keep", artifacts.keep, KEEP_POLICIES)
        self.at_least("artifacts.min_free_mb", artifacts.min_free_mb, 0)
        return artifacts

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
        return new, f"targets.{TPU_MLIR}"

    def compile_spec(self, table: Mapping[str, Any], where: str = "compile") -> CompileSpec:
        """tpu-mlir's table; ``where`` names it in messages."""
        spec = self.structure(CompileSpec, table, where)
        self.choices(f"{where}.variants", spec.variants, ALLOWED_VARIANTS)
        if "formats" in table:
            self.target_formats(TPU_MLIR, spec.formats, COMPILE_FORMATS, where)
        self.choices(f"{where}.quantize", spec.quantize, COMPILE_QUANTIZE)
        self.one_of(f"{where}.processor", spec.processor, COMPILE_PROCESSORS)
        self.in_range(f"{where}.timeout", spec.timeout, low=0.0, low_open=True)
        self.in_range(f"{where}.min_cosine", spec.min_cosine, low=0.0, high=1.0)
        self.in_range(f"{where}.min_euclidean", spec.min_euclidean, low=-1e9, high=1.0)
        return spec

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
            where = f"targets.{name}"
            if name not in TOOLKITS:
                raise self.error(f"unknown target '{name}' in [{where}]",
                                 f"{did_you_mean(name, known)} (targets: {', '.join(known)})")
            if not isinstance(table, dict):
                raise self.error(f"'{where}' must be a table, got {_describe(table)}", f"write [{where}] and its keys")
            kit = TOOLKITS[name]
            spec = self.structure(TargetSpec, table, where, also=kit.defaults, name=name)
            options: Any = self.structure(_options_class(kit.defaults), {k: v for k, v in table.items()
                                                                    if k in kit.defaults}, where)
            for key, allowed in kit.choices.items():
                self.one_of(f"{where}.{key}", getattr(options, key), allowed)
            self.choices(f"{where}.variants", spec.variants, ALLOWED_VARIANTS)
            if "formats" in table:
                self.target_formats(name, spec.formats, kit.formats)
            self.in_range(f"{where}.timeout", spec.timeout, low=0.0, low_open=True)
            self.in_range(f"{where}.min_cosine", spec.min_cosine, low=0.0, high=1.0)
            specs[name] = dataclasses.replace(spec, options=tuple(dataclasses.asdict(options).items()))
        return specs

    def target_formats(
        self, name: str, listed: tuple[str, ...], takes: tuple[str, ...], where: str = ""
    ) -> tuple[str, ...]:
        """[targets.NAME] formats: known formats, and only those the toolkit compiles (an ONNX toolkit asked for
        TorchScript is a config error before any work, naming what it takes)."""
        where = where or f"targets.{name}"
        formats = self.choices(f"{where}.formats", listed, ALLOWED_FORMATS)
        for fmt in formats:
            if fmt not in takes:
                quoted = ", ".join(f'"{f}"' for f in takes)
                raise self.error(f"target '{name}' does not take {fmt} exports (it takes {', '.join(takes)})",
                                 f"write formats = [{quoted}] in [{where}], or drop the key")
        return formats

    def env(self, name: str, table: Mapping[str, Any]) -> EnvSpec:
        """Read an env's table and check its pins."""
        key = f"envs.{name}"
        spec = self.structure(EnvSpec, table, key, name=name)
        if not _PYTHON_VERSION.fullmatch(spec.python):
            raise self.error(f"'{key}.python' must be a version like 3.11, got {spec.python!r}",
                             'write python = "3.11"')
        for pin in _CORE_PINS:
            value = getattr(spec, pin)
            try:
                Version(value)
            except InvalidVersion:
                raise self.error(
                    f"'{key}.{pin}' is not a valid version: {value!r}",
                    f'write an exact version, e.g. {pin} = "1.2.3" (it is pinned with ==)',
                ) from None
        for line in spec.extra:
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
        self.no_duplicates(f"{key}.extra", spec.extra)
        return spec


def _options_class(defaults: Mapping[str, Any]) -> type:
    """A toolkit's options as a table class (types and examples from its defaults), read like any other table."""
    def example(default: Any) -> str:
        return repr(default).lower() if isinstance(default, bool) else json.dumps(default)
    return dataclasses.make_dataclass("Options", [(key, type(default), _key(example(default), default))
                                                  for key, default in defaults.items()], frozen=True)


def _field(dotted: str) -> dataclasses.Field[Any]:
    """The dataclass field behind a dotted key ("tolerances.atol", "targets.rknn.timeout", "envs.x.torch")."""
    section, key = dotted.rsplit(".", 1)
    cls = (CompileSpec if section == f"targets.{TPU_MLIR}" else TargetSpec if section.startswith("targets.")
           else EnvSpec if section.startswith("envs.") else _TABLES[section])
    return _table_keys(cls)[key]


def _describe(value: Any) -> str:
    """``str '640'``, ``int 3``, ``table {...}``: the TOML type and a short repr, for "got ..." messages."""
    names = {dict: "table", list: "array", bool: "boolean"}
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{names.get(type(value), type(value).__name__)} {text}"


def _type_fix(key: str, kind: type, example: str, value: Any) -> str:
    """The corrected line when the intent is clear (``write imgsz = 640``), else the key's example."""
    if kind is int:
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return f"write {key} = {int(value)}"
        if isinstance(value, float) and value.is_integer():
            return f"write {key} = {int(value)}"
    elif kind is float and isinstance(value, str):
        try:
            return f"write {key} = {float(value)!r}"
        except ValueError:
            pass
    elif kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # Unquoted versions are the usual cause: TOML reads 3.10 as the float 3.1, so ask to check the digits.
        return (
            f'quote it: {key} = "{value}" (check the digits: unquoted 3.10 reads as 3.1)'
            if isinstance(value, float)
            else f'write {key} = "{value}"'
        )
    elif kind is tuple:
        if isinstance(value, str):
            return f"write {key} = {json.dumps([value])}"
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return f"write {key} = {json.dumps([str(v) for v in value])}"
    return f"write {key} = {example}"


def did_you_mean(value: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(allowed)}"


def _env_slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")
    return slug or "py311"
