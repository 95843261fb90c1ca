"""Soak: typing sessions against the language server and FIM traffic against serve-http, for
a long time at once; nothing may be lost, stuck or leak.

    python -m bench.soak [--minutes 30] [--model embedded] [--out bench/results/soak.json]
    nohup python -m bench.soak --minutes 120 > runs/soak.log 2>&1 &     # the 2-hour run

- **LSP**: files are "typed" line by line: each keystroke is an incremental ``didChange`` and
  an inline completion request; one request in ten is cancelled ($/cancelRequest) a few
  milliseconds later, as an editor does when the user types on.
- **HTTP**: a second process sends FIM requests to ``serve-http`` with the same model: most
  complete, some hang up early, some carry a tight time limit.

Reports requests sent and answered, p50/p95 latency, each server's RSS sampled every
``--sample-s`` seconds (plotted next to the JSON, with the growth over the last hour: its
robust trend, and the plain difference of its end samples), and
the requests never answered (must be 0). At the end every document must still equal the
client's copy and the model thread must be idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.fuzz import RawLspClient, _digest, _offset, start_http

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample_rss(pids: dict[str, int], every_s: float, stop: threading.Event,
               out: list[dict]) -> None:
    """Append {"minute", name: MB, ...} for every process in `pids` each `every_s` seconds."""
    t0 = time.monotonic()
    while True:
        row: dict = {"minute": round((time.monotonic() - t0) / 60, 2)}
        for name, pid in pids.items():
            try:
                row[name] = round(rss_mb(pid), 1)
            except OSError:
                row[name] = None
        out.append(row)
        if stop.wait(every_s):
            return


def growth_mb(samples: list[dict], name: str, last_minutes: float) -> dict | None:
    """RSS growth of `name` over the last `last_minutes` of the samples (None if shorter):
    the trend (Theil-Sen: the median of the slopes between every two samples, times the
    span; one sample in a heap trim's dip or a batch's peak does not move it), beside the
    plain difference of the two end samples and the span's range."""
    rows = [r for r in samples if r.get(name) is not None]
    if not rows or rows[-1]["minute"] < last_minutes:
        return None
    t0 = rows[-1]["minute"] - last_minutes
    first = min(range(len(rows)), key=lambda i: abs(rows[i]["minute"] - t0))  # nearest sample
    span = rows[first:]
    slopes = [(b[name] - a[name]) / (b["minute"] - a["minute"])
              for i, a in enumerate(span) for b in span[i + 1:] if b["minute"] > a["minute"]]
    values = [r[name] for r in span]
    return {"trend_mb": round(statistics.median(slopes) * last_minutes, 1),
            "end_samples_mb": round(values[-1] - values[0], 1),
            "min_mb": round(min(values), 1), "max_mb": round(max(values), 1)}


def plot_rss(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, label in (("lsp", "language server"), ("http", "serve-http")):
        rows = [r for r in samples if r.get(name) is not None]
        ax.plot([r["minute"] for r in rows], [r[name] for r in rows], label=label)
    ax.set_xlabel("minutes of soak")
    ax.set_ylabel("RSS (MB)")
    ax.set_title("Resident memory under continuous typing and FIM traffic")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sources() -> list[str]:
    """Files to type: this project's own Python (never the evaluation data)."""
    files = sorted((ROOT / "dlm_lsp").rglob("*.py"))
    return [f.read_text() for f in files if 2000 < f.stat().st_size < 40000]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else 0.0


def typing(client: RawLspClient, texts: list[str], stop_at: float, rng: random.Random) -> dict:
    """Type lines of `texts` until `stop_at`; returns latencies and counts."""
    uri = "file:///soak/typing.py"
    sent: dict[str, float] = {}
    cancelled: set[str] = set()
    version = 1
    text = rng.choice(texts)
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": text}})
    while time.monotonic() < stop_at:
        lines = text.split("\n")
        i = rng.randrange(1, len(lines) - 1)
        target = lines[i]
        indent = len(target) - len(target.lstrip())
        # delete the line's content after its indentation, then type it back
        start = {"line": i, "character": indent}
        end = {"line": i, "character": len(target.encode("utf-16-le")) // 2}
        version += 1
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": start, "end": end}, "text": ""}]})
        a, b = _offset(text, i, indent), _offset(text, i, end["character"])
        text = text[:a] + text[b:]
        col = indent
        for ch in target[indent:]:
            version += 1
            pos = {"line": i, "character": col}
            client.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": pos, "end": pos}, "text": ch}]})
            at = _offset(text, i, col)
            text = text[:at] + ch + text[at:]
            col += len(ch.encode("utf-16-le")) // 2
            msg_id = client.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": {"line": i, "character": col},
                "context": {"triggerKind": 2}})
            sent[msg_id] = time.monotonic()
            if rng.random() < 0.1:
                time.sleep(rng.uniform(0.0, 0.02))
                client.notify("$/cancelRequest", {"id": msg_id})
                cancelled.add(msg_id)
            time.sleep(rng.uniform(0.03, 0.15))  # the user's typing speed
            if time.monotonic() >= stop_at:
                break
    answers = client.wait(list(sent), timeout=300)
    latencies = [(client.answered_at[i] - sent[i]) * 1e3 for i in sent if i not in cancelled]
    with_items = sum(bool((a[0].get("result") or {}).get("items")) for i, a in answers.items()
                     if i not in cancelled)
    doc = client.call("workspace/executeCommand", {"command": "dlm.status",
                                                   "arguments": [{"uri": uri}]})["result"]
    assert doc["document"]["sha256"] == _digest(text), "the document drifted"
    return {"requests": len(sent), "answered": len(answers), "cancelled": len(cancelled),
            "with_items": with_items, "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95), "model_thread_busy_at_end": doc["busy"],
            "in_sync": True}


