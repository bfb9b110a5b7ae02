"""An upgrade answer as text: the console (groups, never one line per cell), ``upgrade.md`` (a pull-request comment;
its summary also goes to ``$GITHUB_STEP_SUMMARY``) and ``upgrade.json``; the HTML section is the report's partial
``_upgrade.html.j2``, which reads the same JSON. The gate prints its grouped changes with ``console`` too.

Everything here reads the JSON form of the answer (``Answer.to_json()``), so a saved ``upgrade.json`` renders the same
as a fresh answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.files import write_atomic, write_json
from harness.run.progress import duration

SUMMARY_LINES = 15  # upgrade.md opens with at most this many lines: the groups, where they come from, the edits


def origin(group: dict[str, Any], *, short: bool = False) -> str:
    """Where a group's change comes from: YOLOv5's first commit, the env (and the packages that moved there), or
    why that was not searched; "" when nothing was asked."""
    found, env = group.get("bisect"), group.get("env_search")
    if found and found.get("first") and short:
        first = found["first"]
        return f"YOLOv5 `{first['sha'][:9]}` {first['subject']} ({first['date'][:10]})"
    if found:
        return f"YOLOv5: {found['summary']}" + ("" if short else f" (probed on {found['cell']})")
    if env:
        if short and env.get("first"):
            moved = [f"{name} {a} → {b}" for name, a, b in env["moved"]]
            shown = ", ".join(moved[:2]) + (f", +{len(moved) - 2} more" if len(moved) > 2 else "")
            where = env["first"] if env["searched"] else f"{env['old']} → {env['new']}"
            return f"env {where} ({shown or 'no package moved'})"
        return f"env: {env['summary']}"
    if group.get("not_bisected"):
        return f"not searched — {group['not_bisected']}"
    return ""


def _axes(model: dict[str, Any]) -> str:
    def axis(name: str, values: list[str]) -> str:
        return f"{name}{'s' if len(values) != 1 else ''} {', '.join(values)}"

    return " · ".join((axis("env", model["envs"]), axis("variant", model["variants"]),
                       axis("format", model["formats"])))


def _range(model: dict[str, Any]) -> str:
    span = model.get("range")
    if not span:
        return ""
    return (f"{span['a']} {span['a_sha'][:12]} → {span['b']} {span['b_sha'][:12]}: {span['commits']} commit(s) on "
            f"{span['b']}'s first-parent history")


def _cost(model: dict[str, Any]) -> str:
    if "computed" not in model:
        return ""
    stored = f" ({model['probes_stored']} from stored results)" if model.get("probes_stored") else ""
    pinned = f"; {model['pinned']} compared with pinned names" if model.get("pinned") else ""
    return (f"cells: {model['computed']} computed, {model['reused']} reused{pinned}; {model['probes']} probe(s)"
            f"{stored}; {duration(model['seconds'])}")


def headline(model: dict[str, Any]) -> str:
    failing, notes = model["failing"], len(model["groups"]) - model["failing"]
    if not model["groups"]:
        return f"{model['question']['title']}: no change in {model['pairs']} cell pair(s) — nothing to edit"
    return (f"{model['question']['title']}: {failing} failing group(s), {notes} note(s) over {model['pairs']} cell "
            f"pair(s)")


def _refs(ids: list[int]) -> str:
    return "[" + ", ".join(str(i + 1) for i in ids) + "]"


def console(model: dict[str, Any]) -> str:
    """The answer for a terminal: a headline, one block per group (title, cells, where it comes from), then each
    edit once with the groups it serves."""
    lines = [headline(model)]
    if model.get("envs"):
        lines.append(f"  {_axes(model)}")
    lines += [f"  {text}" for text in (_range(model), _cost(model)) if text]
    lines += [f"  note: {n}" for n in model.get("notes", [])]
    for i, g in enumerate(model["groups"]):
        waived = f" (failing without {g['waived']})" if g.get("waived") else ""
        lines.append(f"{'FAIL' if g['failing'] else 'note'}  [{i + 1}] {g['title']}{waived}")
        lines.append(f"        {g['scope']}")
        lines += [f"        {origin(g)}"] if origin(g) else []
        details = list(dict.fromkeys(c["detail"] for c in g["cells"] if c.get("detail")))
        if details and g["kind"] in ("auto-name", "parity", "pinned-names"):
            lines.append(f"        e.g. {details[0]}" + (f" (+{len(details) - 1} more)" if len(details) > 1 else ""))
    edits = model.get("edits", [])
    if model["groups"]:
        lines.append("edits (each once; [n]: the groups it is for):" if edits else "nothing to edit")
    lines += [f"  {_refs(e['groups'])} {e['text']}" for e in edits]
    return "\n".join(lines)


def _cut(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _md(text: str) -> str:
    """Text inside a Markdown table cell or line: pipes escaped, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_edit(e: dict[str, Any]) -> str:
    text = f"**{_md(e['what'])}**" + (f" ({e['where']})" if e.get("where") else "")
    if e.get("before") is not None and e.get("after") is not None:
        text += f": `{e['before']}` → `{e['after']}`"
    elif e.get("after") is not None:
        text += f": `{e['after']}`"
    return f"- {_refs(e['groups'])} {text}" + (f" — {_md(e['note'])}" if e.get("note") else "")


def summary(model: dict[str, Any]) -> list[str]:
    """The opening of upgrade.md (and a CI job's summary), at most SUMMARY_LINES lines: the verdict, one line per
    group with where it comes from, one per edit; what does not fit is counted, and follows below in upgrade.md."""
    return _summary(model)[0]


