"""JSON-RPC and LSP conformance: framing errors, shutdown, documents by LSP's line rules,
and code actions that always either act or say why not."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pytest_lsp import LanguageClient

from dlm_lsp.model.random_checkpoint import make_random_checkpoint
from dlm_lsp.protocol.documents import apply_change, split_lines

from lsp_helpers import SERVER, URI, init_params, open_doc, raw_request, status, wait_ready

# -- documents by LSP's line rules -----------------------------------------------------------
TRICKY = ["a", "b", "é", "😀", "中", " ", "\t", "\n", "\r\n", "\r", "\x0c", "\v", "\u2028",
          "\u2029", "\x1c", "\x85", "x = 1", "# TODO"]


def reference_offset(text: str, line: int, character: int, encoding: str) -> int:
    """An independent model: cut at \\n, \\r\\n, \\r, count the column in code units."""
    pieces, i, start = [], 0, 0
    while i < len(text):
        if text[i] in "\r\n":
            end = i
            i += 2 if text[i:i + 2] == "\r\n" else 1
            pieces.append((start, end))
            start = i
        else:
            i += 1
    pieces.append((start, len(text)))
    if line >= len(pieces):
        return len(text)
    a, b = pieces[line]
    units = {"utf-8": lambda c: len(c.encode()), "utf-32": lambda c: 1,
             "utf-16": lambda c: len(c.encode("utf-16-le")) // 2}[encoding]
    count, pos = 0, a
    while pos < b and count + units(text[pos]) <= character:
        count += units(text[pos])
        pos += 1
    return pos


def reference_apply(text: str, rng: tuple[int, int, int, int], new: str, encoding: str) -> str:
    a = reference_offset(text, rng[0], rng[1], encoding)
    b = reference_offset(text, rng[2], rng[3], encoding)
    return text[:min(a, b)] + new + text[max(a, b):]


texts = st.lists(st.sampled_from(TRICKY), max_size=30).map("".join)
edits = st.tuples(st.integers(0, 12), st.integers(0, 8), st.integers(0, 12), st.integers(0, 8),
                  texts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, steps=st.lists(edits, max_size=12),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]))
def test_random_edit_sequences_keep_the_document_equal_to_the_reference(text, steps, encoding):
    ours = ref = text
    for l1, c1, l2, c2, new in steps:
        change = types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(l1, c1), types.Position(l2, c2)), text=new)
        ours = apply_change(ours, change, encoding)
        ref = reference_apply(ref, (l1, c1, l2, c2), new, encoding)
        assert ours == ref
    assert "".join(split_lines(ours)) == ours


def test_lines_break_only_at_lsp_line_ends():
    assert split_lines("a\x0cb\u2028c\r\nd\re\nf") == ["a\x0cb\u2028c\r\n", "d\r", "e\n", "f"]
    assert split_lines("") == [] and split_lines("x\n") == ["x\n"]


# -- end to end --------------------------------------------------------------------------------
@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    yield lsp_client
    if lsp_client._server is not None and lsp_client._server.returncode is None:
        await lsp_client.shutdown_session()


def _settings(model: Path, **extra) -> dict:
    return {"model": str(model), "maxTokens": 4, "debounceMs": 0, **extra}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_incremental_edits_below_form_feeds_and_line_separators_stay_in_sync(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    text = 'import os\n\x0c\ns = "a\u2028b"\nx = 1\ny = 2\n'
    open_doc(client, text)
    ours = text
    # type "# TODO" at the start of "y = 2" (line 4 for LSP, line 6 for str.splitlines)
    for version, (line, char, new) in enumerate([(4, 0, "# TODO\n"), (3, 5, "0"),
                                                 (1, 1, "\u2029")], start=2):
        change = types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(line, char), types.Position(line, char)), text=new)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[change]))
        ours = apply_change(ours, change, "utf-16")
    assert ours == 'import os\n\x0c\u2029\ns = "a\u2028b"\nx = 10\n# TODO\ny = 2\n'
    doc = (await status(client, [{"uri": URI}]))["document"]
    assert doc == {"version": 4, "length": len(ours), "sha256": _digest(ours)}


async def test_a_request_after_shutdown_is_refused_as_invalid(client: LanguageClient,
                                                              parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    await client.shutdown_async(None)
    with pytest.raises(Exception, match="shut down"):
        await raw_request(client, "workspace/executeCommand", {"command": "dlm.status"}, "late")
    client.exit(None)
    assert await asyncio.wait_for(client._server.wait(), 30) == 0


@pytest.fixture(scope="module")
def junk_checkpoint(tmp_path_factory) -> Path:
    """Every slot writes ")": no fill of a hole ever parses."""
    return make_random_checkpoint(tmp_path_factory.mktemp("junk") / "ckpt", parrot=")")


async def test_fill_holes_without_a_parsing_fill_says_so_instead_of_doing_nothing(
        client: LanguageClient, junk_checkpoint):
    await client.initialize_session(init_params(_settings(junk_checkpoint)))
    text = "def f(x):\n    ...\n"
    open_doc(client, text)
    await wait_ready(client)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        range=types.Range(types.Position(0, 0), types.Position(2, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    fill = next(a for a in actions if a.title.startswith("Fill holes"))
    resolved = await client.code_action_resolve_async(fill)
    assert resolved.edit is None
    assert any("no fill" in m.message for m in client.messages)
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dlm.fillHoles", arguments=[{"uri": URI}]))
    assert result is None and sum("no fill" in m.message for m in client.messages) == 2


# -- raw frames --------------------------------------------------------------------------------
def _frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_messages(stdout, count: int) -> list[dict]:
    out = []
    while len(out) < count:
        length = None
        while True:
            line = stdout.readline()
            assert line, f"server closed its output after {out}"
            if not line.strip():
                break
            if line.lower().startswith(b"content-length"):
                length = int(line.split(b":")[1])
        out.append(json.loads(stdout.read(length)))
    return out


def test_unparseable_frames_and_non_messages_are_answered_without_popups_or_tracebacks():
    proc = subprocess.Popen([sys.executable, "-m", "dlm_lsp"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"capabilities": {}, "initializationOptions": {"enabled": False}}}
        frames = [json.dumps(init).encode(), b"{not json", b"[1, 2]",
                  json.dumps({"jsonrpc": "2.0", "id": 7, "method": "textDocument/completion",
                              "params": {"textDocument": 5}}).encode(),
                  b"[" * 5000 + b"]" * 5000,
                  json.dumps({"jsonrpc": "2.0", "id": 8, "method": "shutdown"}).encode()]
        proc.stdin.write(b"".join(_frame(f) for f in frames))
        proc.stdin.flush()
        replies = _read_messages(proc.stdout, 6)
        by_id = {}
        for r in replies:
            by_id.setdefault(r.get("id"), []).append(r)
        assert "result" in by_id[1][0] and by_id[8][0]["result"] is None
        codes = sorted(r["error"]["code"] for r in by_id[None])
        assert codes == [-32700, -32700, -32600]  # not JSON, too deep, not a message
        assert by_id[7][0]["error"]["code"] == -32602
        assert not any(r.get("method") == "window/showMessage" for r in replies)
        proc.stdin.write(_frame(json.dumps({"jsonrpc": "2.0", "method": "exit"}).encode()))
        proc.stdin.close()
        assert proc.wait(30) == 0
        stderr = proc.stderr.read().decode()
        assert "Traceback" not in stderr and len(stderr.splitlines()) == 4  # one per bad frame
    finally:
        if proc.poll() is None:
            proc.kill()


