"""End-to-end latency of completions through the LSP server, from a real client process.

    python -m bench.lsp_latency [--model DIR] [--requests 40] [--context 512]

Without --model it builds (once, under runs/) a random-weight checkpoint of the size the
issues name: d=384, 6 layers, a BPE vocabulary of 8192 learnt from the standard library.
Cursors are placed mid-line (single-line mode) in a real standard-library file so every
request has a full context window and none is a cache hit. Prints a Markdown table and
writes JSON next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import sysconfig
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"


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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> dict:
    model = Path(args.model) if args.model else default_checkpoint()
    source = Path(sysconfig.get_paths()["stdlib"]) / args.file
    text = source.read_text()
    uri = source.as_uri()
    client = LanguageClient("dlm-bench", "0.1")
    await client.start_io(sys.executable, "-m", "dlm_lsp")
    settings = {"model": str(model), "contextTokens": args.context, "debounceMs": 0,
                "maxTokens": args.max_tokens, "confidenceThreshold": args.threshold,
                "threads": args.threads}
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options=settings))
    client.initialized(types.InitializedParams())
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=text)))

    async def status() -> dict:
        return await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="dlm.status"))

    while (st := await status())["state"] not in ("ready", "error"):
        await asyncio.sleep(0.05)
    if st["state"] == "error":
        raise SystemExit(st["error"])
    points = cursors(text, args.requests + args.warmup)
    latencies, passes, tokens, ctx = [], [], [], []
    version = 1

    def set_text(new: str) -> None:
        nonlocal version
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangeWholeDocument(text=new)]))

    async def complete(line: int, col: int) -> tuple[float, list[types.CompletionItem]]:
        t0 = time.perf_counter()
        result = await client.text_document_completion_async(types.CompletionParams(
            types.TextDocumentIdentifier(uri), types.Position(line, col)))
        items = result.items if isinstance(result, types.CompletionList) else (result or [])
        return (time.perf_counter() - t0) * 1e3, items

    lines = text.split("\n")
    ahead_ms, ahead_hits = [], 0
    for k, (line, col) in enumerate(tqdm(points, desc="completions", file=sys.stderr)):
        ms, items = await complete(line, col)
        run_stats = (await status())["lastRun"]
        if k < args.warmup or run_stats["cached"]:
            continue
        latencies.append(ms)
        passes.append(run_stats["forward_passes"])
        tokens.append(run_stats["tokens"])
        ctx.append(run_stats["context_tokens"])
        edit = items[0].text_edit if items else None
        word = lines[line][edit.range.start.character:col] if edit else ""
        shown = edit.new_text[len(word):] if edit and edit.new_text.startswith(word) else ""
        if len(shown) >= 2:
            # the user types the suggestion's first character: the rest should come at once
            typed = lines[:line] + [lines[line][:col] + shown[0] + lines[line][col:]]
            set_text("\n".join(typed + lines[line + 1:]))
            ms, _ = await complete(line, col + 1)
            ahead_ms.append(ms)
            ahead_hits += (await status())["lastRun"]["forward_passes"] == 0
            set_text(text)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {
        "model": str(model),
        "file": args.file,
        "requests": len(latencies),
        "cores": os.cpu_count(),
        "threads": args.threads or "torch default",
        "context_tokens_mean": statistics.mean(ctx),
        "max_tokens": args.max_tokens,
        "threshold": args.threshold,
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "mean_ms": statistics.mean(latencies),
        "forward_passes_per_token": sum(passes) / max(1, sum(tokens)),
        "tokens_mean": statistics.mean(tokens),
        # after typing the first character of the suggestion
        "typeahead_requests": len(ahead_ms),
        "typeahead_without_model_run": ahead_hits,
        "typeahead_p50_ms": pct(ahead_ms, 50) if ahead_ms else None,
        "typeahead_p95_ms": pct(ahead_ms, 95) if ahead_ms else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint directory (default: random d=384 x 6)")
    p.add_argument("--file", default="argparse.py", help="stdlib file to complete in")
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=RUNS / "lsp_latency.json")
    args = p.parse_args()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| metric | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.2f} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
