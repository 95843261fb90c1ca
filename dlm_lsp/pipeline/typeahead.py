"""Reuse the last completion across keystrokes instead of decoding again.

- Typing ahead: when ghost text shows ``total += v`` and the user types ``t``, ``o``, … the
  same suggestion is still right: the rest of it is returned at once, without a model run, as
  Copilot does. Only an exact continuation qualifies: the document must be the one the
  completion was made for with the typed characters inserted at its cursor, and a candidate
  must start with them.
- A far edit below: when everything before the cursor and the next few lines after it are
  unchanged, an edit further down barely moves a bidirectional model's answer (``python -m
  bench.suffix_reuse`` measures how often a fresh decode agrees), so the last completion is
  served again.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlm_lsp.pipeline.postprocess import Scored


@dataclass(frozen=True)
class Shown:
    """The last completion offered: the document, its cursor, and the candidates."""

    text: str
    offset: int
    candidates: tuple[Scored, ...]


def typed_ahead(shown: Shown | None, text: str, offset: int) -> list[Scored] | None:
    """The shown candidates minus what was typed since, or None when they no longer apply.

    `text` must equal `shown.text` with ``text[shown.offset:offset]`` inserted at the shown
    cursor (nothing else edited), and a candidate survives only if it starts with those
    characters and has more to add.
    """
    if shown is None or offset <= shown.offset:
        return None
    start, typed_len = shown.offset, offset - shown.offset
    if len(text) != len(shown.text) + typed_len:
        return None
    # comparing the two halves is a memcmp each, cheap even for a 5 MB buffer
    if text[:start] != shown.text[:start] or text[offset:] != shown.text[start:]:
        return None
    typed = text[start:offset]
    rest = [Scored(c.text[typed_len:], c.confidence) for c in shown.candidates
            if c.text.startswith(typed) and len(c.text) > typed_len]
    return rest or None


def far_suffix_edit(shown: Shown | None, text: str, offset: int,
                    near_lines: int) -> list[Scored] | None:
    """The shown candidates again when only text far below the cursor changed, else None.

    Same cursor, same text before it, and the same rest of the line plus `near_lines` lines
    after it; `near_lines` 0 turns this off.
    """
    if shown is None or near_lines <= 0 or offset != shown.offset or text == shown.text:
        return None
    if text[:offset] != shown.text[:offset]:
        return None
    near = _near_end(text, offset, near_lines)
    if near != _near_end(shown.text, offset, near_lines):
        return None
    if text[offset:near] != shown.text[offset:near]:
        return None
    return list(shown.candidates)


def _near_end(text: str, offset: int, lines: int) -> int:
    """End of the rest of the cursor's line and the `lines` lines after it."""
    end = offset
    for _ in range(lines + 1):
        end = text.find("\n", end)
        if end < 0:
            return len(text)
        end += 1
    return end
