"""The pygls language server: thin handlers over the engine, edits and item builders."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from dlm_lsp import __version__
from dlm_lsp.adapt import find_adapted
from dlm_lsp.config import Settings, apply_settings, settings_values
from dlm_lsp.model import hub
from dlm_lsp.model.errors import NotDownloaded
from dlm_lsp.pipeline import edits
from dlm_lsp.pipeline.context import OtherDocument
from dlm_lsp.pipeline.engine import CompletionOutcome, ModelError, load_key
from dlm_lsp.pipeline.syntax import (
    EXTENSIONS,
    comment_prefix,
    detect_language,
    error_regions,
    find_holes,
)
from dlm_lsp.protocol.documents import LspWorkspace
from dlm_lsp.protocol.indexing import WorkspaceIndexer, uri_path
from dlm_lsp.protocol.lsp_items import completion_items, inline_items, workspace_edit
from dlm_lsp.protocol.positions import normalize_encoding, offset_at
from dlm_lsp.protocol.scheduler import ModelThread, RequestGate
from dlm_lsp.protocol.transport import serve_messages
from dlm_lsp.serving.remote import make_engine

log = logging.getLogger("dlm_lsp")
T = TypeVar("T")

REWRITE = "refactor.rewrite.dlm"  # CodeActionKind is an open set; lsprotocol enums are closed
QUICKFIX = "quickfix.dlm"
MAX_OTHER_DOCS = 8
APPLY_EDIT_TIMEOUT_S = 30.0  # a client that never answers workspace/applyEdit
DOWNLOAD = "Download"


@dataclass
class Snapshot:
    """An open document as the handlers need it."""

    uri: str
    text: str
    version: int | None
    language_id: str
    language: str | None


class DlmProtocol(LanguageServerProtocol):
    """Answers requests whose params do not fit their type (pygls drops them silently,
    which leaves the client waiting forever)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._notification_ids: set[Any] = set()

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException:
            if isinstance(data, dict) and "id" in data and "method" in data:
                error = JsonRpcInvalidParams(f"invalid params for {data['method']}")
                self._send_response(data["id"], None, error.to_response_error())
            raise

    def _handle_notification(self, method_name: str, params: Any) -> None:
        """pygls files a future per notification under a made-up id and never drops it (only
        a response does): a ``didChange`` per keystroke grew the server without end. The
        futures notifications added are dropped once done, swept here rather than from a
        done-callback: ``shutdown`` cancels futures while iterating the same dict."""
        before = set(self._request_futures)
        super()._handle_notification(method_name, params)
        self._notification_ids.update(set(self._request_futures) - before)
        self._sweep_notification_futures()

    def _sweep_notification_futures(self) -> None:
        for msg_id in list(self._notification_ids):
            future = self._request_futures.get(msg_id)
            if future is None or future.done():
                self._request_futures.pop(msg_id, None)
                self._notification_ids.discard(msg_id)

    def handle_message(self, message: Any) -> None:
        """After ``shutdown``, a request other than ``exit`` is an InvalidRequest (LSP)."""
        self._sweep_notification_futures()
        method = getattr(message, "method", None)
        if self._shutdown and method not in (None, types.EXIT) and hasattr(message, "id"):
            error = JsonRpcInvalidRequest(f"the server is shut down; {method} is refused")
            self._send_response(message.id, None, error.to_response_error())
            return
        super().handle_message(message)


