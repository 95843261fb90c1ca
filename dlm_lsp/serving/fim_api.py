"""The fill-in-the-middle HTTP API, in the shape of Inception's Mercury FIM endpoint.

    POST /v1/fim/completions  {"model", "prompt", "suffix", "max_tokens", "temperature",
                               "stream"}  ->  an OpenAI-style text completion
    GET  /v1/models           the served model
    GET  /health              liveness and model state (no auth)

The routes are a Starlette app (the optional ``serve`` extra) around a :class:`FimService`
(the local batcher of ``serve_http.py``, or a Ray Serve replica), so both servers answer
the same API. Requests are checked here, each on its own before any batching: bearer token,
body size and read time, JSON nesting, field types and ranges, text a tokenizer can take
(no lone surrogates, no NUL). A client that hangs up is noticed at once and its row of the
batch ends at the next denoising step. Answers carry ``timings`` (queue and decode ms).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dlm_lsp.serving.jobs import DecodeTimeout, QueueFull, QueueTimeout

if TYPE_CHECKING:  # starlette is the optional "serve" extra: imported where the app is built
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response


@dataclass
class Completion:
    """What a service returns for one request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (the model ended the middle) or "length"
    timings: dict[str, float] = field(default_factory=dict)  # queue_ms, decode_ms


@dataclass
class FimParams:
    prompt: str
    suffix: str
    max_tokens: int
    temperature: float


class ClientGone(Exception):
    """The caller hung up before its answer was ready."""


class FimService(Protocol):
    model_name: str

    async def complete(self, params: FimParams, disconnected: asyncio.Event) -> Completion:
        """The completion; may raise QueueFull, QueueTimeout, DecodeTimeout, ClientGone."""

    def state(self) -> dict[str, Any]: ...


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20  # prompt + suffix of a huge file, far more than a window
    max_tokens: int = 512
    timeout_s: float = 30.0  # decode time of one request, from the start of its batch
    body_timeout_s: float = 10.0  # to receive the whole body


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        from starlette.responses import JSONResponse

        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return JSONResponse({"error": {"message": self.message, "type": self.kind}},
                            status_code=self.status, headers=headers)


def check_text(name: str, value: str) -> None:
    """Text the tokenizer can take: UTF-8 encodable (no lone surrogate) and without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{name} has a lone surrogate (U+{ord(value[exc.start]):04X}) at "
                       f"index {exc.start}: not valid Unicode text") from exc
    if "\x00" in value:
        raise ApiError(400, f"{name} contains NUL characters: binary content is not completed")


def parse_params(body: Any, model_name: str, limits: Limits) -> tuple[FimParams, bool]:
    """Validated parameters and the stream flag; ApiError (400/404) on a bad request."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    model = body.get("model", model_name)
    if model != model_name:
        raise ApiError(404, f"model {model!r} is not served here; use {model_name!r}",
                       "not_found_error")
    prompt, suffix = body.get("prompt"), body.get("suffix", "")
    if not isinstance(prompt, str) or not isinstance(suffix, str):
        raise ApiError(400, "prompt (required) and suffix must be strings")
    check_text("prompt", prompt)
    check_text("suffix", suffix)
    max_tokens = body.get("max_tokens", 64)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) \
            or not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(400, f"max_tokens must be an integer from 1 to {limits.max_tokens}")
    temperature = body.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
            or not 0.0 <= temperature <= 2.0:
        raise ApiError(400, "temperature must be a number from 0 to 2")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false")
    return FimParams(prompt, suffix, max_tokens, float(temperature)), stream


def completion_body(c: Completion, model: str, cid: str, created: int) -> dict[str, Any]:
    return {
        "id": cid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": c.text, "finish_reason": c.finish_reason}],
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                  "total_tokens": c.prompt_tokens + c.completion_tokens},
        "timings": c.timings,
    }


def make_app(service: FimService, api_key: str | None, limits: Limits | None = None,
             lifespan: Any = None) -> Starlette:
    """The API's routes; with `api_key`, every route but /health needs ``Bearer <key>``.
    `lifespan` (an async context manager factory) starts and stops the service."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    limits = limits or Limits()

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)",
                           "authentication_error")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
        return body

    async def read_json(request: Request) -> Any:
        try:
            body = await asyncio.wait_for(read_body(request), limits.body_timeout_s)
        except TimeoutError as exc:
            raise ApiError(408, f"the body did not arrive within {limits.body_timeout_s:g} s",
                           "timeout_error") from exc
        try:
            return json.loads(body)
        except RecursionError as exc:
            raise ApiError(400, "the body is JSON nested too deeply") from exc
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from exc

    async def fim(request: Request) -> Response:
        disconnected = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        try:
            check_auth(request)
            params, stream = parse_params(await read_json(request), service.model_name, limits)
            watcher = asyncio.create_task(_watch_disconnect(request, disconnected))
            done = await service.complete(params, disconnected)
        except ApiError as err:
            return err.response()
        except (QueueFull, QueueTimeout) as exc:
            return ApiError(429, str(exc), "overloaded_error", exc.retry_after).response()
        except DecodeTimeout as exc:
            return ApiError(504, str(exc), "timeout_error").response()
        except ClientGone:
            return JSONResponse({"error": {"message": "client gone", "type": "cancelled"}},
                                status_code=499)
        except Exception as exc:  # noqa: BLE001 - this request failed; the server goes on
            return ApiError(500, f"the decode failed: {type(exc).__name__}: {exc}",
                            "server_error").response()
        finally:
            if watcher is not None:
                watcher.cancel()
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        body = completion_body(done, service.model_name, cid, created)
        if not stream:
            return JSONResponse(body)
        return StreamingResponse(_sse(body), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        try:
            check_auth(request)
        except ApiError as err:
            return err.response()
        return JSONResponse({"object": "list", "data": [
            {"id": service.model_name, "object": "model", "owned_by": "dlm-lsp"}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": service.model_name, **service.state()})

    return Starlette(routes=[
        Route("/v1/fim/completions", fim, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ], lifespan=lifespan)


async def _watch_disconnect(request: Request, disconnected: asyncio.Event) -> None:
    """Set `disconnected` when the client hangs up (the body is read: the next ASGI message
    is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return


async def _sse(body: dict[str, Any]) -> AsyncIterator[bytes]:
    """The whole middle as one chunk (a denoiser finishes the span at once), then [DONE]."""
    chunk = {**body, "choices": [{**body["choices"][0]}]}
    yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"
