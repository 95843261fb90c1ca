"""The ``dlm-lsp`` command: serve LSP (stdio or TCP) or the FIM HTTP API, complete a file,
doctor, benchmark, test checkpoints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dlm_lsp import DISTRIBUTION, __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlm-lsp", description=__doc__)
    p.add_argument("--version", action="version", version=f"dlm-lsp {__version__}")
    p.add_argument("--tcp", action="store_true", help="serve LSP over TCP instead of stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2087)
    p.add_argument("--log-file", help="write logs here (default: stderr)")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"],
                   help="tracebacks are logged at debug only; otherwise one line per event")
    p.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level debug")
    p.add_argument("--allow-api-key-env", action="append", default=[], metavar="NAME",
                   help="let remote.apiKeyEnv name this variable too (by default only DLM_*)")
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

    pl = sub.add_parser("pull", help="download a published checkpoint into the hub cache")
    pl.add_argument("model_id", help="ORG/NAME on the Hugging Face Hub")
    pl.add_argument("--revision", default="main", help="branch, tag or commit (default main)")

    d = sub.add_parser("doctor", help="report the environment, the model and a timed sample")
    d.add_argument("--model", default=None)

    h = sub.add_parser("serve-http", help="serve the FIM HTTP API (Mercury's shape) for a team")
    from dlm_lsp.serving.serve_http import add_arguments

    add_arguments(h)

    b = sub.add_parser("bench", help="the speed/quality benchmark (python -m bench), from a "
                       "source checkout; its options: dlm-lsp bench --help")
    b.add_argument("options", nargs="*", help="passed to python -m bench")

    a = sub.add_parser("adapt", help="fine-tune the embedded model on a repository's own code")
    a.add_argument("directory", type=Path, nargs="?", default=Path("."))
    a.add_argument("--model", default="embedded",
                   help="the checkpoint to adapt (a dlm-lsp checkpoint; default the embedded)")
    a.add_argument("--tokens", type=int, default=None,
                   help="at most this many tokens of training (default 4,000,000)")
    a.add_argument("--yes", action="store_true", help="start without asking")
    a.add_argument("--forget", action="store_true", help="drop the repository's adapted model")
    a.add_argument("--threads", type=int, default=0)

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


class LogFormatter(logging.Formatter):
    """One line per record unless `tracebacks`: libraries (pygls) log whole tracebacks for
    a malformed message, which tell a user nothing and flood an editor's log."""

    def __init__(self, tracebacks: bool):
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks:
            return super().format(record)
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record).split("\n", 1)[0]


def drop_duplicate_rpc_errors(record: logging.LogRecord) -> bool:
    """pygls logs "Unable to deserialize message" for bad params, which our transport
    already reports in one line naming the method; keep one line per bad message."""
    return not (record.name == "pygls.protocol.json_rpc"
                and str(record.msg).startswith("Unable to deserialize message"))


class UsageError(Exception):
    """Bad command-line input: one line for the user, exit status 2."""


def _settings(model: str | None, extra: str | None):  # noqa: ANN202
    from dlm_lsp.config import apply_settings

    try:
        raw = json.loads(extra) if extra else {}
    except ValueError as exc:
        raise UsageError(f"--settings is not JSON ({exc}); e.g. "
                         "--settings '{\"maxTokens\": 16}'") from exc
    if not isinstance(raw, dict):
        raise UsageError("--settings must be a JSON object, e.g. '{\"maxTokens\": 16}'")
    if model:
        raw["model"] = model
    settings, messages = apply_settings(raw)
    for m in messages:
        print(f"warning: {m}", file=sys.stderr)
    return settings


