"""serve-http under abuse: bad text, deep JSON, hang-ups, time limits, a full queue, slow
connections; and the queue's batching rules."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from dlm_lsp.config import Settings
from dlm_lsp.serving.fim_api import Completion, FimParams
from dlm_lsp.serving.jobs import JobQueue, QueueFull, QueueTimeout, bucket
from dlm_lsp.serving.serve_http import LocalFimService

from http_helpers import AUTH, BODY, start_server

URL = "/v1/fim/completions"


def wait_health(url: str, condition, timeout: float = 60.0) -> dict:
    """Poll /health until `condition` holds (a deadline, not a guess)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(url + "/health", timeout=5).json()
        if condition(health):
            return health
        time.sleep(0.02)
    raise TimeoutError(f"/health never satisfied the condition: {health}")


@pytest.fixture(scope="module")
def fast(parrot_checkpoint: Path):
    proc, url = start_server(parrot_checkpoint, "--header-timeout-s", "0.5",
                             "--body-timeout-s", "0.5")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def slow(slow_checkpoint: Path):
    settings = json.dumps({"threads": 1, "confidenceThreshold": 1.0, "maxSteps": 512,
                           "kvCache": False})
    proc, url = start_server(slow_checkpoint, "--timeout-s", "1", "--max-batch", "1",
                             "--max-waiting", "1", "--settings", settings)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_lone_surrogates_and_nul_are_refused_alone_and_the_batch_goes_on(fast):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            bodies = [json.dumps({**BODY, "prompt": "x = \ud800"}).encode(),
                      json.dumps({**BODY, "suffix": "\udfff"}).encode(),
                      json.dumps({**BODY, "prompt": "a\x00b"}).encode()]
            bodies += [json.dumps(BODY).encode()] * 5
            return await asyncio.gather(*(client.post(fast + URL, content=b, headers=AUTH)
                                          for b in bodies))
    replies = asyncio.run(burst())
    assert [r.status_code for r in replies] == [400, 400, 400] + [200] * 5
    assert "surrogate" in replies[0].json()["error"]["message"]
    assert "NUL" in replies[2].json()["error"]["message"]
    assert all(r.json()["choices"][0]["text"] == "1111" for r in replies[3:])
    assert set(replies[3].json()["timings"]) == {"queue_ms", "decode_ms"}


def test_deeply_nested_json_is_a_bad_request(fast):
    r = httpx.post(fast + URL, content=b"[" * 5000 + b"]" * 5000, headers=AUTH)
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"]


def test_silent_and_half_sent_connections_are_closed(fast):
    host, port = fast.removeprefix("http://").split(":")
    for sent in (b"", b"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\n"):
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(sent)
            assert s.recv(100) == b""  # closed by the server, not by our 30 s timeout
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"Authorization: Bearer test-secret\r\n\r\n{\"prompt\"")
        assert b" 408 " in s.recv(1000).split(b"\r\n")[0]


def test_a_request_over_its_time_limit_stops_decoding(slow):
    body = {**BODY, "max_tokens": 384}
    r = httpx.post(slow + URL, json=body, headers=AUTH, timeout=120)
    assert r.status_code == 504
    health = wait_health(slow, lambda h: h["decoding"] == 0)
    assert 1 <= health["last_forward_passes"] < 384
    ok = httpx.post(slow + URL, json={**BODY, "max_tokens": 2}, headers=AUTH, timeout=120)
    assert ok.status_code == 200


def test_a_client_that_hangs_up_is_not_decoded_to_the_end(slow):
    body = {**BODY, "max_tokens": 384}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(slow + URL, json=body, headers=AUTH, timeout=httpx.Timeout(5, read=0.3))
    wait_health(slow, lambda h: h["decoding"] == 0 and h["requests"] >= 1)
    health = httpx.get(slow + "/health").json()
    assert health["last_forward_passes"] < 384


def test_a_full_queue_answers_429_with_retry_after_at_once(slow):
    long = {**BODY, "max_tokens": 384}

    async def three() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            first = asyncio.ensure_future(client.post(slow + URL, json=long, headers=AUTH))
            await asyncio.to_thread(wait_health, slow, lambda h: h["decoding"] == 1)
            second = asyncio.ensure_future(client.post(slow + URL, json=long, headers=AUTH))
            await asyncio.to_thread(wait_health, slow, lambda h: h["waiting"] == 1)
            third = await client.post(slow + URL, json=long, headers=AUTH)
            return [third, *await asyncio.gather(first, second)]
    third, first, second = asyncio.run(three())
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
    assert first.status_code == 504 and second.status_code in (504, 429)


# -- the queue and the service, in process -------------------------------------------------------
def test_batches_take_requests_of_one_budget_bucket_oldest_first():
    async def run() -> list[list[int]]:
        queue: JobQueue[int, int] = JobQueue(max_waiting=10)
        for n in (16, 500, 12, 9, 300, 16):
            queue.submit(n, n, max_batch=8)
        return [[j.max_tokens for j in await queue.next_batch(8, 0.0)] for _ in range(2)]
    assert asyncio.run(run()) == [[16, 12, 9, 16], [500, 300]]
    assert bucket(9) == bucket(16) == 16 and bucket(17) == 32


