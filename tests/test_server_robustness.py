"""The server answers and stays up on bad input; settings and model errors reach the user."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from lsp_helpers import (
    SERVER,
    URI,
    completion_params,
    init_params,
    inline_params,
    inside,
    open_doc,
    raw_request,
    status,
    utf16_len,
    wait_ready,
)


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    yield lsp_client
    if lsp_client._server is not None and lsp_client._server.returncode is None:
        await lsp_client.shutdown_session()


def _settings(model, **extra):
    return {"model": str(model), "maxTokens": 4, "debounceMs": 0, **extra}


async def _alive(client: LanguageClient) -> None:
    assert (await status(client))["state"] == "ready"


async def test_malformed_params_get_an_error_and_the_server_stays_up(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    await wait_ready(client)
    for method, params in [
        (types.TEXT_DOCUMENT_COMPLETION, {"textDocument": 5}),
        (types.TEXT_DOCUMENT_INLINE_COMPLETION, {"position": "x"}),
        (types.WORKSPACE_EXECUTE_COMMAND, {"command": "dlm.fillHoles", "arguments": [42]}),
        (types.WORKSPACE_EXECUTE_COMMAND, {"command": "dlm.instantEdit",
                                           "arguments": [{"uri": URI, "range": "bad"}]}),
    ]:
        with pytest.raises(Exception, match="[Ii]nvalid|expected|error|Error"):
            await raw_request(client, method, params, f"bad-{method}-{len(str(params))}")
    await _alive(client)


async def test_unknown_document_and_positions_past_the_end_are_answered(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    await wait_ready(client)
    empty = await client.text_document_completion_async(
        completion_params(0, 0, uri="file:///never/opened.py"))
    assert len(empty.items) == 0
    text = "x = 1\ny = \n"
    open_doc(client, text)
    comp = await client.text_document_completion_async(completion_params(500, 900))
    inline = await client.text_document_inline_completion_async(inline_params(1, 999))
    for rng in [i.text_edit.range for i in comp.items] + [i.range for i in inline.items]:
        assert inside(rng, text)
    assert inline.items  # clamped to the end of line 1, which is a fine place to complete
    await _alive(client)


async def test_five_megabyte_and_binary_files_are_handled(client: LanguageClient,
                                                          parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    await wait_ready(client)
    big = "".join(f"value_{i} = compute({i}, 'padding text')\n" for i in range(120_000))
    assert len(big) > 5_000_000
    big += "total = "
    open_doc(client, big, uri="file:///work/big.py")
    last = big.count("\n")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    comp = await client.text_document_completion_async(
        completion_params(last, 8, uri="file:///work/big.py"))
    mid = await client.text_document_inline_completion_async(
        inline_params(60_000, 10, uri="file:///work/big.py"))
    print(f"5 MB file: two requests in {(loop.time() - t0) * 1e3:.0f} ms")
    assert comp.items and mid.items
    binary = "\x00\x01\x02ELF\x00" * 2000
    open_doc(client, binary, uri="file:///work/blob.py")
    res = await client.text_document_completion_async(
        completion_params(0, 3, uri="file:///work/blob.py"))
    assert len(res.items) == 0
    await _alive(client)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
async def test_emoji_columns_follow_the_negotiated_encoding(client: LanguageClient,
                                                            parrot_checkpoint, encoding):
    result = await client.initialize_session(
        init_params(_settings(parrot_checkpoint), encodings=[encoding]))
    assert result.capabilities.position_encoding == encoding
    await wait_ready(client)
    line = 'label = "😀 ok 😀" + '
    text = line + "\n"
    open_doc(client, text)
    col = utf16_len(line) if encoding == "utf-16" else len(line.encode("utf-8"))
    comp = await client.text_document_completion_async(completion_params(0, col))
    assert comp.items
    rng = comp.items[0].text_edit.range
    assert (rng.start.line, rng.start.character, rng.end.character) == (0, col, col)
    inline = await client.text_document_inline_completion_async(inline_params(0, col))
    assert inline.items[0].range.start.character == col
    await _alive(client)


async def test_bad_settings_and_a_missing_model_are_explained_not_fatal(client: LanguageClient,
                                                                        tmp_path):
    await client.initialize_session(init_params(
        {"model": str(tmp_path / "missing"), "maxSteps": -3, "bogus": 1}))
    st = await wait_ready(client)
    assert st["state"] == "error" and 'Set the "model" setting' in st["error"]
    open_doc(client, "x = \n")
    comp = await client.text_document_completion_async(completion_params(0, 4))
    assert len(comp.items) == 0
    shown = " | ".join(m.message for m in client.messages)
    assert "dlm.maxSteps must be an integer from 1 to 1024" in shown
    assert "unknown setting dlm.bogus" in shown
    assert 'Set the "model" setting' in shown


async def test_model_loading_reports_progress(client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    await wait_ready(client)
    deadline = asyncio.get_running_loop().time() + 60
    while not any(p.kind == "end" for r in client.progress_reports.values() for p in r):
        assert asyncio.get_running_loop().time() < deadline, client.progress_reports
        await asyncio.sleep(0.02)
    kinds = [p.kind for reports in client.progress_reports.values() for p in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds


async def test_neovim_without_snippets_gets_multi_line_items_only_as_inline(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(
        _settings(parrot_checkpoint, maxBlockTokens=6), client="neovim"))
    await wait_ready(client)
    text = "def f(x):\n    \n"
    open_doc(client, text)
    # a block completion of one line is fine as plain text; make the model's line break count
    comp = await client.text_document_completion_async(completion_params(1, 4))
    assert all("\n" not in i.text_edit.new_text for i in comp.items)
    assert all(i.insert_text_format in (None, types.InsertTextFormat.PlainText)
               for i in comp.items)


def _frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_message(sock: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(4096)
    return json.loads(rest[:length])


def test_tcp_transport_serves_initialize(parrot_checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dlm_lsp", "--tcp", "--port", str(port)],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60  # the server imports torch first: slow when busy
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert proc.poll() is None, "the server exited before listening"
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.1)
        with sock:
            sock.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "processId": None, "rootUri": None, "capabilities": {},
                "initializationOptions": {"model": str(parrot_checkpoint)}}}))
            reply = _read_message(sock)
            assert reply["id"] == 1
            assert "inlineCompletionProvider" in reply["result"]["capabilities"]
            assert reply["result"]["capabilities"]["positionEncoding"] == "utf-16"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_clients_without_code_action_resolve_get_edits_or_commands(
        client: LanguageClient, parrot_checkpoint):
    params = init_params(_settings(parrot_checkpoint))
    params.capabilities.text_document.code_action.resolve_support = None
    await client.initialize_session(params)
    text = "def f():\n    ...\n"
    open_doc(client, text)
    await wait_ready(client)
    raw = await raw_request(client, types.TEXT_DOCUMENT_CODE_ACTION, {
        "textDocument": {"uri": URI},
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}},
        "context": {"diagnostics": []}}, "no-resolve-1")
    by_title = {a["title"]: a for a in raw}
    fill = by_title["Fill holes (dlm)"]["edit"]["documentChanges"][0]["edits"]
    assert [e["newText"] for e in fill] == ["1" * 96]  # maxBlockTokens slots
    regenerate = by_title["Regenerate selection (dlm)"]
    assert "edit" not in regenerate and regenerate["command"]["command"] == "dlm.instantEdit"


async def test_notifications_leave_nothing_behind_in_the_server(client: LanguageClient,
                                                                 parrot_checkpoint):
    """A keystroke is a didChange: after hundreds of them the server holds no more pending
    futures than before (pygls filed one per notification, forever)."""
    from lsp_helpers import change_doc

    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    await wait_ready(client)
    open_doc(client, "x = 1\n")
    before = (await status(client))["pendingFutures"]
    for version in range(2, 302):
        change_doc(client, "x = 1\n" + "y" * version, version)
    st = await status(client, [{"uri": URI}])
    assert st["document"]["version"] == 301  # every change was handled
    assert st["pendingFutures"] <= before + 1  # this status request itself at most


def test_shutdown_cancels_a_pending_notification_future_without_error():
    """A notification still running when ``shutdown`` arrives is cancelled; dropping its
    future must not change the dict pygls is iterating (it did: 'dictionary changed size')."""
    from concurrent.futures import Future

    from dlm_lsp.protocol.server import DlmServer

    protocol = DlmServer().protocol
    pending: Future = Future()
    protocol._request_futures["note-1"] = pending
    protocol._notification_ids.add("note-1")
    for _ in protocol.lsp_shutdown():
        pass
    assert pending.cancelled()
    protocol._sweep_notification_futures()
    assert "note-1" not in protocol._request_futures
