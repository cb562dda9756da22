"""Pixel geometry of a prediction grid, in one place so that drawing and tests agree."""

from __future__ import annotations

from dataclasses import dataclass

__all__: list[str] = []


@dataclass(frozen=True)
class _GridLayout:
    """Sizes in pixels. A cell is ``pad | frame | thumbnail | frame | pad`` wide; its caption
    (two text lines) sits below the framed thumbnail. The query column is followed by ``gap``.
    """

    rows: int
    k: int
    thumb: int
    has_title: bool
    margin: int = 8
    pad: int = 4

    @property
    def frame(self) -> int:
        return max(3, self.thumb // 32)

    @property
    def font_size(self) -> int:
        return max(10, self.thumb // 9)

    @property
    def title_font_size(self) -> int:
        return round(self.font_size * 1.4)

    @property
    def line_height(self) -> int:
        return self.font_size + 4

    @property
    def gap(self) -> int:
        return max(4, self.thumb // 4)

    @property
    def cell_width(self) -> int:
        return self.thumb + 2 * self.frame + 2 * self.pad

    @property
    def cell_height(self) -> int:
        return self.cell_width + 2 * self.line_height

    @property
    def title_height(self) -> int:
        return self.title_font_size + 12 if self.has_title else 0

    @property
    def size(self) -> tuple[int, int]:
        width = 2 * self.margin + (self.k + 1) * self.cell_width + self.gap
        height = 2 * self.margin + self.title_height + self.rows * self.cell_height
        return width, height

    def thumb_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel of the thumbnail (inside the frame); column 0 is the query."""
        x = self.margin + col * self.cell_width + (self.gap if col > 0 else 0)
        y = self.margin + self.title_height + row * self.cell_height
        return x + self.pad + self.frame, y + self.pad + self.frame
