"""Supervisor of the compile check: pick the ONNX and TorchScript files of chosen variants from the matrix results,
run tpu-mlir's model_transform and model_deploy on each (in the tpu-mlir env, through harness/envs/proc.py), compare
the bmodel's outputs from the cmodel simulator with the file's own runtime (ONNX Runtime, or torch.jit for
TorchScript), and join a ``compile`` section into each cell's result.

A compile is tried as the user would run it first ("out of the box"); when it fails for a known cause with a safe
workaround (causes.py), it is rerun with it, and both are recorded, as the matrix does for exports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import prog
from harness.axes import FORMATS
from harness.compile import causes, env
from harness.config import COMPILE_FORMATS, CompileSpec
from harness.envs import proc, sandbox
from harness.files import write_json
from harness.results import model as results
from harness.results.model import Attempt, CellResult, CompileAttempt, CompileSection

Log = Callable[[str], None]
MODEL = "m"  # tpu-mlir's --model_name: short, so its many derived file names stay readable
# YOLOv5's input: RGB in [0, 1] (x / 255), letterboxed with grey 114 like its detect.py (tpu-mlir pads 0 by default).
MEAN = (0.0, 0.0, 0.0)
SCALE = round(1 / 255, 7)  # 0.0039216, as Sophgo's YOLOv5 guide writes it
PAD_VALUE = 114
# What stays in a compile's workdir after it finished: logs, answers, the bmodel, the input fed to it and its
# outputs. The rest (tpu-mlir's per-layer reference npz files, weight npz, optimised ONNX copies: ~0.5 GB for
# yolov5s) is deleted.
KEEP = ("*.log", "*.json", "*.bmodel", "*_model_outputs.npz", "*_in_f32.npz")
# Versions of what a compile result depends on beyond its inputs; bump to invalidate stored compile sections.
_KEY_VERSION = 1


@dataclass
class Target:
    """One matrix result whose passing attempt wrote a file tpu-mlir takes: a static ONNX or a TorchScript module."""

    path: Path
    result: CellResult
    artifact: Path
    image: str | None
    attempt: str

    @property
    def torchscript(self) -> bool:
        return self.result.format == "torchscript"


def passing_attempt(result: CellResult) -> Attempt | None:
    """The attempt (out of the box, or the workaround rerun) that passed, or None."""
    last = result.deciding
    return last if last.status == "pass" else None


def find_targets(reports: Path, variants: tuple[str, ...], formats: tuple[str, ...] = COMPILE_FORMATS, *,
                 envs: list[str] | None = None, refs: list[str] | None = None,
                 ) -> tuple[list[Target], list[tuple[Path, CellResult, str]]]:
    """Results of ``variants`` in ``formats`` (static ONNX, TorchScript) under ``reports``: compilable ones, and the
    others with why not."""
    ready: list[Target] = []
    skipped: list[tuple[Path, CellResult, str]] = []
    for path in sorted(results.results_dir(reports).glob("*.json")):
        result = results.read_result(path)
        if result is None or result.format not in formats or result.variant not in variants:
            continue
        if (envs and result.env not in envs) or (refs and result.ref not in refs):
            continue
        kind = FORMATS[result.format]
        nothing = f"no {kind.log_label} to compile"
        attempt = passing_attempt(result)
        if attempt is None:
            skipped.append((path, result, f"{nothing}: the export did not pass ({result.verdict})"))
            continue
        export = attempt.export
        names = [f["name"] for f in export.files if f["name"].endswith(kind.suffixes)] if export else []
        # The attempt's folder is where its export log is (artifacts_dir/<attempt label>).
        folder = Path(export.log).parent if export and export.log else Path(result.artifacts_dir or ".")
        if not names or not (folder / names[0]).is_file():
            missing = folder / (names[0] if names else f"*{kind.suffixes[0]}")
            rerun = prog.command(f"run --env {result.env} --force")
            skipped.append((path, result, f"{nothing}: {missing} is gone — rerun `{rerun}` for it"))
            continue
        label = "out-of-the-box" if attempt is result.first else "workaround"
        ready.append(Target(path, result, folder / names[0], attempt.image, label))
    return ready, skipped


def inputs_key(target: Target, spec: CompileSpec, quantize: str) -> str:
    parts = [_KEY_VERSION, target.result.inputs_key, target.artifact.stat().st_size, env.REQUIREMENTS,
             spec.processor, quantize, spec.min_cosine, spec.min_euclidean]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


# -- parsing tpu-mlir's own comparisons ---------------------------------------------------------------------------

_COMPARE = re.compile(r"\[Running\]: npz_tool\.py compare (\S+) (\S+)(?: --tolerance (\S+))?")


def tpu_mlir_checks(log_text: str) -> list[dict[str, Any]]:
    """Each `npz_tool.py compare` a tool ran, with its counts, min similarity (cosine, euclidean, sqnr) and verdict."""
    checks = []
    starts = list(_COMPARE.finditer(log_text))
    for i, match in enumerate(starts):
        chunk = log_text[match.end(): starts[i + 1].start() if i + 1 < len(starts) else len(log_text)]
        entry: dict[str, Any] = {"target": match.group(1), "reference": match.group(2), "tolerance": match.group(3)}
        for key in ("compared", "passed", "failed"):
            found = re.search(rf"^(\d+) {key}$", chunk, re.MULTILINE)
            entry[key] = int(found.group(1)) if found else None
        sim = re.search(r"min_similarity = \(([^,]+), ([^,]+), ([^)]+)\)", chunk)
        if sim:
            # "inf" (identical tensors) stays a string: JSON has no infinity.
            entry["min_cosine"], entry["min_euclidean"], entry["min_sqnr"] = (
                float(v) if math.isfinite(float(v)) else v.strip() for v in sim.groups())
        verdict = re.search(r"npz compare (PASSED|FAILED)", chunk)
        entry["verdict"] = verdict.group(1) if verdict else None
        checks.append(entry)
    return checks


# -- one compile ---------------------------------------------------------------------------------------------------

class Compiler:
    """Compiles targets with one tpu-mlir env and one [compile] spec."""

    def __init__(self, spec: CompileSpec, cache: Path, log: Log = print, box: sandbox.Box | None = None):
        self.spec, self.cache, self.log = spec, cache, log
        self.box = box or sandbox.Box()
        self.env = env.ensure_env(cache, log=log)
        self.tool_env = env.tool_env(self.env)
        self.bin = Path(self.env["bin"])
        self.reads: list[Path] = []  # what the target being compiled lets tpu-mlir read (see attempt)

    def jail(self, workdir: Path) -> sandbox.Jail | None:
        """tpu-mlir's steps run in the same box as the matrix's: no network; they read the target's ONNX folder and
        photo, and write the compile's folder and the package's lib/ (model_deploy links the chosen processor's
        libraries there)."""
        return sandbox.step_jail(self.box, Path(self.env["python"]), workdir=workdir, read=self.reads,
                                 write=[env.package_dir(Path(self.env["venv"])) / "lib"])

    def envside(self, job: dict[str, Any], workdir: Path, timeout: float = 600) -> tuple[dict[str, Any], str]:
        """Run a task of envside.py in the env's Python; its answer, or an error answer with the log tail."""
        answer, ran = proc.run_worker(Path(self.env["python"]), job, workdir=workdir, watch=proc.Watch(timeout),
                                      base_env=self.tool_env, module="harness.compile.envside",
                                      jail=self.jail(workdir))
        if answer is None:
            return ({"ok": False, "error": f"{job['task']} did not answer ({ran.failure() or 'no answer file'})"},
                    log_tail(ran.text()))
        return answer, log_tail(ran.text())

    def transform_argv(self, info: dict[str, Any], imgsz: int, model_file: str) -> list[str]:
        shape = [d if isinstance(d, int) and d > 0 else None for d in info["inputs"][0]["shape"]]
        shape = [1 if d is None and i == 0 else (imgsz if d is None else d) for i, d in enumerate(shape)]
        # A TorchScript module names no outputs: tpu-mlir takes the graph's own.
        names = ["--output_names", ",".join(o["name"] for o in info["outputs"])] if info["outputs"] else []
        return [str(self.bin / "model_transform"), "--model_name", MODEL, "--model_def", model_file,
                "--input_shapes", json.dumps([shape]).replace(" ", ""),
                "--mean", ",".join(str(m) for m in MEAN), "--scale", ",".join([str(SCALE)] * 3),
                "--keep_aspect_ratio", "--pad_value", str(PAD_VALUE), "--pixel_format", "rgb", *names,
                "--test_input", info["image"], "--test_result", f"{MODEL}_top_outputs.npz",
                "--mlir", f"{MODEL}.mlir",
                "--debug"]  # without it model_transform deletes the reference npz model_deploy compares against

    def deploy_argv(self, quantize: str) -> list[str]:
        return [str(self.bin / "model_deploy"), "--mlir", f"{MODEL}.mlir", "--quantize", quantize,
                "--processor", self.spec.processor, "--test_input", f"{MODEL}_in_f32.npz",
                "--test_reference", f"{MODEL}_top_outputs.npz", "--model", self.bmodel_name(quantize),
                "--debug"]  # without it model_deploy deletes the bmodel's outputs npz that `compare` reads

    def bmodel_name(self, quantize: str) -> str:
        return f"{MODEL}_{self.spec.processor}_{quantize.lower()}.bmodel"

    def attempt(self, target: Target, quantize: str, workdir: Path, fix: causes.Workaround | None) -> CompileSection:
        """transform -> deploy (bmodel run in cmodel) -> compare with ONNX Runtime, in ``workdir``."""
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        self.reads = [target.artifact.parent, *([Path(target.image)] if target.image else [])]
        out = self.section(quantize, status="error", stage="transform", artifacts_dir=str(workdir))
        model_file = model_file_name(target, fix)
        imgsz = int(target.result.model.get("imgsz") or 640)
        info, tail = self.envside({"task": "inspect", "format": target.result.format, "src": str(target.artifact),
                                   "dest": str(workdir / model_file), "image": target.image, "imgsz": imgsz,
                                   "ir_version": fix.ir_version if fix else None}, workdir)
        if not info.get("ok"):
            out.cause, out.log_tail = f"{FORMATS[target.result.format].log_label} unreadable", tail
            out.message = f"cannot read {target.artifact}: {info.get('error')}"
            return out
        if not target.torchscript:
            out.onnx = {k: info[k] for k in ("ir_version", "opset", "producer", "external_data", "inputs", "outputs")}
            out.onnx["file"] = str(target.artifact)
            if info.get("rewritten"):
                out.onnx["rewritten"] = info["rewritten"]
        out.output_names = [o["name"] for o in info["outputs"]]
        out.input = {"name": info["inputs"][0]["name"], "image": info["image"], "mean": list(MEAN),
                     "scale": [SCALE] * 3, "keep_aspect_ratio": True, "pad_value": PAD_VALUE, "pixel_format": "rgb"}
        steps = (("transform", self.transform_argv(info, imgsz, model_file)), ("deploy", self.deploy_argv(quantize)))
        for stage, argv in steps:
            if not self.tool_step(out, stage, argv, workdir, info):
                return out
        out.stage = "compare"
        self.compare(out, workdir, quantize, model_file)
        return out

    def section(self, quantize: str, **fields: Any) -> CompileSection:
        return CompileSection(tool=env.TOOL, tool_version=env.TOOL_VERSION, processor=self.spec.processor,
                              quantize=quantize, **fields)

    def tool_step(self, out: CompileSection, stage: str, argv: list[str], workdir: Path,
                  info: dict[str, Any]) -> bool:
        """Run one tpu-mlir tool; False (``out`` says why) when it failed."""
        out.stage = stage  # type: ignore[assignment]
        out.argv[stage] = argv
        if stage == "transform" and out.input is not None:
            out.input["shape"] = json.loads(argv[argv.index("--input_shapes") + 1])[0]
        ran = proc.run_process(argv, cwd=workdir, env=self.tool_env, log=workdir / f"{stage}.log",
                               watch=proc.Watch(self.spec.timeout), jail=self.jail(workdir))
        out.timings[stage] = round(ran.seconds, 1)
        text = ran.text()
        out.tpu_mlir_checks[stage] = tpu_mlir_checks(text)
        # tpu-mlir carries on after some failures with only a warning (e.g. "onnxsim opt failed" on opset 18).
        out.warnings.extend(dict.fromkeys(m.group(1).strip() for m in re.finditer(r"WARNING\s*:\s*([^\n\r]+)", text)))
        failure = ran.failure()
        if not failure:
            return True
        cause = causes.classify(stage, text, info)
        failed_check = any(c["verdict"] == "FAILED" for c in out.tpu_mlir_checks[stage])
        out.status = "fail" if failed_check else "error"
        out.cause = cause.name if cause else ("timeout" if ran.timed_out else "unclassified")
        out.message = f"{stage}: {failure}" + (f": {cause.hint}" if cause else f": {_last_error(text)}")
        out.log_tail = log_tail(text)
        return False

    def compare(self, out: CompileSection, workdir: Path, quantize: str, model_file: str) -> None:
        """The bmodel's outputs (from the simulator) against the compiled file's own runtime on the same input."""
        start = time.monotonic()
        outputs = sorted(workdir.glob("*_model_outputs.npz"))
        if not outputs:
            out.cause = "no bmodel outputs"
            out.message = "deploy: no *_model_outputs.npz written (the bmodel did not run in the simulator)"
            return
        answer, tail = self.envside({"task": "compare", "model": str(workdir / model_file),
                                     "input_npz": str(workdir / f"{MODEL}_in_f32.npz"),
                                     "bmodel_npz": str(outputs[0])}, workdir)
        out.timings["compare"] = round(time.monotonic() - start, 1)
        if not answer.get("ok"):
            out.cause, out.message, out.log_tail = "reference runtime", f"compare: {answer.get('error')}", tail
            return
        out.similarity = answer["similarity"]
        out.reference = f"{answer['runtime']} on {model_file} as compiled, same input npz"
        bad = [r for r in out.similarity if r.get("error") or r["cosine"] < self.spec.min_cosine
               or r["euclidean"] < self.spec.min_euclidean]
        worst = min(out.similarity, key=lambda r: r.get("cosine", -1.0)) if out.similarity else None
        if any(r.get("error") for r in bad):  # the bmodel's interface is not the file's: other outputs, or shapes
            out.status, out.cause = "fail", "output count/shape differs"
            ours, theirs = answer.get("counts") or (len(out.similarity), len(out.similarity))
            out.message = (f"compare: the bmodel has {theirs} output(s) for the file's {ours}: "
                           + ", ".join(_row(r) for r in bad))
        elif bad:
            out.status, out.cause = "fail", f"bmodel differs from {answer['runtime'].split()[0]}"
            out.message = (f"compare: {len(bad)} output(s) below cosine {self.spec.min_cosine} / euclidean "
                           f"{self.spec.min_euclidean}: " + ", ".join(_row(r) for r in bad))
        else:
            out.status, out.stage = "pass", None
            out.message = (f"{len(out.similarity)} output(s): bmodel ({self.spec.processor} {quantize}, cmodel) "
                           f"matches {answer['runtime'].split()[0]}; worst {_row(worst)}")

    def compile(self, target: Target, quantize: str, *, keep: bool = False) -> CompileSection:
        """The ``compile`` section for one target and quantize mode (out of the box, then a workaround if known)."""
        # Keyed by the results folder too: two report folders (a test's and the real one) hold the same cell ids.
        where = hashlib.sha256(str(target.path.parent.resolve()).encode()).hexdigest()[:8]
        root = self.cache / "compile" / self.spec.processor / f"{target.result.cell}-{where}" / quantize.lower()
        first = self.attempt(target, quantize, root / "out-of-the-box", None)
        final, fix = first, None
        if first.status != "pass":
            cause = next((c for c in causes.CAUSES if c.name == first.cause), None)
            if cause and cause.workaround:
                fix = cause.workaround
                self.log(f"[compile] {target.result.cell}: {first.cause} — retrying with {fix.name}")
                final = self.attempt(target, quantize, root / "workaround", fix)
        for attempt in {id(first): first, id(final): final}.values():
            if not keep and attempt.artifacts_dir:
                clean(Path(attempt.artifacts_dir))
        if fix:
            final.workaround = {"name": fix.name, "hint": fix.hint}
            final.out_of_the_box = CompileAttempt(**{k: getattr(first, k) for k in CompileAttempt.__dataclass_fields__})
        final.env = {"python": env.PYTHON, "requirements": list(env.REQUIREMENTS), "fixes": self.env.get("fixes"),
                     "venv": self.env.get("venv")}
        final.export_attempt, final.created = target.attempt, time.time()
        final.refresh_verdict()
        return final


