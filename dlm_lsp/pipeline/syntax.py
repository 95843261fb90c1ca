"""Tree-sitter decisions made before and after the model runs.

Before: which language, single-line or block mode, where the holes are. After: does a
candidate keep the code parsing. Parsing is done on a window of lines around the edit so a
huge file costs no more than a small one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from tree_sitter import Node, Parser, Tree

HOLE_MARKER = "<HOLE>"  # documented marker: fill-holes replaces it with code


@dataclass(frozen=True)
class Lang:
    ts: str  # grammar name in tree-sitter-language-pack
    comment: str  # line comment prefix
    openers: tuple[str, ...]  # token types that open an indented block at a line end


_BRACE = ("{",)
LANGUAGES: dict[str, Lang] = {
    "python": Lang("python", "#", (":",)),
    "javascript": Lang("javascript", "//", _BRACE),
    "javascriptreact": Lang("javascript", "//", _BRACE),
    "typescript": Lang("typescript", "//", _BRACE),
    "typescriptreact": Lang("tsx", "//", _BRACE),
    "rust": Lang("rust", "//", _BRACE),
    "go": Lang("go", "//", _BRACE),
    "c": Lang("c", "//", _BRACE),
    "cpp": Lang("cpp", "//", _BRACE),
    "csharp": Lang("csharp", "//", _BRACE),
    "java": Lang("java", "//", _BRACE),
    "kotlin": Lang("kotlin", "//", _BRACE),
    "scala": Lang("scala", "//", _BRACE),
    "swift": Lang("swift", "//", _BRACE),
    "php": Lang("php", "//", _BRACE),
    "dart": Lang("dart", "//", _BRACE),
    "zig": Lang("zig", "//", _BRACE),
    "lua": Lang("lua", "--", ("do", "then", "(", "{")),
    "ruby": Lang("ruby", "#", ("do", "|", "{")),
    "shellscript": Lang("bash", "#", ("then", "do", "{")),
    "elixir": Lang("elixir", "#", ("do", "->")),
    "julia": Lang("julia", "#", ()),
    "r": Lang("r", "#", _BRACE),
    "perl": Lang("perl", "#", _BRACE),
    "haskell": Lang("haskell", "--", ("where", "do", "=")),
    "ocaml": Lang("ocaml", "//", ()),
    "sql": Lang("sql", "--", ()),
    "yaml": Lang("yaml", "#", (":",)),
    "toml": Lang("toml", "#", ()),
    "json": Lang("json", "//", _BRACE),
    "css": Lang("css", "//", _BRACE),
    "html": Lang("html", "//", ()),
}

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "javascriptreact", ".ts": "typescript",
    ".tsx": "typescriptreact", ".rs": "rust", ".go": "go", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".cs": "csharp",
    ".java": "java", ".kt": "kotlin", ".scala": "scala", ".swift": "swift", ".php": "php",
    ".dart": "dart", ".zig": "zig", ".lua": "lua", ".rb": "ruby", ".sh": "shellscript",
    ".bash": "shellscript", ".ex": "elixir", ".exs": "elixir", ".jl": "julia", ".r": "r",
    ".R": "r", ".pl": "perl", ".hs": "haskell", ".ml": "ocaml", ".sql": "sql", ".yaml": "yaml",
    ".yml": "yaml", ".toml": "toml", ".json": "json", ".css": "css", ".html": "html",
}
ALIASES = {"py": "python", "js": "javascript", "ts": "typescript", "sh": "shellscript",
           "bash": "shellscript", "c++": "cpp", "rs": "rust", "golang": "go"}

# In Python a ':' also ends dict keys, slices and lambdas: those do not open a block, and
# in broken code tree-sitter cannot tell, so the line must also start a compound statement.
_NOT_BLOCK_PARENTS = {"pair", "dictionary", "slice", "lambda", "subscript", "typed_parameter"}
_PY_COMPOUND = re.compile(
    r"\s*(async\s+)?(def|class|if|elif|else|for|while|with|try|except|finally|match|case)\b")


def detect_language(language_id: str | None, uri: str = "") -> str | None:
    """Our language key from the client's languageId, falling back to the file extension."""
    if language_id:
        key = ALIASES.get(language_id.lower(), language_id.lower())
        if key in LANGUAGES:
            return key
    suffix = PurePosixPath(unquote(urlparse(uri).path)).suffix
    return EXTENSIONS.get(suffix) or EXTENSIONS.get(suffix.lower())


