// A minimal stand-in for the `vscode` module, enough for vscode-languageclient's real
// LanguageClient to start the real server, sync documents and register its providers.
// Records what the extension and the client register so the tests can call the providers.
// Members the tests do not touch are generic stubs (see `stub`): it is not an editor.
'use strict';
const Module = require('module');
const path = require('path');

const registered = { completion: [], inline: [], codeActions: [], commands: new Map(), messages: [] };

function stub(name) {
  const fn = function () { return stub(name + '()'); };
  return new Proxy(fn, {
    get(target, prop) {
      if (prop === 'dispose') return () => {};
      if (prop === 'then') return undefined; // not a thenable
      if (prop === Symbol.toPrimitive) return () => 0;
      if (prop === Symbol.iterator) return function* () {};
      return stub(`${name}.${String(prop)}`);
    },
    construct() { return stub(`new ${name}`); },
  });
}

class Disposable {
  constructor(fn) { this._fn = fn; }
  static from(...items) { return new Disposable(() => items.forEach((d) => d && d.dispose && d.dispose())); }
  dispose() { if (this._fn) this._fn(); this._fn = undefined; }
}
class EventEmitter {
  constructor() { this.listeners = []; this.event = (fn, thisArg) => { this.listeners.push(fn.bind(thisArg)); return new Disposable(() => {}); }; }
  fire(e) { this.listeners.forEach((fn) => fn(e)); }
  dispose() { this.listeners = []; }
}
const noEvent = () => new Disposable(() => {});

class Uri {
  constructor(scheme, p) { this.scheme = scheme; this.path = p; this.fsPath = p; this.authority = ''; this.query = ''; this.fragment = ''; }
  static file(p) { return new Uri('file', p); }
  static parse(s) { return s.startsWith('file://') ? new Uri('file', decodeURIComponent(s.slice(7))) : new Uri(s.split(':')[0], s.slice(s.indexOf(':') + 1)); }
  toString() { return this.scheme === 'file' ? 'file://' + this.path : `${this.scheme}:${this.path}`; }
  toJSON() { return this.toString(); }
  with(change) { return new Uri(change.scheme || this.scheme, change.path || this.path); }
}
class Position {
  constructor(line, character) { this.line = line; this.character = character; }
  isEqual(o) { return o.line === this.line && o.character === this.character; }
  isBefore(o) { return this.line < o.line || (this.line === o.line && this.character < o.character); }
}
class Range {
  constructor(a, b, c, d) {
    if (typeof a === 'number') { this.start = new Position(a, b); this.end = new Position(c, d); } else { this.start = a; this.end = b; }
  }
  get isEmpty() { return this.start.isEqual(this.end); }
}
class Selection extends Range {
  constructor(anchor, active) { super(anchor, active); this.anchor = anchor; this.active = active; }
}
class TextEdit {
  constructor(range, newText) { this.range = range; this.newText = newText; }
  static replace(range, newText) { return new TextEdit(range, newText); }
  static insert(pos, newText) { return new TextEdit(new Range(pos, pos), newText); }
}
class WorkspaceEdit {
  constructor() { this.edits = []; }
  replace(uri, range, newText) { this.edits.push({ uri, edit: new TextEdit(range, newText) }); }
  insert(uri, pos, newText) { this.edits.push({ uri, edit: TextEdit.insert(pos, newText) }); }
  set(uri, edits) { for (const e of edits) this.edits.push({ uri, edit: Array.isArray(e) ? e[0] : e.edit || e }); }
  entries() { return this.edits.map((e) => [e.uri, [e.edit]]); }
  get size() { return this.edits.length; }
}
class SnippetString { constructor(value) { this.value = value || ''; } }
class MarkdownString { constructor(value) { this.value = value || ''; this.isTrusted = false; } appendMarkdown(v) { this.value += v; return this; } appendCodeblock(c, l) { this.value += `\n\`\`\`${l}\n${c}\n\`\`\`\n`; return this; } appendText(v) { this.value += v; return this; } }
class CompletionItem { constructor(label, kind) { this.label = label; this.kind = kind; } }
class CompletionList { constructor(items, isIncomplete) { this.items = items || []; this.isIncomplete = !!isIncomplete; } }
class InlineCompletionItem { constructor(insertText, range, command) { this.insertText = insertText; this.range = range; this.command = command; } }
class InlineCompletionList { constructor(items) { this.items = items; } }
class CodeActionKind {
  constructor(value) { this.value = value; }
  append(part) { return new CodeActionKind(this.value ? `${this.value}.${part}` : part); }
  contains(other) { return other.value === this.value || other.value.startsWith(this.value + '.'); }
  intersects(other) { return this.contains(other) || other.contains(this); }
}
for (const k of ['Empty:', 'QuickFix:quickfix', 'Refactor:refactor', 'RefactorExtract:refactor.extract', 'RefactorInline:refactor.inline', 'RefactorRewrite:refactor.rewrite', 'RefactorMove:refactor.move', 'Source:source', 'SourceOrganizeImports:source.organizeImports', 'SourceFixAll:source.fixAll', 'Notebook:notebook']) {
  const [name, value] = k.split(':');
  CodeActionKind[name] = new CodeActionKind(value);
}
class CodeAction { constructor(title, kind) { this.title = title; this.kind = kind; } }
class CancellationTokenSource {
  constructor() { const em = new EventEmitter(); this.token = { isCancellationRequested: false, onCancellationRequested: em.event }; this._em = em; }
  cancel() { this.token.isCancellationRequested = true; this._em.fire(); }
  dispose() {}
}
const enumOf = (names, start = 0) => Object.fromEntries(names.map((n, i) => [n, i + start]).concat(names.map((n, i) => [i + start, n])));

