"""Helpers shared by the end-to-end LSP tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "dlm_lsp"])
URI = "file:///work/example.py"


def init_params(settings: dict[str, Any], encodings: list[str] | None = None,
                client: str = "visual-studio-code") -> types.InitializeParams:
    caps = client_capabilities(client)
    if encodings is not None:
        caps.general = caps.general or types.GeneralClientCapabilities()
        caps.general.position_encodings = [types.PositionEncodingKind(e) for e in encodings]
    return types.InitializeParams(capabilities=caps, initialization_options=settings)


def open_doc(client: LanguageClient, text: str, uri: str = URI, language: str = "python") -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))


def change_doc(client: LanguageClient, text: str, version: int, uri: str = URI) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def status(client: LanguageClient, args: list[Any] | None = None) -> dict[str, Any]:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="dlm.status", arguments=args))


async def wait_for_status(client: LanguageClient, condition: Callable[[dict[str, Any]], bool],
                          timeout: float = 60.0, args: list[Any] | None = None) -> dict[str, Any]:
    """Poll ``dlm.status`` until `condition` holds (a deadline, not a guess)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        st = await status(client, args)
        if condition(st):
            return st
        await asyncio.sleep(0.02)
    raise TimeoutError(f"status never satisfied the condition; last: {st}")


async def wait_ready(client: LanguageClient, timeout: float = 60.0) -> dict[str, Any]:
    return await wait_for_status(client, lambda st: st["state"] in ("ready", "error"), timeout)


def completion_params(line: int, character: int, uri: str = URI) -> types.CompletionParams:
    return types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                  position=types.Position(line=line, character=character))


def inline_params(line: int, character: int, uri: str = URI) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic))


async def raw_request(client: LanguageClient, method: str, params: Any, msg_id: str) -> Any:
    """Send a request whose params need not fit the method's type (for malformed input)."""
    future: Future[Any] = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), 10)


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def inside(rng: types.Range, text: str) -> bool:
    lines = text.split("\n")
    for pos in (rng.start, rng.end):
        if pos.line >= len(lines) or pos.character > utf16_len(lines[pos.line]):
            return False
    return (rng.start.line, rng.start.character) <= (rng.end.line, rng.end.character)
