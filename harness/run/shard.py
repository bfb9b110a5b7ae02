"""Shards: one plan split over N machines (`--shard K/N`), the same split on every machine.

Why contiguous blocks of the cell ids in sorted order: sorting makes the split independent of the order refs and
envs are written in matrix.toml or on the command line, and contiguous blocks keep the cells of one ref x variant
together, so a shard builds each checkpoint and patched tree once (round robin would split every batch). The block
sizes differ by at most one cell.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from harness.errors import ConfigError

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``K/N`` (1-based: ``1/2`` and ``2/2`` are the halves).

    Raises:
        ConfigError: not of the form K/N with 1 <= K <= N.
    """
    match = _SPEC.fullmatch(text)
    if not match:
        raise ConfigError(f"--shard {text!r}: expected K/N, e.g. --shard 1/2 (the first of two shards)")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r}: K must be between 1 and N (N >= 1), e.g. --shard 1/{max(n, 2)}")
    return k, n


def select(items: Sequence[T], shard: tuple[int, int] | None, key: str = "id") -> list[T]:
    """The items of shard ``(k, n)``: block k of n near-equal contiguous blocks of ``items`` sorted by ``key``.

    Args:
        items: planned cells (anything with a string attribute ``key``, the cell id by default).
        shard: ``(k, n)`` from parse_shard, or None for every item.
        key: attribute that orders the items identically on every machine.

    Returns:
        The chosen items in their original order (the plan's order is what the runner's batching wants).
    """
    if shard is None:
        return list(items)
    k, n = shard
    ordered = sorted(getattr(item, key) for item in items)
    mine = set(ordered[(k - 1) * len(ordered) // n: k * len(ordered) // n])
    return [item for item in items if getattr(item, key) in mine]
