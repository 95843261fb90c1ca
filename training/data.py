"""Prepared training data: tokenizer, token stream, infilling middles, and batches.

``prepare`` turns a corpus directory (``training.corpus``) into a data directory with the
trained tokenizer, every train file tokenized into one uint16 stream (files separated by
``<eos>``), and the syntax-node spans (from ``ast``) that infilling middles are drawn from.
``Batcher`` draws rows for either objective from it.

    python -m training.data --corpus runs/corpus --out runs/data
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from training.corpus import read_split
from training.objective import (
    IGNORE,
    Row,
    Specials,
    ar_fim_row,
    ar_row,
    choose_slots,
    diffusion_row,
    fit_context,
    infill_row,
)
from training.tokenizer import train_tokenizer

MAX_MIDDLE_TOKENS = 95  # the server's block budget is 96 slots (one left for <eos>)
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


def pick_middle(text: str, spans: list[tuple[int, int]], rng: random.Random) -> tuple[int, int]:
    """A middle [start, end) of one of the kinds an editor asks for."""
    kind = rng.choices([k for k, _ in MIDDLE_KINDS], [w for _, w in MIDDLE_KINDS])[0]
    if kind == "node" and spans:
        return spans[rng.randrange(len(spans))]
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


@dataclass
class Prepared:
    tokenizer: Tokenizer
    texts: list[str]
    tokens: np.ndarray  # all train files, <eos> after each
    spans: list[list[tuple[int, int]]]

    @property
    def specials(self) -> Specials:
        t = self.tokenizer.token_to_id
        return Specials(t("<mask>"), t("<pad>"), t("<eos>"), t("<expand>"), t("<fim_prefix>"),
                        t("<fim_suffix>"), t("<fim_middle>"))


def prepare(corpus: Path, out: Path, vocab_size: int = 8192,
            tokenizer_bytes: int = 30_000_000) -> None:
    """Train the tokenizer and write ``tokenizer.json``, ``tokens.npy``, ``spans.json``."""
    rows = read_split(corpus, "train")
    texts = [r["text"] for r in rows]
    rng = random.Random(0)
    sample, size = [], 0
    for text in rng.sample(texts, len(texts)):
        if size > tokenizer_bytes:
            break
        sample.append(text)
        size += len(text)
    tok = train_tokenizer(sample, vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    eos = tok.token_to_id("<eos>")
    stream: list[np.ndarray] = []
    for i in tqdm(range(0, len(texts), 256), desc="tokenize"):
        for enc in tok.encode_batch(texts[i:i + 256], add_special_tokens=False):
            stream.append(np.asarray(enc.ids + [eos], dtype=np.uint16))
    np.save(out / "tokens.npy", np.concatenate(stream))
    spans = [node_spans(t) for t in tqdm(texts, desc="ast spans")]
    (out / "spans.json").write_text(json.dumps(spans))
    (out / "corpus.json").write_text(json.dumps({"corpus": str(corpus), "files": len(texts)}))


def load_prepared(data: Path, corpus: Path, split: str = "train") -> Prepared:
    """The prepared train split, or another split tokenized on the fly (it is small)."""
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    tok.encode_special_tokens = True
    texts = [r["text"] for r in read_split(corpus, split)]
    if split == "train":
        spans = [[tuple(s) for s in f] for f in json.loads((data / "spans.json").read_text())]
        return Prepared(tok, texts, np.load(data / "tokens.npy", mmap_mode="r"), spans)
    eos = tok.token_to_id("<eos>")
    ids = [i for enc in tok.encode_batch(texts, add_special_tokens=False) for i in enc.ids + [eos]]
    return Prepared(tok, texts, np.asarray(ids, dtype=np.uint16), [node_spans(t) for t in texts])


class Batcher:
    """Draws training rows for ``objective`` "diffusion" (with ``mechanism``) or "ar"."""

    def __init__(self, data: Prepared, objective: str, mechanism: str = "eos",
                 seq_len: int = 576, infill_rate: float = 0.5, seed: int = 0):
        self.data, self.objective, self.mechanism = data, objective, mechanism
        self.seq_len, self.infill_rate = seq_len, infill_rate
        self.sp = data.specials
        self.rng = random.Random(seed)
        lengths = np.array([len(t) for t in data.texts], dtype=np.float64)
        self.weights = (lengths / lengths.sum()).tolist()

    def encode(self, text: str) -> list[int]:
        return self.data.tokenizer.encode(text, add_special_tokens=False).ids

    def _window(self, n: int) -> list[int]:
        start = self.rng.randrange(len(self.data.tokens) - n)
        return self.data.tokens[start:start + n].astype(np.int64).tolist()

    def _fim_parts(self) -> tuple[list[int], list[int], list[int]]:
        rng = self.rng
        for _ in range(20):
            f = rng.choices(range(len(self.data.texts)), self.weights)[0]
            text = self.data.texts[f]
            a, b = pick_middle(text, self.data.spans[f], rng)
            middle = self.encode(text[a:b])
            if 1 <= len(middle) <= MAX_MIDDLE_TOKENS:
                chars = 8 * self.seq_len
                prefix = self.encode(text[max(0, a - chars):a])
                suffix = self.encode(text[b:b + chars])
                if a > chars:  # the cut at `a - chars` may split a token: drop the first
                    prefix = prefix[1:]
                return prefix, middle, suffix
        raise RuntimeError("no middle found in 20 tries")

    def row(self) -> Row:
        T, sp, rng = self.seq_len, self.sp, self.rng
        infill = rng.random() < self.infill_rate
        if self.objective == "ar":
            if not infill:
                return ar_row(self._window(T + 1))
            prefix, middle, suffix = self._fim_parts()
            prefix, suffix = fit_context(prefix, suffix, T + 1 - len(middle) - 5, rng)
            return ar_fim_row(prefix, middle, suffix, sp)
        if not infill:
            return diffusion_row(self._window(T), sp, rng)
        prefix, middle, suffix = self._fim_parts()
        slots = choose_slots(len(middle), self.mechanism, rng)
        prefix, suffix = fit_context(prefix, suffix, T - slots, rng)
        return infill_row(prefix, middle, suffix, slots, self.mechanism, sp, rng)

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """`size` rows padded to the longest: ids, targets, weights, key_mask, scored."""
        rows = [self.row() for _ in range(size)]
        n = max(len(r.ids) for r in rows)
        ids = torch.full((size, n), self.sp.pad, dtype=torch.long)
        targets = torch.full((size, n), IGNORE, dtype=torch.long)
        weights = torch.zeros((size, n))
        key_mask = torch.zeros((size, n), dtype=torch.bool)
        for i, r in enumerate(rows):
            k = len(r.ids)
            ids[i, :k] = torch.tensor(r.ids)
            targets[i, :k] = torch.tensor(r.targets)
            weights[i, :k] = torch.tensor(r.weights)
            key_mask[i, :k] = True
        scored = torch.tensor([r.scored for r in rows], dtype=torch.float32)
        return {"ids": ids, "targets": targets, "weights": weights, "key_mask": key_mask,
                "scored": scored}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="tokenize the corpus for training")
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/data"))
    ap.add_argument("--vocab-size", type=int, default=8192)
    args = ap.parse_args(argv)
    prepare(args.corpus, args.out, args.vocab_size)


if __name__ == "__main__":
    main()
