"""End-to-end latency of completions through the LSP server, from a real client process.

    python -m bench.lsp_latency [--model DIR] [--modes line block] [--requests 40]

A client process starts ``python -m dlm_lsp`` on stdio, waits for the model to be ready and
times real ``textDocument/completion`` requests in a standard-library file, so every request
has a full context window and none is a cache hit:

- ``line``: cursors mid-way through code lines (single-line mode); after each, the user
  types the suggestion's first character and the rest should come without a model run.
- ``block``: an empty line just after a block opener (``if ...:``, ``def ...:``) whose body
  was removed, as when the user has just pressed Enter (block mode).

Without --model it builds (once, under runs/) a random-weight checkpoint of the size the
issues name: d=384, 6 layers, a BPE vocabulary of 8192 learnt from the standard library.
Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
OPENER = re.compile(r"^([ \t]*)(if|for|while|def|with|try|else|elif)\b.*:\s*$")


def default_checkpoint() -> Path:
    from dlm_lsp.model.random_checkpoint import make_random_checkpoint, stdlib_texts

    path = RUNS / "random-d384-l6-v8192"
    if not (path / "model.safetensors").is_file():
        print("building the random d=384 x 6 checkpoint (BPE 8192 on stdlib) ...", file=sys.stderr)
        make_random_checkpoint(path, hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2,
                               vocab_size=8192, texts=stdlib_texts())
    return path


def cursors(text: str, n: int, min_line: int = 60) -> list[tuple[int, int]]:
    """(line, utf-16 column) mid-way through non-trivial code lines, spread over the file."""
    lines = text.split("\n")
    picks = [i for i, ln in enumerate(lines) if i >= min_line and len(ln.strip()) > 30
             and ln.isascii() and not ln.strip().startswith(("#", '"', "'"))]
    step = max(1, len(picks) // n)
    out = []
    for i in picks[::step][:n]:
        ln = lines[i]
        out.append((i, len(ln) - len(ln.lstrip()) + len(ln.strip()) // 2))
    return out


def block_sites(text: str, n: int, min_line: int = 60) -> list[tuple[str, int, int]]:
    """(document, line, column) with the body of a block opener replaced by one empty,
    indented line holding the cursor, spread over the file."""
    lines = text.split("\n")
    openers = [i for i, ln in enumerate(lines) if i >= min_line and ln.isascii()
               and OPENER.match(ln) and i + 1 < len(lines)
               and _indent(lines[i + 1]) > _indent(ln) and lines[i + 1].strip()]
    step = max(1, len(openers) // n)
    out = []
    for i in openers[::step][:n]:
        end = i + 1
        while end < len(lines) and (not lines[end].strip()
                                    or _indent(lines[end]) > _indent(lines[i])):
            end += 1
        body_indent = " " * _indent(lines[i + 1])
        doc = "\n".join(lines[:i + 1] + [body_indent] + lines[end:])
        out.append((doc, i + 1, len(body_indent)))
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def measure(model: Path, modes: list[str], requests: int = 40, warmup: int = 3,
                  context: int = 512, threads: int = 0, file: str = "argparse.py",
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Latency figures per mode for one model, through one warm server."""
    source = Path(sysconfig.get_paths()["stdlib"]) / file
    text = source.read_text()
    uri = source.as_uri()
    client = LanguageClient("dlm-bench", "0.1")
    await client.start_io(sys.executable, "-m", "dlm_lsp")
    options = {"model": str(model), "contextTokens": context, "debounceMs": 0,
               "threads": threads, **(settings or {})}
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options=options))
    client.initialized(types.InitializedParams())
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=text)))
    version = 1

    async def status() -> dict:
        return await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="dlm.status"))

    def set_text(new: str) -> None:
        nonlocal version
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangeWholeDocument(text=new)]))

    async def complete(line: int, col: int) -> tuple[float, list[types.CompletionItem], dict]:
        t0 = time.perf_counter()
        result = await client.text_document_completion_async(types.CompletionParams(
            types.TextDocumentIdentifier(uri), types.Position(line, col)))
        ms = (time.perf_counter() - t0) * 1e3
        items = result.items if isinstance(result, types.CompletionList) else (result or [])
        return ms, items, (await status())["lastRun"]

    while (st := await status())["state"] not in ("ready", "error"):
        await asyncio.sleep(0.05)
    if st["state"] == "error":
        raise SystemExit(st["error"])
    out: dict[str, Any] = {}
    try:
        for mode in modes:
            runs: list[tuple[float, dict]] = []
            ahead_ms: list[float] = []
            ahead_hits = 0
            if mode == "line":
                lines = text.split("\n")
                sites = [(text, ln, col) for ln, col in cursors(text, requests + warmup)]
            else:
                sites = block_sites(text, requests + warmup)
            for k, (doc, line, col) in enumerate(tqdm(sites, desc=f"lsp/{mode}",
                                                      file=sys.stderr, leave=False)):
                set_text(doc)
                ms, items, stats = await complete(line, col)
                if k < warmup or stats["cached"]:
                    continue
                runs.append((ms, stats))
                if mode != "line" or not items or items[0].text_edit is None:
                    continue
                edit = items[0].text_edit
                word = lines[line][edit.range.start.character:col]
                shown = edit.new_text[len(word):] if edit.new_text.startswith(word) else ""
                if len(shown) >= 2:  # the user types the suggestion's first character
                    typed = lines[:line] + [lines[line][:col] + shown[0] + lines[line][col:]]
                    set_text("\n".join(typed + lines[line + 1:]))
                    ms, _, stats = await complete(line, col + 1)
                    ahead_ms.append(ms)
                    ahead_hits += stats["forward_passes"] == 0
            out[mode] = _figures(runs, ahead_ms, ahead_hits)
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return out


def _figures(runs: list[tuple[float, dict]], ahead_ms: list[float], ahead_hits: int) -> dict:
    ms = [r[0] for r in runs]
    passes = sum(r[1]["forward_passes"] for r in runs)
    tokens = sum(r[1]["tokens"] for r in runs)
    figures = {
        "requests": len(runs),
        "p50_ms": round(pct(ms, 50), 1),
        "p95_ms": round(pct(ms, 95), 1),
        "mean_ms": round(statistics.mean(ms), 1),
        "forward_passes_per_token": round(passes / max(1, tokens), 3),
        "tokens_mean": round(tokens / len(runs), 2),
        "context_tokens_mean": round(statistics.mean(r[1]["context_tokens"] for r in runs), 1),
    }
    if ahead_ms:  # after typing the first character of the suggestion
        figures.update(typeahead_requests=len(ahead_ms), typeahead_without_model_run=ahead_hits,
                       typeahead_p50_ms=round(pct(ahead_ms, 50), 1),
                       typeahead_p95_ms=round(pct(ahead_ms, 95), 1))
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint directory (default: random d=384 x 6)")
    p.add_argument("--modes", nargs="+", default=["line"], choices=["line", "block"])
    p.add_argument("--file", default="argparse.py", help="stdlib file to complete in")
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=RUNS / "lsp_latency.json")
    args = p.parse_args(argv)
    model = Path(args.model) if args.model else default_checkpoint()
    result = asyncio.run(measure(model, args.modes, args.requests, args.warmup, args.context,
                                 args.threads, args.file))
    result = {"model": str(model), "file": args.file, "cores": os.cpu_count(),
              "threads": args.threads or "torch default", "context": args.context, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for mode in args.modes:
        print(f"\n{mode}\n| metric | value |\n|---|---|")
        for key, value in result[mode].items():
            print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