def model_file_name(target: Target, fix: causes.Workaround | None) -> str:
    """The name model_transform is given: ``model.onnx``, or the TorchScript file under the name export.py wrote
    (its suffix chooses tpu-mlir's front end), with the workaround's suffix added when one reruns it."""
    name = "model.onnx" if not target.torchscript else target.artifact.name
    return name + fix.suffix if fix and fix.suffix and not name.endswith(fix.suffix) else name


def skipped_section(spec: CompileSpec, quantize: str, message: str) -> CompileSection:
    section = CompileSection(tool=env.TOOL, tool_version=env.TOOL_VERSION, processor=spec.processor,
                             quantize=quantize, status="skip", stage=None, message=message)
    section.refresh_verdict()
    return section


def clean(workdir: Path) -> int:
    """Delete everything but KEEP in a compile's workdir; returns the bytes freed."""
    freed = 0
    if not workdir.is_dir():
        return 0
    kept = {p for pattern in KEEP for p in workdir.glob(pattern)}
    for path in workdir.iterdir():
        if path in kept:
            continue
        if path.is_dir() and not path.is_symlink():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        else:
            freed += path.stat().st_size if path.exists() else 0
            path.unlink()
    return freed


def _row(row: dict[str, Any] | None) -> str:
    if not row:
        return "-"
    if row.get("error") and row.get("cosine") is not None:  # compared all the same (outputs merged into one)
        return f"{row['output']}: {row['error']} (values: cosine {row['cosine']:.6f}, max abs {row['max_abs']:.2g})"
    if row.get("error"):
        return f"{row['output']}: {row['error']}"
    return (f"{row['output']}: cosine {row['cosine']:.6f}, euclidean {row['euclidean']:.6f}, "
            f"max abs {row['max_abs']:.2g}")


