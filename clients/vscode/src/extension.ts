// The VS Code shell: starts `ctxzip lsp` through vscode-languageclient, keeps a status bar
// item current and registers the two compress commands. Everything that is not VS Code API
// lives in core.ts.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, State, WorkDoneProgress } from "vscode-languageclient/node";
import * as core from "./core";

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let statusTimer: NodeJS.Timeout | undefined;

/**
 * The result documents' text, by path: a read-only virtual document each, so a new result
 * replaces the last one in its tab instead of opening another untitled tab.
 */
const results = new Map<string, string>();
// This extension's package.json, whose settings `settings()` reads.
let manifest: unknown;
// Made in activate(): nothing from `vscode` is constructed while the bundle loads.
let resultChanged: vscode.EventEmitter<vscode.Uri>;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  manifest = context.extension.packageJSON;
  resultChanged = new vscode.EventEmitter<vscode.Uri>();
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 0);
  statusItem.text = "$(sync~spin) ctxzip";
  statusItem.command = "ctxzip.compressQuery";
  statusItem.show();
  context.subscriptions.push(
    statusItem,
    vscode.commands.registerCommand("ctxzip.compressQuery", compressQuery),
    vscode.commands.registerCommand("ctxzip.compressFocus", compressFocus),
    vscode.commands.registerCommand("ctxzip.restart", restart),
    resultChanged,
    vscode.workspace.registerTextDocumentContentProvider(core.RESULT_SCHEME, {
      onDidChange: resultChanged.event,
      provideTextDocumentContent: (uri) => results.get(uri.path) ?? "",
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration("ctxzip")) void restart();
    }),
    { dispose: () => stopStatus() },
  );
  await start();
}

export async function deactivate(): Promise<void> {
  stopStatus();
  await client?.stop();
  client = undefined;
}

/**
 * Every `ctxzip.*` setting the manifest declares, read by name: a setting added to
 * package.json reaches core.ts with no change here.
 */
function settings(): core.Settings {
  const c = vscode.workspace.getConfiguration("ctxzip");
  return core.readSettings(manifest, (name) => c.get(name));
}

async function start(): Promise<void> {
  const launch = core.serverLaunch(settings());
  const serverOptions: ServerOptions = { command: launch.command, args: launch.args };
  const clientOptions: LanguageClientOptions = {
    // The server indexes the whole workspace; open buffers are sent so unsaved edits count.
    documentSelector: [{ scheme: "file" }],
    initializationOptions: launch.initializationOptions,
    outputChannelName: "ctxzip",
  };
  client = new LanguageClient("ctxzip", "ctxzip", serverOptions, clientOptions);
  // vscode-languageclient shows the server's `$/progress` (indexing) as window progress in
  // the status bar itself; our item adds the file count and the model state.
  client.onDidChangeState((e) => {
    if (e.newState === State.Running) pollStatus();
    if (e.newState === State.Stopped) statusItem.text = "$(error) ctxzip stopped";
  });
  try {
    await client.start();
  } catch (err) {
    statusItem.text = "$(error) ctxzip";
    statusItem.tooltip = String(err);
    void vscode.window.showErrorMessage(
      `ctxzip: could not start \`${launch.command} ${launch.args.join(" ")}\`: ${err} (set "ctxzip.path" to the ctxzip binary)`,
    );
  }
}

async function restart(): Promise<void> {
  stopStatus();
  const old = client;
  client = undefined;
  await old?.stop();
  await start();
}

/** Asks the server for its status every second while it indexes, then every 30 s. */
function pollStatus(): void {
  stopStatus();
  const tick = async () => {
    if (!client || client.state !== State.Running) return;
    try {
      const status = await client.sendRequest<any>(core.STATUS_REQUEST);
      const { text, tooltip } = core.statusText(status);
      statusItem.text = text;
      statusItem.tooltip = tooltip;
      statusTimer = setTimeout(tick, status?.indexing?.state === "ready" ? 30_000 : 1_000);
    } catch {
      statusTimer = setTimeout(tick, 5_000);
    }
  };
  void tick();
}

function stopStatus(): void {
  if (statusTimer) clearTimeout(statusTimer);
  statusTimer = undefined;
}

