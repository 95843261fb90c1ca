"""The ``dlm-lsp`` command: serve LSP (stdio or TCP) or the FIM HTTP API, complete a file,
doctor, benchmark, test checkpoints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dlm_lsp import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlm-lsp", description=__doc__)
    p.add_argument("--version", action="version", version=f"dlm-lsp {__version__}")
    p.add_argument("--tcp", action="store_true", help="serve LSP over TCP instead of stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2087)
    p.add_argument("--log-file", help="write logs here (default: stderr)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve LSP (the default)")

    c = sub.add_parser("complete", help="print a completion for FILE at a position")
    c.add_argument("file", type=Path)
    c.add_argument("--line", type=int, required=True, help="0-based line, as in LSP")
    c.add_argument("--character", type=int, required=True, help="0-based column (utf-16)")
    c.add_argument("--model", default=None, help='checkpoint directory (default "embedded")')
    c.add_argument("--language", default=None, help="languageId (default: from the extension)")
    c.add_argument("--settings", default=None, help="JSON object of dlm settings")
    c.add_argument("--json", action="store_true", help="print JSON with range and figures")

    d = sub.add_parser("doctor", help="report the environment, the model and a timed sample")
    d.add_argument("--model", default=None)

    h = sub.add_parser("serve-http", help="serve the FIM HTTP API (Mercury's shape) for a team")
    from dlm_lsp.serving.serve_http import add_arguments

    add_arguments(h)

    b = sub.add_parser("bench", help="the speed/quality benchmark (python -m bench), from a "
                       "source checkout; its options: dlm-lsp bench --help")
    b.add_argument("options", nargs="*", help="passed to python -m bench")

    r = sub.add_parser("random-checkpoint", help="write a random-weight checkpoint (for tests)")
    r.add_argument("path", type=Path)
    r.add_argument("--hidden-size", type=int, default=384)
    r.add_argument("--layers", type=int, default=6)
    r.add_argument("--heads", type=int, default=6)
    r.add_argument("--kv-heads", type=int, default=2)
    r.add_argument("--vocab-size", type=int, default=0, help="BPE vocab learnt from stdlib code")
    r.add_argument("--expand", action="store_true", help="give dlm.json an expand token")
    r.add_argument("--parrot", default=None,
                   help="make every slot this text's first token (editor tests)")
    return p


def _settings(model: str | None, extra: str | None):  # noqa: ANN202
    from dlm_lsp.config import apply_settings

    raw = json.loads(extra) if extra else {}
    if model:
        raw["model"] = model
    settings, messages = apply_settings(raw)
    for m in messages:
        print(f"warning: {m}", file=sys.stderr)
    return settings


def cmd_complete(args: argparse.Namespace) -> int:
    from dlm_lsp.pipeline.engine import Engine, ModelError
    from dlm_lsp.pipeline.syntax import detect_language
    from dlm_lsp.protocol.lsp_items import to_range
    from dlm_lsp.protocol.positions import offset_at

    try:
        text = args.file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = Engine(_settings(args.model, args.settings))
    language = detect_language(args.language, args.file.resolve().as_uri())
    offset = offset_at(text, args.line, args.character)
    try:
        outcome = engine.complete(text, offset, language)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    best = outcome.candidates[0].text if outcome.candidates else ""
    if args.json:
        rng = to_range(text, offset, offset, "utf-16")
        print(json.dumps({
            "text": best,
            "mode": outcome.plan.mode,
            "range": {"start": {"line": rng.start.line, "character": rng.start.character},
                      "end": {"line": rng.end.line, "character": rng.end.character}},
            "candidates": [{"text": c.text, "confidence": c.confidence}
                           for c in outcome.candidates],
            "stats": outcome.stats.__dict__ if outcome.stats else None,
        }, indent=2))
    else:
        print(best)
    return 0


def cmd_random_checkpoint(args: argparse.Namespace) -> int:
    from dlm_lsp.model.random_checkpoint import make_random_checkpoint, stdlib_texts

    texts = stdlib_texts() if args.vocab_size else ()
    make_random_checkpoint(args.path, hidden_size=args.hidden_size, num_layers=args.layers,
                           num_heads=args.heads, num_kv_heads=args.kv_heads,
                           vocab_size=args.vocab_size, texts=texts, expand=args.expand,
                           parrot=args.parrot)
    print(args.path)
    return 0


def cmd_bench(bench_args: list[str]) -> int:
    """Run ``bench.suite`` from the checkout this package was installed from (editable)."""
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "bench" / "suite.py").is_file():
        print("error: the benchmark lives in the source tree (bench/), which this install "
              "does not have: run it from a checkout, `python -m bench`", file=sys.stderr)
        return 2
    sys.path.insert(0, str(checkout))
    from bench.suite import main as bench_main

    bench_main(bench_args)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every option after it belongs to the benchmark
        return cmd_bench(argv[1:])
    args = _parser().parse_args(argv)
    handler: logging.Handler = (logging.FileHandler(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))  # never stdout
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        handlers=[handler], format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "complete":
        return cmd_complete(args)
    if args.command == "doctor":
        from dlm_lsp.doctor import run_doctor

        return run_doctor(_settings(args.model, None))
    if args.command == "random-checkpoint":
        return cmd_random_checkpoint(args)
    if args.command == "serve-http":
        from dlm_lsp.serving.serve_http import run

        return run(args, _settings(args.model, args.settings))
    from dlm_lsp.protocol.server import SERVER

    if args.tcp:
        SERVER.start_tcp(args.host, args.port)
    else:
        SERVER.start_io()
    return 0
