"""Training rows drawn from prepared code: the batches of training and of ``dlm-lsp adapt``.

``Prepared`` holds a tokenizer, the source files, their token stream and syntax spans (and,
for the corpus, the project snippets of ``training.repo_context``); ``Batcher`` draws rows
for the diffusion or the AR objective from it (``objective.py`` lays each row out, and
``middles.py`` picks where its middle goes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer

from dlm_lsp.model.middles import pick_middle
from dlm_lsp.model.objective import (
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

MAX_MIDDLE_TOKENS = 95  # the server's block budget is 96 slots (one left for <eos>)
END_WEIGHT = 2.0  # loss weight of a middle's <eos> slot (see objective.infill_row)


@dataclass
class Prepared:
    tokenizer: Tokenizer
    texts: list[str]
    tokens: np.ndarray  # all train files, <eos> after each (a uint16 memmap for the train split)
    spans: list[np.ndarray]  # per file: (n, 2) character offsets of its syntax nodes
    paths: list[str] = field(default_factory=list)  # per file: "package/path/in/it.py"
    repo: dict[str, np.ndarray] | None = None  # repo_context.npz (training/repo_context.py)

    @property
    def specials(self) -> Specials:
        t = self.tokenizer.token_to_id
        return Specials(t("<mask>"), t("<pad>"), t("<eos>"), t("<expand>"), t("<fim_prefix>"),
                        t("<fim_suffix>"), t("<fim_middle>"))


class Batcher:
    """Draws training rows for ``objective`` "diffusion" (with ``mechanism``) or "ar"."""

    def __init__(self, data: Prepared, objective: str, mechanism: str = "eos",
                 seq_len: int = 576, infill_rate: float = 0.5, seed: int = 0,
                 fixed_length: bool = False, fim_order: str = "spm", repo_rate: float = 0.0,
                 left_to_right_rate: float = 0.0):
        self.data, self.objective, self.mechanism = data, objective, mechanism
        self.fim_order = fim_order  # AR rows: PSM or SPM (objective.ar_fim_row)
        self.seq_len, self.infill_rate = seq_len, infill_rate
        # share of infilling rows with the project's snippets before the prefix
        self.repo_rate = repo_rate if data.repo is not None and len(data.repo["files"]) else 0.0
        self.fixed_length = fixed_length  # pad every batch to seq_len (one compiled shape)
        # share of diffusion infilling rows masked left to right (objective.infill_row)
        self.left_to_right_rate = left_to_right_rate
        self.sp = data.specials
        self.rng = random.Random(seed)
        # files are drawn in proportion to their length: one draw is a binary search
        self.cum_chars = np.cumsum([len(t) for t in data.texts])

    def encode(self, text: str) -> list[int]:
        return self.data.tokenizer.encode(text, add_special_tokens=False).ids

    def _window(self, n: int) -> list[int]:
        start = self.rng.randrange(len(self.data.tokens) - n)
        return self.data.tokens[start:start + n].astype(np.int64).tolist()

    def _fim_parts(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """(project snippets, prefix, middle, suffix) token lists of one infilling row."""
        rng = self.rng
        with_repo = self.repo_rate > 0 and rng.random() < self.repo_rate  # no draw without
        for _ in range(20):
            snippets: list[int] = []
            if with_repo:
                f, a, b, snippets = self._repo_example()
                text = self.data.texts[f]
            else:
                f = int(np.searchsorted(self.cum_chars, rng.random() * self.cum_chars[-1],
                                        side="right"))
                text = self.data.texts[f]
                a, b = pick_middle(text, self.data.spans[f], rng)
            middle = self.encode(text[a:b])
            if 1 <= len(middle) <= min(MAX_MIDDLE_TOKENS, self.seq_len // 2 - 1):
                chars = 8 * self.seq_len
                prefix = self.encode(text[max(0, a - chars):a])
                suffix = self.encode(text[b:b + chars])
                if a > chars:  # the cut at `a - chars` may split a token: drop the first
                    prefix = prefix[1:]
                return snippets, prefix, middle, suffix
        raise RuntimeError("no middle found in 20 tries")

    def _repo_example(self) -> tuple[int, int, int, list[int]]:
        """A precomputed middle and its snippets, rendered as the server renders them
        (``Snippet.render``), at most a quarter of the row."""
        repo, texts, paths = self.data.repo, self.data.texts, self.data.paths
        assert repo is not None
        k = self.rng.randrange(len(repo["files"]))
        parts = []
        for g, a, b in repo["snippets"][repo["ptr"][k]:repo["ptr"][k + 1]]:
            name = paths[g].split("/", 1)[-1] if paths else f"file{g}.py"
            parts.append(f"# Path: {name}\n{texts[g][a:b].rstrip()}\n\n")
        costs = [len(self.encode(p)) for p in parts]
        while parts and sum(costs) > self.seq_len // 4:  # drop the least relevant (first)
            parts.pop(0)
            costs.pop(0)
        ids = self.encode("".join(parts)) if parts else []
        return int(repo["files"][k]), int(repo["start"][k]), int(repo["end"][k]), ids

    def row(self) -> Row:
        T, sp, rng = self.seq_len, self.sp, self.rng
        infill = rng.random() < self.infill_rate
        if self.objective == "ar":
            if not infill:
                return ar_row(self._window(T + 1))
            snippets, prefix, middle, suffix = self._fim_parts()
            room = T + 1 - len(middle) - 5 - len(snippets)
            prefix, suffix = fit_context(prefix, suffix, room, rng)
            return ar_fim_row(snippets + prefix, middle, suffix, sp, self.fim_order)
        if not infill:
            return diffusion_row(self._window(T), sp, rng)
        snippets, prefix, middle, suffix = self._fim_parts()
        # at most half the row: short rows (tests) still fit their context and slots
        slots = min(choose_slots(len(middle), self.mechanism, rng),
                    max(len(middle) + 1, self.seq_len // 2))
        prefix, suffix = fit_context(prefix, suffix, T - slots - len(snippets), rng)
        ltr = self.left_to_right_rate > 0 and rng.random() < self.left_to_right_rate
        return infill_row(snippets + prefix, middle, suffix, slots, self.mechanism, sp, rng,
                          END_WEIGHT, left_to_right=ltr)

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """`size` rows padded to the longest: ids, targets, weights, key_mask, scored."""
        rows = [self.row() for _ in range(size)]
        n = self.seq_len if self.fixed_length else max(len(r.ids) for r in rows)
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