/** The budget from the settings, or asked when the setting is 0; undefined when dismissed. */
async function budget(s: core.Settings): Promise<number | undefined> {
  if (s.budget && s.budget > 0) return s.budget;
  const text = await vscode.window.showInputBox({
    prompt: "ctxzip: token budget",
    value: "2000",
    validateInput: (t) => {
      const b = core.parseBudget(t);
      return typeof b === "string" ? b : undefined;
    },
  });
  if (text === undefined) return undefined;
  const b = core.parseBudget(text);
  return typeof b === "number" ? b : undefined;
}

async function compressQuery(): Promise<void> {
  const query = await vscode.window.showInputBox({
    prompt: "ctxzip: what should the context be about?",
    placeHolder: "where are retries handled?",
    validateInput: (t) => (t.trim() === "" ? "type a question or a few keywords" : undefined),
  });
  if (!query) return;
  const s = settings();
  const b = await budget(s);
  if (b === undefined) return;
  await run(query, core.queryParams(query, s, b));
}

async function compressFocus(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showWarningMessage("ctxzip: open a file and put the cursor in a function first");
    return;
  }
  const s = settings();
  const b = await budget(s);
  if (b === undefined || !client) return;
  const cursor = editor.selection.active;
  const params = core.focusParams(
    client.code2ProtocolConverter.asUri(editor.document.uri),
    client.code2ProtocolConverter.asPosition(cursor),
    editor.document.getText(editor.selection),
    editor.document.lineAt(cursor.line).text,
    s,
    b,
  );
  await run(params.query, params);
}

/** Compress requests sent so far: each gets its own progress token. */
let requests = 0;

async function run(query: string, params: core.CompressParams): Promise<void> {
  if (!client || client.state !== State.Running) {
    void vscode.window.showErrorMessage("ctxzip: the language server is not running (see the ctxzip output channel)");
    return;
  }
  const c = client;
  // The channel vscode-languageclient made for this server ("ctxzip"): one line per request
  // and its outcome, so a slow or failed request can be traced.
  const log = c.outputChannel;
  log.appendLine(core.requestLogLine(params));
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `ctxzip: ${query}`, cancellable: true },
    async (progress, token) => {
      // The server reports the request's stages on its own token: the notification shows
      // the stage and the percentage (rather than a second, window-level progress).
      const workDoneToken = `ctxzip/vscode/${++requests}`;
      let last = 0;
      const stages = c.onProgress(WorkDoneProgress.type, workDoneToken, (value) => {
        const step = core.compressProgressStep(value, last);
        last = step.percentage;
        progress.report({ message: step.message, increment: step.increment });
      });
      // Right after startup the server refuses requests until the first files are indexed.
      const deadline = Date.now() + 120_000;
      try {
        for (;;) {
          try {
            return await c.sendRequest<core.CompressResult>(
              core.COMPRESS_REQUEST,
              { ...params, workDoneToken },
              token,
            );
          } catch (err: any) {
            if (core.stillIndexing(err) && !token.isCancellationRequested && Date.now() < deadline) {
              await new Promise((resolve) => setTimeout(resolve, 500));
              continue;
            }
            log.appendLine(token.isCancellationRequested ? "ctxzip/compress cancelled" : core.errorLogLine(err));
            if (!token.isCancellationRequested) void vscode.window.showErrorMessage(`ctxzip: ${core.errorMessage(err)}`);
            return undefined;
          }
        }
      } finally {
        stages.dispose();
      }
    },
  );
  if (!result) return;
  log.appendLine(core.resultLogLine(result));
  await showResult(core.resultPath(params.format), core.renderResult(query, result));
  await vscode.env.clipboard.writeText(result.context);
  vscode.window.setStatusBarMessage(`ctxzip: ${core.summary(result)} (copied)`, 8_000);
}

/** Shows `text` in the result document of `path`: in its open tab when there is one. */
async function showResult(path: string, text: string): Promise<void> {
  const uri = vscode.Uri.from({ scheme: core.RESULT_SCHEME, path });
  results.set(path, text);
  resultChanged.fire(uri);
  const doc = await vscode.workspace.openTextDocument(uri);
  const open = vscode.window.tabGroups.all
    .flatMap((group) => group.tabs)
    .find((tab) => tab.input instanceof vscode.TabInputText && tab.input.uri.toString() === uri.toString());
  await vscode.window.showTextDocument(doc, {
    preview: false,
    viewColumn: open ? open.group.viewColumn : vscode.ViewColumn.Beside,
  });
}
