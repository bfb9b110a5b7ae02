"""JUnit XML for CI systems: one <testcase> per cell, one <testsuite> per env.

Mapping (the common reading of JUnit by Jenkins, GitLab and GitHub test reporters): works and works-with-workaround
pass (the workaround is named in <system-out>), broken is a <failure>, error an <error>, skipped <skipped>.
ElementTree escapes every text and attribute, so messages from results cannot break the XML.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from harness.files import write_atomic
from harness.results.model import CellResult

# Characters XML 1.0 cannot carry at all, escaped or not (log tails hold ANSI colour codes, for one).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def build(found: list[CellResult]) -> ET.Element:
    """The <testsuites> element for ``found`` results."""
    by_env: dict[str, list[CellResult]] = defaultdict(list)
    for result in found:
        by_env[result.env].append(result)
    root = ET.Element("testsuites", name="yolov5-export-matrix")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for env in sorted(by_env):
        suite = ET.SubElement(root, "testsuite", name=env)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        time_total = 0.0
        for result in sorted(by_env[env], key=lambda r: r.cell):
            seconds = result.seconds()
            time_total += seconds
            name = f"variant {result.variant} {result.format}"
            case = ET.SubElement(suite, "testcase", classname=_clean(f"{result.ref}.{env}"), name=_clean(name),
                                 time=f"{seconds:.3f}")
            kind = result.outcome()
            last = result.deciding
            text = f"{last.stage}: {last.message}\n\n{last.log_tail}"
            counts["tests"] += 1
            if kind == "broken":
                ET.SubElement(case, "failure", message=_clean(result.verdict),
                              type=_clean(last.cause)).text = _clean(text)
                counts["failures"] += 1
            elif kind == "error":
                ET.SubElement(case, "error", message=_clean(result.verdict),
                              type=_clean(last.cause)).text = _clean(text)
                counts["errors"] += 1
            elif kind == "skipped":
                ET.SubElement(case, "skipped", message=_clean(result.judgement.reason or ""))
                counts["skipped"] += 1
            ET.SubElement(case, "system-out").text = _clean(
                f"{result.verdict}\nsource: {result.source}\ncommit: {result.commit}")
        suite.attrib.update({k: str(v) for k, v in counts.items()}, time=f"{time_total:.3f}")
        for k in totals:
            totals[k] += counts[k]
    root.attrib.update({k: str(v) for k, v in totals.items()})
    return root


def write(path: Path, found: list[CellResult]) -> Path:
    """Write the XML atomically."""
    root = build(found)
    ET.indent(root)
    write_atomic(path, "<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(root, encoding="unicode") + "\n")
    return path