def log_tail(text: str, lines: int = proc.TAIL_LINES, width: int = 300) -> str:
    """The last lines of a tool's log as a person reads them: tpu-mlir redraws progress bars with carriage returns
    on one physical line (megabytes for a per-layer compare), so only the text after the last ``\\r`` counts."""
    shown = [ln.rsplit("\r", 1)[-1].rstrip()[:width] for ln in text.split("\n")]
    return "\n".join([ln for ln in shown if ln.strip()][-lines:])


def _last_error(text: str) -> str:
    """The last line that reads like an error in a tool's log (tracebacks end with one)."""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if re.search(r"(Error|error:|FAILED|not found|Exception)", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


# -- the run -------------------------------------------------------------------------------------------------------

def join(path: Path, sections: list[CompileSection]) -> CellResult | None:
    """Write the first quantize mode's section as ``compile`` (others under ``compile.more``) into the result file,
    re-read just before the atomic write so a concurrent rewrite of other keys is not lost."""
    current = results.read_result(path)
    if current is None:  # unreadable now (read_result said why): never replace a result by a compile section alone
        return None
    sections[0].more = sections[1:]
    current.compile = sections[0]
    write_json(path, current.to_json())
    return current


def run_compile(spec: CompileSpec, reports: Path, cache: Path, *, envs: list[str] | None = None,  # noqa: PLR0913
                refs: list[str] | None = None, variants: tuple[str, ...] | None = None,
                quantize: tuple[str, ...] | None = None, force: bool = False, keep: bool = False,
                log: Log = print, sandbox_mode: str = "auto") -> list[CompileSection]:
    """Compile every selected ONNX result under ``reports`` and join the verdicts; returns the sections written.
    ``sandbox_mode``: [limits] sandbox (harness/envs/sandbox.py), for tpu-mlir's tools as for the matrix's steps."""
    box = sandbox.choose(sandbox_mode)
    log(f"[compile] {box.describe()}")
    modes = quantize or spec.quantize
    targets, skipped = find_targets(reports, variants or spec.variants, spec.formats, envs=envs, refs=refs)
    done: list[CompileSection] = []
    for path, result, why in skipped:
        sections = [skipped_section(spec, q, why) for q in modes]
        join(path, sections)
        done.append(sections[0])
        log(f"[compile] {result.cell}: skipped — {why}")
    if not targets:
        log(f"[compile] nothing to compile under {results.results_dir(reports)} (variants "
            f"{', '.join(variants or spec.variants)}, formats {', '.join(spec.formats)})")
        return done
    compiler = Compiler(spec, cache, log=log, box=box)
    for target in targets:
        sections = [compile_mode(compiler, target, spec, mode, force, keep, log) for mode in modes]
        join(target.path, sections)
        done.append(sections[0])
    return done


def compile_mode(compiler: Compiler, target: Target, spec: CompileSpec, mode: str, force: bool, keep: bool,
                 log: Log) -> CompileSection:
    """One quantize mode of one target: the stored section while its inputs hold, else a fresh compile."""
    key = inputs_key(target, spec, mode)
    old = _stored(target.result, mode)
    cell = target.result.cell
    if not force and old and old.inputs_key == key and old.status in ("pass", "fail"):
        log(f"[compile] {cell} {mode}: unchanged, kept ({old.verdict})")
        return old
    log(f"[compile] {cell} {mode}: {target.artifact} -> {spec.processor} bmodel ...")
    section = compiler.compile(target, mode, keep=keep)
    section.inputs_key = key
    times = ", ".join(f"{k} {v:.0f} s" for k, v in section.timings.items())
    log(f"[compile] {cell} {mode}: {section.verdict} — {section.message[:200]} ({times})")
    return section


def _stored(result: CellResult, mode: str) -> CompileSection | None:
    section = result.compile
    if not section:
        return None
    for candidate in [section, *section.more]:
        if candidate.quantize == mode:
            return dataclasses.replace(candidate, more=[])
    return None


def summary(done: list[CompileSection]) -> str:
    counts: dict[str, int] = {}
    for section in done:
        counts[section.status] = counts.get(section.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing"