def comment_prefix(language: str | None) -> str:
    return LANGUAGES[language].comment if language in LANGUAGES else "#"


@cache
def _parser(ts_name: str) -> Parser | None:
    try:
        from tree_sitter_language_pack import get_parser

        return get_parser(ts_name)  # type: ignore[arg-type]
    except (LookupError, ImportError, ValueError):
        return None


def parse(language: str | None, text: str) -> Tree | None:
    """A tree-sitter tree of `text`, or None when the language has no grammar."""
    if language not in LANGUAGES:
        return None
    parser = _parser(LANGUAGES[language].ts)
    return parser.parse(text.encode("utf-8", "surrogatepass")) if parser else None


def _errors(node: Node) -> list[Node]:
    """ERROR and MISSING nodes under `node` (only descending where errors are)."""
    out: list[Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.is_error or n.is_missing:
            out.append(n)
            continue
        if n.has_error:
            stack.extend(n.children)
    return out


def error_count(language: str | None, text: str, inserted: tuple[int, int] | None = None) -> int:
    """How many syntax errors tree-sitter finds; 0 for languages without a grammar.

    Errors touching the character range `inserted` (an empty range: the cursor) count twice:
    a candidate that leaves a broken token where the cursor was (``total += "``) must lose to
    the unfinished line it came to fix, although both have one error.
    """
    tree = parse(language, text)
    if tree is None:
        return 0
    errs = _errors(tree.root_node)
    if inserted is None:
        return len(errs)
    lo = len(text[: inserted[0]].encode("utf-8", "surrogatepass"))
    hi = lo + len(text[inserted[0]:inserted[1]].encode("utf-8", "surrogatepass"))
    return len(errs) + sum(1 for e in errs if e.start_byte <= hi and e.end_byte >= lo)


def error_extent(language: str | None, text: str) -> int:
    """Bytes covered by syntax errors: tree-sitter may fold a new error into one that was
    there (the count stays), but the broken region then grows."""
    tree = parse(language, text)
    return 0 if tree is None else sum(e.end_byte - e.start_byte for e in _errors(tree.root_node))


def parses_no_worse(language: str | None, before: str, after: str) -> bool:
    """True when `after` has no more syntax errors than `before`."""
    if language not in LANGUAGES:
        return True
    return error_count(language, after) <= error_count(language, before)


def line_window(
    text: str, start: int, end: int, before: int = 300, after: int = 100
) -> tuple[int, int]:
    """Offsets of whole lines around [start, end): `before` lines above, `after` below."""
    lo = text.rfind("\n", 0, start) + 1
    for _ in range(before):
        if lo == 0:
            break
        lo = text.rfind("\n", 0, lo - 1) + 1
    hi = text.find("\n", end)
    hi = len(text) if hi < 0 else hi + 1
    for _ in range(after):
        if hi >= len(text):
            break
        j = text.find("\n", hi)
        hi = len(text) if j < 0 else j + 1
    return lo, hi


@dataclass
class SpanPlan:
    """What the model is asked to write at the cursor."""

    mode: str  # "line": up to the end of the line; "block": an indented body of lines
    indent: str  # indentation of the lines a block completion writes
    line_prefix: str  # text on the cursor's line before the cursor
    line_suffix: str  # text on the cursor's line after the cursor

    @property
    def blank_line(self) -> bool:
        """The cursor's line holds only whitespace: an answer there has to write code."""
        return not (self.line_prefix + self.line_suffix).strip()


def indent_unit(text: str) -> str:
    """The file's indentation step: a tab, or the smallest space indent seen (default 4)."""
    sizes = []
    for m in re.finditer(r"^([ \t]+)\S", text[:200_000], re.M):
        ws = m.group(1)
        if "\t" in ws:
            return "\t"
        sizes.append(len(ws))
    return " " * (min(sizes) if sizes else 4)


def plan_span(text: str, offset: int, language: str | None) -> SpanPlan:
    """Single-line mode mid-line; block mode on an empty line after a block opener."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    before = text[line_start:offset]
    after = text[offset:line_end].rstrip("\r")
    if before.strip() or after.strip():
        return SpanPlan("line", "", before, after)
    opener_line = _opener_line(text, line_start, language)
    if opener_line is None:
        return SpanPlan("line", "", before, after)
    base = re.match(r"[ \t]*", opener_line).group(0)  # type: ignore[union-attr]
    return SpanPlan("block", base + indent_unit(text), before, after)


def _opener_line(text: str, line_start: int, language: str | None) -> str | None:
    """The previous non-blank line if it ends with a token that opens a block."""
    end = line_start - 1
    while end > 0:
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end].rstrip("\r")
        if line.strip():
            break
        end = start - 1
    else:
        return None
    stripped = line.rstrip()
    if not stripped or language not in LANGUAGES:
        return None
    lang = LANGUAGES[language]
    if not any(stripped.endswith(tok) for tok in lang.openers):
        return None
    # Ask tree-sitter what the last token is (not inside a string or comment).
    lo, _ = line_window(text, start, start, before=200, after=0)
    window = text[lo:start] + stripped
    tree = parse(language, window)
    if tree is None:
        return line
    b = len(window.encode("utf-8", "surrogatepass")) - 1
    leaf = tree.root_node.descendant_for_byte_range(b, b + 1)
    if leaf is None or leaf.type not in lang.openers:
        return None
    if leaf.parent is not None and leaf.parent.type in _NOT_BLOCK_PARENTS:
        return None
    if language == "python" and not _PY_COMPOUND.match(line):
        return None
    return line


@dataclass
class Hole:
    """A span of the document that fill-holes replaces with generated code."""

    start: int
    end: int
    kind: str  # "ellipsis" | "todo" | "marker"
    indent: str  # indentation of the line the hole is on


def _line_indent(text: str, offset: int) -> str:
    ls = text.rfind("\n", 0, offset) + 1
    return re.match(r"[ \t]*", text[ls:]).group(0)  # type: ignore[union-attr]


def find_holes(
    text: str, language: str | None, start: int = 0, end: int | None = None
) -> list[Hole]:
    """Holes in [start, end): `...` bodies (Python), TODO-only lines, and the hole marker."""
    end = len(text) if end is None else end
    holes: list[Hole] = []
    for m in re.finditer(re.escape(HOLE_MARKER), text[start:end]):
        s = start + m.start()
        holes.append(Hole(s, s + len(HOLE_MARKER), "marker", _line_indent(text, s)))
    prefix = re.escape(comment_prefix(language))
    todo = re.compile(rf"^([ \t]*)(?:{prefix}|//|#|--)[ \t]*TODO\b[^\r\n]*", re.M)
    for m in todo.finditer(text, start, end):
        holes.append(Hole(m.start() + len(m.group(1)), m.end(), "todo", m.group(1)))
    if language == "python":
        holes += _ellipsis_bodies(text, start, end)
    holes.sort(key=lambda h: h.start)
    merged: list[Hole] = []
    for h in holes:  # a marker inside a TODO line is one hole
        if merged and h.start < merged[-1].end:
            continue
        merged.append(h)
    return merged


def _chars(data: bytes, byte: int) -> int:
    """Characters in the first `byte` bytes of utf-8 `data` (tree-sitter counts bytes)."""
    return len(data[:byte].decode("utf-8", "surrogatepass"))


def _ellipsis_bodies(text: str, start: int, end: int) -> list[Hole]:
    lo, hi = line_window(text, start, end, before=200, after=20)
    window = text[lo:hi]
    tree = parse("python", window)
    if tree is None:
        return []
    data = window.encode("utf-8", "surrogatepass")
    out = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ellipsis":
            parent = node.parent
            stmt = parent if parent and parent.type == "expression_statement" else node
            if stmt.parent is not None and stmt.parent.type == "block":
                s = lo + _chars(data, node.start_byte)
                e = lo + _chars(data, node.end_byte)
                if start <= s and e <= end:
                    out.append(Hole(s, e, "ellipsis", _line_indent(text, s)))
            continue
        stack.extend(node.children)
    return out


def error_regions(
    text: str, language: str | None, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """Whole-line spans (offsets) around tree-sitter ERROR/MISSING nodes touching [start, end)."""
    end = len(text) if end is None else end
    lo, hi = line_window(text, start, end, before=100, after=50)
    window = text[lo:hi]
    tree = parse(language, window)
    if tree is None:
        return []
    data = window.encode("utf-8", "surrogatepass")
    regions = []
    for node in _errors(tree.root_node):
        s = lo + _chars(data, node.start_byte)
        e = lo + _chars(data, node.end_byte)
        if e < start or s > end:
            continue
        ls = text.rfind("\n", 0, s) + 1
        ls += len(_line_indent(text, ls))
        le = text.find("\n", max(e - 1, s))
        le = len(text) if le < 0 else le
        regions.append((ls, le))
    regions.sort()
    merged: list[tuple[int, int]] = []
    for s, e in regions:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
