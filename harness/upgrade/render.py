"""An upgrade answer as text: the console (groups, never one line per cell), ``upgrade.md`` (a pull-request comment or
``$GITHUB_STEP_SUMMARY``) and ``upgrade.json``; the HTML section is the report's partial ``_upgrade.html.j2``, which
reads the same JSON. The gate prints its grouped changes with ``console`` too.

Everything here reads the JSON form of the answer (``Answer.to_json()``), so a saved ``upgrade.json`` renders the same
as a fresh answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.files import write_atomic, write_json
from harness.progress import duration


def _first_commit(group: dict[str, Any]) -> str:
    """One line: the group's first commit, or why there is none."""
    found = group.get("bisect")
    if found:
        return f"first commit: {found['summary']} (probed on {found['cell']})"
    if group.get("not_bisected"):
        return f"first commit: not searched — {group['not_bisected']}"
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


def headline(model: dict[str, Any]) -> str:
    failing, notes = model["failing"], len(model["groups"]) - model["failing"]
    if not model["groups"]:
        return f"{model['question']['title']}: no change in {model['pairs']} cell pair(s) — nothing to edit"
    return (f"{model['question']['title']}: {failing} failing group(s), {notes} note(s) over {model['pairs']} cell "
            f"pair(s)")


def console(model: dict[str, Any], *, edits: bool = True) -> str:
    """The answer for a terminal: a headline, then per group its title, cells, first commit and edits."""
    lines = [headline(model)]
    if model.get("envs"):
        lines.append(f"  {_axes(model)}")
    if _range(model):
        lines.append(f"  {_range(model)}")
    lines += [f"  note: {n}" for n in model.get("notes", [])]
    if model.get("not_bisected") and model.get("failing"):
        lines.append(f"  first commits: not searched — {model['not_bisected']}")
    if "computed" in model:
        stored = f" ({model['probes_stored']} from stored results)" if model.get("probes_stored") else ""
        lines.append(f"  cells: {model['computed']} computed, {model['reused']} reused; {model['probes']} bisect "
                     f"probe(s){stored}; {duration(model['seconds'])}")
    for g in model["groups"]:
        mark = "FAIL" if g["failing"] else "note"
        waived = f" (failing without {g['waived']})" if g.get("waived") else ""
        lines.append(f"{mark}  {g['title']}{waived}")
        lines.append(f"        {g['scope']}")
        if _first_commit(g):
            lines.append(f"        {_first_commit(g)}")
        if edits:
            lines += [f"        edit: {e['text']}" for e in g["edits"]]
        details = [c["detail"] for c in g["cells"] if c.get("detail")]
        if details and g["kind"] in ("auto-name", "parity"):
            shown = list(dict.fromkeys(details))
            lines.append(f"        e.g. {shown[0]}" + (f" (+{len(shown) - 1} more)" if len(shown) > 1 else ""))
    return "\n".join(lines)


def _cut(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _md(text: str) -> str:
    """Text inside a Markdown table cell or line: pipes escaped, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(model: dict[str, Any]) -> str:
    """``upgrade.md``: the same as the HTML section, for a pull-request comment or a job summary."""
    q = model["question"]
    out = [f"## {q['title']}", ""]
    failing = model["failing"]
    summary = (f"**{failing} failing group(s)**" if failing else "**no failing group**") + \
        f", {len(model['groups']) - failing} note(s) · {model['pairs']} cell pair(s): {_axes(model)}"
    out += [summary, ""]
    if _range(model):
        out += [f"Range: {_range(model)}.", ""]
    out += [f"> {n}" for n in model.get("notes", [])] + ([""] if model.get("notes") else [])
    if model.get("not_bisected") and model.get("failing"):
        out += [f"First commits: not searched — {_md(model['not_bisected'])}.", ""]
    if "computed" in model:
        out += [(f"Cells: {model['computed']} computed, {model['reused']} reused · {model['probes']} bisect "
                 f"probe(s) · {duration(model['seconds'])}. Exit code {model['exit_code']}."), ""]
    if not model["groups"]:
        out += ["Nothing changed in these cells: nothing to edit.", ""]
    for g in model["groups"]:
        out += _md_group(g)
    return "\n".join(out)


def _md_group(g: dict[str, Any]) -> list[str]:
    """One group in upgrade.md: heading, first commit, edits, and its cells folded away."""
    mark = "✘ FAIL" if g["failing"] else "note"
    waived = f" (a note because of `{g['waived']}`)" if g.get("waived") else ""
    out = [f"### {mark}: {_md(g['title'])}{waived}", "", f"{g['scope']}", ""]
    out += _md_first_commit(g)
    for e in g["edits"]:
        text = f"**{_md(e['what'])}**" + (f" ({e['where']})" if e.get("where") else "")
        if e.get("before") is not None and e.get("after") is not None:
            text += f": `{e['before']}` → `{e['after']}`"
        elif e.get("after") is not None:
            text += f": `{e['after']}`"
        out.append(f"- Edit: {text}" + (f" — {_md(e['note'])}" if e.get("note") else ""))
    out += ["", "<details><summary>cells behind this group</summary>", "",
            "| cell | before | after | detail |", "| --- | --- | --- | --- |"]
    out += [f"| {_md(c['slot'])} | {_md(c['before'] or '–')} | {_md(c['after'] or '–')} | "
            f"{_md(c.get('detail') or '')} |" for c in g["cells"]]
    return [*out, "", "</details>", ""]


def _md_first_commit(g: dict[str, Any]) -> list[str]:
    found = g.get("bisect")
    if not found:
        return [f"- **First commit:** not searched — {_md(g['not_bisected'])}"] if g.get("not_bisected") else []
    if found.get("first"):
        first = found["first"]
        out = [(f"- **First commit:** `{first['sha'][:12]}` {_md(first['subject'])} ({first['date'][:10]}) — "
               f"{found['probes']} probe(s), {len(found['skipped'])} skipped, on {found['cell']}")]
    else:
        out = [f"- **First commit:** {_md(found['summary'])}"]
        if found.get("candidates"):
            out.append("  - candidates: " + ", ".join(f"`{c['sha'][:12]}` {_md(c['subject'])}"
                                                      for c in found["candidates"]))
    out += [f"  - skipped `{s['sha'][:12]}` {_md(s['subject'])}: {_md(_cut(s['reason']))}" for s in found["skipped"]]
    return out


def read(reports: Path) -> dict[str, Any] | None:
    """``<reports>/upgrade.json`` when an upgrade wrote one (the report re-renders its section), else None; a file
    that is not one is skipped with a warning."""
    from harness.upgrade.question import KIND, SCHEMA

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


__all__ = ["console", "headline", "markdown", "read", "write"]