function makeDocument(uri, languageId, text) {
  const doc = {
    uri, languageId, version: 1, isClosed: false, isDirty: false, isUntitled: false, eol: 1,
    fileName: uri.fsPath, lineCount: 0, _text: text,
    getText(range) {
      if (!range) return doc._text;
      return doc._text.slice(doc.offsetAt(range.start), doc.offsetAt(range.end));
    },
    offsetAt(pos) {
      const lines = doc._text.split('\n');
      let off = 0;
      for (let i = 0; i < pos.line && i < lines.length; i++) off += lines[i].length + 1;
      return off + pos.character;
    },
    positionAt(offset) {
      const before = doc._text.slice(0, offset).split('\n');
      return new Position(before.length - 1, before[before.length - 1].length);
    },
    lineAt(line) { const t = doc._text.split('\n')[typeof line === 'number' ? line : line.line]; return { text: t, range: new Range(line, 0, line, t.length) }; },
    validateRange(r) { return r; },
    validatePosition(p) { return p; },
  };
  doc.lineCount = text.split('\n').length;
  return doc;
}

const settings = {}; // "dlm" section, nested as VS Code returns it
const documents = [];
const openEmitter = new EventEmitter();
const changeEmitter = new EventEmitter();

function applyTextEdits(doc, edits) {
  // From the end backwards, so each change's range is still valid when it is applied; the
  // change event lets the client send didChange, as VS Code does after an edit.
  const sorted = edits.slice().sort((a, b) => doc.offsetAt(b.range.start) - doc.offsetAt(a.range.start));
  const contentChanges = [];
  for (const e of sorted) {
    const s = doc.offsetAt(e.range.start);
    const t = doc.offsetAt(e.range.end);
    contentChanges.push({ range: e.range, rangeOffset: s, rangeLength: t - s, text: e.newText });
    doc._text = doc._text.slice(0, s) + e.newText + doc._text.slice(t);
  }
  doc.version += 1;
  doc.lineCount = doc._text.split('\n').length;
  changeEmitter.fire({ document: doc, contentChanges, reason: undefined });
}

