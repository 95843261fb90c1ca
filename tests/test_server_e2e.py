"""End-to-end LSP sessions against `python -m dlm_lsp` over stdio (pytest-lsp)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from dlm_lsp.pipeline.syntax import HOLE_MARKER

from lsp_helpers import (
    SERVER,
    URI,
    completion_params,
    init_params,
    inline_params,
    inside,
    open_doc,
    status,
    wait_for_status,
    wait_ready,
)

DOC = (
    "import math\n"
    "\n"
    "def area(r):\n"
    "    return math.pi * \n"
    "\n"
    "def todo():\n"
    "    # TODO: implement\n"
    "\n"
    "class Shape:\n"
    "    def size(self):\n"
    "        ...\n"
    "\n"
    f"x = max({HOLE_MARKER}, 1)\n"
    "def g(a):\n"
    "    \n"
)
CURSORS = [(3, 21), (12, 6), (14, 4), (0, 11)]


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    applied: list[types.ApplyWorkspaceEditParams] = []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    lsp_client.applied = applied  # type: ignore[attr-defined]
    yield lsp_client
    if lsp_client._server is not None and lsp_client._server.returncode is None:
        await lsp_client.shutdown_session()


def _settings(model, **extra):
    return {"model": str(model), "maxTokens": 6, "maxBlockTokens": 10, "debounceMs": 0, **extra}


async def test_session_completes_inline_and_fills_holes_then_shuts_down_cleanly(
        client: LanguageClient, parrot_checkpoint):
    result = await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    caps = result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert "dlm.fillHoles" in caps.execute_command_provider.commands
    open_doc(client, DOC)
    assert (await wait_ready(client))["state"] == "ready"

    for line, char in CURSORS:
        comp = await client.text_document_completion_async(completion_params(line, char))
        assert comp.items, (line, char)
        for item in comp.items:
            assert inside(item.text_edit.range, DOC)
            assert "1" in item.text_edit.new_text and item.documentation is not None
        inline = await client.text_document_inline_completion_async(inline_params(line, char))
        assert inline.items and all(inside(i.range, DOC) for i in inline.items)
        assert all(set(i.insert_text.strip()) == {"1"} for i in inline.items)

    whole = types.Range(types.Position(0, 0), types.Position(len(DOC.split("\n")), 0))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(URI), range=whole,
        context=types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.QuickFix])))
    fill = next(a for a in actions if a.title.startswith("Fill holes"))
    if fill.edit is None:
        fill = await client.code_action_resolve_async(fill)
    edits = fill.edit.document_changes[0].edits
    lines = DOC.split("\n")
    replaced = [lines[e.range.start.line][e.range.start.character:e.range.end.character]
                for e in edits]
    assert replaced == ["# TODO: implement", "...", HOLE_MARKER]
    assert all(set(e.new_text.strip()) == {"1"} for e in edits)

    await client.shutdown_session()
    assert client._server.returncode == 0


async def test_instant_edit_command_applies_an_edit_of_the_selection(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    open_doc(client, DOC)
    await wait_ready(client)
    sel = types.Range(types.Position(3, 11), types.Position(3, 21))
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dlm.instantEdit",
        arguments=[{"uri": URI, "range": {"start": {"line": 3, "character": 11},
                                          "end": {"line": 3, "character": 21}},
                    "instruction": "use tau"}]))
    assert result is not None
    assert len(client.applied) == 1
    edit = client.applied[0].edit.document_changes[0].edits[0]
    assert edit.range == sel and set(edit.new_text) == {"1"}


async def test_a_cancelled_request_stops_the_decode_at_its_next_step(
        client: LanguageClient, slow_checkpoint):
    slots = 384
    await client.initialize_session(init_params(_settings(
        slow_checkpoint, maxTokens=slots, maxSteps=slots, confidenceThreshold=1.0,
        kvCache=False)))
    text = "def f(x):\n    y = \n" + "z = 1\n" * 40
    open_doc(client, text)
    await wait_ready(client)
    task = asyncio.ensure_future(client.protocol.send_request_async(
        types.TEXT_DOCUMENT_COMPLETION, completion_params(1, 8), msg_id="slow-1"))
    await wait_for_status(client, lambda st: st["busy"] and st["started"] == 1)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="slow-1"))
    with pytest.raises(Exception, match="cancel"):
        await task
    st = await wait_for_status(client, lambda st: not st["busy"])
    assert st["started"] == 1 and st["superseded"] == 1 and st["lastRun"] is None
    # the decode of 384 slots, one token per step, stopped long before its end
    assert 1 <= st["cancelledPasses"] < slots // 2


async def test_a_burst_of_edits_and_requests_runs_the_model_once(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint, debounceMs=150)))
    base = "def f(x):\n    return "
    open_doc(client, base)
    await wait_ready(client)
    tasks = []
    for i in range(20):
        text = base + "x" * i
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=i + 2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        tasks.append(asyncio.ensure_future(
            client.text_document_completion_async(completion_params(1, 11 + i))))
    results = await asyncio.gather(*tasks)
    assert all(not r.items for r in results[:-1])
    assert results[-1].items
    st = await status(client)
    assert st["modelRuns"] == 1 and st["started"] == 1 and st["superseded"] == 19


async def test_repair_quick_fix_is_offered_for_a_syntax_error_and_parses(
        client: LanguageClient, parrot_checkpoint):
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    text = "def f(x):\n    return x\n\ny = (1 +\n"
    open_doc(client, text)
    await wait_ready(client)
    rng = types.Range(types.Position(3, 0), types.Position(3, 8))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(URI), range=rng,
        context=types.CodeActionContext(diagnostics=[])))
    repair = next(a for a in actions if a.title.startswith("Repair syntax error"))
    edit = repair.edit.document_changes[0].edits[0]
    assert edit.range == rng and set(edit.new_text) == {"1"}
    regenerate = next(a for a in actions if a.kind == "refactor.rewrite.dlm")
    assert regenerate.edit is None  # computed only when chosen
    regenerate = await client.code_action_resolve_async(regenerate)
    new = regenerate.edit.document_changes[0].edits[0]
    assert new.range == rng and set(new.new_text) == {"1"}
    # nothing to repair on valid code
    clean = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(URI),
        range=types.Range(types.Position(0, 0), types.Position(1, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    assert not any(a.title.startswith("Repair") for a in clean)


async def test_settings_are_pulled_from_workspace_configuration(
        client: LanguageClient, parrot_checkpoint):
    client.set_configuration({"maxTokens": 3}, section="dlm")
    await client.initialize_session(init_params(_settings(parrot_checkpoint)))
    open_doc(client, "x = \n")
    await wait_ready(client)
    await wait_for_status(client, lambda st: st["settings"]["maxTokens"] == 3)  # pulled
    inline = await client.text_document_inline_completion_async(inline_params(0, 4))
    assert inline.items[0].insert_text == "111"
