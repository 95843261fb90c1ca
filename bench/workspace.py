"""Completions that know the project: held-out packages as workspaces, and the index at scale.

    python -m bench.workspace quality [--packages alembic kombu ...] [--cuts 500]
                                      [--shares 0 0.15 0.25 0.4] [--models N=DIR ...] [--adapt]
                                      [--context-tokens 1024]
    python -m bench.workspace reach [--budgets 128 256 512]
    python -m bench.workspace scale [--files 5000]

**quality**: each package held out of the training corpus (``runs/corpus/heldout.jsonl``) is
written out as a workspace and indexed as the server indexes one. Its files are split 70/30
(seeded); ``--cuts`` lines are cut in the 30 % (``bench.heldout.cut_line``: at the
indentation or a token boundary) and the cut file replaces the original in the index, so
the answer is nowhere in the workspace unless the project writes that line twice. Each
model completes the rest of the line in single-line mode with the file alone, and with the
index's snippets taking up to each ``--shares`` of the context budget; with ``--adapt``, the
first model is also adapted (``dlm-lsp adapt``) to the package's other 70 % and completes
the same cuts. Scored on exact rest of line, per package; a bar plot beside the JSON. Beside
the scores, how often the deleted text (8 characters or more) is in the snippets a share
puts in the context at all: the most retrieval can give a model that copies perfectly, and
on those cuts alone, each model's exact with and without the snippets (does it copy?).

**reach** (no model, a minute): on the same cuts, how often the deleted text (8 characters
or more) is in the snippets chosen within each of ``--budgets`` tokens, by the kind of
snippet that holds it, and how often it is written anywhere else in its package (the
ceiling of any retrieval).

**scale**: ``--files`` Python files of the training corpus as one workspace: index time,
the index's own memory estimate and the process's RSS growth, and the selection time of
200 cursors (p50/p95). Then the language server itself is started on that workspace and
asked for completions at once, while it indexes in the background, and again without the
workspace: the first completions' latency and the model's milliseconds per forward pass
(snippets change the context and so the number of passes; the time per pass is what a busy
reader thread would slow down), with and without indexing under way, and with the index
read but its snippets left out (``retrievalShare`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from bench.heldout import _parses, cut_line
from dlm_lsp.config import Settings, apply_settings
from dlm_lsp.pipeline.retrieval import WorkspaceIndex

PACKAGES = ["alembic", "kombu", "openpyxl", "tox", "trimesh"]


def package_files(corpus: Path, package: str) -> dict[str, str]:
    out = {}
    with open(corpus / "heldout.jsonl") as f:
        for line in f:
            row = json.loads(line)
            name, _, rel = row["path"].partition("/")
            if name == package:
                out[rel] = row["text"]
    return out


def make_cuts(files: dict[str, str], n: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """(file, cursor, end of line) for `n` lines cut at random in parseable modules."""
    rng = random.Random(seed)
    names = sorted(f for f, t in files.items() if _parses(t) and t.count("\n") > 5)
    cuts: list[tuple[str, int, int]] = []
    while len(cuts) < n:
        name = rng.choice(names)
        cut = cut_line(files[name], rng)
        if cut is not None and files[name][cut[0]:cut[1]].strip():
            cuts.append((name, *cut))
    return cuts


def index_package(files: dict[str, str], root: str = "/ws") -> WorkspaceIndex:
    index = WorkspaceIndex()
    for rel, text in files.items():
        index.update(f"{root}/{rel}", text, name=rel, language="python")
    index.compact()
    return index


def retriever(index: WorkspaceIndex, path: str, text: str):  # noqa: ANN201
    def retrieve(prefix: str, suffix: str, encode, budget: int) -> list[str]:  # noqa: ANN001
        found = index.select(prefix, suffix, encode, budget, exclude=path, language="python",
                             file_text=text)
        return [s.render("#") for s in found]
    return retrieve


def split_files(files: dict[str, str], seed: int, held: float = 0.3) -> tuple[list, list]:
    """(learnt, held back) file names: `dlm-lsp adapt` learns from the first, lines are cut
    in the second (the answer is never in what a model was tuned on)."""
    names = sorted(files)
    random.Random(seed).shuffle(names)
    k = max(1, int(len(names) * held))
    return sorted(names[k:]), sorted(names[:k])


def adapt_package(package: str, files: dict[str, str], learnt: list[str], model: str,
                  cache: Path) -> Path | None:
    """The model adapted to `learnt` files of the package (written out as a repository)."""
    import os

    from dlm_lsp import adapt
    from dlm_lsp.model.checkpoint import resolve_model_path

    root = cache / "repos" / package
    for rel in learnt:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(files[rel])
    os.environ["DLM_LSP_CACHE"] = str(cache)
    return adapt.adapt(root, resolve_model_path(model), say=lambda m: print(m, flush=True))


def tally_reached(copied: dict[str, dict[str, int]], reached: list[float],
                  right: dict[str, bool], models: list[str], shares: list[float]) -> None:
    """Count one cut whose answer was in the snippets of each share in `reached`: per
    model, whether it was right with that share and with none (share 0, if measured)."""
    for share in reached:
        tally = copied.setdefault(f"share {share:g}", {"cuts": 0})
        tally["cuts"] += 1
        for model_name in models:
            for s in sorted({0.0, share} & set(shares)):
                key = f"{model_name} share {s:g}"
                tally[key] = tally.get(key, 0) + right[key]


def quality(args: argparse.Namespace) -> dict:
    import torch

    from bench.infill import Infiller
    from dlm_lsp.pipeline.engine import Engine

    torch.set_num_threads(args.threads)
    models = dict(m.split("=", 1) if "=" in m else (m, m) for m in args.models)
    context = {"context_tokens": args.context_tokens} if args.context_tokens else {}
    def settings(model: str) -> Settings:
        return with_settings(Settings(model=model, threads=args.threads, **context), args.set)

    infillers = {k: Infiller(Engine(settings(v)), k) for k, v in models.items()}
    result: dict = {"packages": {}, "cuts_per_package": args.cuts, "shares": args.shares,
                    "context_tokens": args.context_tokens, "models": models, "adapt": args.adapt,
                    "settings": args.set}
    cache = Path(tempfile.mkdtemp(prefix="dlm-adapt-"))
    for package in args.packages:
        files = package_files(args.corpus, package)
        learnt, held = split_files(files, args.seed)
        index = index_package(files)
        cuts = make_cuts({k: files[k] for k in held}, args.cuts, seed=args.seed)
        runs = dict(infillers)
        if args.adapt:
            tuned = adapt_package(package, files, learnt, next(iter(models.values())), cache)
            if tuned is not None:
                runs["adapted"] = Infiller(Engine(settings(str(tuned))), "adapted")
        exact: dict[str, int] = {}
        written: dict[str, list[int]] = {}  # key -> [tokens, forward passes]
        reach: dict[str, list[bool]] = {}
        copied: dict[str, dict[str, int]] = {}  # share -> key -> right, on cuts it reached
        for rel, cursor, end in tqdm(cuts, desc=package):
            original = files[rel]
            text = original[:cursor] + original[end:]  # the rest of the line deleted
            want = original[cursor:end].rstrip()
            path = f"/ws/{rel}"
            index.update(path, text, name=rel, language="python")  # the cut file, on disk
            found = retriever(index, path, text)
            seen: list[str] = []

            def retrieve(*a, found=found, seen=seen):  # noqa: ANN002, ANN202 - keeps what it gave
                seen[:] = found(*a)
                return seen
            right: dict[str, bool] = {}
            reached: list[float] = []
            for model_name, infiller in runs.items():
                for share in args.shares:
                    key = f"{model_name} share {share:g}"
                    seen.clear()
                    got = infiller(text, cursor, "line", retrieve=retrieve if share else None,
                                   retrieval_share=share)
                    right[key] = got.text.rstrip() == want
                    exact[key] = exact.get(key, 0) + right[key]
                    tally = written.setdefault(key, [0, 0])
                    tally[0] += got.generated_tokens
                    tally[1] += got.forward_passes
                    if share and model_name == next(iter(runs)) and len(want.strip()) >= 8:
                        hit = want.strip() in "".join(seen)
                        reach.setdefault(f"share {share:g}", []).append(hit)
                        reached += [share] if hit else []
            tally_reached(copied, reached, right, list(runs), args.shares)
            index.update(path, original, name=rel, language="python")
        result["packages"][package] = {
            "files": len(files), "held_back_files": len(held), "cuts": len(cuts),
            "exact": {k: round(100 * v / len(cuts), 1) for k, v in exact.items()},
            "tokens_per_pass": {k: round(t / max(n, 1), 3) for k, (t, n) in written.items()},
            "answer_in_snippets": {k: round(100 * sum(v) / len(v), 1)
                                   for k, v in reach.items()},
            "exact_where_in_snippets": {share: {"cuts": t["cuts"], **{
                k: round(100 * v / t["cuts"], 1) for k, v in t.items() if k != "cuts"}}
                for share, t in copied.items()}}
        print(package, json.dumps(result["packages"][package]["exact"]), flush=True)
    keys = sorted({k for p in result["packages"].values() for k in p["exact"]})
    result["mean_exact"] = {k: round(statistics.mean(p["exact"][k] for p in
                                                    result["packages"].values()
                                                    if k in p["exact"]), 1) for k in keys}
    return result


def with_settings(base: Settings, pairs: list[str]) -> Settings:
    """`base` with ``NAME=VALUE`` pairs (the editor's names: ``copyThreshold=0.05``; values
    read as JSON where they parse) set on it as the server sets its settings; exits on a
    setting the server would refuse."""
    raw: dict[str, object] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            raw[name] = json.loads(value)
        except json.JSONDecodeError:
            raw[name] = value
    settings, problems = apply_settings(raw, base)
    if problems:
        sys.exit("; ".join(problems))
    return settings


def answer_reach(index: WorkspaceIndex, files: dict[str, str],
                 cuts: list[tuple[str, int, int]], budgets: list[int],
                 encode: Callable[[str], list[int]], root: str = "/ws") -> dict:
    """For cuts whose deleted text is 8 characters or more: the share (%) whose text is in
    the snippets chosen within each budget (``in_snippets``), by the kind of snippet that
    holds it (``by_kind``), and written anywhere else in the package (``anywhere``)."""
    n, anywhere = 0, 0
    found = {b: 0 for b in budgets}
    kinds: dict[int, dict[str, int]] = {b: {} for b in budgets}
    for rel, cursor, end in cuts:
        original = files[rel]
        want = original[cursor:end].strip()
        if len(want) < 8:
            continue
        text = original[:cursor] + original[end:]
        path = f"{root}/{rel}"
        index.update(path, text, name=rel, language="python")
        n += 1
        anywhere += any(want in t for r, t in files.items() if r != rel)
        for b in budgets:
            chosen = index.select(text[:cursor], text[cursor:cursor + 2000], encode, b,
                                  exclude=path, language="python", file_text=text)
            rendered = [s.render("#") for s in chosen]
            holders = [s.kind for s, r in zip(chosen, rendered, strict=True) if want in r]
            found[b] += bool(holders) or want in "".join(rendered)
            for kind in set(holders):
                kinds[b][kind] = kinds[b].get(kind, 0) + 1
        index.update(path, original, name=rel, language="python")
    pct = lambda k: round(100 * k / max(n, 1), 1)  # noqa: E731
    return {"cuts": n, "anywhere": pct(anywhere),
            "in_snippets": {str(b): pct(found[b]) for b in budgets},
            "by_kind": {str(b): {k: pct(v) for k, v in sorted(kinds[b].items())}
                        for b in budgets}}


def reach(args: argparse.Namespace) -> dict:
    from tokenizers import Tokenizer

    from dlm_lsp.model.checkpoint import EMBEDDED_DIR

    tokenizer = Tokenizer.from_file(str(EMBEDDED_DIR / "tokenizer.json"))
    encode = lambda text: tokenizer.encode(text).ids  # noqa: E731
    packages: dict = {}
    for package in tqdm(args.packages, desc="packages"):
        files = package_files(args.corpus, package)
        _, held = split_files(files, args.seed)
        cuts = make_cuts({k: files[k] for k in held}, args.cuts, seed=args.seed)
        packages[package] = answer_reach(index_package(files), files, cuts, args.budgets, encode)
    cuts = sum(p["cuts"] for p in packages.values())
    mean = lambda get: round(sum(get(p) * p["cuts"] for p in packages.values())  # noqa: E731
                             / max(cuts, 1), 1)
    return {"packages": packages, "cuts_per_package": args.cuts, "budgets": args.budgets,
            "all": {"cuts": cuts, "anywhere": mean(lambda p: p["anywhere"]),
                    "in_snippets": {str(b): mean(lambda p, b=b: p["in_snippets"][str(b)])
                                    for b in args.budgets}}}


def plot(result: dict, path: Path) -> None:
    """Rest-of-line exact per package and configuration (bars), mean last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    packages = [*result["packages"], "mean"]
    keys = list(result["mean_exact"])
    values = {k: [result["packages"][p]["exact"].get(k, 0.0) for p in packages[:-1]]
              + [result["mean_exact"][k]] for k in keys}
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        ax.bar([j + i * width for j in range(len(packages))], values[k], width, label=k)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(packages))], packages)
    ax.set_ylabel("rest of line, exact %")
    ax.set_title("Held-out packages as workspaces: the file alone, with the index's snippets, "
                 "adapted", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def scale(args: argparse.Namespace) -> dict:
    from dlm_lsp.pipeline.workspace import read_source, source_files

    encode_cost = lambda text: list(range(len(text) // 4 + 1))  # noqa: E731 - ~4 chars/token
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        written = 0
        with open(args.corpus / "train.jsonl") as f:
            for line in f:
                row = json.loads(line)
                path = root / row["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(row["text"])
                written += 1
                if written >= args.files:
                    break
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        index = WorkspaceIndex()
        texts = {}
        for path in source_files(root):
            text = read_source(path)
            if text is not None:
                rel = path.relative_to(root.resolve()).as_posix()
                index.update(str(path), text, name=rel)
                texts[str(path)] = text
        index.compact()
        build_s = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rng = random.Random(0)
        paths = sorted(texts)
        ms = []
        for _ in range(200):
            path = rng.choice(paths)
            text = texts[path]
            cursor = rng.randrange(len(text))
            t = time.perf_counter()
            index.select(text[max(0, cursor - 4000):cursor], text[cursor:cursor + 2000],
                         encode_cost, 128, exclude=path, language="python", file_text=text)
            ms.append((time.perf_counter() - t) * 1e3)
        ms.sort()
        stats = index.stats()
        model = args.models[0].split("=")[-1]
        first = {"with_workspace": asyncio.run(first_completions(root, model)),
                 "indexing_no_snippets": asyncio.run(first_completions(root, model, share=0.0)),
                 "without": asyncio.run(first_completions(None, model))}
    return {"files_written": written, "files_indexed": stats["files"], "chunks": stats["chunks"],
            "index_s": round(build_s, 1), "index_estimate_mb": round(stats["bytes"] / 1e6, 1),
            "rss_growth_mb": round((rss1 - rss0) / 1024, 1),
            "select_p50_ms": round(ms[len(ms) // 2], 2),
            "select_p95_ms": round(ms[int(len(ms) * 0.95)], 2), "first_completions": first}


async def first_completions(root: Path | None, model: str, n: int = 10,
                            share: float | None = None) -> dict:
    """The language server on `root` (indexing it in the background) or on no workspace:
    the latency of the first `n` completions, asked as soon as the model is ready, and the
    model's time per forward pass in them (`share`: the ``retrievalShare`` setting)."""
    import sysconfig

    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    source = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    text = source.read_text()
    client = LanguageClient("dlm-bench", "0.1")
    await client.start_io(sys.executable, "-m", "dlm_lsp")
    params = types.InitializeParams(capabilities=types.ClientCapabilities(),
                                    initialization_options={"model": model, "debounceMs": 0,
                                                            **({} if share is None else
                                                               {"retrievalShare": share})})
    if root is not None:
        params.workspace_folders = [types.WorkspaceFolder(uri=root.as_uri(), name="ws")]
    await client.initialize_async(params)
    client.initialized(types.InitializedParams())
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=source.as_uri(), language_id="python", version=1, text=text)))

    async def status() -> dict:
        return await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="dlm.status"))

    while (await status())["state"] not in ("ready", "error"):
        await asyncio.sleep(0.05)
    lines = text.split("\n")
    ms, states, pass_ms = [], [], []
    for i in range(n):
        line = 200 + 37 * i
        col = len(lines[line]) - len(lines[line].lstrip()) + len(lines[line].strip()) // 2
        t0 = time.perf_counter()
        await client.text_document_completion_async(types.CompletionParams(
            types.TextDocumentIdentifier(source.as_uri()), types.Position(line, col)))
        ms.append((time.perf_counter() - t0) * 1e3)
        now = await status()
        states.append(now["workspace"]["state"])
        run = now["lastRun"]
        if run and run["forward_passes"] and not run["cached"]:
            pass_ms.append(run["ms"] / run["forward_passes"])
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    ms_sorted = sorted(ms)
    return {"p50_ms": round(ms_sorted[len(ms) // 2], 1), "max_ms": round(max(ms), 1),
            "ms_per_pass_p50": round(statistics.median(pass_ms), 1) if pass_ms else None,
            "indexing_during": states.count("indexing")}


def main(argv: list[str] | None = None) -> None:
    from bench.suite import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["quality", "reach", "scale"])
    ap.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    ap.add_argument("--models", nargs="+", default=["embedded"],
                    help="NAME=DIR (or DIR) of each model to complete with")
    ap.add_argument("--adapt", action="store_true",
                    help="also a model adapted (dlm-lsp adapt) to each package's other files")
    ap.add_argument("--packages", nargs="+", default=PACKAGES)
    ap.add_argument("--cuts", type=int, default=500)
    ap.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.15, 0.25, 0.4])
    ap.add_argument("--context-tokens", type=int, default=None,
                    help="the contextTokens setting (default: the server's); snippets get "
                         "each share of it")
    ap.add_argument("--budgets", nargs="+", type=int, default=[128, 256, 512],
                    help="reach: snippet budgets in tokens")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="quality: server settings for every model (copyThreshold=0.05)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.corpus / "heldout.jsonl").is_file():
        sys.exit(f"{args.corpus} has no corpus: python -m training.corpus builds it")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(args.threads),
              **{"quality": quality, "reach": reach, "scale": scale}[args.command](args)}
    out = args.out or Path(f"bench/results/workspace_{args.command}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    if args.command == "quality":
        plot(result, out.with_suffix(".png"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
