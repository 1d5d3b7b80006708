"""Terminal output: colour only on a TTY and never when NO_COLOR is set (https://no-color.org)."""

from __future__ import annotations

import os
import sys

_CODES = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "dim": 2, "bold": 1}


def use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str, stream=None) -> str:
    if not use_colour(stream):
        return text
    return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"


def ms(value: float | None, width: int = 7) -> str:
    return f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
