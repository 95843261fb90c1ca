"""Candidates and edits -> LSP completion items, inline items and WorkspaceEdits.

Client differences live here: Neovim inserts only the first line of a plain-text item, so a
multi-line completion is sent as an escaped snippet when the client supports snippets and is
otherwise left to inline completion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lsprotocol import types

from dlm_lsp.pipeline.edits import Edit
from dlm_lsp.pipeline.engine import CompletionOutcome
from dlm_lsp.protocol.positions import position_at

LABEL_CHARS = 48
_WORD = re.compile(r"[A-Za-z0-9_]*$")


def to_range(text: str, start: int, end: int, encoding: str) -> types.Range:
    s = position_at(text, start, encoding)
    e = position_at(text, end, encoding)
    return types.Range(types.Position(*s), types.Position(*e))


def escape_snippet(text: str) -> str:
    """Make `text` insert literally as an LSP snippet."""
    return re.sub(r"([\\$}])", r"\\\1", text)


def label_for(text: str) -> str:
    """A short one-line label; the full text goes into the documentation."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = lines[0].strip() if lines else text.strip()
    more = len(lines) > 1
    if len(head) > LABEL_CHARS:
        return head[: LABEL_CHARS - 1] + "…"
    return head + (" …" if more else "")


def completion_items(
    outcome: CompletionOutcome,
    text: str,
    encoding: str,
    snippet_support: bool,
    language_id: str = "",
) -> list[types.CompletionItem]:
    """Items whose textEdit replaces the word before the cursor with word + completion."""
    line_start = text.rfind("\n", 0, outcome.offset) + 1
    word = _WORD.search(text[line_start:outcome.offset])
    word_text = word.group(0) if word else ""
    start = outcome.offset - len(word_text)
    rng = to_range(text, start, outcome.offset, encoding)
    items = []
    for i, cand in enumerate(outcome.candidates):
        full = word_text + cand.text
        multiline = "\n" in cand.text
        if multiline and not snippet_support:
            continue  # would be cut to its first line: inline completion offers it instead
        new_text = escape_snippet(full) if multiline else full
        items.append(types.CompletionItem(
            label=label_for(full),
            kind=types.CompletionItemKind.Snippet if multiline else types.CompletionItemKind.Text,
            detail=f"dlm · {cand.confidence:.0%} confident",
            documentation=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=f"```{language_id}\n{full}\n```"
            ),
            filter_text=full,
            sort_text=f"{i:04d}",
            preselect=i == 0,
            insert_text_format=(types.InsertTextFormat.Snippet if multiline
                                else types.InsertTextFormat.PlainText),
            text_edit=types.TextEdit(range=rng, new_text=new_text),
            data={"source": "dlm"},
        ))
    return items


def inline_items(
    outcome: CompletionOutcome, text: str, encoding: str
) -> list[types.InlineCompletionItem]:
    """Ghost text inserted at the cursor, one item per candidate."""
    rng = to_range(text, outcome.offset, outcome.offset, encoding)
    return [types.InlineCompletionItem(insert_text=c.text, range=rng) for c in outcome.candidates]


def workspace_edit(
    uri: str, version: int | None, text: str, edits: Sequence[Edit], encoding: str
) -> types.WorkspaceEdit:
    """One versioned TextDocumentEdit holding every edit (non-overlapping, any order)."""
    text_edits: list[types.TextEdit | types.AnnotatedTextEdit | types.SnippetTextEdit] = [
        types.TextEdit(range=to_range(text, e.start, e.end, encoding), new_text=e.text)
        for e in sorted(edits, key=lambda e: e.start)
    ]
    doc = types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version)
    return types.WorkspaceEdit(
        document_changes=[types.TextDocumentEdit(text_document=doc, edits=text_edits)],
        changes={uri: [te for te in text_edits if isinstance(te, types.TextEdit)]},
    )