class DlmServer(LanguageServer):
    """pygls server holding settings, the engine, the request gate and the model thread."""

    def __init__(self) -> None:
        super().__init__("dlm-lsp", __version__, protocol_cls=DlmProtocol)
        self.settings = Settings()
        self.engine = make_engine(self.settings, log=self.log_info)
        self.gate = RequestGate()
        self.model_thread = ModelThread()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._shown: set[str] = set()
        self.roots: list[str] = []  # workspace folder URIs
        self.unserved: set[str] = set()  # languages the model does not serve, told once
        self.decoded = [0, 0]  # tokens and forward passes of the completions decoded
        self.indexer: WorkspaceIndexer | None = None

    # -- transports ------------------------------------------------------------------------
    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """Serve stdio through dlm-lsp's message loop (``transport.serve_messages``)."""
        self._stop_event = threading.Event()
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(serve_messages(reader, self.protocol, self._stop_event))
        except (BrokenPipeError, KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        """Serve one TCP client at a time through the same message loop."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)  # type: ignore[arg-type]
            await serve_messages(reader, self.protocol, stop)
            self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except (asyncio.CancelledError, KeyboardInterrupt):
            pass

    def report_server_error(self, error: Exception, source: Any) -> None:
        """One line in the client's log, never a pop-up: the user did nothing wrong."""
        self.log_info(f"dlm: {type(error).__name__}: {error}", types.MessageType.Error)

    # -- messages to the client ----------------------------------------------------------
    def log_info(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        log.info(message)
        try:
            self.window_log_message(types.LogMessageParams(type=kind, message=message))
        except Exception:  # no client connection (unit tests, shutdown)
            pass

    def show_once(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        self.log_info(message, kind)
        if message not in self._shown:
            self._shown.add(message)
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def tell_unserved(self, language: str, served: list[str]) -> None:
        """Once per language: which languages the model serves, and how to get one that
        serves the others."""
        if language in self.unserved:
            return
        self.unserved.add(language)
        self.show_once(
            f"dlm: the model in use was trained on {', '.join(served)} only, so {language} "
            f"files get no completions. For {language}, set \"model\" to a published "
            "diffusion coder, e.g. `dlm-lsp pull fredzzp/open-dcoder-0.5B` (README: Which "
            "model should I use?).", types.MessageType.Info)

    def tell(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        """Show `message` now: the answer to something the user asked for."""
        self.log_info(message, kind)
        try:
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        except Exception:  # no client connection
            pass

    def call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the event loop (for messages sent from the model thread)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn, *args)

    # -- client facts ----------------------------------------------------------------------
    def capability(self, *path: str) -> Any:
        node: Any = self.client_capabilities
        for name in path:
            node = getattr(node, name, None)
            if node is None:
                return None
        return node

    @property
    def encoding(self) -> str:
        return normalize_encoding(self.workspace.position_encoding)

    def snapshot(self, uri: str) -> Snapshot | None:
        """The open document at `uri`, or None (never read from disk)."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return None
        lang_id = doc.language_id or ""
        return Snapshot(uri, doc.source, doc.version, lang_id, detect_language(lang_id, uri))

    def others(self, snap: Snapshot) -> list[OtherDocument]:
        """Other open buffers of the same language, for context snippets."""
        out = []
        for uri, doc in self.workspace.text_documents.items():
            if uri != snap.uri and detect_language(doc.language_id, uri) == snap.language:
                out.append(OtherDocument(uri.rsplit("/", 1)[-1], doc.source))
        return out[:MAX_OTHER_DOCS]

    def pick_adapted(self) -> None:
        """Serve the model ``dlm-lsp adapt`` learnt for the first workspace folder, when the
        model setting is "embedded" (and the ``adapted`` setting allows it)."""
        use = getattr(self.engine, "use_adapted", None)
        if use is None:  # the remote backend
            return
        path = None
        root = uri_path(self.roots[0]) if self.roots else None
        if root is not None and self.settings.adapted and self.settings.model == "embedded":
            path = find_adapted(root)
        if path != self.engine.adapted:
            use(path)
            if path is not None:
                self.log_info(f"dlm: using the model adapted to this repository ({path})")

    # -- the workspace index --------------------------------------------------------------
    def start_indexing(self) -> None:
        """Index the workspace roots in the background (when the setting allows it)."""
        if not self.settings.workspace_index or not self.roots or self.indexer is not None:
            return
        token = f"dlm-index-{uuid.uuid4()}"
        progress = bool(self.capability("window", "work_done_progress"))
        if progress:
            self.work_done_progress.create(token)

        def report(phase: str, message: str, pct: int) -> None:
            if not progress:
                return
            wdp = self.work_done_progress
            if phase == "begin":
                value: Any = types.WorkDoneProgressBegin(title="dlm: indexing the workspace",
                                                         message=message, percentage=0)
                self.call_in_loop(wdp.begin, token, value)
            elif phase == "report":
                self.call_in_loop(wdp.report, token, types.WorkDoneProgressReport(
                    message=message))
            else:
                self.call_in_loop(wdp.end, token, types.WorkDoneProgressEnd(message=message))

        self.indexer = WorkspaceIndexer(report, lambda m: self.call_in_loop(self.log_info, m),
                                        busy=lambda: self.model_thread.busy)
        for uri in self.roots:
            path = uri_path(uri)
            if path is not None:
                self.indexer.add_root(path)

    def stop_indexing(self) -> None:
        if self.indexer is not None:
            self.indexer.stop()
            self.indexer = None

    def retriever(self, snap: Snapshot) -> Callable[..., list[str]] | None:
        """What the engine calls for project snippets at a cursor of `snap`: the index, with
        the open buffers of the workspace brought up to date first; None without one."""
        indexer = self.indexer
        if indexer is None or not self.settings.workspace_index:
            return None
        for uri, doc in self.workspace.text_documents.items():
            path = uri_path(uri)
            if uri != snap.uri and path is not None:
                indexer.open_text(path, doc.source, doc.version)
        here = uri_path(snap.uri)

        def retrieve(prefix: str, suffix: str, encode: Callable[[str], list[int]],
                     budget: int) -> list[str]:
            comment = comment_prefix(snap.language)
            found = indexer.index.select(prefix, suffix, encode, budget,
                                         exclude=str(here) if here else None,
                                         language=snap.language, file_text=snap.text)
            return [s.render(comment) for s in found]
        return retrieve

    def model_languages(self) -> list[str]:
        """The languages the loaded model serves (empty: all, or not loaded yet)."""
        model = getattr(self.engine, "model", None)
        return list(model.spec.languages) if model is not None else []

    def serves(self, snap: Snapshot) -> bool:
        """Whether completions are wanted for this document now."""
        if not self.settings.enabled:
            return False
        if self.settings.languages and snap.language_id not in self.settings.languages:
            return False
        served = self.model_languages()
        if served and snap.language not in served:
            self.tell_unserved(snap.language or snap.language_id or "this", served)
            return False
        window = snap.text[:4096]
        if "\x00" in window:  # binary-looking content: nothing sensible to complete
            return False
        return True

    # -- settings and model loading --------------------------------------------------------
    def apply_settings(self, raw: Any) -> None:
        settings, messages = apply_settings(raw, self.settings)
        for m in messages:
            self.show_once(m)
        reload = load_key(settings) != load_key(self.settings)
        if settings.backend != self.settings.backend:  # local <-> remote: another engine
            self.engine = make_engine(settings, log=self.log_info)
        index_on = settings.workspace_index and not self.settings.workspace_index
        self.settings = settings
        self.engine.update_settings(settings)
        if self.loop is not None:
            before = getattr(self.engine, "adapted", None)
            self.pick_adapted()
            reload = reload or getattr(self.engine, "adapted", None) != before
        if not settings.workspace_index:
            self.stop_indexing()
        elif index_on and self.loop is not None:
            self.start_indexing()
        if reload and self.loop is not None:
            self.start_model_load()

    def start_model_load(self) -> None:
        """Load the model on the model thread, reporting $/progress when the client can."""
        token = f"dlm-load-{uuid.uuid4()}"
        progress = bool(self.capability("window", "work_done_progress"))
        if progress:
            self.work_done_progress.create(token)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title="dlm: loading model", percentage=0, cancellable=False))

        def report(message: str, pct: int) -> None:
            if progress:
                self.call_in_loop(self.work_done_progress.report, token,
                                  types.WorkDoneProgressReport(message=message, percentage=pct))

        def job() -> None:
            try:
                model = self.engine.load(report)
                self.call_in_loop(self.log_info, f"dlm: model ready ({model.path})")
                done = "ready"
            except NotDownloaded as exc:
                self.call_in_loop(self.offer_download, exc.repo_id)
                done = "not downloaded"
            except ModelError as exc:
                self.call_in_loop(self.show_once, f"dlm: {exc}")
                done = "failed"
            if progress:
                self.call_in_loop(self.work_done_progress.end, token,
                                  types.WorkDoneProgressEnd(message=f"model {done}"))

        self.model_thread.submit(job)

    def offer_download(self, repo_id: str) -> None:
        """Ask the user whether to download `repo_id` (with its size); then pull it with
        $/progress and load it. Offline, say how to pull it elsewhere."""
        async def ask() -> None:
            loop = asyncio.get_running_loop()
            try:
                p = await loop.run_in_executor(self.model_thread.executor, hub.plan, repo_id)
            except hub.PullError as exc:
                self.show_once(f"dlm: {repo_id} is not downloaded, and {exc}")
                return
            answer = await self.window_show_message_request_async(types.ShowMessageRequestParams(
                type=types.MessageType.Info,
                message=f"dlm: download {repo_id} ({hub.human(p.missing_bytes)}) into the "
                        "local hub cache?",
                actions=[types.MessageActionItem(DOWNLOAD), types.MessageActionItem("Not now")]))
            if answer is None or answer.title != DOWNLOAD:
                self.log_info(f"dlm: {repo_id} not downloaded; `dlm-lsp pull {repo_id}` fetches "
                              "it too")
                return
            await self.download(p)

        asyncio.ensure_future(ask())

    async def download(self, p: hub.PullPlan) -> None:
        token = f"dlm-pull-{uuid.uuid4()}"
        progress = bool(self.capability("window", "work_done_progress"))
        if progress:
            await self.work_done_progress.create_async(token)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=f"dlm: downloading {p.repo_id}", percentage=0, cancellable=False))

        def report(done: int, total: int) -> None:
            if progress:
                self.call_in_loop(self.work_done_progress.report, token,
                                  types.WorkDoneProgressReport(
                                      message=f"{hub.human(done)} of {hub.human(total)}",
                                      percentage=int(100 * done / max(total, 1))))

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.model_thread.executor, hub.pull, p, report)
            outcome = "done"
        except hub.PullError as exc:
            self.show_once(f"dlm: {exc}")
            outcome = "failed"
        if progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(
                message=f"download {outcome}"))
        if outcome == "done":
            self.start_model_load()

    async def pull_configuration(self) -> None:
        if not self.capability("workspace", "configuration"):
            return
        try:
            result = await asyncio.wait_for(self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="dlm")])), 5)
        except Exception as exc:
            self.log_info(f"workspace/configuration failed: {exc}", types.MessageType.Warning)
            return
        if result and isinstance(result[0], dict) and result[0]:
            self.apply_settings(result[0])

    async def in_model_thread(self, snap: Snapshot, kind: str,
                              work: Callable[[threading.Event], T]) -> T | None:
        """Debounced, superseding run of `work` for this document (None if it went stale)."""
        ticket = self.gate.begin(snap.uri, kind)
        return await self.model_thread.run(self.gate, ticket, self.settings.debounce_ms / 1e3, work)


SERVER = DlmServer()


def guarded(default: Callable[[], T]) -> Callable[[Callable[..., Awaitable[T]]],
                                                  Callable[..., Awaitable[T]]]:
    """Turn any failure of a handler into a logged message and an empty answer.

    Model errors are shown once; bad params become InvalidParams; cancellations propagate.
    """
    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @wraps(fn)
        async def handler(ls: DlmServer, params: Any) -> T:
            try:
                return await fn(ls, params)
            except (asyncio.CancelledError, JsonRpcInvalidParams):
                raise
            except ModelError as exc:
                ls.show_once(f"dlm: {exc}")
            except Exception:
                ls.log_info(f"dlm: {fn.__name__} failed:\n{traceback.format_exc()}",
                            types.MessageType.Error)
            return default()
        return handler
    return wrap


@SERVER.feature(types.INITIALIZE)
def initialize(ls: DlmServer, params: types.InitializeParams) -> None:
    # pygls has just created the workspace: documents follow LSP's line rules instead
    ls.protocol._workspace = LspWorkspace.replacing(ls.workspace)
    ls.apply_settings(params.initialization_options)
    if params.workspace_folders:
        ls.roots = [f.uri for f in params.workspace_folders]
    elif params.root_uri:
        ls.roots = [params.root_uri]


@SERVER.feature(types.INITIALIZED)
async def initialized(ls: DlmServer, params: types.InitializedParams) -> None:
    await ls.pull_configuration()  # before loading, so a configured model loads only once
    ls.loop = asyncio.get_running_loop()
    ls.pick_adapted()
    ls.start_model_load()
    ls.start_indexing()
    await watch_files(ls)


async def watch_files(ls: DlmServer) -> None:
    """Ask the client for file events under the workspace (when it can send them)."""
    if not ls.roots or not ls.capability("workspace", "did_change_watched_files",
                                         "dynamic_registration"):
        return
    pattern = "**/*.{" + ",".join(sorted({e.lstrip(".") for e in EXTENSIONS})) + "}"
    try:
        await ls.client_register_capability_async(types.RegistrationParams(registrations=[
            types.Registration(id=f"dlm-watch-{uuid.uuid4()}",
                               method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                               register_options=types.DidChangeWatchedFilesRegistrationOptions(
                                   watchers=[types.FileSystemWatcher(glob_pattern=pattern)]))]))
    except Exception as exc:  # a client that refuses: saves still keep the index fresh
        ls.log_info(f"dlm: file watching not registered: {exc}", types.MessageType.Warning)


@SERVER.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
def did_change_folders(ls: DlmServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
    for folder in params.event.removed:
        if folder.uri in ls.roots:
            ls.roots.remove(folder.uri)
        path = uri_path(folder.uri)
        if ls.indexer is not None and path is not None:
            ls.indexer.remove_root(path)
    for folder in params.event.added:
        ls.roots.append(folder.uri)
        path = uri_path(folder.uri)
        if ls.indexer is not None and path is not None:
            ls.indexer.add_root(path)
    ls.start_indexing()  # the first folder of a window opened without one


@SERVER.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: DlmServer, params: types.DidChangeWatchedFilesParams) -> None:
    if ls.indexer is None:
        return
    for change in params.changes:
        path = uri_path(change.uri)
        if path is None:
            continue
        if change.type == types.FileChangeType.Deleted:
            ls.indexer.file_deleted(path)
        else:
            ls.indexer.file_changed(path)


@SERVER.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: DlmServer, params: types.DidSaveTextDocumentParams) -> None:
    path = uri_path(params.text_document.uri)
    if ls.indexer is not None and path is not None:
        ls.indexer.closed(path)  # on disk now: read from there, as an unopened file
        snap = ls.snapshot(params.text_document.uri)
        if snap is not None:
            ls.indexer.open_text(path, snap.text, snap.version)


@SERVER.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(
    ls: DlmServer, params: types.DidChangeConfigurationParams
) -> None:
    raw = params.settings
    if isinstance(raw, dict) and isinstance(raw.get("dlm"), dict):
        ls.apply_settings(raw)
    else:  # clients that only signal a change expect us to pull
        await ls.pull_configuration()


@SERVER.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: DlmServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.gate.invalidate(params.text_document.uri)


@SERVER.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DlmServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.gate.invalidate(params.text_document.uri)
    path = uri_path(params.text_document.uri)
    if ls.indexer is not None and path is not None:
        ls.indexer.closed(path)


async def _complete_at(ls: DlmServer, uri: str, position: types.Position,
                       kind: str) -> tuple[Snapshot, CompletionOutcome] | None:
    """Candidates at `position`; None when the document is not served or the request went
    stale (a newer one, an edit, a cancellation)."""
    snap = ls.snapshot(uri)
    if snap is None or not ls.serves(snap):
        return None
    offset = offset_at(snap.text, position.line, position.character, ls.encoding)
    retrieve = ls.retriever(snap)
    others = [] if retrieve is not None else ls.others(snap)  # the index holds open buffers
    outcome = await ls.in_model_thread(snap, kind, lambda cancel: ls.engine.complete(
        snap.text, offset, snap.language, others, cancel, retrieve))
    if outcome is None:
        return None
    stats = outcome.stats
    if stats is not None and not stats.cached and stats.forward_passes:
        ls.decoded[0] += stats.tokens
        ls.decoded[1] += stats.forward_passes
        log.info("%s: %d tokens in %d forward passes (%.2f a pass), %.0f ms", kind,
                 stats.tokens, stats.forward_passes, stats.tokens / stats.forward_passes,
                 stats.ms)
    return snap, outcome


@SERVER.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=[".", "(", " ", "\n"]))
@guarded(lambda: types.CompletionList(is_incomplete=True, items=[]))
async def completion(ls: DlmServer, params: types.CompletionParams) -> types.CompletionList:
    found = await _complete_at(ls, params.text_document.uri, params.position, "completion")
    if found is None:
        return types.CompletionList(is_incomplete=True, items=[])
    snap, outcome = found
    snippets = bool(ls.capability("text_document", "completion", "completion_item",
                                  "snippet_support"))
    items = completion_items(outcome, snap.text, ls.encoding, snippets, snap.language_id)
    return types.CompletionList(is_incomplete=True, items=items)


@SERVER.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
@guarded(lambda: types.InlineCompletionList(items=[]))
async def inline_completion(
    ls: DlmServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    found = await _complete_at(ls, params.text_document.uri, params.position, "inline")
    if found is None:
        return types.InlineCompletionList(items=[])
    snap, outcome = found
    return types.InlineCompletionList(items=inline_items(outcome, snap.text, ls.encoding))


def _range_offsets(ls: DlmServer, snap: Snapshot, rng: types.Range) -> tuple[int, int]:
    a = offset_at(snap.text, rng.start.line, rng.start.character, ls.encoding)
    b = offset_at(snap.text, rng.end.line, rng.end.character, ls.encoding)
    return min(a, b), max(a, b)


@SERVER.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
    code_action_kinds=[REWRITE, QUICKFIX], resolve_provider=True))
@guarded(lambda: [])
async def code_action(ls: DlmServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    snap = ls.snapshot(params.text_document.uri)
    if snap is None or not ls.serves(snap):
        return []
    start, end = _range_offsets(ls, snap, params.range)
    only = params.context.only or []
    wants = lambda kind: not only or any(kind.startswith(k) for k in only)  # noqa: E731
    args = {"uri": snap.uri, "range": ls.protocol._converter.unstructure(params.range)}
    actions: list[types.CodeAction] = []
    if wants(QUICKFIX) and find_holes(snap.text, snap.language, start, end or len(snap.text)):
        actions.append(types.CodeAction(title="Fill holes (dlm)", kind=QUICKFIX,
                                        data={"command": "dlm.fillHoles", **args}))
    if wants(REWRITE) and end > start:
        actions.append(types.CodeAction(title="Regenerate selection (dlm)", kind=REWRITE,
                                        data={"command": "dlm.instantEdit", **args}))
    if wants(QUICKFIX) and error_regions(snap.text, snap.language, start, end):
        fix = await ls.in_model_thread(snap, "repair", lambda cancel: edits.repair(
            ls.engine, snap.text, snap.language, start, end, cancel))
        if fix is not None:  # offered only when the repaired lines parse
            actions.append(types.CodeAction(
                title="Repair syntax error (dlm)", kind=QUICKFIX, is_preferred=True,
                edit=workspace_edit(snap.uri, snap.version, snap.text, [fix], ls.encoding)))
    resolve = ls.capability("text_document", "code_action", "resolve_support", "properties")
    if not resolve or "edit" not in resolve:  # the client cannot resolve: edits now, or commands
        actions = [await _without_resolve(ls, a) for a in actions]
        # a Fill holes action computed now and without an edit would do nothing: drop it
        actions = [a for a in actions if a.edit is not None or a.command is not None]
    return actions


async def _without_resolve(ls: DlmServer, action: types.CodeAction) -> types.CodeAction:
    """Fill holes is computed now; a selection is regenerated only once chosen (a command)."""
    data = action.data if isinstance(action.data, dict) else {}
    if data.get("command") == "dlm.instantEdit":
        action.command = types.Command(title=action.title, command="dlm.instantEdit",
                                       arguments=[data])
        action.data = None
        return action
    return await _resolve(ls, action)


NO_FILL = "dlm: no fill for the holes here parses; the file is unchanged"
NO_EDIT = "dlm: no regeneration of the selection parses; the file is unchanged"


async def _resolve(ls: DlmServer, action: types.CodeAction) -> types.CodeAction:
    """The action's edit; when there is none, the user is told why instead of nothing."""
    data = action.data if isinstance(action.data, dict) else {}
    if data.get("command") == "dlm.fillHoles":
        action.edit = await _fill_holes_edit(ls, data)
        if action.edit is None:
            ls.tell(NO_FILL)
    elif data.get("command") == "dlm.instantEdit":
        action.edit = await _instant_edit_edit(ls, data)
        if action.edit is None:
            ls.tell(NO_EDIT)
    return action


@SERVER.feature(types.CODE_ACTION_RESOLVE)
@guarded(lambda: types.CodeAction(title="dlm"))
async def code_action_resolve(ls: DlmServer, action: types.CodeAction) -> types.CodeAction:
    return await _resolve(ls, action)


def _command_args(args: tuple[Any, ...]) -> dict[str, Any]:
    if not args or not isinstance(args[0], dict) or not isinstance(args[0].get("uri"), str):
        raise JsonRpcInvalidParams.of(ValueError("expected one argument {uri, range?, ...}"))
    return args[0]


def _snapshot_and_range(ls: DlmServer, data: dict[str, Any]) -> tuple[Snapshot, int, int]:
    snap = ls.snapshot(data["uri"])
    if snap is None:
        raise JsonRpcInvalidParams.of(ValueError(f"{data['uri']} is not open"))
    if data.get("range") is None:
        return snap, 0, len(snap.text)
    try:
        rng = ls.protocol._converter.structure(data["range"], types.Range)
    except Exception as exc:
        raise JsonRpcInvalidParams.of(ValueError(f"bad range: {exc}")) from exc
    return snap, *_range_offsets(ls, snap, rng)


async def _fill_holes_edit(ls: DlmServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    snap, start, end = _snapshot_and_range(ls, data)
    if start == end:
        start, end = 0, len(snap.text)
    found = await ls.in_model_thread(snap, "fillHoles", lambda cancel: edits.fill_holes(
        ls.engine, snap.text, snap.language, start, end, cancel))
    if not found:
        return None
    return workspace_edit(snap.uri, snap.version, snap.text, found, ls.encoding)


async def _apply(ls: DlmServer, edit: types.WorkspaceEdit | None, label: str) -> Any:
    if edit is None:
        return None
    try:
        await asyncio.wait_for(ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=label)), APPLY_EDIT_TIMEOUT_S)
    except Exception as exc:  # the client may not apply edits: it still gets the edit back
        ls.log_info(f"workspace/applyEdit failed: {exc}", types.MessageType.Warning)
    return ls.protocol._converter.unstructure(edit)


@SERVER.command("dlm.fillHoles")
async def cmd_fill_holes(ls: DlmServer, *args: Any) -> Any:
    """Fill every hole in {uri, range?} jointly and apply the edit."""
    edit = await _fill_holes_edit(ls, _command_args(args))
    if edit is None:
        ls.tell(NO_FILL)
    return await _apply(ls, edit, "dlm: fill holes")


async def _instant_edit_edit(ls: DlmServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    snap, start, end = _snapshot_and_range(ls, data)
    instruction = data.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise JsonRpcInvalidParams.of(ValueError("instruction must be a string"))
    edit = await ls.in_model_thread(snap, "instantEdit", lambda cancel: edits.instant_edit(
        ls.engine, snap.text, snap.language, start, end, instruction, cancel))
    if edit is None:
        return None
    return workspace_edit(snap.uri, snap.version, snap.text, [edit], ls.encoding)


@SERVER.command("dlm.instantEdit")
async def cmd_instant_edit(ls: DlmServer, *args: Any) -> Any:
    """Regenerate {uri, range} from both sides, following {instruction} when given."""
    edit = await _instant_edit_edit(ls, _command_args(args))
    if edit is None:
        ls.tell(NO_EDIT)
    return await _apply(ls, edit, "dlm: instant edit")


@SERVER.command("dlm.status")
async def cmd_status(ls: DlmServer, *args: Any) -> dict[str, Any]:
    """Model state, counters, the settings in force and the last run's figures, for status
    bars and tests; with {uri}, the server's copy of that document (version, length,
    sha256) to check sync."""
    e = ls.engine
    stats = e.last_stats
    out = {
        "version": __version__,
        "state": e.state,
        "error": e.error,
        "model": str(e.model.path) if e.model else ls.settings.model,
        "positionEncoding": ls.encoding,
        "modelRuns": e.model_runs,
        "started": ls.gate.started,
        "superseded": ls.gate.superseded,
        "busy": ls.model_thread.busy,
        "cancelledPasses": e.cancelled_passes,
        "cacheHits": e.cache.hits,
        "pendingFutures": len(ls.protocol._request_futures),
        "workspace": ls.indexer.status() if ls.indexer is not None else {"state": "off"},
        "adaptedModel": str(getattr(e, "adapted", None) or "") or None,
        "modelLanguages": ls.model_languages() or "all",
        "unservedLanguages": sorted(ls.unserved),
        "lastRun": None if stats is None else stats.__dict__,
        "tokensPerPass": {  # of the completions decoded since the server started
            "last": round(stats.tokens / stats.forward_passes, 3)
            if stats is not None and stats.forward_passes else None,
            "mean": round(ls.decoded[0] / ls.decoded[1], 3) if ls.decoded[1] else None},
        "lastSnippets": getattr(e, "last_snippets", []),
        "settings": settings_values(ls.settings),
    }
    uri = args[0].get("uri") if args and isinstance(args[0], dict) else None
    if isinstance(uri, str):
        snap = ls.snapshot(uri)
        out["document"] = None if snap is None else {
            "version": snap.version, "length": len(snap.text),
            "sha256": hashlib.sha256(snap.text.encode("utf-8", "surrogatepass")).hexdigest()}
    return out


@SERVER.feature(types.SHUTDOWN)
def shutdown(ls: DlmServer, params: None) -> None:
    ls.stop_indexing()
    ls.gate.cancel_all()
    ls.model_thread.shutdown()
