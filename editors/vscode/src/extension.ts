// dlm-lsp for VS Code: starts the dlm-lsp language server and wires its completion, inline
// completion (ghost text) and code actions into the editor through vscode-languageclient,
// with commands for Instant Edit, Fill Holes, restart, status and log, and a status bar item
// showing the model state and a pause toggle.
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';

const SECTION = 'dlm';
const INSTALL = 'pip install dlm-language-server';

interface ServerStatus {
  state: string;
  error: string | null;
  model: string;
  modelRuns: number;
}

/** Find `command` as given (a path) or on PATH; undefined when it is nowhere. */
export function findExecutable(command: string, envPath = process.env.PATH ?? ''): string | undefined {
  if (command.includes(path.sep) || command.includes('/')) {
    return fs.existsSync(command) ? command : undefined;
  }
  const exts = process.platform === 'win32' ? ['.exe', '.cmd', ''] : [''];
  for (const dir of envPath.split(path.delimiter)) {
    for (const ext of exts) {
      const candidate = path.join(dir, command + ext);
      if (dir && fs.existsSync(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}

/** The server settings: the "dlm" section minus the keys only the extension uses. */
export function serverSettings(config: vscode.WorkspaceConfiguration): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of [
    'model', 'device', 'dtype', 'threads', 'quantize', 'contextTokens', 'maxTokens',
    'maxBlockTokens', 'temperature', 'topP', 'confidenceThreshold', 'maxSteps', 'lineSteps',
    'candidates', 'remaskThreshold', 'kvCache', 'unmaskWindow', 'suffixReuseLines', 'debounceMs',
    'workspaceIndex', 'retrievalShare', 'parallelFilter', 'lookupDrafts', 'copyThreshold',
    'adapted',
    'languages', 'enabled', 'trustRemoteCode', 'backend', 'remote', 'family', 'promptFormat',
    'decoding',
  ]) {
    const value = config.get(key);
    if (value !== undefined) {
      out[key] = value;
    }
  }
  return out;
}

export class DlmExtension implements vscode.Disposable {
  client: LanguageClient | undefined;
  paused = false;
  readonly output: vscode.LogOutputChannel;
  readonly statusItem: vscode.StatusBarItem;
  private poll: NodeJS.Timeout | undefined;
  private disposables: vscode.Disposable[] = [];

  constructor() {
    this.output = vscode.window.createOutputChannel('dlm-lsp', { log: true });
    this.statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
    this.statusItem.command = 'dlm-lsp.togglePause';
    this.setStatus('$(circle-slash) dlm', 'dlm-lsp is not running');
    this.statusItem.show();
  }

  private setStatus(text: string, tooltip: string): void {
    this.statusItem.text = text;
    this.statusItem.tooltip = tooltip + '\nClick to pause or resume completions.';
  }

  registerCommands(): vscode.Disposable[] {
    const reg = vscode.commands.registerCommand;
    this.disposables.push(
      reg('dlm-lsp.instantEdit', () => this.instantEdit()),
      reg('dlm-lsp.fillHoles', () => this.fillHoles()),
      reg('dlm-lsp.restartServer', () => this.restart()),
      reg('dlm-lsp.showStatus', () => this.showStatus()),
      reg('dlm-lsp.showLog', () => this.output.show()),
      reg('dlm-lsp.togglePause', () => this.togglePause()),
    );
    return this.disposables;
  }

  async start(): Promise<LanguageClient | undefined> {
    const config = vscode.workspace.getConfiguration(SECTION);
    const command = config.get<string>('serverPath', 'dlm-lsp');
    const executable = findExecutable(command);
    if (!executable) {
      this.setStatus('$(error) dlm', `dlm-lsp was not found (${command})`);
      void vscode.window.showErrorMessage(
        `dlm-lsp: the server \`${command}\` was not found. Install it with \`${INSTALL}\` ` +
          'or set "dlm.serverPath".',
      );
      return undefined;
    }
    const serverOptions: ServerOptions = {
      command: executable,
      args: config.get<string[]>('serverArgs', []),
    };
    const languages = config.get<string[]>('languages', []);
    const clientOptions: LanguageClientOptions = {
      documentSelector: languages.length
        ? languages.map((language) => ({ language }))
        : [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: serverSettings(config),
      synchronize: { configurationSection: SECTION },
      outputChannel: this.output,
      middleware: {
        // Pausing is client-side so it takes effect at once and survives restarts.
        provideCompletionItem: (doc, pos, ctx, token, next) =>
          this.paused ? [] : next(doc, pos, ctx, token),
        provideInlineCompletionItems: (doc, pos, ctx, token, next) =>
          this.paused ? [] : next(doc, pos, ctx, token),
      },
    };
    this.client = new LanguageClient('dlm-lsp', 'dlm-lsp', serverOptions, clientOptions);
    this.client.onDidChangeState((e) => {
      if (e.newState === State.Stopped) {
        this.setStatus('$(circle-slash) dlm', 'dlm-lsp stopped');
      }
    });
    this.setStatus('$(loading~spin) dlm', 'dlm-lsp: starting');
    await this.client.start();
    this.watchModel();
    return this.client;
  }

  /** Poll the server's model state until it is ready or failed (loading shows progress). */
  private watchModel(): void {
    clearInterval(this.poll);
    const tick = async () => {
      const status = await this.status().catch(() => undefined);
      if (!status) {
        if (!this.client?.isRunning()) {
          clearInterval(this.poll); // stopped or restarting: start() sets up a new poll
        }
        return;
      }
      if (status.state === 'ready') {
        this.setStatus(this.paused ? '$(debug-pause) dlm' : '$(check) dlm',
          `dlm-lsp: ${status.model} ready`);
        clearInterval(this.poll);
      } else if (status.state === 'error') {
        this.setStatus('$(error) dlm', `dlm-lsp: ${status.error}`);
        clearInterval(this.poll);
      } else {
        this.setStatus('$(loading~spin) dlm', `dlm-lsp: loading ${status.model}`);
      }
    };
    this.poll = setInterval(() => void tick(), 500);
    void tick();
  }

  async status(): Promise<ServerStatus | undefined> {
    if (!this.client || !this.client.isRunning()) {
      return undefined;
    }
    return this.client.sendRequest(ExecuteCommandRequest.type, { command: 'dlm.status', arguments: [] });
  }

  async showStatus(): Promise<void> {
    const s = await this.status();
    const text = s
      ? `dlm-lsp: ${s.state}, model ${s.model}, ${s.modelRuns} model runs${s.error ? ', ' + s.error : ''}` +
        (this.paused ? ' (paused)' : '')
      : 'dlm-lsp is not running';
    void vscode.window.showInformationMessage(text);
  }

  togglePause(): void {
    this.paused = !this.paused;
    this.setStatus(this.paused ? '$(debug-pause) dlm' : '$(check) dlm',
      this.paused ? 'dlm-lsp: completions paused' : 'dlm-lsp: completions on');
  }

  async restart(): Promise<void> {
    if (this.client) {
      await this.client.stop().catch(() => undefined);
      this.client = undefined;
    }
    await this.start();
  }

  private async execute(command: string, args: Record<string, unknown>): Promise<unknown> {
    if (!this.client || !this.client.isRunning()) {
      void vscode.window.showWarningMessage('dlm-lsp is not running');
      return undefined;
    }
    return this.client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [args] });
  }

  async instantEdit(instruction?: string): Promise<unknown> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || !this.client) {
      return undefined;
    }
    const text = instruction ?? (await vscode.window.showInputBox({
      prompt: 'Instant Edit: what should change? (leave empty to regenerate the selection)',
    }));
    if (text === undefined) {
      return undefined; // cancelled
    }
    const c2p = this.client.code2ProtocolConverter;
    const args: Record<string, unknown> = {
      uri: c2p.asUri(editor.document.uri),
      range: c2p.asRange(editor.selection),
    };
    if (text.trim()) {
      args.instruction = text;
    }
    const result = await this.execute('dlm.instantEdit', args);
    if (!result) {
      void vscode.window.showInformationMessage('dlm-lsp: the model proposed no change that parses');
    }
    return result;
  }

  async fillHoles(): Promise<unknown> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || !this.client) {
      return undefined;
    }
    const c2p = this.client.code2ProtocolConverter;
    const args: Record<string, unknown> = { uri: c2p.asUri(editor.document.uri) };
    if (!editor.selection.isEmpty) {
      args.range = c2p.asRange(editor.selection);
    }
    const result = await this.execute('dlm.fillHoles', args);
    if (!result) {
      void vscode.window.showInformationMessage('dlm-lsp: no hole was filled');
    }
    return result;
  }

  /** Stop polling and the server; a stopped client must leave no timer behind. */
  async stop(): Promise<void> {
    clearInterval(this.poll);
    await this.client?.stop().catch(() => undefined);
  }

  dispose(): void {
    this.disposables.forEach((d) => d.dispose());
    this.statusItem.dispose();
    void this.stop();
  }
}

let extension: DlmExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<DlmExtension> {
  extension = new DlmExtension();
  context.subscriptions.push(extension, ...extension.registerCommands());
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('dlm.serverPath') || e.affectsConfiguration('dlm.serverArgs')) {
        void extension?.restart();
      }
    }),
  );
  await extension.start();
  return extension;
}

export async function deactivate(): Promise<void> {
  const ext = extension;
  extension = undefined;
  await ext?.stop();
}
