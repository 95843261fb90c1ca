"""serve-http under overload while other processes load the CPU: every request answered on
time, 200 or 429, and /health answering throughout.

    python -m bench.serve_overload [--model embedded] [--requests 50] [--busy 3]
                                   [--queue-timeout-s 5] [--out bench/results/overload.json]

Starts ``--busy`` processes that spin on the CPU (as ``stress -c N``), then serve-http at
its defaults (apart from ``--queue-timeout-s``), sends ``--requests`` editor-sized requests at
once (24 tokens, contexts cut from this checkout, as ``bench.serve_burst``) and polls
``/health`` every 50 ms until the last one is answered. Reports p50/p95 of the 200s and of
the 429s from their own arrival, the latest 429 against the queue time limit, and /health's
p50/p95 during the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import httpx

from bench.fuzz import start_http
from bench.serve_burst import _requests


def _spin(stop: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def burst(url: str, prompts: list[tuple[str, str]], key: str) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    done = asyncio.Event()
    health_ms: list[float] = []

    async def poll(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            r = await client.get(url + "/health")
            r.raise_for_status()
            health_ms.append((time.perf_counter() - t0) * 1e3)
            try:
                await asyncio.wait_for(done.wait(), 0.05)
            except TimeoutError:
                pass

    async def one(client: httpx.AsyncClient, prompt: str, suffix: str) -> tuple[int, float]:
        t0 = time.perf_counter()
        r = await client.post(url + "/v1/fim/completions", headers=headers, json={
            "model": "dlm-embedded", "prompt": prompt, "suffix": suffix, "max_tokens": 24})
        return r.status_code, (time.perf_counter() - t0) * 1e3

    limits = httpx.Limits(max_connections=len(prompts) + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one(client, *prompts[0])  # warm: the decode time behind Retry-After is measured
        poller = asyncio.create_task(poll(client))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, p, s) for p, s in prompts))
        wall = time.perf_counter() - t0
        done.set()
        await poller
    ok = [ms for code, ms in results if code == 200]
    shed = [ms for code, ms in results if code == 429]
    other = sorted({code for code, _ in results} - {200, 429})
    return {"requests": len(results), "answered_200": len(ok), "answered_429": len(shed),
            "other_statuses": other, "wall_s": round(wall, 2),
            "ok_p50_ms": round(pct(ok, 50)), "ok_p95_ms": round(pct(ok, 95)),
            "shed_p50_ms": round(pct(shed, 50)), "shed_p95_ms": round(pct(shed, 95)),
            "shed_max_ms": round(max(shed)) if shed else None,
            "health_polls": len(health_ms), "health_p50_ms": round(pct(health_ms, 50), 1),
            "health_p95_ms": round(pct(health_ms, 95), 1),
            "health_max_ms": round(max(health_ms), 1) if health_ms else None}


def main(argv: list[str] | None = None) -> None:
    from bench.suite import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--busy", type=int, default=3, help="CPU-spinning processes")
    ap.add_argument("--queue-timeout-s", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/overload.json"))
    args = ap.parse_args(argv)
    key = "overload-bench"
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                for _ in range(args.busy)]
    for p in spinners:
        p.start()
    proc = None
    try:
        proc, url = start_http(args.model, key, "--queue-timeout-s", str(args.queue_timeout_s),
                               "--settings", "{}", timeout=600)  # torch's own thread count
        result = asyncio.run(burst(url, _requests(args.requests), key))
    finally:
        stop.set()
        for p in spinners:
            p.join(timeout=10)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(os.cpu_count() or 1),
              "busy_processes": args.busy, "queue_timeout_s": args.queue_timeout_s,
              "server": "serve-http defaults (max-batch 16, max-waiting 64)",
              **result,
              "every_429_within_timeout_plus_0_5_s": (result["shed_max_ms"] is None or
                                                      result["shed_max_ms"]
                                                      <= (args.queue_timeout_s + 0.5) * 1e3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), file=sys.stdout)


if __name__ == "__main__":
    main()
