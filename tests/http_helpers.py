"""Helpers shared by the serve-http tests: a real server on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from bench.fuzz import start_http

KEY = "test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, *extra: str, key: str | None = KEY) -> tuple[subprocess.Popen,
                                                                               str]:
    return start_http(str(checkpoint), key or "", *extra)


AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "dlm-embedded", "prompt": "x = ", "suffix": "\n", "max_tokens": 4}
