"""Reading the report back as a physician's browser shows it: tables under their headings, numbers, images."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

_IMG_RE = re.compile(r'<img src="data:image/png;base64,([^"]*)"')


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.heading = ""
        self.in_heading = False
        self.tables: dict[str, list[list[str]]] = {}
        self.cell: list[str] | None = None
        self.row: list[str] | None = None
        self.current: list[list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self.in_heading, self.heading = True, ""
        elif tag == "table":
            self.current = self.tables.setdefault(self.heading or "header", [])
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self.in_heading = False
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.current is not None:
            self.current.append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.in_heading:
            self.heading += data
        if self.cell is not None:
            self.cell.append(data)


def tables(page: str) -> dict[str, list[list[str]]]:
    """Heading → rows (first row: column names) of every table on the page."""
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def number(text: str) -> float:
    """A displayed number ('1 234.5 †', '23 %') as float."""
    cleaned = text.replace("\u2009", "").replace("†", "").replace("%", "").strip()
    return float(cleaned)


def shows(text: str, value: float) -> bool:
    """Whether the displayed text is `value` rounded to the digits shown."""
    cleaned = text.replace("\u2009", "").replace("†", "").replace("%", "").strip()
    decimals = len(cleaned.split(".")[1]) if "." in cleaned else 0
    return abs(float(cleaned) - value) <= 0.5 * 10.0**-decimals + 1e-9


def images(page: str) -> list[bytes]:
    """The embedded PNG images, decoded."""
    return [base64.b64decode(data) for data in _IMG_RE.findall(page)]


def visible_text(page: str) -> str:
    """The page without embedded image data and tags."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", page)
