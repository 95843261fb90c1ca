"""A Hugging Face Hub on loopback for download tests: the API routes and file routes that
``huggingface_hub`` calls, HTTP ranges, and a switch that stalls a download part-way."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.stall: dict[str, int] = {}  # file -> bytes to send, then hang until `release`
        self.stalled, self.release = threading.Event(), threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                hub.serve(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                hub.serve(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo_id: str, files: dict[str, bytes], sizes: dict[str, int] | None = None,
            ) -> str:
        """A repository at one commit; `sizes` overrides what the tree listing declares."""
        sha = hashlib.sha1(repo_id.encode() + b"".join(files.values())).hexdigest()
        self.repos[repo_id] = {"sha": sha, "files": files, "sizes": sizes or {}}
        return sha

    def add_checkpoint(self, repo_id: str, checkpoint: Path, extra: dict[str, bytes]) -> str:
        files = {p.name: p.read_bytes() for p in checkpoint.iterdir() if p.is_file()}
        return self.add(repo_id, {**files, **extra})

    def downloads(self) -> list[str]:
        """Files whose bytes were requested (GET on a resolve URL)."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p, _ in self.log
                if m == "GET" and "/resolve/" in p]

    def serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.log.append((h.command, path, h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)(/.*)?", path)
        if m:
            repo = self.repos.get(m.group(1))
            if repo is None:
                return self.reply(h, 404, b'{"error": "Repository not found"}',
                                  {"X-Error-Code": "RepoNotFound"})
            if m.group(2) == "revision":
                body = {"id": m.group(1), "modelId": m.group(1), "sha": repo["sha"],
                        "siblings": [{"rfilename": f} for f in repo["files"]],
                        "private": False, "tags": [], "downloads": 0, "likes": 0}
            else:
                body = [self.entry(f, data, repo["sizes"]) for f, data in repo["files"].items()]
            return self.reply(h, 200, json.dumps(body).encode(),
                              {"Content-Type": "application/json"}, head)
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if not m or m.group(1) not in self.repos or m.group(3) not in self.repos[m.group(1)][
                "files"]:
            return self.reply(h, 404, b"not found", {"X-Error-Code": "EntryNotFound"}, head)
        repo = self.repos[m.group(1)]
        data = repo["files"][m.group(3)]
        headers = {"X-Repo-Commit": repo["sha"],
                   "ETag": '"' + hashlib.sha256(data).hexdigest() + '"',
                   "Accept-Ranges": "bytes"}
        start = 0
        rng = h.headers.get("Range")
        if rng and not head:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        stall = None if head else self.stall.pop(m.group(3), None)
        if stall is not None:  # announce the whole body, send part of it, then hang
            h.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[:stall])
            h.wfile.flush()
            self.stalled.set()
            self.release.wait(120)
            h.close_connection = True
            return
        return self.reply(h, 206 if start else 200, body, headers, head)

    @staticmethod
    def entry(name: str, data: bytes, sizes: dict[str, int]) -> dict:
        size = sizes.get(name, len(data))
        out = {"type": "file", "path": name, "size": size,
               "oid": hashlib.sha1(data).hexdigest()}
        if name.endswith((".safetensors", ".bin")):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": size,
                          "pointerSize": 134}
        return out

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str],
              head: bool = False) -> None:
        h.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
