"""Why a target refused a cell's artifact, as data: a name, what its log shows, and what it means for a deployer.

``name_of`` takes the first row whose pattern occurs in the failure (message, then log). Rows whose text carries
numbers (an IR version, an opset) put both sides into the message, so a reader sees what was written and what the
toolkit reads. No row has a workaround yet: each would be an edit of the export, checked like the matrix's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    name: str
    pattern: str  # a regular expression, searched in the failure message, then its log
    hint: str


CAUSES: tuple[Cause, ...] = (
    # onnx's checker / ONNX Runtime, and toolkits that embed them: "Unsupported model IR version: 10, max supported
    # IR version: 9".
    Cause("ONNX IR version newer than the toolkit reads",
          r"(?i)(unsupported model ir version|ir_version \d+ is higher|ir version \d+.*max(imum)? supported)",
          "the export wrote a newer ONNX IR version than this toolkit's onnx reads: export with an older exporter "
          "(torch.onnx.export(..., dynamo=False)) or rewrite the IR version field"),
    Cause("ONNX opset newer than the toolkit reads",
          r"(?i)(opset\D{0,40}\d+\D{0,40}(not supported|unsupported|is under development)|"
          r"unsupported (onnx )?opset|opset_import.*not supported)",
          "the export asked a newer opset than this toolkit converts: export with --opset the toolkit lists"),
    Cause("operator not supported by the toolkit",
          r"(?i)(no conversion rule found for operations|opconversionfailure|unsupported (op|operator|layer)\b|"
          r"(op|operator|layer) .{0,60}(is )?not (supported|exists or registered)|unknown (op|operator|layer))",
          "the graph has an operator this toolkit cannot compile: a different Detect variant, or a newer toolkit"),
    Cause("tensor rank not supported by the NPU",
          r"(?i)(rank|dims?|dimension)\b.{0,60}(not support|unsupported|exceed|> ?4|greater than 4)",
          "an output or intermediate tensor has more dimensions than the NPU takes (variant 3's 5-D levels): "
          "reshape to 4-D in the export, as the vendor's guide does"),
    Cause("toolkit crashed", r"(died with signal|Segmentation fault|core dumped|SIGSEGV|SIGABRT)",
          "the toolkit's process died: a bug of the toolkit on this graph; its log tail shows where"),
    Cause("timeout", r"\btimed out\b", "the compile or run overran [targets.NAME] timeout"),
)


def name_of(message: str, log: str = "") -> Cause | None:
    for cause in CAUSES:
        if re.search(cause.pattern, message) or (log and re.search(cause.pattern, log)):
            return cause
    return None