const vscode = {
  version: '1.91.0',
  Disposable, EventEmitter, Uri, Position, Range, Selection, TextEdit, WorkspaceEdit, SnippetString,
  MarkdownString, CompletionItem, CompletionList, InlineCompletionItem, InlineCompletionList,
  CodeActionKind, CodeAction, CancellationTokenSource,
  CompletionItemKind: enumOf(['Text', 'Method', 'Function', 'Constructor', 'Field', 'Variable', 'Class', 'Interface', 'Module', 'Property', 'Unit', 'Value', 'Enum', 'Keyword', 'Snippet', 'Color', 'File', 'Reference', 'Folder', 'EnumMember', 'Constant', 'Struct', 'Event', 'Operator', 'TypeParameter', 'User', 'Issue']),
  CompletionItemTag: enumOf(['Deprecated'], 1),
  CompletionTriggerKind: enumOf(['Invoke', 'TriggerCharacter', 'TriggerForIncompleteCompletions']),
  InlineCompletionTriggerKind: enumOf(['Invoke', 'Automatic']),
  CodeActionTriggerKind: enumOf(['Invoke', 'Automatic'], 1),
  StatusBarAlignment: enumOf(['Left', 'Right'], 1),
  DiagnosticSeverity: enumOf(['Error', 'Warning', 'Information', 'Hint']),
  TextDocumentSaveReason: enumOf(['Manual', 'AfterDelay', 'FocusOut'], 1),
  EndOfLine: enumOf(['LF', 'CRLF'], 1),
  ProgressLocation: enumOf(['SourceControl', 'Window', 'Notification'], 1),
  LogLevel: enumOf(['Off', 'Trace', 'Debug', 'Info', 'Warning', 'Error']),
  ConfigurationTarget: enumOf(['Global', 'Workspace', 'WorkspaceFolder'], 1),
  workspace: new Proxy({
    workspaceFolders: undefined,
    textDocuments: documents,
    notebookDocuments: [],
    getConfiguration(section) {
      const root = section ? section.split('.').reduce((o, k) => (o && o[k]) || {}, { dlm: settings }) : { dlm: settings };
      return {
        get(key, dflt) { const v = key.split('.').reduce((o, k) => (o == null ? undefined : o[k]), root); return v === undefined ? dflt : v; },
        has(key) { return this.get(key) !== undefined; },
        inspect() { return undefined; },
        update() { return Promise.resolve(); },
      };
    },
    onDidOpenTextDocument: openEmitter.event,
    onDidChangeTextDocument: changeEmitter.event,
    async applyEdit(edit) {
      for (const [uri, edits] of edit.entries()) {
        const doc = documents.find((d) => d.uri.toString() === uri.toString());
        if (!doc) return false;
        applyTextEdits(doc, edits);
      }
      registered.messages.push({ kind: 'applyEdit', size: edit.size });
      return true;
    },
  }, { get: (t, p) => (p in t ? t[p] : p.startsWith('onDid') || p.startsWith('onWill') ? noEvent : stub(`workspace.${p}`)) }),
  window: new Proxy({
    activeTextEditor: undefined,
    visibleTextEditors: [],
    createOutputChannel(name) {
      const lines = [];
      return new Proxy({ name, lines, logLevel: 2, onDidChangeLogLevel: noEvent }, {
        get: (t, p) => (p in t ? t[p] : (...args) => { lines.push(args.join(' ')); }),
      });
    },
    createStatusBarItem() { return { text: '', tooltip: '', command: undefined, show() {}, hide() {}, dispose() {} }; },
    showErrorMessage(m) { registered.messages.push({ kind: 'error', text: m }); return Promise.resolve(undefined); },
    showWarningMessage(m) { registered.messages.push({ kind: 'warning', text: m }); return Promise.resolve(undefined); },
    showInformationMessage(m) { registered.messages.push({ kind: 'info', text: m }); return Promise.resolve(undefined); },
    showInputBox() { return Promise.resolve(vscode.window.nextInput); },
    withProgress(opts, task) { return task({ report() {} }, new CancellationTokenSource().token); },
  }, { get: (t, p) => (p in t ? t[p] : p.startsWith('onDid') ? noEvent : stub(`window.${p}`)) }),
  languages: new Proxy({
    match(selector, doc) {
      const sels = Array.isArray(selector) ? selector : [selector];
      return sels.some((s) => (typeof s === 'string' ? s === doc.languageId : (!s.language || s.language === doc.languageId) && (!s.scheme || s.scheme === doc.uri.scheme))) ? 10 : 0;
    },
    registerCompletionItemProvider(selector, provider) { registered.completion.push(provider); return new Disposable(() => {}); },
    registerInlineCompletionItemProvider(selector, provider) { registered.inline.push(provider); return new Disposable(() => {}); },
    registerCodeActionsProvider(selector, provider) { registered.codeActions.push(provider); return new Disposable(() => {}); },
    createDiagnosticCollection() { return { set() {}, delete() {}, clear() {}, dispose() {}, forEach() {} }; },
  }, { get: (t, p) => (p in t ? t[p] : p.startsWith('register') ? () => new Disposable(() => {}) : p.startsWith('onDid') ? noEvent : stub(`languages.${p}`)) }),
  commands: {
    registerCommand(id, fn) { registered.commands.set(id, fn); return new Disposable(() => registered.commands.delete(id)); },
    executeCommand(id, ...args) { const fn = registered.commands.get(id); return Promise.resolve(fn ? fn(...args) : undefined); },
    getCommands() { return Promise.resolve([...registered.commands.keys()]); },
  },
  env: { language: 'en', appName: 'vscode-mock', machineId: 'test', sessionId: 'test', uriScheme: 'vscode', openExternal: () => Promise.resolve(true) },
  extensions: { getExtension: () => undefined, all: [], onDidChange: noEvent },
};
const exported = new Proxy(vscode, { get: (t, p) => (p in t ? t[p] : stub(String(p))) });

function install() {
  const mockPath = path.join(__dirname, 'vscode-mock.js');
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function (request, ...rest) {
    return request === 'vscode' ? mockPath : resolve.call(this, request, ...rest);
  };
  require.cache[mockPath] = { id: mockPath, filename: mockPath, loaded: true, exports: exported };
}

/** Open a document: it joins workspace.textDocuments and the open event fires. */
function openDocument(fsPath, languageId, text) {
  const doc = makeDocument(Uri.file(fsPath), languageId, text);
  documents.push(doc);
  openEmitter.fire(doc);
  return doc;
}

module.exports = { install, vscode, registered, settings, openDocument, Selection, Position, Range };
