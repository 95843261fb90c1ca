"""Keeps the workspace index (``pipeline/retrieval.py``) in step with the editor's project.

Roots come from ``initialize`` (``workspaceFolders``, else ``rootUri``) and
``workspace/didChangeWorkspaceFolders``; a background thread reads their source files
(``pipeline/workspace.py`` decides which) and reports ``$/progress`` while it does. A saved
file, a file event from ``workspace/didChangeWatchedFiles`` and an open buffer whose
version moved (checked when a completion is asked for) update single files. While the model
thread decodes, the reader pauses between files and between batches of the index's merges
(Python threads share one interpreter lock: a reader that kept it would slow every step of
a decode), so indexing a large project does not slow the first completions down.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from dlm_lsp.pipeline.retrieval import WorkspaceIndex
from dlm_lsp.pipeline.workspace import Limits, is_source, read_source, source_files

Progress = Callable[[str, str, int], None]  # phase ("begin", "report", "end"), message, %


def uri_path(uri: str) -> Path | None:
    """The local path of a ``file:`` URI (None for other schemes)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


class WorkspaceIndexer:
    """The index, its roots, and one thread that reads files into it."""

    def __init__(self, progress: Progress = lambda *a: None,
                 log: Callable[[str], None] = lambda m: None,
                 busy: Callable[[], bool] = lambda: False, limits: Limits | None = None):
        self.index = WorkspaceIndex()
        self.roots: list[Path] = []
        self.progress, self.log, self.busy = progress, log, busy
        self.limits = limits or Limits()
        self.state = "idle"  # idle | indexing | ready
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._versions: dict[str, int | None] = {}  # open buffers indexed, by path
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._lock = threading.Lock()

    # -- roots ------------------------------------------------------------------------------
    def add_root(self, root: Path) -> None:
        root = root.resolve()
        if not root.is_dir() or root in self.roots:
            return
        self.roots.append(root)
        self._submit(lambda: self._scan(root))

    def remove_root(self, root: Path) -> None:
        root = root.resolve()
        if root not in self.roots:
            return
        self.roots.remove(root)

        def drop() -> None:
            for path in list(self.index.files):
                if self._root_of(Path(path)) is None:
                    self.index.remove(path)
        self._submit(drop)

    def _root_of(self, path: Path) -> Path | None:
        for root in self.roots:
            if path == root or root in path.parents:
                return root
        return None

    # -- single files -----------------------------------------------------------------------
    def file_changed(self, path: Path) -> None:
        """Read `path` again from disk (saved, created or changed outside the editor)."""
        self._submit(lambda: self._read(path))

    def file_deleted(self, path: Path) -> None:
        self._submit(lambda: self._forget(path))

    def open_text(self, path: Path, text: str, version: int | None) -> None:
        """An open buffer's text: indexed when its version moved (called per request)."""
        key = str(path)
        if self._root_of(path) is None or self._versions.get(key, -1) == version:
            return
        self._versions[key] = version
        self.index.update(key, text, name=self._name(path))

    def closed(self, path: Path) -> None:
        """A buffer closed: the file on disk is what the project holds again."""
        if self._versions.pop(str(path), None) is not None:
            self.file_changed(path)

    def _read(self, path: Path) -> None:
        if str(path) in self._versions or self._root_of(path) is None or not is_source(path):
            return  # an open buffer's text wins over the disk
        text = read_source(path, self.limits) if path.is_file() else None
        if text is None:
            self.index.remove(str(path))
        else:
            self.index.update(str(path), text, name=self._name(path))

    def _forget(self, path: Path) -> None:
        prefix = str(path).rstrip("/") + "/"
        for known in list(self.index.files):  # a deleted directory takes its files along
            if known == str(path) or known.startswith(prefix):
                self.index.remove(known)

    def _name(self, path: Path) -> str:
        root = self._root_of(path)
        return path.relative_to(root).as_posix() if root else path.name

    # -- the reader thread ------------------------------------------------------------------
    def _submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="dlm-index",
                                                daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception as exc:  # a bad file must not stop indexing
                self.log(f"dlm: workspace index: {type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._pending -= 1

    def _scan(self, root: Path) -> None:
        self.state = "indexing"
        self.progress("begin", f"indexing {root.name}", 0)
        t0, count, total_bytes = time.monotonic(), 0, 0
        for path in source_files(root, self.limits):
            self._yield_to_model()
            if str(path) in self._versions:
                continue
            text = read_source(path, self.limits)
            if text is None:
                continue
            total_bytes += len(text)
            if total_bytes > self.limits.max_total_bytes:
                self.log(f"dlm: workspace index stopped at {count} files of {root} "
                         f"({self.limits.max_total_bytes // 1_000_000} MB read)")
                break
            self.index.update(str(path), text, name=path.relative_to(root).as_posix(),
                              merge=False)
            if self.index.wants_compaction():
                self.index.compact(pause=self._yield_to_model)
            count += 1
            if count % 200 == 0:
                self.progress("report", f"{count} files", 0)
        self.index.compact(pause=self._yield_to_model)
        self.state = "ready"
        stats = self.index.stats()
        self.progress("end", f"{count} files indexed", 100)
        self.log(f"dlm: workspace index: {count} files of {root} in "
                 f"{time.monotonic() - t0:.1f} s ({stats['bytes'] / 1e6:.0f} MB)")

    def _yield_to_model(self) -> None:
        while self.busy():  # the model thread decodes: let it have the CPU
            time.sleep(0.01)

    def wait_idle(self, timeout: float) -> bool:
        """Whether every queued job finished within `timeout` seconds (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending == 0:
                    return True
            time.sleep(0.01)
        return False

    def status(self) -> dict:
        return {"state": self.state if self.roots else "off", "roots": [str(r) for r in
                                                                       self.roots],
                **self.index.stats()}

    def stop(self) -> None:
        self._jobs.put(None)