async def fim_traffic(url: str, key: str, stop_at: float, rng: random.Random) -> dict:
    import httpx

    statuses: dict[int, int] = {}
    hung_up = 0
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    prompts = [t[:1500] for t in sources()]
    async with httpx.AsyncClient() as client:
        while time.monotonic() < stop_at:
            text = rng.choice(prompts)
            cut = rng.randrange(100, len(text))
            body = {"model": "dlm-embedded", "prompt": text[:cut], "suffix": text[cut:cut + 600],
                    "max_tokens": rng.choice([8, 16, 24, 64])}
            t0 = time.monotonic()
            try:
                timeout = httpx.Timeout(30, read=0.05) if rng.random() < 0.1 else 120
                r = await client.post(url + "/v1/fim/completions", json=body, headers=headers,
                                      timeout=timeout)
            except httpx.TimeoutException:
                hung_up += 1
                continue
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                latencies.append((time.monotonic() - t0) * 1e3)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
        health = (await client.get(url + "/health")).json()
    return {"answered": sum(statuses.values()), "hung_up": hung_up,
            "statuses": dict(sorted(statuses.items())), "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95), "queue_at_end": health["waiting"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-s", type=float, default=60.0, help="RSS sampling interval")
    ap.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    texts = sources()
    lsp = RawLspClient([sys.executable, "-m", "dlm_lsp"], seed=args.seed)
    lsp.call("initialize", {"capabilities": {}, "initializationOptions": {
        "model": args.model, "threads": 1}}, 300)
    lsp.notify("initialized", {})
    while lsp.call("workspace/executeCommand", {"command": "dlm.status"})["result"][
            "state"] not in ("ready", "error"):
        time.sleep(0.2)
    http_proc, url = start_http(args.model, "soak-key")
    rss = {"lsp_start_mb": rss_mb(lsp.proc.pid), "http_start_mb": rss_mb(http_proc.pid)}
    samples: list[dict] = []
    sampling = threading.Event()
    sampler = threading.Thread(target=sample_rss, daemon=True, args=(
        {"lsp": lsp.proc.pid, "http": http_proc.pid}, args.sample_s, sampling, samples))
    sampler.start()
    stop_at = time.monotonic() + args.minutes * 60
    fim: dict = {}
    thread = threading.Thread(target=lambda: fim.update(asyncio.run(fim_traffic(
        url, "soak-key", stop_at, random.Random(args.seed + 1)))))
    thread.start()
    try:
        typed = typing(lsp, texts, stop_at, rng)
        thread.join()
        rss.update(lsp_end_mb=rss_mb(lsp.proc.pid), http_end_mb=rss_mb(http_proc.pid))
        sampling.set()
        sampler.join()
    finally:
        exit_code = lsp.close()
        http_proc.terminate()
        http_proc.wait(30)
    last_hour = {f"{name}_last_hour": growth_mb(samples, name, 60) for name in ("lsp", "http")}
    result = {"date": time.strftime("%Y-%m-%d"), "minutes": args.minutes, "model": args.model,
              "lsp": typed, "http": fim,
              "rss": {**{k: round(v, 1) for k, v in rss.items()}, **last_hour},
              "rss_samples": samples,
              "lsp_exit_code": exit_code,
              "lost_or_stuck": typed["requests"] - typed["answered"] + fim["queue_at_end"]}
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if len(samples) > 1:
        plot_rss(samples, args.out.with_name(args.out.stem + "_rss.png"))


if __name__ == "__main__":
    main()
