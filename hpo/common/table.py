"""Tables for a terminal: one row per item, columns aligned, the whole no wider than the
terminal. A table that does not fit loses whole columns (the droppable ones, the last first)
instead of wrapping its rows: a row that breaks over lines no longer reads across, and a cell
cut short can make two values look alike. The caller says what was left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """``cells``: one text per row; ``right``: right-aligned (numbers); ``keep``: never dropped;
    a header may have several lines (``"lr_clip_\\nvisual"``), aligned at the bottom."""

    header: str
    cells: Sequence[str]
    right: bool = False
    keep: bool = False

    @property
    def width(self) -> int:
        return max([*(len(h) for h in self.header.split("\n")), *(len(c) for c in self.cells)])


def split_header(name: str, cells: Sequence[str]) -> str:
    """``name`` on two lines, cut after the underscore that makes the wider half narrowest,
    when the name is wider than every cell (``lr_clip_visual`` -> ``lr_clip_``, ``visual``):
    parameter names are often far wider than their values. Read across, the lines give the
    name whole."""
    widest = max((len(c) for c in cells), default=0)
    cuts = [i + 1 for i, ch in enumerate(name[:-1]) if ch == "_"]
    if len(name) <= widest or not cuts:
        return name
    cut = min(cuts, key=lambda i: max(i, len(name) - i))
    return f"{name[:cut]}\n{name[cut:]}"


def fitted(columns: Sequence[Column], width: int, gap: int = 2, indent: int = 0) -> list[Column]:
    """The columns that fit in ``width`` characters: droppable ones are left out from the right
    until the rest fits (the kept ones stay even when they alone are wider)."""
    shown = list(columns)
    while sum(c.width for c in shown) + gap * (len(shown) - 1) + indent > width:
        droppable = [i for i, c in enumerate(shown) if not c.keep]
        if not droppable:
            break
        del shown[droppable[-1]]
    return shown


def render(columns: Sequence[Column], gap: int = 2, indent: int = 0) -> list[str]:
    """The header lines and one line per row, trailing spaces removed."""
    if not columns:
        return []
    heads = [c.header.split("\n") for c in columns]
    depth = max(len(h) for h in heads)
    grid = [[""] * (depth - len(h)) + h for h in heads]  # header lines aligned at the bottom
    lines = []
    for i in range(depth + len(columns[0].cells)):
        cells = []
        for c, head in zip(columns, grid, strict=True):
            text = head[i] if i < depth else c.cells[i - depth]
            cells.append(text.rjust(c.width) if c.right else text.ljust(c.width))
        lines.append((" " * indent + (" " * gap).join(cells)).rstrip())
    return lines


__all__ = ["Column", "fitted", "render", "split_header"]
