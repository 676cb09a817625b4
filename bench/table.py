"""The result table: one row per measurement, printed as aligned text or as markdown."""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS = ("measurement", "images", "seconds", "images/s", "ratio", "target", "met")


@dataclass
class Row:
    """One measured stage. ``ratio`` compares it with the row named in ``versus``."""

    measurement: str
    images: int
    seconds: float
    ratio: float | None = None
    versus: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def images_per_second(self) -> float:
        """Throughput of this stage."""
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def cells(self) -> list[str]:
        """The row as text, one string per column of :data:`COLUMNS`."""
        ratio = f"{self.ratio:.2f}x {self.versus}".strip() if self.ratio is not None else ""
        met = "" if self.met is None else ("yes" if self.met else "NO")
        return [self.measurement, str(self.images), f"{self.seconds:.2f}", f"{self.images_per_second:.1f}",
                ratio, self.target, met]


def format_text(rows: list[Row]) -> str:
    """Columns padded to line up in a terminal."""
    table = [list(COLUMNS)] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_markdown(rows: list[Row]) -> str:
    """A GitHub-flavoured markdown table (``|`` inside cells escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    out = [line(list(COLUMNS)), "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    return "\n".join(out + [line(row.cells()) for row in rows])
