"""Evaluation overlap: n-grams of code tokens shared between a corpus file and an eval set.

The evaluation sets are HumanEval (every problem's prompt, canonical solution and tests,
rebuilt from the HumanEval-infilling files in ``../shared/data``) and our own obvious-
completion set under ``bench/``. A corpus file that shares any run of ``n`` code tokens
(identifiers, numbers and single punctuation marks, whitespace ignored) with one of them is
dropped from the corpus. Hashes are 64-bit polynomial hashes computed with numpy.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.obvious import load_cases

ROOT = Path(__file__).resolve().parents[1]
HUMANEVAL_DIR = ROOT.parent / "shared" / "data" / "humaneval-infilling"
NGRAM = 24
_TOKEN = re.compile(r"\w+|[^\s\w]")
_BASE = np.uint64(0x100000001B3)


def code_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def evaluation_texts() -> dict[str, list[str]]:
    """Texts of every evaluation set found on disk, by set name."""
    sets: dict[str, list[str]] = {}
    single = HUMANEVAL_DIR / "HumanEval-SingleLineInfilling.jsonl.gz"
    if single.exists():
        problems: dict[str, str] = {}
        for path in sorted(HUMANEVAL_DIR.glob("*.jsonl.gz")):
            with gzip.open(path, "rt") as f:
                for line in f:
                    row = json.loads(line)
                    problem = row["task_id"].split("/")[2]
                    full = row["prompt"] + row["canonical_solution"] + row["suffix"] + row["test"]
                    problems.setdefault(problem, full)
        sets["humaneval"] = list(problems.values())
    sets["obvious"] = [c.prefix + c.middle + c.suffix for c in load_cases()]
    return sets


@dataclass
class ContaminationIndex:
    """The n-gram hashes of the evaluation sets, and which set and text each came from."""

    n: int = NGRAM
    names: list[str] = field(default_factory=list)
    hashes: dict[int, str] = field(default_factory=dict)  # hash -> "set:index"
    vocab: dict[str, int] = field(default_factory=dict)
    table: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted

    @classmethod
    def build(cls, sets: dict[str, list[str]], n: int = NGRAM) -> ContaminationIndex:
        index = cls(n=n, names=sorted(sets))
        for name, texts in sets.items():
            for i, text in enumerate(texts):
                for h in index._ngram_hashes(text, grow=True).tolist():
                    index.hashes.setdefault(h, f"{name}:{i}")
        index.table = np.array(sorted(index.hashes), dtype=np.uint64)
        return index

    def _ngram_hashes(self, text: str, grow: bool = False) -> np.ndarray:
        toks = code_tokens(text)
        if len(toks) < self.n:
            return np.zeros(0, dtype=np.uint64)
        if grow:
            ids = [self.vocab.setdefault(t, len(self.vocab) + 1) for t in toks]
        else:  # a token never seen in an eval set cannot be part of a shared n-gram: 0
            ids = [self.vocab.get(t, 0) for t in toks]
        arr = np.asarray(ids, dtype=np.uint64)
        windows = len(arr) - self.n + 1
        h = np.zeros(windows, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.n):
                h = h * _BASE + arr[j:j + windows]
        return h

    def matches(self, text: str) -> list[str]:
        """The eval texts ("set:index") sharing an n-gram with `text`; empty when clean."""
        h = self._ngram_hashes(text)
        if not len(h) or not len(self.table):
            return []
        pos = np.minimum(np.searchsorted(self.table, h), len(self.table) - 1)
        return sorted({self.hashes[int(x)] for x in h[self.table[pos] == h]})

    def matches_any(self, texts: Iterable[str]) -> int:
        """How many of `texts` share an n-gram with an eval set."""
        return sum(bool(self.matches(t)) for t in texts)
