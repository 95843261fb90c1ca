"""Serve the rest of the last completion while the user types what it predicted.

When ghost text shows ``total += v`` and the user types ``t``, ``o``, … the same suggestion is
still right: the rest of it is returned at once, without a model run, as Copilot does. Only
an exact continuation qualifies: the document must be the one the completion was made for
with the typed characters inserted at its cursor, and a candidate must start with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlm_lsp.postprocess import Scored


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
