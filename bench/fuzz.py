"""Fuzz the live servers with random and mutated messages; every request must be answered.

    python -m bench.fuzz [--lsp 10000] [--http 5000] [--seed 0] [--out bench/results/fuzz.json]

**LSP**: a raw JSON-RPC client drives ``dlm-lsp`` over stdio with a stream of valid messages
(open, incremental edits full of form feeds, CR, CRLF, U+2028 and emoji, completions, inline
completions, code actions, commands, cancellations, settings) mixed with mutated ones (wrong
types, missing fields, unknown methods, odd ids, broken JSON, deep nesting, bad headers). It
checks that the process stays up, that every request gets exactly one answer, and that every
open document on the server equals the client's copy (sha256 through ``dlm.status``).

**HTTP**: concurrent clients send ``serve-http`` valid and broken FIM requests (bad JSON,
lone surrogates, wrong fields, deep nesting) and hang up early on some; every request that
was not hung up must get a status below 500.

The test suite runs both at a small size (``tests/test_fuzz.py``); a tiny random checkpoint
keeps it about the protocol, not the model.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

TRICKY = ["a", "x = 1", " ", "\t", "\n", "\n", "\r\n", "\r", "\x0c", "\v", "\u2028", "\u2029",
          "😀", "é", "中", "def f():\n    ...\n", "# TODO\n", "<HOLE>", "(", ")", "\x85"]
URIS = [f"file:///fuzz/m{i}.py" for i in range(3)]


# -- documents as the client keeps them ---------------------------------------------------------
def _offset(text: str, line: int, character: int, encoding: str = "utf-16") -> int:
    """The client's own position -> offset (LSP line ends only; clamped)."""
    starts, i = [0], 0
    while i < len(text):
        if text[i] == "\r" and text[i + 1:i + 2] == "\n":
            i += 2
            starts.append(i)
        elif text[i] in "\r\n":
            i += 1
            starts.append(i)
        else:
            i += 1
    if line >= len(starts):
        return len(text)
    pos = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    while end > pos and text[end - 1] in "\r\n":
        end -= 1
    count = 0
    while pos < end:
        width = len(text[pos].encode("utf-16-le")) // 2
        if count + width > character:
            break
        count += width
        pos += 1
    return pos


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- a raw stdio JSON-RPC client ----------------------------------------------------------------
class RawLspClient:
    """Writes frames (valid or not) and collects answers by id; answers server requests."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, seed: int = 0):
        self.rng = random.Random(seed)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.answers: dict[Any, list[dict]] = {}
        self.answered_at: dict[Any, float] = {}  # monotonic time of each first answer
        self.notifications: list[dict] = []
        self.cond = threading.Condition()
        self.write_lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.stderr_lines: list[str] = []
        self.sent_requests: dict[Any, Any] = {}  # id -> message, to name what went unanswered
        self._next = 0

    def _answer(self, request: dict) -> Any:
        """What a client answers to the server's request: right, or (1 in 5) malformed."""
        if self.rng.random() < 0.2:
            return self.rng.choice([None, 5, "x", {"applied": "yes"}])
        return {"workspace/applyEdit": {"applied": True},
                "workspace/configuration": [{}]}.get(request["method"])

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode(errors="replace"))

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    with self.cond:
                        self.closed = True
                        self.cond.notify_all()
                    return
                if not line.strip():
                    break
                if line.lower().startswith(b"content-length"):
                    length = int(line.split(b":")[1])
            msg = json.loads(out.read(length or 0))
            if "method" in msg and "id" in msg:  # a request from the server: answer it
                self.send({"jsonrpc": "2.0", "id": msg["id"], "result": self._answer(msg)})
                continue
            with self.cond:
                if "method" in msg:
                    self.notifications.append(msg)
                else:
                    self.answers.setdefault(msg.get("id"), []).append(msg)
                    self.answered_at.setdefault(msg.get("id"), time.monotonic())
                self.cond.notify_all()

    def send_bytes(self, data: bytes) -> None:
        with self.write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def send(self, msg: dict | bytes) -> None:
        if isinstance(msg, dict) and "id" in msg and "method" in msg:
            self.sent_requests[msg["id"]] = msg
        body = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def new_id(self) -> str:
        self._next += 1
        return f"f{self._next}"

    def request(self, method: str, params: Any) -> str:
        msg_id = self.new_id()
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait(self, ids: list[Any], timeout: float) -> dict[Any, list[dict]]:
        """Answers for `ids`; raises if one is missing at the deadline or the server died."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(i in self.answers for i in ids):
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    missing = [i for i in ids if i not in self.answers]
                    why = "the server closed its output" if self.closed else "no answer"
                    shown = [self.sent_requests.get(i, i) for i in missing[:3]]
                    raise AssertionError(f"{why} for {len(missing)} requests: {shown}")
                self.cond.wait(left)
            return {i: self.answers[i] for i in ids}

    def call(self, method: str, params: Any, timeout: float = 60) -> dict:
        msg_id = self.request(method, params)
        return self.wait([msg_id], timeout)[msg_id][0]

    def close(self) -> int:
        try:
            self.call("shutdown", None, timeout=30)
            self.notify("exit", None)
            self.proc.stdin.close()
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


# -- the LSP fuzzer ----------------------------------------------------------------------------
@dataclass
class LspFuzz:
    client: RawLspClient
    rng: random.Random
    docs: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    sent: int = 0

    def text(self) -> str:
        return "".join(self.rng.choice(TRICKY) for _ in range(self.rng.randint(0, 40)))

    def position(self, uri: str | None) -> dict[str, int]:
        lines = (self.docs.get(uri, "") or "").count("\n") + 2
        return {"line": self.rng.randint(0, lines), "character": self.rng.randint(0, 12)}

    def some_uri(self) -> str:
        return self.rng.choice(list(self.docs) or URIS)

    def step(self) -> None:
        """Send one message, valid or mutated."""
        r = self.rng.random()
        self.sent += 1
        if r < 0.12 or not self.docs:
            return self.open()
        if r < 0.40:
            return self.change()
        if r < 0.72:
            return self.ask()
        if r < 0.76:
            uri = self.some_uri()
            self.docs.pop(uri, None)
            return self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        if r < 0.80:
            settings = {"dlm": self.rng.choice([{"maxTokens": self.rng.randint(-2, 6)},
                                                 {"enabled": self.rng.random() < 0.8},
                                                 {"debounceMs": "x"}, {"nope": 1}, []])}
            return self.client.notify("workspace/didChangeConfiguration",
                                      {"settings": settings})
        if r < 0.84 and self.pending:
            return self.client.notify("$/cancelRequest", {"id": self.rng.choice(self.pending)})
        return self.mutant()

    def open(self) -> None:
        uri = self.rng.choice(URIS)
        text = self.text()
        self.docs[uri] = text
        self.versions[uri] = 1
        self.client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}})

    def change(self) -> None:
        uri = self.rng.choice(list(self.docs))
        text = self.docs[uri]
        self.versions[uri] += 1
        if self.rng.random() < 0.1:
            new = self.text()
            change: dict[str, Any] = {"text": new}
            self.docs[uri] = new
        else:
            a, b = self.position(uri), self.position(uri)
            new = self.text()[:8]
            change = {"range": {"start": a, "end": b}, "text": new}
            x, y = _offset(text, **a), _offset(text, **b)
            self.docs[uri] = text[:min(x, y)] + new + text[max(x, y):]
        self.client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": self.versions[uri]},
            "contentChanges": [change]})

    def ask(self) -> None:
        uri = self.some_uri()
        doc = {"uri": uri}
        kind = self.rng.choice(["completion", "inline", "action", "resolve", "fill", "edit",
                                "status", "hover"])
        pos = self.position(uri)
        if kind == "completion":
            msg_id = self.client.request("textDocument/completion",
                                         {"textDocument": doc, "position": pos})
        elif kind == "inline":
            msg_id = self.client.request("textDocument/inlineCompletion", {
                "textDocument": doc, "position": pos, "context": {"triggerKind": 2}})
        elif kind == "action":
            msg_id = self.client.request("textDocument/codeAction", {
                "textDocument": doc, "range": {"start": pos, "end": self.position(uri)},
                "context": {"diagnostics": []}})
        elif kind == "resolve":
            msg_id = self.client.request("codeAction/resolve", {
                "title": "Fill holes (dlm)", "kind": "quickfix.dlm",
                "data": {"command": "dlm.fillHoles", "uri": uri}})
        elif kind in ("fill", "edit"):
            args = {"uri": uri, "range": {"start": pos, "end": self.position(uri)}}
            command = "dlm.fillHoles" if kind == "fill" else "dlm.instantEdit"
            msg_id = self.client.request("workspace/executeCommand",
                                         {"command": command, "arguments": [args]})
        elif kind == "status":
            msg_id = self.client.request("workspace/executeCommand",
                                         {"command": "dlm.status", "arguments": [doc]})
        else:
            msg_id = self.client.request("textDocument/hover",
                                         {"textDocument": doc, "position": pos})
        self.pending.append(msg_id)

    def mutant(self) -> None:
        """A message that is wrong in one way; requests among them still need an answer."""
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return self.client.send(b"{" + bytes(rng.randrange(256) for _ in range(8)))
        if kind == 1:
            return self.client.send(b"[" * rng.randint(100, 4000))
        if kind == 2:
            return self.client.send(json.dumps([1, {"a": None}]).encode())
        if kind == 3:  # wrong jsonrpc version: answered as invalid (id kept)
            msg_id = self.client.new_id()
            self.pending.append(msg_id)
            return self.client.send({"jsonrpc": "1.0", "id": msg_id, "method": "x"})
        method = rng.choice(["textDocument/completion", "textDocument/inlineCompletion",
                             "textDocument/codeAction", "workspace/executeCommand",
                             "codeAction/resolve", "dlm/unknown"])
        junk = rng.choice([None, 5, "x", [], {}, {"textDocument": 3}, {"position": {}},
                           {"textDocument": {"uri": self.some_uri()}, "position": {
                               "line": -1, "character": 2**40}},
                           {"command": "dlm.instantEdit", "arguments": [{"uri": 1}]},
                           {"command": "dlm.fillHoles", "arguments": "x"},
                           {"command": "nope"}])
        msg_id = self.client.new_id()
        self.pending.append(msg_id)
        if kind == 4:  # a notification for a request method, or bad params for a known one
            self.pending.pop()
            return self.client.send({"jsonrpc": "2.0", "method": method, "params": junk})
        self.client.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": junk})

    def check(self, timeout: float = 120) -> None:
        """Every request answered once; every open document equal to ours."""
        answers = self.client.wait(self.pending, timeout)
        twice = [i for i, a in answers.items() if len(a) != 1]
        assert not twice, f"answered more than once: {twice[:5]}"
        self.pending.clear()
        for uri, text in self.docs.items():
            reply = self.client.call("workspace/executeCommand", {
                "command": "dlm.status", "arguments": [{"uri": uri}]}, timeout)
            doc = reply["result"]["document"]
            assert doc is not None and doc["sha256"] == _digest(text), (
                f"{uri} drifted: server has {doc}, client has {len(text)} chars {text!r}")


def lsp_session(model: str, messages: int, seed: int, check_every: int = 50) -> dict:
    """Run `messages` fuzzed messages against one server; returns counts."""
    client = RawLspClient([sys.executable, "-m", "dlm_lsp"], seed=seed)
    fuzz = LspFuzz(client, random.Random(seed))
    init = client.call("initialize", {"capabilities": {"general": {
        "positionEncodings": ["utf-16"]}}, "initializationOptions": {
            "model": model, "maxTokens": 4, "maxBlockTokens": 6, "debounceMs": 0}}, 120)
    assert "result" in init, init
    client.notify("initialized", {})
    answered = 0
    try:
        while fuzz.sent < messages:
            fuzz.step()
            if fuzz.sent % check_every == 0:
                answered += len(fuzz.pending)
                fuzz.check()
        answered += len(fuzz.pending)
        fuzz.check()
        assert client.proc.poll() is None, "the server died"
        popups = [n for n in client.notifications if n["method"] == "window/showMessage"
                  and "Error in server" in json.dumps(n)]
        assert not popups, popups[:3]
    finally:
        code = client.close()
    return {"messages": fuzz.sent, "requests_answered": answered, "exit_code": code,
            "documents_in_sync": True, "stderr_lines": len(client.stderr_lines)}


# -- the HTTP fuzzer ---------------------------------------------------------------------------
def http_bodies(rng: random.Random) -> tuple[bytes, bool]:
    """(body, hang up early?): a valid request, or one wrong in a single way."""
    base: dict[str, Any] = {"model": "dlm-embedded", "prompt": "x = " + rng.choice(TRICKY),
                            "suffix": rng.choice(TRICKY), "max_tokens": rng.randint(1, 8)}
    kind = rng.randrange(12)
    if kind == 0:
        base["prompt"] = "a\ud800b"
    elif kind == 1:
        base["max_tokens"] = rng.choice([0, -1, 10**9, "5", None, True])
    elif kind == 2:
        base["temperature"] = rng.choice([-1, 3, "hot", None])
    elif kind == 3:
        return b"[" * rng.randint(10, 6000), False
    elif kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))), False
    elif kind == 5:
        base.pop("prompt")
    elif kind == 6:
        base["model"] = rng.choice(["gpt-4", 1, None])
    elif kind == 7:
        base["stream"] = rng.choice([True, "yes"])
    elif kind == 8:
        base["prompt"] = "\x00" * 3
    return json.dumps(base).encode(), kind == 9


async def http_session(url: str, key: str, requests: int, seed: int,
                       concurrency: int = 16) -> dict:
    import httpx

    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    hung_up = 0
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, body: bytes, hang_up: bool) -> None:
        nonlocal hung_up
        async with sem:
            if hang_up:
                try:
                    await client.post(url + "/v1/fim/completions", content=body,
                                      headers=headers, timeout=httpx.Timeout(10, read=0.001))
                except httpx.TimeoutException:
                    hung_up += 1
                    return
            r = await client.post(url + "/v1/fim/completions", content=body, headers=headers,
                                  timeout=120)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(one(client, *http_bodies(rng)) for _ in range(requests)))
        health = (await client.get(url + "/health")).json()
    answered = sum(statuses.values())
    assert answered + hung_up == requests
    assert not any(code >= 500 for code in statuses), statuses
    assert health["status"] == "ok"
    return {"requests": requests, "answered": answered, "hung_up": hung_up,
            "statuses": dict(sorted(statuses.items()))}


def start_http(model: str, key: str, *extra: str, timeout: float = 120
               ) -> tuple[subprocess.Popen, str]:
    """serve-http on a free loopback port, once it reports ready."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DLM_API_KEY": key} if key else {
        k: v for k, v in os.environ.items() if k != "DLM_API_KEY"}
    # its log goes to a file: a pipe nobody reads would stall a long run once it is full
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "dlm_lsp", "serve-http", "--port", str(port),
                             "--model", model, "--settings", '{"threads": 1}', *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, url, timeout, log)
    return proc, url


