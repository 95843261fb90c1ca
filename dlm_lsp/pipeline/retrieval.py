"""The workspace index: the project's code in chunks, and the chunks a completion should see.

A small model cannot know a project's names; it can copy them when they are in its context.
Every file of the workspace (``workspace.py`` decides which) is cut into chunks:

- **windows** of ``WINDOW_LINES`` lines every ``WINDOW_LINES // 2`` lines, scored against the
  lines around the cursor with BM25 over identifiers (as RepoCoder and llm-ls retrieve) and
  shown as their ``FOCUS_LINES`` lines around the line most like the cursor's (the code
  that a line is cut from is most often written the same way elsewhere: a small budget
  then holds several places instead of one window),
- **lines** of the best ``LINE_POOL`` windows that start as the cursor's line does before
  the cursor, one per distinct continuation, the most frequent first (where the rest of a
  line is written elsewhere, it is most often on such a line), and
- **definitions** (tree-sitter nodes that define a name: functions, classes, methods,
  types), their first ``DEF_LINES`` lines, looked up by name for the names used near the
  cursor, first those the file imports from a module of the workspace.

:meth:`WorkspaceIndex.select` returns snippets within a token budget, most relevant last
(nearest the code). The index is updated file by file (a save, a watched-file event, an
open buffer's edit) and is safe to read from one thread while another writes. Postings of
the bulk live in numpy arrays (merged from a small dynamic part now and then), so a query
over a 5,000-file workspace costs milliseconds. The merge is the one long piece of work; a
bulk load runs it in batches of terms with a ``pause`` between them, so the thread that reads
a workspace can let the model thread have the interpreter.
"""

from __future__ import annotations

import math
import re
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from dlm_lsp.pipeline.syntax import comment_prefix, detect_language, parse

Encode = Callable[[str], list[int]]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")
WINDOW_LINES = 20
DEF_LINES = 12
QUERY_LINES_BEFORE, QUERY_LINES_AFTER = 15, 5
NAME_LINES = 4  # lines before the cursor whose names are looked up as definitions
FOCUS_LINES = 4  # a window is shown as this many lines around its line most like the cursor's
LINE_POOL = 64  # windows searched for lines that start as the cursor's line does
LINE_MATCHES = 4  # such lines shown, one per distinct continuation, the most frequent first
K1, B = 1.2, 0.75
COMMON_SHARE = 0.2  # a term in more chunks than this share says nothing about any of them
RECENT_POSTINGS = 50_000  # dynamic postings merged into the arrays past this (or a quarter
MERGE_BATCH = 2_000  # of the arrays' size: each posting is copied a few times, not once a merge)
DEF_NODE = re.compile(r"(function|method|class|struct|enum|interface|trait|impl|type|module)"
                      r"_(definition|declaration|item|spec)$")
_PY_IMPORT = re.compile(r"^\s*from\s+(\.*[\w.]*)\s+import\s+\(?([^)#\n]+)|^\s*import\s+([\w.]+)"
                        r"(?:\s+as\s+(\w+))?", re.M)
_ATTRIBUTE = re.compile(r"\b(?=([A-Za-z_]\w*)\.(\w+))")  # every `name.attr`, `a.b.c` twice


@dataclass
class _File:
    path: str  # as given (absolute, posix)
    name: str  # shown in a snippet's header: relative to its root
    language: str | None
    text: str
    chunks: list[int]  # ids of its chunks
    module: str = ""  # dotted Python module name relative to its root


@dataclass(frozen=True)
class Snippet:
    """A chunk chosen for a completion's context."""

    path: str
    name: str  # the file's name relative to its root
    text: str
    kind: str  # "line", "window" or "definition"
    score: float
    start: int = 0  # where `text` lies in the file
    end: int = 0

    def render(self, comment: str) -> str:
        return f"{comment} Path: {self.name}\n{self.text.rstrip()}\n\n"


def identifiers(text: str) -> list[str]:
    return _IDENT.findall(text)


