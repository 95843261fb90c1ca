"""The server reads the project around the open file: the index follows the workspace's
folders, saves and file events, and its snippets reach the model; files in a language the
model was not trained on get no completion and one clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from lsp_helpers import (
    SERVER,
    completion_params,
    init_params,
    open_doc,
    status,
    wait_for_status,
    wait_ready,
)

CONFIG = ("def parse_config(path, strict=False, encoding='utf-8'):\n"
          "    '''Read the settings file.'''\n    return {}\n")
MAIN = "from pkg.config import parse_config\n\n\ndef main():\n    cfg = parse_config(\n"


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):  # pytest-lsp keeps window/showMessage
    registered: list[types.Registration] = []

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:  # as an editor's file watcher
        registered.extend(params.registrations)

    lsp_client.registered = registered  # type: ignore[attr-defined]
    yield lsp_client
    if lsp_client._server is not None and lsp_client._server.returncode is None:
        await lsp_client.shutdown_session()


def project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "config.py").write_text(CONFIG)
    (root / "main.py").write_text(MAIN)
    (root / ".gitignore").write_text("ignored/\n")
    (root / "ignored").mkdir()
    (root / "ignored" / "big.py").write_text("def parse_config():\n    pass\n")
    return root


def settings(model: Path) -> dict:
    return {"model": str(model), "maxTokens": 4, "debounceMs": 0, "retrievalShare": 0.5}


async def start(client: LanguageClient, model: Path, root: Path) -> None:
    params = init_params(settings(model))
    params.workspace_folders = [types.WorkspaceFolder(uri=root.as_uri(), name="ws")]
    await client.initialize_session(params)
    await wait_ready(client)


def indexed(st: dict) -> bool:
    return st["workspace"]["state"] == "ready"


async def test_a_definition_in_another_file_of_the_workspace_reaches_the_context(
        client: LanguageClient, parrot_checkpoint, tmp_path):
    root = project(tmp_path / "ws")
    await start(client, parrot_checkpoint, root)
    st = await wait_for_status(client, indexed)
    assert st["workspace"]["files"] == 3 and st["workspace"]["bytes"] > 0  # not ignored/
    uri = (root / "main.py").as_uri()
    open_doc(client, MAIN, uri=uri)
    await client.text_document_completion_async(completion_params(4, 23, uri=uri))
    st = await status(client)
    assert "# Path: pkg/config.py" in st["lastSnippets"]
    watched = [r for r in client.registered if r.method == "workspace/didChangeWatchedFiles"]
    assert watched and "py" in watched[0].register_options["watchers"][0]["globPattern"]


async def test_saves_file_events_and_new_folders_keep_the_index_fresh(
        client: LanguageClient, parrot_checkpoint, tmp_path):
    root = project(tmp_path / "ws")
    await start(client, parrot_checkpoint, root)
    await wait_for_status(client, indexed)
    (root / "pkg" / "extra.py").write_text("def extra():\n    return 1\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=(root / "pkg" / "extra.py").as_uri(),
                        type=types.FileChangeType.Created),
        types.FileEvent(uri=(root / "pkg" / "config.py").as_uri(),
                        type=types.FileChangeType.Deleted)]))
    await wait_for_status(client, lambda st: st["workspace"]["files"] == 3 and st[
        "workspace"]["chunks"] > 0)
    other = project(tmp_path / "second")
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(
            added=[types.WorkspaceFolder(uri=other.as_uri(), name="second")], removed=[])))
    st = await wait_for_status(client, lambda st: st["workspace"]["files"] == 6)
    assert len(st["workspace"]["roots"]) == 2
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(
            added=[], removed=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")])))
    await wait_for_status(client, lambda st: st["workspace"]["files"] == 3)


async def test_the_index_can_be_turned_off(client: LanguageClient, parrot_checkpoint,
                                           tmp_path):
    root = project(tmp_path / "ws")
    params = init_params({**settings(parrot_checkpoint), "workspaceIndex": False})
    params.workspace_folders = [types.WorkspaceFolder(uri=root.as_uri(), name="ws")]
    await client.initialize_session(params)
    await wait_ready(client)
    assert (await status(client))["workspace"] == {"state": "off"}


@pytest.fixture
def python_only(parrot_checkpoint, tmp_path) -> Path:
    model = tmp_path / "python-only"
    shutil.copytree(parrot_checkpoint, model)
    spec = json.loads((model / "dlm.json").read_text())
    (model / "dlm.json").write_text(json.dumps({**spec, "languages": ["python"]}))
    return model


async def test_a_file_in_a_language_the_model_was_not_trained_on_gets_one_clear_message(
        client: LanguageClient, python_only, tmp_path):
    await client.initialize_session(init_params(settings(python_only)))
    await wait_ready(client)
    js = "file:///work/app.js"
    open_doc(client, "const values = [1, 2];\nlet total = 0;\n", uri=js, language="javascript")
    for _ in range(2):
        result = await client.text_document_completion_async(completion_params(1, 12, uri=js))
        assert not result.items
    said = [m.message for m in client.messages if "javascript" in m.message]
    assert len(said) == 1 and "python only" in said[0] and "dlm-lsp pull" in said[0]
    st = await status(client)
    assert st["modelLanguages"] == ["python"] and st["unservedLanguages"] == ["javascript"]
    py = "file:///work/app.py"
    open_doc(client, "x = \n", uri=py)
    result = await client.text_document_completion_async(completion_params(0, 4, uri=py))
    assert result.items  # Python is served


async def test_the_status_reports_tokens_per_forward_pass(client: LanguageClient,
                                                          parrot_checkpoint):
    await client.initialize_session(init_params(settings(parrot_checkpoint)))
    await wait_ready(client)
    assert (await status(client))["tokensPerPass"] == {"last": None, "mean": None}
    uri = "file:///work/tpp.py"
    open_doc(client, "x = \n", uri=uri)
    await client.text_document_completion_async(completion_params(0, 4, uri=uri))
    st = await status(client)
    run = st["lastRun"]
    assert st["tokensPerPass"]["last"] == round(run["tokens"] / run["forward_passes"], 3) > 1
    assert st["tokensPerPass"]["mean"] == st["tokensPerPass"]["last"]
