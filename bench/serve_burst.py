"""Concurrent FIM requests against ``dlm-lsp serve-http``: batched against one at a time.

    python -m bench.serve_burst [--model embedded] [--requests 50] [--max-batch 1 16]

Starts the server once per ``--max-batch`` value on a free loopback port, warms it with one
request, sends every request at once (prefix/suffix cut from this checkout's
``dlm_lsp/pipeline/context.py`` at different places, 24 tokens each) and prints wall time, requests
per second, latency p50/p95 and the batches the server formed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests(n: int) -> list[tuple[str, str]]:
    src = (ROOT / "dlm_lsp" / "pipeline" / "context.py").read_text()
    step = max(1, (len(src) - 2600) // n)
    return [(src[: 2000 + step * i][-1500:], src[2000 + step * i:][:600]) for i in range(n)]


def burst(model: str, max_batch: int, prompts: list[tuple[str, str]]) -> dict[str, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "dlm_lsp", "serve-http", "--port",
                               str(port), "--model", model, "--max-batch", str(max_batch)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health").json().get("state") == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

        async def one(client: httpx.AsyncClient, prompt: str, suffix: str) -> float:
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/fim/completions", json={
                "model": "dlm-embedded", "prompt": prompt, "suffix": suffix, "max_tokens": 24})
            r.raise_for_status()
            return (time.perf_counter() - t0) * 1e3

        async def run() -> tuple[float, list[float]]:
            async with httpx.AsyncClient(timeout=600) as client:
                await one(client, *prompts[0])
                t0 = time.perf_counter()
                ms = await asyncio.gather(*(one(client, p, s) for p, s in prompts))
                return time.perf_counter() - t0, sorted(ms)

        wall, ms = asyncio.run(run())
        health = httpx.get(url + "/health").json()
    finally:
        server.terminate()
        server.wait()
    n = len(prompts)
    return {"max_batch": max_batch, "requests": n, "wall_s": round(wall, 2),
            "requests_per_s": round(n / wall, 2), "p50_ms": round(ms[n // 2]),
            "p95_ms": round(ms[min(n - 1, int(n * 0.95))]),
            "batches": health["batches"] - 1, "largest_batch": health["largest_batch"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args(argv)
    prompts = _requests(args.requests)
    for mb in args.max_batch:
        print(burst(args.model, mb, prompts), flush=True)


if __name__ == "__main__":
    main()
