"""Open documents kept by LSP's line rules.

LSP breaks lines only at ``\\n``, ``\\r\\n`` and ``\\r``. pygls' documents split with
``str.splitlines``, which also breaks at form feeds, ``\\v``, U+2028 and other separators, so an
incremental edit below such a character lands on the wrong line and the server's copy drifts
from the editor's. Here every position goes through ``positions.offset_at`` (LSP's rules, the
negotiated encoding) and an edit is a splice of the text.
"""

from __future__ import annotations

import re

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from dlm_lsp.protocol.positions import normalize_encoding, offset_at

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def split_lines(text: str) -> list[str]:
    """Lines with their line breaks, split only at \\n, \\r\\n and \\r (LSP's rules)."""
    return _LINE.findall(text)


def apply_change(text: str, change: types.TextDocumentContentChangeEvent,
                 encoding: str) -> str:
    """`text` after one ``didChange`` content change (a range edit or the whole document)."""
    if not isinstance(change, types.TextDocumentContentChangePartial):
        return change.text
    rng = change.range
    start = offset_at(text, rng.start.line, rng.start.character, encoding)
    end = offset_at(text, rng.end.line, rng.end.character, encoding)
    start, end = min(start, end), max(start, end)
    return text[:start] + change.text + text[end:]


class LspDocument(TextDocument):
    """A pygls document whose lines and edits follow LSP's line rules."""

    @property
    def lines(self) -> list[str]:  # used by pygls' own position helpers
        return split_lines(self.source)

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        encoding = normalize_encoding(self.position_codec.encoding)
        self._source = apply_change(self.source, change, encoding)


class LspWorkspace(Workspace):
    """A pygls workspace whose documents are :class:`LspDocument`."""

    @classmethod
    def replacing(cls, workspace: Workspace) -> LspWorkspace:
        """The same workspace (root, sync kind, folders, encoding), before any document."""
        return cls(workspace.root_uri, workspace._sync_kind, list(workspace.folders.values()),
                   workspace.position_encoding)

    def _create_text_document(self, doc_uri: str, source: str | None = None,
                              version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return LspDocument(doc_uri, source=source, version=version, language_id=language_id,
                           sync_kind=self._sync_kind, position_codec=self._position_codec)
