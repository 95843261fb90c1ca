"""Helpers shared by the serve-http tests: a real server on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, *extra: str, key: str | None = KEY) -> tuple[subprocess.Popen,
                                                                               str]:
    port = free_port()
    env = {**os.environ, "DLM_API_KEY": key} if key else {
        k: v for k, v in os.environ.items() if k != "DLM_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlm_lsp", "serve-http", "--port", str(port), "--model",
         str(checkpoint), "--settings", json.dumps({"threads": 1}), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(url + "/health", timeout=1).json().get("state") == "ready":
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve-http did not become ready")


AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "dlm-embedded", "prompt": "x = ", "suffix": "\n", "max_tokens": 4}