def wait_until_ready(proc: subprocess.Popen, url: str, timeout: float, log: IO[bytes]) -> None:
    """Poll /health until the model is ready; the server's log if it exits first."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read().decode(errors="replace"))
        try:
            if httpx.get(url + "/health", timeout=1).json().get("state") == "ready":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve-http did not become ready")


def main(argv: list[str] | None = None) -> None:
    from dlm_lsp.model.random_checkpoint import make_random_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lsp", type=int, default=10000, help="LSP messages")
    ap.add_argument("--http", type=int, default=5000, help="HTTP requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/fuzz.json"))
    args = ap.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = str(make_random_checkpoint(Path(tmp) / "ckpt", parrot="1"))
        t0 = time.perf_counter()
        lsp = lsp_session(model, args.lsp, args.seed)
        lsp["seconds"] = round(time.perf_counter() - t0, 1)
        print("lsp", json.dumps(lsp), flush=True)
        proc, url = start_http(model, "fuzz-key")
        try:
            t0 = time.perf_counter()
            http = asyncio.run(http_session(url, "fuzz-key", args.http, args.seed))
            http["seconds"] = round(time.perf_counter() - t0, 1)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(30)
        print("http", json.dumps(http), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "lsp": lsp, "http": http,
              "http_server_alive": alive}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
