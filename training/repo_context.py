"""Training rows that see the project: middles with the snippets the server would retrieve.

    python -m training.repo_context --corpus runs/corpus --data runs/data [--per-file 4]

At a cursor the server puts snippets of other files of the workspace before the code
(``dlm_lsp.pipeline.retrieval``). A model trained on single files has never seen them and
does not use them (measured: rest-of-line exact 23.3 % without, 23.0 % with). So, as
repository-level pre-training does (StarCoder2 and Qwen2.5-Coder's repo-level data; the
RepoCoder / RepoFormer line of work retrieves at training time too), some infilling rows are
built with the project around the file: every package of the corpus is indexed as a
workspace with the server's own index, ``--per-file`` middles are drawn per file as the
batcher draws them (``training.data.pick_middle``), and the snippets the index selects for
each cursor (with the middle missing from the file, as in an editor) are recorded by
reference. ``training.data.Batcher`` (``repo_rate``) puts them before the prefix exactly as
the server renders them.

The result is ``runs/data/repo_context.npz``: per example the file (``files``), the middle's
span and the snippets (file, start, end), all indices into the train split.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from dlm_lsp.pipeline.retrieval import WorkspaceIndex
from training.corpus import read_split

BUDGET_TOKENS = 256  # a quarter of a 1,024-token context, the server's default share
PREFIX_CHARS, SUFFIX_CHARS = 4000, 2000
_TOKENIZER: Tokenizer | None = None


def package_of(path: str) -> str:
    return path.split("/", 1)[0]


def rel_name(path: str) -> str:
    """What a snippet's header shows: the file's path inside its package."""
    return path.split("/", 1)[1] if "/" in path else path


def _init(tokenizer_path: str) -> None:
    global _TOKENIZER
    _TOKENIZER = Tokenizer.from_file(tokenizer_path)
    _TOKENIZER.encode_special_tokens = True


def _encode(text: str) -> list[int]:
    assert _TOKENIZER is not None
    return _TOKENIZER.encode(text, add_special_tokens=False).ids


def package_examples(job: tuple[list[int], list[str], list[str], list[np.ndarray], int, int]
                     ) -> list[tuple[int, int, int, list[tuple[int, int, int]]]]:
    """(file, start, end, snippets) examples for one package's files (by corpus index)."""
    from dlm_lsp.model.middles import pick_middle

    ids, paths, texts, spans, per_file, seed = job
    index = WorkspaceIndex()
    for path, text in zip(paths, texts, strict=True):
        index.update(path, text, name=rel_name(path), language="python")
    index.compact()
    slot_of = {path: i for i, path in zip(ids, paths, strict=True)}
    rng = random.Random(seed)
    out = []
    for i, path, text, sp in zip(ids, paths, texts, spans, strict=True):
        for _ in range(per_file):
            a, b = pick_middle(text, sp, rng)
            if b <= a:
                continue
            buffer = text[:a] + text[b:]
            found = index.select(text[max(0, a - PREFIX_CHARS):a], text[b:b + SUFFIX_CHARS],
                                 _encode, BUDGET_TOKENS, exclude=path, language="python",
                                 file_text=buffer)
            refs = [(slot_of[s.path], s.start, s.end) for s in found]
            if refs:
                out.append((i, a, b, refs))
    return out


def prepare(corpus: Path, data: Path, per_file: int, procs: int, seed: int = 0) -> Path:
    rows = list(read_split(corpus, "train"))
    flat = np.load(data / "spans.npy", mmap_mode="r")
    starts = np.load(data / "span_starts.npy")
    by_package: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_package.setdefault(package_of(r["path"]), []).append(i)
    jobs = []
    for k, (_, ids) in enumerate(sorted(by_package.items())):
        if len(ids) < 2:  # a lone file has no project around it
            continue
        jobs.append((ids, [rows[i]["path"] for i in ids], [rows[i]["text"] for i in ids],
                     [np.asarray(flat[starts[i]:starts[i + 1]]) for i in ids], per_file,
                     seed + k))
    examples = []
    if procs <= 1:  # in this process (a fork of a threaded process can deadlock)
        _init(str(data / "tokenizer.json"))
        for job in tqdm(jobs, desc="packages"):
            examples.extend(package_examples(job))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(procs, initializer=_init,
                      initargs=(str(data / "tokenizer.json"),)) as pool:
            for found in tqdm(pool.imap_unordered(package_examples, jobs), total=len(jobs),
                              desc="packages"):
                examples.extend(found)
    examples.sort()
    ptr = np.cumsum([0] + [len(e[3]) for e in examples])
    snippets = np.asarray([ref for e in examples for ref in e[3]], dtype=np.int32)
    out = data / "repo_context.npz"
    part = out.with_suffix(".npz.part")  # a trainer starting meanwhile reads the old file
    with open(part, "wb") as f:
        np.savez(f, files=np.asarray([e[0] for e in examples], dtype=np.int32),
                 start=np.asarray([e[1] for e in examples], dtype=np.int32),
                 end=np.asarray([e[2] for e in examples], dtype=np.int32),
                 ptr=ptr.astype(np.int64), snippets=snippets.reshape(-1, 3))
    os.replace(part, out)
    (data / "repo_context.json").write_text(json.dumps({
        "examples": len(examples), "snippets": int(len(snippets)), "per_file": per_file,
        "budget_tokens": BUDGET_TOKENS, "packages": len(jobs)}))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--data", type=Path, default=Path("runs/data"))
    ap.add_argument("--per-file", type=int, default=4)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args(argv)
    out = prepare(args.corpus, args.data, args.per_file, args.procs)
    print(out, (args.data / "repo_context.json").read_text())


if __name__ == "__main__":
    main()
