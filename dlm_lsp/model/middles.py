"""Where a middle goes: the spans an editor asks a model to fill, drawn from a source file.

Shared by training (``training.data``) and by learning a repository (``dlm_lsp.adapt``): the
rest of a line from a cursor, whole lines, a syntax node (from ``ast``), or a random span.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence

import numpy as np

MIDDLE_KINDS = (("line_rest", 0.3), ("lines", 0.3), ("node", 0.25), ("random_span", 0.15))


def node_spans(text: str, max_chars: int = 800) -> list[tuple[int, int]]:
    """(start, end) character offsets of statements and expressions, for AST middles."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines = text.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(line) for line in lines]).tolist()

    def offset(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        line = lines[lineno - 1] if lineno - 1 < len(lines) else ""
        return starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.stmt, ast.expr)) and getattr(node, "end_lineno", None):
            a = offset(node.lineno, node.col_offset)
            b = offset(node.end_lineno, node.end_col_offset)
            if 2 <= b - a <= max_chars:
                spans.append((a, b))
    return spans


def pick_middle(text: str, spans: Sequence[Sequence[int]],
                rng: random.Random, kind: str | None = None) -> tuple[int, int]:
    """A middle [start, end) of one of the kinds an editor asks for (`kind`, or drawn by
    the weights of MIDDLE_KINDS)."""
    if kind is None:
        kind = rng.choices([k for k, _ in MIDDLE_KINDS], [w for _, w in MIDDLE_KINDS])[0]
    if kind == "node" and len(spans):
        a, b = spans[rng.randrange(len(spans))]
        return int(a), int(b)
    line_starts = [0] + [m.end() for m in re.finditer("\n", text) if m.end() < len(text)]
    i = rng.randrange(len(line_starts))
    start = line_starts[i]
    end_of = text.find("\n", start)
    end_of = len(text) if end_of < 0 else end_of
    if kind == "lines":  # whole lines with their newline, as a block completion writes them
        k = min(len(line_starts) - i, 1 + int(rng.expovariate(0.5)))
        stop = line_starts[i + k] if i + k < len(line_starts) else len(text)
        return start, stop
    if kind == "random_span":
        a = rng.randrange(len(text))
        return a, min(len(text), a + 1 + int(rng.expovariate(1 / 60)))
    # rest of a line from a cursor inside it (at its indentation or later); sometimes only
    # part of it, as when the cursor sits before a closing bracket
    indent = len(text[start:end_of]) - len(text[start:end_of].lstrip())
    cursor = rng.randint(start if rng.random() < 0.3 else start + indent, end_of)
    stop = end_of if rng.random() < 0.8 else rng.randint(cursor, end_of)
    return cursor, stop
