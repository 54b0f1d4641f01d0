"""The chaos suite's summary table: one row per scenario."""

from __future__ import annotations

from dataclasses import dataclass, field

from invariants import Report

HEADERS = (
    "scenario",
    "submitted",
    "completed",
    "lost",
    "duplicates",
    "stale",
    "recovery s",
    "notes",
)


@dataclass
class ChaosTable:
    """Rows of (scenario, report, recovery seconds, notes), rendered as a fixed-width table.

    Notes carry a scenario's own figures (e.g. a standby's takeover time).
    """

    rows: list[tuple[str, Report, float, str]] = field(default_factory=list)

    def add(self, scenario: str, report: Report, recovery: float, notes: str = "") -> None:
        self.rows.append((scenario, report, recovery, notes))

    def annotate(self, notes: str) -> None:
        """Set the notes of the last row (figures known only once its checks ran)."""
        scenario, report, recovery, _ = self.rows[-1]
        self.rows[-1] = (scenario, report, recovery, notes)

    def render(self) -> str:
        cells = [HEADERS] + [
            (
                name,
                str(report.submitted),
                str(report.completed),
                str(len(report.lost)),
                str(len(report.duplicates)),
                str(len(report.stale_writes)),
                f"{recovery:.1f}",
                notes,
            )
            for name, report, recovery, notes in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in cells
        ]
        return "\n".join(["chaos scenarios", *lines])
