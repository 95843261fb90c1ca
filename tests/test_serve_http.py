"""`dlm-lsp serve-http` on loopback: the FIM API, auth, limits and batching of a real server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from http_helpers import AUTH, BODY, KEY, free_port, start_server


@pytest.fixture(scope="module")
def server(parrot_checkpoint: Path) -> Iterator[str]:
    proc, url = start_server(parrot_checkpoint, "--max-body-bytes", "20000",
                             "--batch-window-ms", "20")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_health_needs_no_key_and_reports_the_model(server):
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["state"] == "ready"
    assert health["model"] == "dlm-embedded"


def test_fim_completion_answers_in_the_openai_text_completion_shape(server):
    r = httpx.post(server + "/v1/fim/completions", json=BODY, headers=AUTH, timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "dlm-embedded"
    choice = body["choices"][0]
    assert choice["text"] == "1111"  # the parrot writes 1 in every slot
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4


def test_streaming_sends_the_middle_then_done(server):
    with httpx.stream("POST", server + "/v1/fim/completions", json={**BODY, "stream": True},
                      headers=AUTH, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["text"] == "1111"


def test_missing_or_wrong_key_is_rejected(server):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        r = httpx.post(server + "/v1/fim/completions", json=BODY, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(server + "/v1/models").status_code == 401
    models = httpx.get(server + "/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["dlm-embedded"]


def test_oversized_and_malformed_requests_are_rejected_with_a_reason(server):
    big = {**BODY, "prompt": "x" * 30000}
    r = httpx.post(server + "/v1/fim/completions", json=big, headers=AUTH)
    assert r.status_code == 413
    bad = [({**BODY, "max_tokens": 0}, 400), ({**BODY, "max_tokens": 10**6}, 400),
           ({**BODY, "prompt": 3}, 400), ({**BODY, "temperature": "hot"}, 400),
           ({**BODY, "model": "gpt-4"}, 404)]
    for body, status in bad:
        r = httpx.post(server + "/v1/fim/completions", json=body, headers=AUTH)
        assert r.status_code == status, body
        assert r.json()["error"]["message"]
    r = httpx.post(server + "/v1/fim/completions", content=b"{not json", headers=AUTH)
    assert r.status_code == 400


def test_fifty_concurrent_requests_are_all_answered_in_shared_batches(server):
    before = httpx.get(server + "/health").json()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(
                client.post(server + "/v1/fim/completions", headers=AUTH,
                            json={**BODY, "prompt": f"v{i} = ", "max_tokens": 1 + i % 5})
                for i in range(50)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 50
    assert [len(r.json()["choices"][0]["text"]) for r in responses] == [1 + i % 5
                                                                        for i in range(50)]
    after = httpx.get(server + "/health").json()
    assert after["requests"] - before["requests"] == 50
    assert after["batches"] - before["batches"] < 50  # some requests shared a denoising run
    assert after["largest_batch"] > 1


def test_listening_beyond_loopback_without_a_key_is_refused(parrot_checkpoint):
    env = {k: v for k, v in os.environ.items() if k != "DLM_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "dlm_lsp", "serve-http", "--host", "0.0.0.0", "--port",
         str(free_port()), "--model", str(parrot_checkpoint)],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "without an API key" in proc.stderr and "DLM_API_KEY" in proc.stderr


async def _lsp_session(settings: dict, env: dict[str, str]):
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("dlm-test", "0.1")
    await client.start_io(sys.executable, "-m", "dlm_lsp", env={**os.environ, **env})
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options=settings))
    client.initialized(types.InitializedParams())
    return client


async def _status(client) -> dict:
    from lsprotocol import types

    for _ in range(600):
        st = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="dlm.status"))
        if st["state"] in ("ready", "error"):
            return st
        await asyncio.sleep(0.05)
    raise TimeoutError


async def _close(client) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def _remote(url: str, **extra) -> dict:
    return {"backend": "remote", "debounceMs": 0, "maxTokens": 4,
            "remote": {"url": url, "model": "dlm-embedded", "apiKeyEnv": "DLM_TEST_KEY",
                       **extra}}


async def test_lsp_in_remote_mode_completes_through_serve_http(server):
    from lsprotocol import types

    client = await _lsp_session(_remote(server + "/v1"), {"DLM_TEST_KEY": KEY})
    try:
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri="file:///w/a.py", language_id="python", version=1, text="x = \n")))
        assert (await _status(client))["state"] == "ready"
        result = await client.text_document_completion_async(types.CompletionParams(
            types.TextDocumentIdentifier("file:///w/a.py"), types.Position(0, 4)))
        items = result.items if isinstance(result, types.CompletionList) else result
        assert items[0].text_edit.new_text == "1111"
        last = (await _status(client))["lastRun"]
        assert last["tokens"] == 4 and last["forward_passes"] == 0  # decoded by the server
    finally:
        await _close(client)


async def test_remote_mode_says_when_the_key_is_rejected_or_the_server_unreachable(server):
    cases = [(_remote(server), {"DLM_TEST_KEY": "wrong"}, "rejected"),
             (_remote(server), {}, "is not set"),
             (_remote(f"http://127.0.0.1:{free_port()}"), {"DLM_TEST_KEY": KEY}, "cannot reach")]
    for settings, env, words in cases:
        if not env:
            env = {"DLM_TEST_KEY": ""}
        client = await _lsp_session(settings, env)
        try:
            st = await _status(client)
            assert st["state"] == "error" and words in st["error"], st
        finally:
            await _close(client)


class SilentServer:
    """Accepts one connection and never answers; notes whether the client hung up."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted, self.hung_up = threading.Event(), threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.accepted.set()
        conn.settimeout(120)
        try:
            while conn.recv(4096):
                pass
            self.hung_up.set()  # end of stream: the client closed its side
        except OSError:
            pass
        conn.close()


def test_a_cancelled_request_closes_its_connection_at_once():
    import threading

    from dlm_lsp.config import RemoteSettings
    from dlm_lsp.model.sampler import Cancelled
    from dlm_lsp.serving.remote import RemoteClient

    silent = SilentServer()
    # a timeout far longer than the waits below: only the cancel can end the request
    client = RemoteClient(RemoteSettings(url=silent.url, timeout_ms=110_000))
    cancel = threading.Event()
    threading.Thread(target=lambda: silent.accepted.wait(60) and cancel.set(),
                     daemon=True).start()
    with pytest.raises(Cancelled):
        client.fim("x = ", "", 4, 0.0, cancel)
    assert silent.hung_up.wait(60), "the cancelled request left its connection open"


def test_a_silent_server_times_out_with_the_setting_named():
    from dlm_lsp.config import RemoteSettings
    from dlm_lsp.model.checkpoint import ModelError
    from dlm_lsp.serving.remote import RemoteClient

    silent = SilentServer()
    client = RemoteClient(RemoteSettings(url=silent.url, timeout_ms=300))
    with pytest.raises(ModelError, match="300 ms"):
        client.fim("x = ", "", 4, 0.0)


def test_the_burst_benchmark_reports_batched_and_unbatched_runs(parrot_checkpoint):
    from bench.serve_burst import _requests, burst

    prompts = _requests(3)
    one, batched = (burst(str(parrot_checkpoint), mb, prompts) for mb in (1, 8))
    assert one["requests"] == batched["requests"] == 3
    assert one["largest_batch"] == 1 and one["batches"] == 3
    assert batched["batches"] <= 3 and one["wall_s"] > 0