def definitions(text: str, language: str | None) -> list[tuple[str, int, int]]:
    """(name, start, end) character spans of what `text` defines, from tree-sitter where
    the language has a grammar, else from `def`/`class`/`function` lines."""
    tree = parse(language, text) if language else None
    out: list[tuple[str, int, int]] = []
    if tree is not None:
        data = text.encode("utf-8", "surrogatepass")
        char_at = _char_offsets(text, data)
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            if DEF_NODE.search(node.type):
                name_node = node.child_by_field_name("name")
                if name_node is not None:
                    out.append((data[name_node.start_byte:name_node.end_byte].decode(
                        errors="replace"), char_at(node.start_byte), char_at(node.end_byte)))
            stack.extend(reversed(node.children))
        return out
    for m in re.finditer(r"^[ \t]*(?:async\s+)?(?:def|class|function|func|fn)\s+(\w+)", text,
                         re.M):
        end = text.find("\n\n", m.end())
        out.append((m.group(1), m.start(), len(text) if end < 0 else end))
    return out


def _char_offsets(text: str, data: bytes) -> Callable[[int], int]:
    """Byte offset -> character offset in `text` (whose UTF-8 is `data`)."""
    if len(data) == len(text):  # ASCII: bytes are characters
        return lambda b: b
    starts = np.cumsum([0] + [len(ch.encode("utf-8", "surrogatepass")) for ch in text])
    return lambda b: int(np.searchsorted(starts, b, side="left"))


def _head(text: str, start: int, end: int, lines: int) -> int:
    """The end of the first `lines` lines of text[start:end]."""
    pos = start
    for _ in range(lines):
        nl = text.find("\n", pos, end)
        if nl < 0:
            return end
        pos = nl + 1
    return pos


def focus_span(text: str, start: int, end: int, line: str, names: set[str]) -> tuple[int, int]:
    """The `FOCUS_LINES` lines of text[start:end] around its line most like the cursor's:
    the one holding `line` (the code before the cursor on its line), else the one sharing
    most `names` (the identifiers of the cursor's line and the one above). A small budget
    holds several of these where it held one whole window (the deleted rest of a line was
    in the snippets 2.6 times as often at a 128-token budget)."""
    starts = [start] + [start + m.end() for m in re.finditer("\n", text[start:end])
                        if start + m.end() < end]
    if len(starts) <= FOCUS_LINES:
        return start, end

    def score(i: int) -> int:
        row = text[starts[i]:starts[i + 1] if i + 1 < len(starts) else end]
        return 3 * (len(line) >= 3 and line in row) + len(names.intersection(identifiers(row)))
    best = max(range(len(starts)), key=score)
    first = min(max(0, best - (FOCUS_LINES - 2)), len(starts) - FOCUS_LINES)
    last = first + FOCUS_LINES
    return starts[first], starts[last] if last < len(starts) else end


def module_names(rel: str) -> list[str]:
    """Dotted names a Python file may be imported as (``src/pkg/mod.py``: src.pkg.mod,
    pkg.mod, mod); a package's ``__init__.py`` is the package."""
    p = PurePosixPath(rel)
    if p.suffix not in (".py", ".pyi"):
        return []
    parts = list(p.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]


def _weights(tf: np.ndarray, dl: np.ndarray, avgdl: float) -> np.ndarray:
    """BM25's term-frequency part for postings of chunks `dl` terms long."""
    return (tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))).astype(np.float32)


