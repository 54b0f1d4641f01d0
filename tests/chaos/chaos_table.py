"""The chaos suite's summary table: one row per scenario."""

from __future__ import annotations

from dataclasses import dataclass, field

from invariants import Report

HEADERS = ("scenario", "submitted", "completed", "lost", "duplicates", "stale", "recovery s")


@dataclass
class ChaosTable:
    """Rows of (scenario, report, recovery seconds), rendered as a fixed-width table."""

    rows: list[tuple[str, Report, float]] = field(default_factory=list)

    def add(self, scenario: str, report: Report, recovery: float) -> None:
        self.rows.append((scenario, report, recovery))

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
            )
            for name, report, recovery in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in cells
        ]
        return "\n".join(["chaos scenarios", *lines])
