"""The Ray Serve deployment, started locally, answers the same FIM API as serve-http."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

if os.environ.get("DLM_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="ray[serve] is not installed (the test extra has it)")

from http_helpers import AUTH, BODY, KEY, free_port  # noqa: E402


@pytest.fixture(scope="module")
def ray_url(parrot_checkpoint, slow_checkpoint):
    import ray
    from ray import serve

    from dlm_lsp.serving.ray_serve import application

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(application({"model": str(parrot_checkpoint), "threads": 1}, api_key=KEY,
                              max_batch=8, wait_s=0.05), route_prefix="/")
        # one token a step, no cache: a long request decodes for many seconds
        slow = {"model": str(slow_checkpoint), "threads": 1, "confidenceThreshold": 1.0,
                "maxSteps": 512, "kvCache": False}
        serve.run(application(slow, api_key=KEY, max_batch=1, queue_timeout_s=1.0),
                  name="slow", route_prefix="/slow")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_serve_completes_and_checks_the_key(ray_url):
    r = httpx.post(ray_url + "/v1/fim/completions", json=BODY, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "1111"
    assert httpx.post(ray_url + "/v1/fim/completions", json=BODY).status_code == 401
    models = httpx.get(ray_url + "/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["dlm-embedded"]


def test_ray_serve_batches_concurrent_requests(ray_url):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(
                client.post(ray_url + "/v1/fim/completions", headers=AUTH,
                            json={**BODY, "prompt": f"v{i} = ", "max_tokens": 2})
                for i in range(12)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 12
    assert all(r.json()["choices"][0]["text"] == "11" for r in responses)
    assert httpx.get(ray_url + "/health").json()["largest_batch"] > 1


def test_a_ray_replica_sheds_load_when_a_queued_request_cannot_start_in_time(ray_url):
    url = ray_url + "/slow/v1/fim/completions"

    async def burst() -> tuple[list[tuple[int, float]], int, float]:
        async with httpx.AsyncClient(timeout=300) as client:
            t0 = time.monotonic()
            first = asyncio.ensure_future(client.post(url, headers=AUTH,
                                                      json={**BODY, "max_tokens": 384}))
            deadline = time.monotonic() + 120
            while (await client.get(ray_url + "/slow/health")).json()["decoding"] == 0:
                assert time.monotonic() < deadline, "the long request never started"
                await asyncio.sleep(0.02)

            async def timed() -> tuple[int, float]:
                sent = time.monotonic()
                r = await client.post(url, headers=AUTH, json=BODY)
                return r.status_code, time.monotonic() - sent

            shed = await asyncio.gather(*(timed() for _ in range(3)))
            reply = await first
            return shed, reply.status_code, time.monotonic() - t0

    shed, first_status, first_s = asyncio.run(burst())
    assert [code for code, _ in shed] == [429] * 3
    # answered when their 1 s ran out, not when the long decode ended
    assert all(1.0 <= s < first_s for _, s in shed) and first_status in (200, 504)
