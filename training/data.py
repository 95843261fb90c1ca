"""Prepared training data: tokenizer, token stream, infilling middles, and batches.

``prepare`` turns a corpus directory (``training.corpus``) into a data directory with the
trained tokenizer, every train file tokenized into one uint16 stream (files separated by
``<eos>``), and the syntax-node spans (from ``ast``) that infilling middles are drawn from.
``dlm_lsp.model.batcher.Batcher`` draws rows for either objective from it.

    python -m training.data --corpus runs/corpus --out runs/data
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from dlm_lsp.model.batcher import Prepared
from dlm_lsp.model.middles import node_spans
from training.corpus import read_split
from training.tokenizer import train_tokenizer


def prepare(corpus: Path, out: Path, vocab_size: int = 8192, tokenizer: Path | None = None,
            tokenizer_bytes: int = 30_000_000, procs: int | None = None) -> None:
    """Write ``tokenizer.json``, ``tokens.bin`` (uint16), ``spans.npy`` + ``span_starts.npy``.

    With `tokenizer`, that tokenizer is reused (a model trained with it can go on training);
    otherwise one is learnt from a sample of the train split. `procs`: processes that parse
    (default: one per core).
    """
    texts = [r["text"] for r in read_split(corpus, "train")]
    if tokenizer is not None:
        tok = Tokenizer.from_file(str(tokenizer))
    else:
        rng = random.Random(0)
        sample, size = [], 0
        for text in rng.sample(texts, len(texts)):
            if size > tokenizer_bytes:
                break
            sample.append(text)
            size += len(text)
        tok = train_tokenizer(sample, vocab_size)
    tok.encode_special_tokens = True  # "<mask>" in source code is text
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    eos = tok.token_to_id("<eos>")
    n_tokens = 0
    with open(out / "tokens.bin", "wb") as f:
        for i in tqdm(range(0, len(texts), 256), desc="tokenize", unit_scale=256, unit="file"):
            for enc in tok.encode_batch(texts[i:i + 256], add_special_tokens=False):
                arr = np.asarray(enc.ids + [eos], dtype=np.uint16)
                f.write(arr.tobytes())
                n_tokens += len(arr)
    with multiprocessing.Pool(procs) as pool:  # ast.parse is the slow part: one process per core
        found = pool.imap(node_spans, texts, chunksize=64)
        spans = [np.asarray(f, dtype=np.int32).reshape(-1, 2)
                 for f in tqdm(found, total=len(texts), desc="ast spans", unit="file")]
    np.save(out / "spans.npy", np.concatenate(spans))
    np.save(out / "span_starts.npy", np.cumsum([0] + [len(s) for s in spans]))
    (out / "corpus.json").write_text(json.dumps({"corpus": str(corpus), "files": len(texts),
                                                 "tokens": n_tokens}))


def load_prepared(data: Path, corpus: Path, split: str = "train") -> Prepared:
    """The prepared train split, or another split tokenized on the fly (it is small)."""
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    tok.encode_special_tokens = True
    rows = list(read_split(corpus, split))
    texts, paths = [r["text"] for r in rows], [r["path"] for r in rows]
    if split == "train":
        flat = np.load(data / "spans.npy", mmap_mode="r")  # shared page cache across ranks
        starts = np.load(data / "span_starts.npy")
        spans = [flat[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
        repo = None
        if (data / "repo_context.npz").is_file():
            repo = dict(np.load(data / "repo_context.npz"))
        return Prepared(tok, texts, np.memmap(data / "tokens.bin", dtype=np.uint16, mode="r"),
                        spans, paths, repo)
    eos = tok.token_to_id("<eos>")
    ids = [i for enc in tok.encode_batch(texts, add_special_tokens=False) for i in enc.ids + [eos]]
    spans = [np.asarray(node_spans(t), dtype=np.int32).reshape(-1, 2) for t in texts]
    return Prepared(tok, texts, np.asarray(ids, dtype=np.uint16), spans, paths)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="tokenize the corpus for training")
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/data"))
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="reuse this tokenizer.json (the shipped model's) instead of learning one")
    args = ap.parse_args(argv)
    prepare(args.corpus, args.out, args.vocab_size, args.tokenizer)


if __name__ == "__main__":
    main()
