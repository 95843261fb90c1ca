"""The JSON-RPC message loop: framing, parse errors and malformed messages answered.

pygls' own loop logs a traceback and pops an "Error in server" message in the editor for
an unparseable frame, and answers nothing. This loop answers as JSON-RPC says: ``-32700``
(null id) for a body that is not JSON, ``-32600`` for JSON that is not a JSON-RPC message,
and an error for an over-long frame, with one line in the log. The server stays up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, Protocol

from pygls.exceptions import JsonRpcException

log = logging.getLogger("dlm_lsp.transport")

MAX_MESSAGE_BYTES = 256 << 20  # a 5 MB document is ~7 MB of JSON; this is a runaway frame
PARSE_ERROR, INVALID_REQUEST = -32700, -32600


class AsyncReader(Protocol):
    async def readline(self) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...


def error_response(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


async def read_frame(reader: AsyncReader) -> tuple[bytes | None, str | None]:
    """(body, None), (None, why the frame was refused) or (None, None) at end of input.

    Headers end at an empty line; only ``Content-Length`` matters (any case).
    """
    length: int | None = None
    bad_header = None
    seen_header = False
    while True:
        line = await reader.readline()
        if not line:
            return None, None
        if not line.strip():
            if not seen_header:
                continue  # stray blank line between messages
            if length is None:
                return None, bad_header or "a message without Content-Length"
            break
        seen_header = True
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                bad_header = f"bad Content-Length header {value.strip()[:40]!r}"
            else:
                if length < 0:
                    length, bad_header = None, "negative Content-Length"
    if length > MAX_MESSAGE_BYTES:
        left = length
        while left:  # read past it so the next frame is found
            left -= len(await reader.readexactly(min(left, 1 << 20)))
        return None, f"message of {length} bytes is over the {MAX_MESSAGE_BYTES} limit"
    return await reader.readexactly(length), None


async def serve_messages(reader: AsyncReader, protocol: Any, stop: threading.Event) -> None:
    """Read frames until end of input or `stop`; hand each message to `protocol`."""
    while not stop.is_set():
        try:
            body, refused = await read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        if refused is not None:
            log.warning("refused a frame: %s", refused)
            protocol._send_data(error_response(None, INVALID_REQUEST, refused))
            continue
        if body is None:
            return
        handle_body(body, protocol)


def _fail_pending(protocol: Any, msg_id: Any, exc: Exception) -> None:
    """Fail the future of the server's own request `msg_id` (e.g. workspace/applyEdit)."""
    future = protocol._request_futures.pop(msg_id, None) if isinstance(msg_id, str | int) \
        else None
    if future is not None and not future.done():
        future.set_exception(ValueError(f"malformed answer from the client: {exc}"))


def handle_body(body: bytes, protocol: Any) -> None:
    """Parse one frame's body and dispatch it; every failure is answered or logged."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:
        log.warning("unparseable message: %s", str(exc)[:200])
        protocol._send_data(error_response(None, PARSE_ERROR, f"parse error: {exc}"[:300]))
        return
    if not isinstance(raw, dict) or raw.get("jsonrpc") != "2.0" or not (
            isinstance(raw.get("method"), str) or "result" in raw or "error" in raw):
        msg_id = raw.get("id") if isinstance(raw, dict) else None
        log.warning("not a JSON-RPC 2.0 message: %s", str(raw)[:200])
        if not isinstance(msg_id, (str, int)) or isinstance(msg_id, bool):
            msg_id = None
        protocol._send_data(error_response(msg_id, INVALID_REQUEST, "not a JSON-RPC 2.0 message"))
        return
    try:
        message = json.loads(body, object_hook=protocol.structure_message)
    except JsonRpcException as exc:  # bad params: a request was answered by the protocol
        log.warning("%s: %s", raw.get("method"), exc)
        if "method" not in raw and "id" in raw:
            _fail_pending(protocol, raw["id"], exc)
        return
    except Exception as exc:  # noqa: BLE001 - whatever the converter raises, stay up
        log.warning("%s: cannot read the message: %s", raw.get("method"), exc)
        if "id" in raw and "method" in raw:
            protocol._send_data(error_response(raw["id"], INVALID_REQUEST, str(exc)[:300]))
        elif "id" in raw:  # a malformed answer to our request: the waiting handler must go on
            _fail_pending(protocol, raw["id"], exc)
        return
    try:
        protocol.handle_message(message)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s failed: %s", raw.get("method"), exc)
