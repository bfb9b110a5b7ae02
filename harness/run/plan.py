"""The plan of a run: the cells a config (narrowed by the command line) describes, in the config's order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.config import Config, did_you_mean, ref_problem, validate_ref_name
from harness.errors import ConfigError


@dataclass(frozen=True)
class Cell:
    """One unit of work and of results: a ref, in an env, with a Detect variant, exported to a format."""

    ref: str
    env: str
    variant: str
    format: str

    @property
    def id(self) -> str:
        """A file-name-safe identifier, e.g. ``v7.0__py311-torch2.14__3__onnx-dynamic``."""
        return "__".join((validate_ref_name(self.ref), self.env, self.variant, self.format))


def plan(
    config: Config,
    *,
    refs: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    formats: Iterable[str] | None = None,
    envs: Iterable[str] | None = None,
) -> list[Cell]:
    """Expand the config into cells, optionally narrowed to subsets of its refs, envs, variants and formats.

    The order is the config's (refs, then envs, then variants, then formats, each as written), whatever order
    the narrowing lists use: cells of one ref x env sit together, which is what the checkpoint cache wants,
    and reruns list results the same way.

    Args:
        config: the loaded config.
        refs, variants, formats, envs: None keeps everything; otherwise only these. Variants, formats and envs
            must be in the config; a ref may be any safe ref name (a branch or SHA to try without editing the
            file): the configured ones keep the config's order, others follow in the order given.

    Raises:
        ConfigError: a narrowing name is not in the config (the message lists the allowed ones), a narrowing list
            is empty, or two cells would share an id.
    """
    label = config.path.name
    chosen_refs = _narrow_refs(label, refs, config.source.refs)
    chosen_envs = _narrow(label, "env", envs, tuple(config.envs))
    chosen_variants = _narrow(label, "variant", variants, config.variants)
    chosen_formats = _narrow(label, "format", formats, config.formats)
    cells = [
        Cell(ref=r, env=e, variant=v, format=f)
        for r in chosen_refs
        for e in chosen_envs
        for v in chosen_variants
        for f in chosen_formats
    ]
    seen: dict[str, Cell] = {}
    for cell in cells:
        other = seen.setdefault(cell.id, cell)
        if other is not cell:
            raise ConfigError(
                f"{label}: cells {other} and {cell} share the id {cell.id!r} — rename the env or ref so they differ"
            )
    return cells


def _narrow_refs(label: str, wanted: Iterable[str] | None, configured: tuple[str, ...]) -> tuple[str, ...]:
    """Any ref name passes (whether it exists is the source's question, answered per ref with the closest tags)."""
    if wanted is None:
        return configured
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if not wanted:
        raise ConfigError(f"{label}: the ref selection is empty — choose from {', '.join(configured)} or name any "
                          f"tag, branch or SHA")
    for ref in wanted:
        problem = ref_problem(ref)
        if problem:
            raise ConfigError(f"{label}: ref {ref!r} in the selection {problem}")
    extra = tuple(dict.fromkeys(r for r in wanted if r not in configured))
    return tuple(r for r in configured if r in set(wanted)) + extra


def _narrow(label: str, what: str, wanted: Iterable[str] | None, available: tuple[str, ...]) -> tuple[str, ...]:
    if wanted is None:
        return available
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if not wanted:
        raise ConfigError(f"{label}: the {what} selection is empty — choose from {', '.join(available)}")
    for name in wanted:
        if name not in available:
            hint = did_you_mean(name, available)
            raise ConfigError(
                f"{label}: unknown {what} {name!r} in the selection — choose from {', '.join(available)}"
                + (f" ({hint})" if hint.startswith("did") else "")
            )
    keep = set(wanted)
    return tuple(a for a in available if a in keep)