def _summary(model: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The summary, and the group and edit lines that did not fit in it."""
    q, failing, groups = model["question"], model["failing"], model["groups"]
    status = ((f"✘ {failing} failing change(s)" if failing else "✔ no failing change") +
              f", {len(groups) - failing} note(s) · {model['pairs']} cell pair(s)" +
              (f" · exit code {model['exit_code']}" if "exit_code" in model else ""))
    out = [f"## {q['title']} — {status}", ""]
    if not groups:
        return [*out, "Nothing changed in these cells: nothing to edit."], []
    lines = []
    for i, g in enumerate(groups):
        where = origin(g, short=True)
        count = len(g["cells"])
        lines.append(f"{i + 1}. {'✘' if g['failing'] else 'note:'} {_md(g['title'])} — {count} cell"
                     f"{'s' if count != 1 else ''}" + (f" — {_md(where)}" if where else ""))
    edits = [_md_edit(e) for e in model.get("edits", [])]
    room = SUMMARY_LINES - len(out) - 2  # the blank line and the edits' heading
    shown, rest = _fit(lines, min(len(lines), max(1, room - min(len(edits), 2))), "group(s)")  # edits keep 2 lines
    out += [*shown, "", "Edits ([n]: the groups it is for):" if edits else "Nothing to edit."]
    shown_edits, rest_edits = _fit(edits, room - len(shown), "edit(s)")
    return out + shown_edits, rest + rest_edits


def _fit(items: list[str], room: int, what: str) -> tuple[list[str], list[str]]:
    """``items`` in ``room`` lines, the last saying how many more follow below when they do not fit; and those."""
    if len(items) <= room:
        return items, []
    keep = max(0, room - 1)
    return [*items[:keep], f"… {len(items) - keep} more {what}: see below"], items[keep:]


def markdown(model: dict[str, Any]) -> str:
    """``upgrade.md``: the summary (SUMMARY_LINES at most), what did not fit in it, the range and what it cost,
    probes that could not tell, and one table of the cells with the groups each is in."""
    top, rest = _summary(model)
    out = [*top, ""]
    if rest:
        out += ["### The rest of the groups and edits", "", *rest, ""]
    facts = [f"Range: {_range(model)}." if _range(model) else "", f"{_axes(model)}." if model.get("envs") else "",
             f"{_cost(model).capitalize()}." if _cost(model) else ""]
    out += [" ".join(t for t in facts if t), ""]
    out += [f"> {_md(n)}" for n in model.get("notes", [])] + ([""] if model.get("notes") else [])
    out += _md_searches(model["groups"])
    if model["groups"]:
        out += _md_cells(model)
    return "\n".join(out).rstrip() + "\n"


def _md_searches(groups: list[dict[str, Any]]) -> list[str]:
    """Only what the summary's short form leaves out: probes that could not tell, and candidates."""
    out = []
    for i, g in enumerate(groups):
        found = g.get("bisect") or {}
        env = g.get("env_search") or {}
        if found.get("candidates") or env.get("candidates"):
            out.append(f"- [{i + 1}] {_md(origin(g))}")
        out += [f"- [{i + 1}] skipped `{s['sha'][:12]}` {_md(s['subject'])}: {_md(_cut(s['reason']))}"
                for s in found.get("skipped", [])]
        out += [f"- [{i + 1}] skipped {s['env']}: {_md(_cut(s['reason']))}" for s in env.get("steps", [])
                if s["state"] == "skip"]
    return [*out, ""] if out else []


def _md_cells(model: dict[str, Any]) -> list[str]:
    """One row per cell pair: the groups it is in, and its own details (its verdicts, made-up names...)."""
    one_env = len(model.get("envs") or []) == 1  # said once above the table
    rows: dict[str, dict[str, Any]] = {}
    for i, g in enumerate(model["groups"]):
        for c in g["cells"]:
            label = " · ".join(p for p in (c["ref"], "" if one_env else c["env"], c["variant"], c["format"]) if p)
            row = rows.setdefault(label, {"ids": [], "details": []})
            row["ids"].append(i)
            if c.get("detail") and c["detail"] not in row["details"]:
                row["details"].append(c["detail"])
    out = ["| cell | groups | detail |", "| --- | --- | --- |"]
    out += [f"| {_md(slot)} | {', '.join(str(i + 1) for i in row['ids'])} | {_md(_cut('; '.join(row['details'])))} |"
            for slot, row in rows.items()]
    return out


def read(reports: Path) -> dict[str, Any] | None:
    """``<reports>/upgrade.json`` when an upgrade wrote one (the report re-renders its section), else None; a file
    that is not one is skipped with a warning."""
    from harness.decide.upgrade.question import KIND, SCHEMA

    path = reports / "upgrade.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"warning: skipping {path}: not readable JSON ({exc})", file=sys.stderr)
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("schema") != SCHEMA:
        print(f"warning: skipping {path}: not an upgrade answer of schema {SCHEMA}", file=sys.stderr)
        return None
    return data


def write(model: dict[str, Any], reports: Path) -> list[Path]:
    """``<reports>/upgrade.json`` and ``upgrade.md`` (atomically); returns their paths."""
    json_path, md_path = reports / "upgrade.json", reports / "upgrade.md"
    write_json(json_path, model)
    write_atomic(md_path, markdown(model))
    return [json_path, md_path]


def step_summary(model: dict[str, Any]) -> Path | None:
    """In GitHub Actions, append the summary to the job's summary page (``$GITHUB_STEP_SUMMARY``); its path, or None
    elsewhere."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as out:
        out.write("\n".join(summary(model)) + "\n\n")
    return path


__all__ = ["SUMMARY_LINES", "console", "headline", "markdown", "origin", "read", "step_summary", "summary", "write"]
