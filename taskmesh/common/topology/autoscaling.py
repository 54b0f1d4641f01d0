"""Reading a region's ``autoscaling`` section: the pool's bounds, its pacing, its command.

The command is a template, split once like a shell would (``shlex``) but run without a shell:
each word may hold the placeholders ``{region}``, ``{desired}``, ``{current}`` and
``{address}`` (the region's gRPC address, for the workers to dial). Pipes or redirections need
an explicit ``sh -c '...'``.
"""

from __future__ import annotations

import shlex
import string

from taskmesh.common.topology import values
from taskmesh.common.topology.config import AutoscalingConfig
from taskmesh.common.topology.schema import AutoscalingFile
from taskmesh.common.topology.sections import Section

PLACEHOLDERS = ("region", "desired", "current", "address")
_EXAMPLE = "docker service scale taskmesh_worker-{region}={desired}"


def read_autoscaling(region: Section) -> AutoscalingConfig | None:
    """The region's autoscaling, or None when the section is absent (or reported)."""
    if region.values.get("autoscaling") is None:
        return None
    section = region.section("autoscaling", AutoscalingFile)
    if not section.is_mapping:
        return None
    if "command" not in section.values:
        section.complain("command", f"missing; the command that scales, e.g. {_EXAMPLE}")
    default = AutoscalingConfig(command=())
    duration = values.positive_duration
    config = AutoscalingConfig(
        command=section.value("command", command_template, ()),
        min_workers=section.value("min_workers", values.non_negative_int, default.min_workers),
        max_workers=section.value("max_workers", values.positive_int, default.max_workers),
        target_per_slot=section.value(
            "target_per_slot", values.positive_number, default.target_per_slot
        ),
        cooldown=section.value("cooldown", duration, default.cooldown),
        interval=section.value("interval", duration, default.interval),
        command_timeout=section.value("command_timeout", duration, default.command_timeout),
    )
    if config.min_workers > config.max_workers and section.ok("min_workers", "max_workers"):
        section.complain(
            "min_workers",
            f"expected at most max_workers ({config.max_workers}), got {config.min_workers}",
        )
    return config if config.command else None


def command_template(value: object) -> tuple[str, ...]:
    """A command line whose words may hold the known ``{placeholders}``."""
    text = values.string(value)
    try:
        words = tuple(shlex.split(text))
    except ValueError as error:
        problem = f"expected a command line, got {values.show(text)} ({error})"
        raise values.InvalidValue(problem) from None
    for word in words:
        _check_placeholders(word)
    return words


def _check_placeholders(word: str) -> None:
    """Only known names, no formatting: ``{desired}`` yes, ``{0}``, ``{x!r}`` or ``{`` no."""
    known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(word)
            if name is not None
        ]
    except ValueError:
        raise values.InvalidValue(
            f"expected placeholders such as {{desired}} (write {{{{ and }}}} for a literal "
            f"brace), got {values.show(word)}"
        ) from None
    for name, spec, conversion in fields:
        if name not in PLACEHOLDERS or spec or conversion:
            raise values.InvalidValue(f"expected the placeholders {known}, got {{{name}}}")


def render_command(template: tuple[str, ...], **placeholders: object) -> list[str]:
    """The argv of one run of ``template``."""
    return [word.format(**placeholders) for word in template]
