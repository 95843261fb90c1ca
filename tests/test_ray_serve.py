"""The Ray Serve deployment, started locally, answers the same FIM API as serve-http."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

if os.environ.get("DLM_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="ray[serve] is not installed (the test extra has it)")

from http_helpers import AUTH, BODY, KEY, free_port  # noqa: E402


@pytest.fixture(scope="module")
def ray_url(parrot_checkpoint):
    import ray
    from ray import serve

    from dlm_lsp.serving.ray_serve import application

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(application({"model": str(parrot_checkpoint), "threads": 1}, api_key=KEY,
                              max_batch=8, wait_s=0.05), route_prefix="/")
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