def read_text_file(path: Path) -> str:
    """The file as text; UsageError for a missing, unreadable or binary file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if b"\x00" in raw[:8192]:
        raise UsageError(f"{path} is not a text file (it contains NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})") from exc


def checked_offset(text: str, line: int, character: int) -> int:
    """The offset of (line, character); UsageError naming the valid range when outside."""
    from dlm_lsp.protocol.positions import line_starts, offset_at, position_at

    last = len(line_starts(text)) - 1
    if not 0 <= line <= last:
        raise UsageError(f"--line {line} is outside the file: lines are 0 to {last} (0-based)")
    end = offset_at(text, line, 10**9)
    width = position_at(text, end)[1]
    if not 0 <= character <= width:
        raise UsageError(f"--character {character} is outside line {line}: columns are 0 to "
                         f"{width} (0-based, UTF-16 units)")
    return offset_at(text, line, character)


def cmd_complete(args: argparse.Namespace) -> int:
    from dlm_lsp.pipeline.engine import Engine, ModelError
    from dlm_lsp.pipeline.syntax import detect_language
    from dlm_lsp.protocol.lsp_items import to_range

    text = read_text_file(args.file)
    offset = checked_offset(text, args.line, args.character)
    engine = Engine(_settings(args.model, args.settings))
    language = detect_language(args.language, args.file.resolve().as_uri())
    try:
        served = engine.load().spec.languages
        if served and language not in served:
            print(f"error: the model was trained on {', '.join(served)} only; "
                  f"{language or 'this file'} gets no completions (point --model at a "
                  "published diffusion coder for other languages)", file=sys.stderr)
            return 2
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


def cmd_adapt(args: argparse.Namespace) -> int:
    from dlm_lsp import adapt
    from dlm_lsp.model.checkpoint import ModelError, resolve_model_path

    if not args.directory.is_dir():
        raise UsageError(f"{args.directory} is not a directory")
    if args.forget:
        dropped = adapt.forget(args.directory)
        print("adapted model dropped" if dropped else "no adapted model for this repository")
        return 0
    try:
        model = resolve_model_path(args.model)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not (model / "dlm.json").is_file():
        raise UsageError(f"{model} is a published checkpoint: adapt fine-tunes dlm-lsp's own "
                         "models (the embedded one by default)")

    def confirm() -> bool:
        if args.yes or not sys.stdin.isatty():
            return True
        return input("Start? [Y/n] ").strip().lower() in ("", "y", "yes")

    target = adapt.adapt(args.directory, model, args.tokens or adapt.MAX_BUDGET,
                         confirm=confirm, threads=args.threads)
    return 0 if target is not None else 2


def cmd_pull(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dlm_lsp.model.hub import PullError, check_space, human, plan, pull

    try:
        p = plan(args.model_id, args.revision)
        fetch = [f for f in p.files if not f.cached]
        print(f"{p.repo_id} @ {p.commit[:12]}: {len(p.files)} files, {human(p.total_bytes)} "
              f"({len(fetch)} to fetch, {human(p.missing_bytes)})")
        if p.skipped:
            print(f"not fetched (the loader never reads them): {', '.join(p.skipped)}")
        check_space(p)
        with tqdm(total=p.total_bytes, initial=p.total_bytes - p.missing_bytes, unit="B",
                  unit_scale=True, desc="pull") as bar:
            snapshot = pull(p, lambda done, total: bar.update(done - bar.n))
    except PullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"fetched {len(fetch)} files ({human(p.missing_bytes)}) into {snapshot}")
    print(f'use it with the setting  "model": "{p.repo_id}"')
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
    from dlm_lsp.config import allowed_key_envs

    allowed_key_envs.update(args.allow_api_key_env)
    level = "debug" if args.verbose else args.log_level
    handler: logging.Handler = (logging.FileHandler(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))  # never stdout
    handler.setFormatter(LogFormatter(tracebacks=level == "debug"))
    if level != "debug":
        handler.addFilter(drop_duplicate_rpc_errors)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    try:
        return run_command(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    if args.command == "complete":
        return cmd_complete(args)
    if args.command == "pull":
        return cmd_pull(args)
    if args.command == "doctor":
        from dlm_lsp.doctor import run_doctor

        return run_doctor(_settings(args.model, None))
    if args.command == "random-checkpoint":
        return cmd_random_checkpoint(args)
    if args.command == "adapt":
        return cmd_adapt(args)
    if args.command == "serve-http":
        require_extra("serve", "starlette", "uvicorn")
        from dlm_lsp.serving.serve_http import run

        return run(args, _settings(args.model, args.settings))
    from dlm_lsp.protocol.server import SERVER

    if args.tcp:
        SERVER.start_tcp(args.host, args.port)
    else:
        SERVER.start_io()
    return 0


def require_extra(extra: str, *modules: str) -> None:
    """UsageError naming the extra to install when one of `modules` is missing."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"{', '.join(missing)} not installed: pip install "
                         f"'{DISTRIBUTION}[{extra}]'")