def test_the_queue_refuses_when_full_and_expires_long_waits():
    async def run() -> None:
        queue: JobQueue[int, int] = JobQueue(max_waiting=2, queue_timeout_s=0.0)
        a = queue.submit(1, 1, max_batch=1)
        queue.submit(2, 1, max_batch=1)
        with pytest.raises(QueueFull):
            queue.submit(3, 1, max_batch=1)
        queue._expire(max_batch=1)
        assert isinstance(a.future.exception(), QueueTimeout) and len(queue) == 0
    asyncio.run(run())


def test_one_failing_request_does_not_fail_the_others_of_its_batch(parrot_checkpoint):
    class Fragile(LocalFimService):
        def _decode(self, batch, gone_rows):
            if any("BOOM" in p.prompt for p in batch):
                raise RuntimeError("tokenizer exploded")
            return super()._decode(batch, gone_rows)

    service = Fragile(Settings(model=str(parrot_checkpoint), threads=1), "m")
    batch = [FimParams("x = ", "\n", 3, 0.0), FimParams("BOOM", "", 3, 0.0),
             FimParams("y = ", "\n", 3, 0.0)]
    out = service.decode(batch)
    assert isinstance(out[1], RuntimeError)
    assert [o.text for o in (out[0], out[2])] == ["111", "111"]
    assert all(isinstance(o, Completion) for o in (out[0], out[2]))


def test_a_waiting_request_gets_its_429_when_its_queue_time_runs_out():
    async def run() -> tuple[Exception | None, float]:
        queue: JobQueue[int, int] = JobQueue(max_waiting=8, queue_timeout_s=0.3)
        t0 = time.monotonic()
        job = queue.submit(1, 1, max_batch=1)  # nobody takes a batch: the decoder is busy
        with pytest.raises(QueueTimeout) as info:
            await asyncio.wait_for(job.future, timeout=10)
        return info.value, time.monotonic() - t0
    exc, waited = asyncio.run(run())
    assert 0.3 <= waited < 0.3 + 0.5 and exc.retry_after >= 1


def test_a_request_that_could_not_start_in_time_is_refused_on_arrival():
    async def run() -> None:
        queue: JobQueue[int, int] = JobQueue(max_waiting=64, queue_timeout_s=2.0)
        assert queue.expected_wait(max_batch=1) == 0.0  # nothing measured: never refused
        queue.record_batch(1.5)  # a batch takes 1.5 s here
        queue.running_since = time.monotonic()  # and one has just started
        queue.submit(1, 1, max_batch=1)  # starts in ~1.5 s: queued
        assert 2.5 < queue.expected_wait(max_batch=1) <= 3.0
        with pytest.raises(QueueFull) as info:
            queue.submit(2, 1, max_batch=1)  # ~3 s away: more than the 2 s it may wait
        assert "busy for about" in str(info.value) and info.value.retry_after >= 3
        queue.submit(3, 1, max_batch=4)  # four rows a batch: it would ride the next one
    asyncio.run(run())


def test_overload_is_answered_on_time_and_health_while_the_decoder_is_stuck(parrot_checkpoint):
    """A decode that blocks until released: /health and /v1/models answer meanwhile, and
    requests that cannot start get their 429 when their queue time runs out."""
    import threading

    from dlm_lsp.serving.fim_api import make_app

    release, started = threading.Event(), threading.Event()

    class Stuck(LocalFimService):
        def _decode(self, batch, gone_rows):
            started.set()
            release.wait(timeout=60)
            return [Completion("1", 1, 1, "stop") for _ in batch]

    async def run() -> tuple[list[int], list[float], list[float], int]:
        service = Stuck(Settings(model=str(parrot_checkpoint), threads=1), BODY["model"],
                        max_batch=1,
                        queue_timeout_s=0.5)
        await service.start()
        app = make_app(service, None, service.limits)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.ensure_future(client.post(URL, json=BODY, timeout=60))
            assert await asyncio.to_thread(started.wait, 30)
            t0 = time.monotonic()

            async def timed() -> tuple[httpx.Response, float]:
                sent = time.monotonic()
                reply = await client.post(URL, json=BODY, timeout=60)
                return reply, time.monotonic() - sent

            posts = [asyncio.ensure_future(timed()) for _ in range(5)]
            health_ms = []
            while not all(p.done() for p in posts) and time.monotonic() - t0 < 30:
                h0 = time.monotonic()
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/v1/models")).status_code == 200
                health_ms.append((time.monotonic() - h0) * 1e3)
            done = await asyncio.gather(*posts)
            release.set()
            ok = (await first).status_code
        await service.stop()
        return [r.status_code for r, _ in done], [s for _, s in done], health_ms, ok

    codes, answered_s, health_ms, ok = asyncio.run(run())
    assert codes == [429] * 5 and ok == 200
    assert all(0.5 <= s < 0.5 + 0.5 for s in answered_s), answered_s
    assert health_ms and max(health_ms) < 1000  # answered while the decode was stuck


def test_the_heap_is_trimmed_once_the_queue_empties(fast):
    """After a batch, with nothing waiting, freed memory goes back to the system (glibc)."""
    from dlm_lsp.serving.memory import glibc_malloc_trim

    if glibc_malloc_trim() is None:
        pytest.skip("no malloc_trim in this C library")
    r = httpx.post(fast + URL, json=BODY, headers=AUTH, timeout=30)
    assert r.status_code == 200
    health = wait_health(fast, lambda h: h["heap_trims"] >= 1)
    assert health["waiting"] == 0
