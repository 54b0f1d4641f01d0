"""Checks across fields: orderings of durations, fallbacks naming real regions, free ports.

They run after the fields themselves are read, and skip any field already reported, so one
mistake gives one message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from taskmesh.common.topology import values
from taskmesh.common.topology.config import Address, MasterConfig, RegionConfig
from taskmesh.common.topology.sections import Section


@dataclass(frozen=True, slots=True)
class DurationField:
    """A duration that was read, and where from."""

    section: Section
    key: str
    value: timedelta

    @property
    def path(self) -> str:
        """The key path of the value, e.g. ``regions[0].heartbeat_interval``."""
        return self.section.key_path(self.key)

    def complain(self, relation: str, other: DurationField) -> None:
        """Report that this value must be ``relation`` (e.g. "less than") ``other``."""
        raw = self.section.values.get(self.key, values.format_duration(self.value))
        limit = values.format_duration(other.value)
        self.section.complain(
            self.key, f"expected {relation} {other.path} ({limit}), got {values.show(raw)}"
        )


def check_order(lower: DurationField, upper: DurationField, *, strict: bool = True) -> None:
    """Report ``lower`` not below ``upper``, on whichever of the two the operator wrote."""
    in_order = lower.value < upper.value if strict else lower.value <= upper.value
    if in_order or not (lower.section.ok(lower.key) and upper.section.ok(upper.key)):
        return
    if lower.key in lower.section.values or upper.key not in upper.section.values:
        lower.complain("less than" if strict else "at most", upper)
    else:
        upper.complain("more than" if strict else "at least", lower)


def check_fallbacks(
    region: str, fallbacks: list[tuple[str, str]], names: set[str], problems: list[str]
) -> None:
    """Each fallback of ``region`` must be another, existing region, listed once."""
    seen: dict[str, str] = {}
    for path, name in fallbacks:
        if name == region:
            problems.append(f'{path}: a region cannot fall back to itself ("{name}")')
        elif name not in names:
            problems.append(f'{path}: unknown region "{name}"')
        elif name in seen:
            problems.append(f'{path}: duplicate fallback "{name}" (also {seen[name]})')
        seen.setdefault(name, path)


def check_addresses_unique(
    master: MasterConfig, regions: list[tuple[str, RegionConfig]], problems: list[str]
) -> None:
    """Two daemons cannot listen on one fixed host:port (port 0 is always fine)."""
    listeners = [("master.grpc", master.grpc), ("master.http", master.http)]
    for path, region in regions:
        listeners += [(f"{path}.grpc", region.grpc), (f"{path}.http", region.http)]
        pool = region.workers
        if pool.http.port + pool.count - 1 <= 65535:
            listeners += [(f"{path}.workers.http", pool.http_address(i)) for i in range(pool.count)]
    used: dict[Address, str] = {}
    for path, address in listeners:
        if address.picks_free_port:
            continue
        if address in used:
            problems.append(f"{path}: address {address} is also used by {used[address]}")
        used.setdefault(address, path)
