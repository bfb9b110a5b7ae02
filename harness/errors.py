"""Domain errors. Each reads as one line naming the problem and the fix, and is what the CLI prints."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: an expected failure with a message a user can act on (no traceback shown)."""


class ConfigError(HarnessError):
    """matrix.toml (or a CLI override) is malformed, has an unknown key, a wrong type or a missing field."""


class SourceError(HarnessError):
    """A repository cannot be cloned/fetched, or a ref cannot be resolved."""


class PatchError(HarnessError):
    """The Detect patch cannot be applied to a ref's models/yolo.py."""


class UnknownShapeError(PatchError):
    """The ref's Detect.forward is a shape the patcher's table (harness/patch/detect.py ``_SHAPES``) does not know."""


class EnvError(HarnessError):
    """An environment cannot be created: missing interpreter, pins that do not install."""
