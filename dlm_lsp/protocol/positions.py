"""LSP positions <-> string offsets, for utf-8, utf-16 and utf-32 columns.

Lines end at "\\n", "\\r\\n" or "\\r" as LSP says (not at the other separators that
``str.splitlines`` knows). Positions past a line's end or past the document are clamped.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache

_EOL = re.compile(r"\r\n|\r|\n")


@lru_cache(maxsize=16)
def line_starts(text: str) -> tuple[int, ...]:
    """Offsets where each line begins (cached: strings cache their hash)."""
    return (0, *(m.end() for m in _EOL.finditer(text)))


def _line_bounds(text: str, line: int) -> tuple[int, int]:
    """Start and end (before the line break) of `line`, clamped to the document."""
    starts = line_starts(text)
    line = min(max(line, 0), len(starts) - 1)
    start = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    while end > start and text[end - 1] in "\r\n":
        end -= 1
    return start, end


def units(char: str, encoding: str) -> int:
    """Code units of one character in `encoding` ("utf-8", "utf-16" or "utf-32")."""
    cp = ord(char)
    if encoding == "utf-8":
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    if encoding == "utf-32":
        return 1
    return 2 if cp > 0xFFFF else 1


def offset_at(text: str, line: int, character: int, encoding: str = "utf-16") -> int:
    """String offset of an LSP position; past-the-end lines and columns are clamped."""
    starts = line_starts(text)
    if line >= len(starts):
        return len(text)
    start, end = _line_bounds(text, line)
    if encoding == "utf-32":
        return min(start + max(character, 0), end)
    count = 0
    i = start
    while i < end and count < character:
        count += units(text[i], encoding)
        if count > character:  # inside a surrogate pair / multi-byte char: stay before it
            break
        i += 1
    return i


def position_at(text: str, offset: int, encoding: str = "utf-16") -> tuple[int, int]:
    """LSP (line, character) of a string offset (clamped to the document)."""
    offset = min(max(offset, 0), len(text))
    starts = line_starts(text)
    line = bisect.bisect_right(starts, offset) - 1
    start, end = _line_bounds(text, line)
    offset = min(offset, end)  # an offset inside "\r\n" belongs to the line's end
    segment = text[start:offset]
    if encoding == "utf-32":
        return line, len(segment)
    return line, sum(units(c, encoding) for c in segment)


def normalize_encoding(kind: object) -> str:
    """lsprotocol's PositionEncodingKind (or a plain string) -> "utf-8" / "utf-16" / "utf-32"."""
    value = getattr(kind, "value", kind)
    return value if value in ("utf-8", "utf-16", "utf-32") else "utf-16"
