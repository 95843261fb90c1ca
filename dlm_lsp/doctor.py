"""`dlm-lsp doctor`: what is installed, which model loads, and the whole chain checked.

The chain: the model loads in this process and completes a sample that still parses, then
``dlm-lsp`` is started as an editor would start it (stdio), loads the same model and answers
an inline completion. Each step prints one line; the exit status is 0 only when all pass.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dlm_lsp import DISTRIBUTION, __version__
from dlm_lsp.config import Settings, camel
from dlm_lsp.model.checkpoint import EMBEDDED_DIR, HOW_TO_POINT, ModelError, embedded_available

SAMPLE = '''def mean(values):
    """Return the arithmetic mean of a list of numbers."""
    total = 0
    for v in values:
        total += v
''' + "    return total / "

EMBEDDED_NOTE = (
    "this is the small model shipped in the package ({params}): it runs anywhere, but it "
    "completes only short, common lines, and often wrongly. For real use point \"model\" at "
    "a published diffusion coder (README: Which model should I use?)")


def _line(name: str, value: object) -> None:
    print(f"{name:<22} {value}")


def run_doctor(settings: Settings) -> int:
    """Print the report; 0 when every step of the chain passed, 1 otherwise."""
    import torch

    from dlm_lsp.model.denoiser import count_parameters
    from dlm_lsp.pipeline.engine import Engine
    from dlm_lsp.pipeline.syntax import error_count

    _line(DISTRIBUTION, __version__)
    _line("python", sys.version.split()[0] + f" ({platform.platform()})")
    _line("torch", f"{torch.__version__}, {torch.get_num_threads()} threads, "
                   f"{os.cpu_count()} cores, cuda={torch.cuda.is_available()}")
    try:
        ok = error_count("python", "def f(:\n") > 0 and error_count("python", "x = 1\n") == 0
        _line("tree-sitter", "python grammar ok" if ok else "python grammar gives odd results")
    except Exception as exc:  # pragma: no cover - broken install
        _line("tree-sitter", f"FAILED: {exc!r}")
        return 1
    _line("model setting", settings.model)
    from dlm_lsp.adapt import find_adapted

    adapted = find_adapted(Path.cwd()) if settings.model == "embedded" else None
    if adapted is not None:
        facts = json.loads((adapted / "dlm.json").read_text())["training"].get("adapted", {})
        _line("adapted model", f"{adapted} (for {facts.get('repository')} at commit "
                               f"{(facts.get('commit') or '?')[:12]}, {facts.get('date')}); "
                               "the server uses it for this repository")
    _line("embedded model", "present" if embedded_available() else "not in this install")
    engine = Engine(settings)
    if adapted is not None:  # what the server serves in this repository
        engine.use_adapted(adapted)
    t0 = time.perf_counter()
    try:
        model = engine.load()
    except ModelError as exc:
        print(f"\nThe model could not be loaded: {exc}")
        if HOW_TO_POINT not in str(exc):
            print(HOW_TO_POINT)
        print("For a quick smoke test without a trained model:\n"
              "  dlm-lsp random-checkpoint /tmp/dlm-random && "
              "dlm-lsp doctor --model /tmp/dlm-random")
        return 1
    total, non_emb = count_parameters(model.denoiser)
    params = f"{total / 1e6:.1f}M parameters, {non_emb / 1e6:.1f}M non-embedding"
    _line("model path", model.path)
    _line("parameters", params)
    _line("load time", f"{(time.perf_counter() - t0) * 1e3:.0f} ms")
    _line("device", model.device)
    _line("languages", ", ".join(model.spec.languages) + " (no completions in other files)"
          if model.spec.languages else "all")
    if model.path.resolve() == EMBEDDED_DIR.resolve():
        _line("note", EMBEDDED_NOTE.format(params=f"{total / 1e6:.1f}M parameters"))
    report_decoding(model, engine)
    outcome = engine.complete(SAMPLE, len(SAMPLE), "python")
    stats = outcome.stats
    text = outcome.candidates[0].text if outcome.candidates else ""
    parses = bool(text) and error_count("python", SAMPLE + text + "\n") == 0
    _line("sample completion", f"{text!r} ({'parses' if parses else 'does NOT parse'})"
          if text else "none (every candidate was cut or rejected)")
    if stats:
        _line("sample latency", f"{stats.ms:.0f} ms, {stats.forward_passes} forward passes, "
                                f"{stats.tokens} tokens, context {stats.context_tokens} tokens")
    server_ok = check_server(settings)
    return 0 if parses and server_ok else 1


def report_decoding(model: Any, engine: Any) -> None:
    """The family, its ids and where each came from, the prompt format and the recipe."""
    from dlm_lsp.model.recipes import recipe_for
    from dlm_lsp.pipeline.engine import published_recipe

    spec = model.spec
    _line("family", model.family or "dlm-lsp checkpoint (dlm.json)")
    for field in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(spec, field)
        where = spec.sources.get(field, "dlm.json" if model.family is None else "-")
        token = model.tokenizer.id_to_token(value) if value is not None else None
        _line(f"  {field}", f"{value} {token!r} (from {where})" if value is not None else "-")
    if spec.end_token_ids:
        _line("  more end tokens", ", ".join(
            f"{i} {model.tokenizer.id_to_token(i)!r}" for i in spec.end_token_ids))
    if spec.expand_token_id is not None or spec.delete_token_id is not None:
        _line("  expand / delete", f"{spec.expand_token_id} / {spec.delete_token_id}")
    _line("  logits shift", "yes (position i-1 predicts i)" if spec.logits_shift else "no")
    _line("  attention", f"causal across blocks of {spec.block_size}" if spec.block_size
          else "bidirectional")
    _line("  prompt format", spec.prompt_format)
    recipe = published_recipe(model, engine.settings)
    if recipe is not None:
        cfg = engine.sampler_config(model)
        _line("decoding", f"published recipe: {recipe.describe()}; temperature {cfg.temperature:g}"
              f" and top_p {cfg.top_p:g} in force (settings you set win)")
        _line("  recipe from", recipe.source)
    else:
        why = ("decoding is \"fast\"" if recipe_for(model.family) else "no published recipe")
        cfg = engine.sampler_config(model)
        _line("decoding", f"editor fast path ({why}): threshold {cfg.threshold:g}, window "
                          f"{cfg.window}, K/V cache {'on' if cfg.use_cache else 'off'}")
    for warning in model.warnings:
        _line("warning", warning)


def check_server(settings: Settings, timeout: float = 300) -> bool:
    """Start ``dlm-lsp`` on stdio as an editor does; it must load the model and answer an
    inline completion. Prints one line per step."""
    options = {camel(k): v for k, v in settings.__dict__.items()
               if k not in ("remote", "explicit")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dlm_lsp"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    rpc = _Rpc(proc)
    try:
        rpc.call("initialize", {"capabilities": {}, "initializationOptions": options})
        rpc.notify("initialized", {})
        _line("LSP server", f"started ({(time.perf_counter() - t0) * 1e3:.0f} ms)")
        deadline = time.monotonic() + timeout
        while (st := rpc.call("workspace/executeCommand", {"command": "dlm.status"}))[
                "state"] not in ("ready", "error"):
            if time.monotonic() > deadline:
                raise TimeoutError("the model did not load in the server")
            time.sleep(0.1)
        if st["state"] == "error":
            _line("LSP model", f"FAILED: {st['error']}")
            return False
        uri = "file:///doctor/sample.py"
        rpc.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": SAMPLE}})
        lines = SAMPLE.split("\n")
        items = rpc.call("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri},
            "position": {"line": len(lines) - 1, "character": len(lines[-1])},
            "context": {"triggerKind": 1}})["items"]
        _line("LSP completion", f"{len(items)} item(s): "
                                f"{items[0]['insertText']!r}" if items else "no items")
        rpc.call("shutdown", None)
        rpc.notify("exit", None)
        return proc.wait(30) == 0
    except Exception as exc:  # noqa: BLE001 - doctor reports, it does not crash
        _line("LSP server", f"FAILED: {type(exc).__name__}: {exc}")
        return False
    finally:
        if proc.poll() is None:
            proc.kill()


class _Rpc:
    """Just enough JSON-RPC over a child's stdio for the doctor's check."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.next_id = proc, 0

    def _send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def call(self, method: str, params: Any) -> Any:
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            msg = self._read()
            if msg.get("id") == self.next_id and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(msg["error"].get("message"))
                return msg.get("result")
            if "method" in msg and "id" in msg:  # the server asks something: answer nothing
                self._send({"jsonrpc": "2.0", "id": msg["id"], "result": None})

    def _read(self) -> dict[str, Any]:
        length = 0
        while (line := self.proc.stdout.readline()) not in (b"\r\n", b"\n"):
            if not line:
                raise EOFError("the server exited")
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.proc.stdout.read(length))
