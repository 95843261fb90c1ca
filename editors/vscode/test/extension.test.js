// The extension's real LanguageClient against the real dlm-lsp server, in a mocked `vscode`.
//   DLM_TEST_PYTHON=.venv/bin/python DLM_TEST_MODEL=<parrot checkpoint> node --test test/
// The parrot test model writes `1` in every slot, so the server's answers are known.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const os = require('os');
const path = require('path');
const mock = require('./vscode-mock');

mock.install();
const { activate, deactivate, findExecutable } = require('../out/src/extension.js');
const { vscode, registered, settings, openDocument, Position, Selection, Range } = mock;

const python = process.env.DLM_TEST_PYTHON;
const model = process.env.DLM_TEST_MODEL;
const SOURCE = [
  'import math', '', 'def area(r):', '    return math.pi * ', '', 'class Shape:',
  '    def size(self):', '        ...', '', 'def volume(r):', '    return r', '',
].join('\n');
const token = new vscode.CancellationTokenSource().token;

async function waitFor(fn, ms = 60000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a missing server executable gives the install command', async () => {
  Object.assign(settings, { serverPath: path.join(os.tmpdir(), 'no-such-dlm-lsp') });
  const ext = await activate({ subscriptions: [] });
  assert.equal(ext.client, undefined);
  const error = registered.messages.find((m) => m.kind === 'error');
  assert.match(error.text, /pip install dlm-language-server/);
  ext.dispose();
  assert.equal(findExecutable('sh'), findExecutable('/bin/sh') ? findExecutable('sh') : undefined);
});

test('the real client starts the server and its providers return the server results', async (t) => {
  assert.ok(python && model, 'set DLM_TEST_PYTHON and DLM_TEST_MODEL');
  registered.completion.length = registered.inline.length = registered.codeActions.length = 0;
  Object.assign(settings, {
    serverPath: python, serverArgs: ['-m', 'dlm_lsp'], model, maxTokens: 6, maxBlockTokens: 10,
    debounceMs: 0,
  });
  const doc = openDocument(path.join(os.tmpdir(), 'demo.py'), 'python', SOURCE);
  const ext = await activate({ subscriptions: [] });
  t.after(() => deactivate());  // also when a check above failed
  const status = await waitFor(async () => {
    const s = await ext.status();
    return s && (s.state === 'ready' || s.state === 'error') && s;
  });
  assert.equal(status.state, 'ready');

  await t.test('providers and commands are registered', () => {
    assert.ok(registered.completion.length >= 1, 'completion provider');
    assert.ok(registered.inline.length >= 1, 'inline completion provider');
    assert.ok(registered.codeActions.length >= 1, 'code action provider');
    for (const id of ['instantEdit', 'fillHoles', 'restartServer', 'showStatus', 'showLog', 'togglePause']) {
      assert.ok(registered.commands.has(`dlm-lsp.${id}`), id);
    }
  });

  await t.test('the client-only settings it sends with the section raise no warning', async () => {
    // the language client answers workspace/configuration with the whole "dlm" section,
    // serverPath and serverArgs included; the server must take them without a word
    await waitFor(async () => (await ext.status())?.modelRuns !== undefined);
    const unknown = registered.messages.filter((m) => /unknown setting/.test(m.text || ''));
    assert.deepEqual(unknown, []);
  });

  await t.test('completion returns the server item', async () => {
    const t0 = Date.now();
    const result = await registered.completion[0].provideCompletionItems(
      doc, new Position(3, 21), token, { triggerKind: 0 });
    const items = Array.isArray(result) ? result : result.items;
    console.log(`completion round trip ${Date.now() - t0} ms`);
    assert.ok(items.length >= 1);
    const edit = items[0].textEdit;
    const text = edit ? edit.newText : (items[0].insertText.value || items[0].insertText);
    assert.match(text, /^1+$/);
  });

  await t.test('inline completion returns the ghost text', async () => {
    const t0 = Date.now();
    const result = await registered.inline[0].provideInlineCompletionItems(
      doc, new Position(10, 12), { triggerKind: 1, selectedCompletionInfo: undefined }, token);
    const items = Array.isArray(result) ? result : result.items;
    console.log(`inline round trip ${Date.now() - t0} ms`);
    assert.ok(items.length >= 1);
    const text = typeof items[0].insertText === 'string' ? items[0].insertText : items[0].insertText.value;
    assert.match(text, /1/);
  });

  await t.test('code actions include fill holes on the ... line', async () => {
    const actions = await registered.codeActions[0].provideCodeActions(
      doc, new Range(7, 8, 7, 11), { diagnostics: [], only: undefined, triggerKind: 1 }, token);
    const kinds = actions.map((a) => (a.kind ? a.kind.value : ''));
    assert.ok(kinds.some((k) => k.startsWith('quickfix.dlm')), JSON.stringify(kinds));
  });

  await t.test('Fill Holes edits the document through workspace/applyEdit', async () => {
    vscode.window.activeTextEditor = { document: doc, selection: new Selection(new Position(0, 0), new Position(0, 0)) };
    await ext.fillHoles();
    const line = doc.getText().split('\n')[7];
    assert.notEqual(line.trim(), '...');
    assert.match(line, /1/);
  });

  await t.test('Instant Edit sends the selection and instruction and applies the edit', async () => {
    vscode.window.nextInput = 'square it';
    vscode.window.activeTextEditor = { document: doc, selection: new Selection(new Position(10, 0), new Position(10, 12)) };
    await ext.instantEdit();
    assert.match(doc.getText().split('\n')[10], /1/);
  });

  await t.test('pausing stops completions without stopping the server', async () => {
    await vscode.commands.executeCommand('dlm-lsp.togglePause');
    const paused = await registered.inline[0].provideInlineCompletionItems(
      doc, new Position(3, 21), { triggerKind: 1 }, token);
    assert.deepEqual(Array.isArray(paused) ? paused : paused.items, []);
    await vscode.commands.executeCommand('dlm-lsp.togglePause');
    assert.equal(ext.paused, false);
  });

  await t.test('deactivating stops the server and leaves no timer running', async () => {
    await deactivate();
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual(process.getActiveResourcesInfo().filter((r) => r === 'Timeout'), []);
  });
});