class WorkspaceIndex:
    """Chunks of the workspace's files with BM25 postings and a definitions table."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self.files: dict[str, _File] = {}
        self._chunk_file = array("i")  # chunk id -> file slot
        self._chunk_span: list[tuple[int, int]] = []
        self._chunk_name: list[str] = []
        self._dl = array("f")  # terms per chunk
        self._alive = bytearray()
        self._slot_path: list[str | None] = []  # file slot -> path (None: removed)
        self._slot_of: dict[str, int] = {}
        # term -> chunk ids, BM25 term weights (tf part, with the mean chunk length of when
        # they were merged: it moves little once a workspace is read)
        self._frozen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._frozen_size = 0
        self._recent: dict[str, tuple[array, array]] = {}  # term -> chunk ids, term counts
        self._recent_size = 0
        self._dead_defs = 0  # chunks dropped since the definitions table was pruned
        self._defs: dict[str, list[int]] = {}
        self._modules: dict[str, list[str]] = {}  # dotted name -> paths
        self._alive_count = 0
        self._total_len = 0.0
        self.text_bytes = 0

    # -- building -------------------------------------------------------------------------
    def update(self, path: str, text: str, name: str | None = None,
               language: str | None = None, merge: bool = True) -> None:
        """(Re)index one file; `name` is what a snippet shows (default: the path). With
        `merge` false the postings wait for :meth:`compact` (a bulk load calls it itself)."""
        language = language or detect_language(None, "file://" + path)
        spans = self._chunk(text, language)
        with self._lock:
            self._drop(path)
            slot = self._slot_of.get(path)
            if slot is None:
                slot = len(self._slot_path)
                self._slot_path.append(path)
                self._slot_of[path] = slot
            self._slot_path[slot] = path
            shown = name or path
            f = _File(path, shown, language, text, [],
                      (module_names(shown) or [""])[0])
            for kind_name, start, end in spans:
                f.chunks.append(self._add_chunk(slot, text, start, end, kind_name))
            self.files[path] = f
            for mod in module_names(shown):
                self._modules.setdefault(mod, []).append(path)
            self.text_bytes += len(text)
            dead = len(self._chunk_span) - self._alive_count
            if dead > max(20_000, 2 * self._alive_count):
                self._rebuild()
            elif merge and self.wants_compaction():
                self.compact()  # under the lock held here: its batches run back to back

    def remove(self, path: str) -> None:
        with self._lock:
            self._drop(path)

    def _drop(self, path: str) -> None:
        old = self.files.pop(path, None)
        if old is None:
            return
        for cid in old.chunks:
            if self._alive[cid]:
                self._alive[cid] = 0
                self._alive_count -= 1
                self._total_len -= self._dl[cid]
                self._dead_defs += bool(self._chunk_name[cid])
        for mod in module_names(old.name):
            paths = self._modules.get(mod, [])
            if path in paths:
                paths.remove(path)
        self.text_bytes -= len(old.text)

    def _chunk(self, text: str, language: str | None) -> list[tuple[str, int, int]]:
        """(defined name or "", start, end) of every chunk of a file."""
        out = []
        for name, start, end in definitions(text, language):
            out.append((name, start, _head(text, start, end, DEF_LINES)))
        starts = [0] + [m.end() for m in re.finditer("\n", text) if m.end() < len(text)]
        step = WINDOW_LINES // 2
        for i in range(0, max(len(starts) - step, 1), step):
            a = starts[i]
            b = starts[i + WINDOW_LINES] if i + WINDOW_LINES < len(starts) else len(text)
            if text[a:b].strip():
                out.append(("", a, b))
        return out

    def _add_chunk(self, slot: int, text: str, start: int, end: int, name: str) -> int:
        cid = len(self._chunk_span)
        terms = Counter(identifiers(text[start:end]))
        self._chunk_file.append(slot)
        self._chunk_span.append((start, end))
        self._chunk_name.append(name)
        n = float(sum(terms.values()))
        self._dl.append(n)
        self._alive.append(1)
        self._alive_count += 1
        self._total_len += n
        for term, tf in terms.items():
            posting = self._recent.get(term)
            if posting is None:
                posting = self._recent[term] = (array("i"), array("f"))
            posting[0].append(cid)
            posting[1].append(tf)
        self._recent_size += len(terms)
        if name:
            self._defs.setdefault(name, []).append(cid)
        return cid

    def wants_compaction(self) -> bool:
        """Whether enough postings wait outside the arrays to merge them."""
        return self._recent_size > max(RECENT_POSTINGS, self._frozen_size // 4)

    def _merge(self, terms: Iterable[str]) -> None:
        """Move the dynamic postings of `terms` into the numpy arrays (dead chunks dropped);
        a term is whole in one part or the other whenever the lock is free."""
        alive = np.frombuffer(bytes(self._alive), dtype=np.uint8).astype(bool)
        dl = np.frombuffer(self._dl, dtype=np.float32, count=len(self._chunk_span))
        avgdl = max(self._total_len / max(self._alive_count, 1), 1.0)
        for term in terms:
            posting = self._recent.pop(term, None)
            if posting is None:
                continue
            ids = np.array(posting[0], dtype=np.int32)
            tfs = _weights(np.array(posting[1], dtype=np.float32), dl[ids], avgdl)
            self._recent_size -= len(ids)
            old = self._frozen.get(term)
            if old is not None:
                keep = alive[old[0]]
                self._frozen_size -= len(old[0])
                ids = np.concatenate([old[0][keep], ids])
                tfs = np.concatenate([old[1][keep], tfs])
            self._frozen[term] = (ids, tfs)
            self._frozen_size += len(ids)

    def _prune_defs(self) -> None:
        if not self._dead_defs:
            return
        for name, ids in list(self._defs.items()):
            live = [c for c in ids if self._alive[c]]
            if live:
                self._defs[name] = live
            else:
                del self._defs[name]
        self._dead_defs = 0

    def _rebuild(self) -> None:
        """Index the live files again from their chunks: after many updates most chunk
        ids are dead, and their rows only cost memory."""
        live = [(f, [(self._chunk_name[c], *self._chunk_span[c]) for c in f.chunks])
                for f in self.files.values()]
        self._reset()
        for f, spans in live:
            slot = len(self._slot_path)
            self._slot_path.append(f.path)
            self._slot_of[f.path] = slot
            f.chunks = [self._add_chunk(slot, f.text, a, b, name) for name, a, b in spans]
            self.files[f.path] = f
            for mod in module_names(f.name):
                self._modules.setdefault(mod, []).append(f.path)
            self.text_bytes += len(f.text)
        self._merge(list(self._recent))

    def compact(self, pause: Callable[[], None] | None = None) -> None:
        """Merge what was added since the last merge (after a bulk load), `MERGE_BATCH`
        terms at a time; `pause` runs between batches with the lock free (readers and
        other threads go on)."""
        with self._lock:
            terms = list(self._recent)
        for i in range(0, len(terms), MERGE_BATCH):
            with self._lock:
                self._merge(terms[i:i + MERGE_BATCH])
            if pause is not None:
                pause()
        with self._lock:
            self._prune_defs()

    # -- reading --------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Files, live chunks and an estimate of the index's memory (bytes)."""
        with self._lock:
            arrays = sum(a.nbytes + b.nbytes for a, b in self._frozen.values())
            recent = 8 * self._recent_size
            per_chunk = len(self._chunk_span) * (4 + 4 + 1 + 72)  # file, dl, alive, span+name
            terms = 120 * (len(self._frozen) + len(self._recent))
            return {"files": len(self.files), "chunks": self._alive_count,
                    "bytes": self.text_bytes + arrays + recent + per_chunk + terms}

    def select(self, prefix: str, suffix: str, encode: Encode, budget: int,
               exclude: str | None = None, language: str | None = None,
               file_text: str | None = None, limit: int = 8) -> list[Snippet]:
        """Snippets for a cursor between `prefix` and `suffix` (of the file `exclude`,
        whose full text is `file_text`), at most `budget` tokens, most relevant last.
        Lines that start as the cursor's line come first, then the windows most like the
        code around it, then definitions of the names used just before the cursor; chunks
        of `exclude` are never chosen."""
        if budget <= 0:
            return []
        with self._lock:
            if not self._alive_count:
                return []
            skip_slot = self._slot_of.get(exclude) if exclude else None
            imported = self._imports(file_text or prefix, exclude) if file_text or prefix else {}
            before = prefix.splitlines(keepends=True)
            query = "".join(before[-QUERY_LINES_BEFORE:]) + "".join(
                suffix.splitlines(keepends=True)[:QUERY_LINES_AFTER])
            pool = self._bm25(identifiers(query), skip_slot, max(limit * 2, LINE_POOL),
                              boost=set(imported))
            head = prefix[prefix.rfind("\n") + 1:].lstrip()
            lines = self._line_matches(head, pool) if head.strip() else []
            windows = [(score, cid, "window", None) for score, cid in pool[:limit * 2]]
            defs = [(score, cid, "definition", None) for score, cid in
                    self._definitions_near(prefix, suffix, skip_slot, imported)]
            line = head.strip()
            names = set(identifiers("".join(before[-2:])))
            return self._fit(lines + windows + defs, encode, budget, limit, language,
                             lambda text, a, b: focus_span(text, a, b, line, names))

    def _line_matches(self, head: str, pool: list[tuple[float, int]]
                      ) -> list[tuple[float, int, str, tuple[int, int]]]:
        """Lines of the `pool` windows that start with `head` (the cursor's line before the
        cursor, without its indentation) and go on past it: one per distinct continuation,
        the continuations written most often first (then the best window's). The rest of a
        line is most often written verbatim where another line starts the same way."""
        votes: dict[str, list] = {}  # continuation -> [count, score, cid, span]
        seen: set[tuple[int, int]] = set()  # (file slot, line start): windows overlap
        for score, cid in pool:
            slot = self._chunk_file[cid]
            path = self._slot_path[slot]
            f = self.files.get(path) if path else None
            if f is None:
                continue
            text = f.text
            start, end = self._chunk_span[cid]
            i = text.find(head, start, end)
            while i >= 0:
                line_start = text.rfind("\n", 0, i) + 1
                if not text[line_start:i].strip() and (slot, line_start) not in seen:
                    seen.add((slot, line_start))
                    line_end = text.find("\n", i)
                    line_end = len(text) if line_end < 0 else line_end + 1
                    rest = text[i + len(head):line_end].rstrip()
                    if rest.strip():
                        v = votes.setdefault(rest, [0, score, cid, (line_start, line_end)])
                        v[0] += 1
                i = text.find(head, i + 1, end)
        ranked = sorted(votes.values(), key=lambda v: (-v[0], -v[1]))[:LINE_MATCHES]
        return [(score, cid, "line", span) for _, score, cid, span in ranked]

    def _imports(self, text: str, exclude: str | None) -> dict[int, set[str]]:
        """File slots of the workspace modules `text` imports, with the names it takes from
        each (an ``import m as x`` module: the names used as ``x.name``)."""
        out: dict[int, set[str]] = {}
        here = self.files.get(exclude) if exclude else None
        attributes: dict[str, set[str]] | None = None  # one pass over the text, when needed
        for m in _PY_IMPORT.finditer(text[:100_000]):
            module, names, plain, alias = m.group(1), m.group(2), m.group(3), m.group(4)
            if plain:
                module = plain
                local = alias or plain.split(".")[-1]
                if attributes is None:
                    attributes = {}
                    for a in _ATTRIBUTE.finditer(text):
                        attributes.setdefault(a.group(1), set()).add(a.group(2))
                wanted = set(attributes.get(local, ()))
            else:
                wanted = {n.split(" as ")[0].strip() for n in names.split(",")} - {"", "*"}
            if module.startswith(".") and here is not None:  # relative to this package
                dots = len(module) - len(module.lstrip("."))
                package = here.module.split(".") if here.module else []
                if PurePosixPath(here.name).stem != "__init__":
                    package = package[:-1]
                base = package[:len(package) - (dots - 1)]
                module = ".".join([*base, module.lstrip(".")]).strip(".")
            for path in self._modules.get(module, []):
                slot = self._slot_of.get(path)
                if slot is not None and path != exclude:
                    out.setdefault(slot, set()).update(wanted)
            for name in list(wanted):  # `from pkg import module`
                for path in self._modules.get(f"{module}.{name}", []):
                    slot = self._slot_of.get(path)
                    if slot is not None and path != exclude:
                        out.setdefault(slot, set())
        return out

    def _definitions_near(self, prefix: str, suffix: str, skip_slot: int | None,
                          imported: dict[int, set[str]]) -> list[tuple[float, int]]:
        """Definition chunks of the names just before the cursor (nearest first weighs
        most); a name the file imports from a workspace module resolves to that module."""
        lines = prefix.splitlines()[-NAME_LINES:] + suffix.splitlines()[:1]
        names: dict[str, float] = {}
        for distance, line in enumerate(reversed(lines)):
            for name in identifiers(line):
                names[name] = max(names.get(name, 0.0), 1.0 / (1 + distance))
        imported_names = {n for ns in imported.values() for n in ns}
        out = []
        for name, weight in names.items():
            ids = [c for c in self._defs.get(name, ()) if self._alive[c]
                   and self._chunk_file[c] != skip_slot]
            if not ids or len(ids) > 5:  # defined nowhere else, or everywhere (`__init__`)
                continue
            from_import = [c for c in ids if self._chunk_file[c] in imported]
            if from_import:
                ids = from_import
            bonus = 2.0 if name in imported_names else 1.0
            for c in ids[:2]:
                out.append((100.0 * weight * bonus / len(ids), c))
        out.sort(reverse=True)
        return out[:4]

    def _bm25(self, query: list[str], skip_slot: int | None, k: int,
              boost: set[int]) -> list[tuple[float, int]]:
        n_chunks = len(self._chunk_span)
        n = max(self._alive_count, 1)
        avgdl = max(self._total_len / n, 1.0)
        dl = np.frombuffer(self._dl, dtype=np.float32, count=n_chunks)
        scores = np.zeros(n_chunks, dtype=np.float32)
        for term in set(query):
            parts = [self._frozen.get(term)]
            recent = self._recent.get(term)
            if recent is not None:  # copies: a view would pin the arrays' buffers
                ids = np.array(recent[0], dtype=np.int32)
                parts.append((ids, _weights(np.array(recent[1], dtype=np.float32), dl[ids],
                                            avgdl)))
            parts = [p for p in parts if p is not None]
            # postings of chunks dropped since the last merge still count here: at most n,
            # or a term in every file of a small project gets a negative idf after a save
            df = min(sum(len(ids) for ids, _ in parts), n)
            if df == 0 or (n > 1000 and df > COMMON_SHARE * n):  # (its idf is ~0 anyway)
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for ids, weight in parts:
                scores[ids] += idf * weight
        if self._alive_count < n_chunks:  # chunks of files saved or removed since
            scores *= np.frombuffer(self._alive, dtype=np.uint8, count=n_chunks)
        for slot, factor in [(skip_slot, 0.0), *((b, 1.5) for b in boost)]:
            path = self._slot_path[slot] if slot is not None else None
            f = self.files.get(path) if path else None
            if f is not None and f.chunks:
                scores[f.chunks] *= factor
        k = min(k, n_chunks)
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        return [(float(scores[c]), int(c)) for c in top[np.argsort(-scores[top])]
                if scores[c] > 0]

    def _fit(self, chosen: Iterable[tuple[float, int, str, tuple[int, int] | None]],
             encode: Encode, budget: int,
             limit: int, language: str | None,
             focus: Callable[[str, int, int], tuple[int, int]]) -> list[Snippet]:
        comment = comment_prefix(language)
        taken: list[Snippet] = []
        spans: dict[int, list[tuple[int, int]]] = {}
        for score, cid, kind, span in chosen:
            if len(taken) >= limit:
                break
            slot = self._chunk_file[cid]
            path = self._slot_path[slot]
            f = self.files.get(path) if path else None
            if f is None:
                continue
            start, end = span or self._chunk_span[cid]
            if kind == "window":
                start, end = focus(f.text, start, end)
            if any(a < end and start < b for a, b in spans.get(slot, ())):
                continue  # overlaps a snippet already taken
            snippet = Snippet(f.path, f.name, f.text[start:end], kind, score, start, end)
            cost = len(encode(snippet.render(comment)))
            if cost > budget:
                continue
            budget -= cost
            taken.append(snippet)
            spans.setdefault(slot, []).append((start, end))
        return list(reversed(taken))  # the most relevant nearest the code
