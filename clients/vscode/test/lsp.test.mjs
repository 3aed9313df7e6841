// The extension's request code (out/lib/core.js) against the real `ctxzip lsp`, through
// vscode-jsonrpc: the transport vscode-languageclient itself uses.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from "vscode-jsonrpc/node";
import { ctxzipBin, makeWorkspace } from "./workspace.mjs";

const require = createRequire(import.meta.url);
const core = require("../out/lib/core.js");

const root = makeWorkspace();
const rootUri = pathToFileURL(root).href;
// The settings a user of the small model would have.
const settings = { path: ctxzipBin, model: "smollm2-135m", budget: 300, threads: 1, format: "markdown", extraArgs: [] };
const launch = core.serverLaunch(settings);
const child = spawn(launch.command, launch.args, { stdio: ["pipe", "pipe", "pipe"] });
let stderr = "";
child.stderr.on("data", (d) => (stderr += d));
const connection = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));

const progress = [];
let indexed;
const indexedPromise = new Promise((r) => (indexed = r));
connection.onRequest("window/workDoneProgress/create", () => null);
connection.onRequest("client/registerCapability", () => null);
// Every `$/progress` with its token.
const progressMessages = [];
connection.onNotification("$/progress", (p) => {
  progressMessages.push(p);
  progress.push(p.value);
  if (p.value.kind === "end") indexed(p.value);
});
connection.onNotification("window/logMessage", () => {});
connection.listen();

// The server exits on `exit`: writes after that must not surface as unhandled errors.
child.stdin.on("error", () => {});
connection.onError(() => {});
connection.onClose(() => {});

after(async () => {
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    await connection.sendRequest("shutdown");
    await connection.sendNotification("exit");
  } catch {}
  await withTimeout(exited, 10_000, "server exit").catch(() => child.kill());
  connection.dispose();
  rmSync(root, { recursive: true, force: true });
});

function withTimeout(promise, ms, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} took over ${ms} ms; server stderr:\n${stderr}`)), ms).unref()),
  ]);
}

test("launch: settings become the command line and initializationOptions", () => {
  assert.deepEqual(launch.args, ["lsp"]);
  assert.deepEqual(launch.initializationOptions, { model: "smollm2-135m", budget: 300, threads: 1 });
  assert.deepEqual(core.serverLaunch({}).command, "ctxzip");
  assert.deepEqual(core.serverLaunch({ deadlineMs: 2000, candidates: 0 }).initializationOptions, { deadlineMs: 2000 });
  assert.deepEqual(core.serverLaunch({ maxModelTokens: 6000 }).initializationOptions, { maxModelTokens: 6000 });
  assert.deepEqual(core.serverLaunch({ tokenizer: " o200k ", format: "" }).initializationOptions, { tokenizer: "o200k" });
  assert.deepEqual(core.serverLaunch({ tokenizer: "" }).initializationOptions, {});
  assert.deepEqual(core.serverLaunch({ budget: 0, ignore: ["*.min.js"], extraArgs: ["--offline"] }), {
    command: "ctxzip",
    args: ["lsp", "--offline"],
    initializationOptions: { ignore: ["*.min.js"] },
  });
  assert.equal(core.parseBudget("1_500"), 1500);
  assert.match(String(core.parseBudget("-3")), /positive whole number/);
});

test("initialize, index with $/progress, compress a query, render it", async () => {
  const init = await withTimeout(
    connection.sendRequest("initialize", {
      processId: process.pid,
      rootUri,
      workspaceFolders: [{ uri: rootUri, name: "ws" }],
      capabilities: { window: { workDoneProgress: true } },
      initializationOptions: launch.initializationOptions,
    }),
    30_000,
    "initialize",
  );
  assert.ok(init.capabilities.executeCommandProvider.commands.includes("ctxzip.compress"));
  connection.sendNotification("initialized", {});
  const end = await withTimeout(indexedPromise, 60_000, "indexing");
  assert.match(end.message, /indexed 2 files/);
  assert.equal(progress[0].kind, "begin");
  assert.match(core.progressText(progress[0]), /indexing/);
  assert.equal(core.progressText(end), "$(check) ctxzip");

  const status = await connection.sendRequest(core.STATUS_REQUEST);
  assert.match(core.statusText(status).text, /ctxzip 2 files/);

  const query = "how are failed connections retried?";
  const params = core.queryParams(query, settings);
  assert.deepEqual(params, { query, budget: 300, format: "markdown" });
  // The first request may wait for the model to load (or download on a fresh machine).
  const result = await withTimeout(connection.sendRequest(core.COMPRESS_REQUEST, params), 120_000, "ctxzip/compress");
  assert.equal(result.partial, false);
  const names = result.chunks.map((c) => c.name);
  assert.ok(names.includes("retry_with_backoff"), `chunks: ${names}`);
  assert.ok(result.chunks.every((c) => c.uri.startsWith(rootUri)));

  const doc = core.renderResult(query, result);
  assert.ok(doc.startsWith(`<!-- ctxzip: ${query} | `), doc);
  assert.match(doc, /[\d,]+ of [\d,]+ tokens, \d+ chunks? from \d files?, [\d,]+ ms -->/);
  assert.ok(doc.includes("def retry_with_backoff("), doc);
  assert.ok(doc.includes("src/net.py"), doc);
  assert.ok(doc.includes(result.context.trimEnd()));

  // The output channel's lines for the request and its result.
  assert.match(core.requestLogLine(params), /^\[\S+\] ctxzip\/compress: query "how are failed connections retried\?", budget 300, format markdown$/);
  const logged = core.resultLogLine(result);
  assert.ok(logged.includes(core.summary(result)), logged);
  assert.ok(logged.includes(`compressed_tokens=${result.stats.compressed_tokens}`), logged);
  assert.ok(logged.includes(`model_tokens=${result.stats.model_tokens}`), logged);
  // Each new result goes to the one result document of its format.
  assert.equal(core.resultPath("markdown"), core.resultPath(undefined));
  assert.notEqual(core.resultPath("text"), core.resultPath("markdown"));
});

test("a compress request's $/progress on its workDoneToken becomes the notification's stage and percentage", async () => {
  await withTimeout(indexedPromise, 60_000, "indexing");
  const workDoneToken = "ctxzip/vscode/test-1";
  // A query of its own and a small budget: the model scores candidates (no cached answer).
  const params = { ...core.queryParams("which socket options are set when opening?", settings), budget: 60, workDoneToken };
  const result = await withTimeout(connection.sendRequest(core.COMPRESS_REQUEST, params), 120_000, "ctxzip/compress");
  assert.ok(result.context.length > 0);
  // The end may arrive just after the response.
  const ended = () => progressMessages.some((p) => p.token === workDoneToken && p.value.kind === "end");
  for (let i = 0; i < 100 && !ended(); i++) await new Promise((r) => setTimeout(r, 50));
  const values = progressMessages.filter((p) => p.token === workDoneToken).map((p) => p.value);
  assert.equal(values[0].kind, "begin");
  assert.equal(values.at(-1).kind, "end");

  // What the notification would show, step by step, as extension.ts reports it.
  let last = 0;
  let filled = 0;
  const shown = [];
  for (const value of values) {
    const step = core.compressProgressStep(value, last);
    assert.ok(step.increment >= 0, JSON.stringify(values));
    last = step.percentage;
    filled += step.increment;
    if (step.message) shown.push(step.message);
  }
  assert.equal(filled, 100, JSON.stringify(values));
  const stages = ["loading the model", "ranking chunks by keywords", "scoring candidates with the model: 0/", "candidates, ", "assembling the context"];
  let from = 0;
  for (const stage of stages) {
    const at = shown.slice(from).findIndex((m) => m.includes(stage));
    assert.ok(at >= 0, `${stage} after ${from} of ${JSON.stringify(shown)}`);
    from += at;
  }
  assert.equal(shown.at(-1), `${result.stats.compressed_tokens} tokens from ${result.chunks.length} chunks`);
});

test("focus: the function at the cursor, with the selection as the query", async () => {
  const uri = pathToFileURL(join(root, "src", "shapes.py")).href;
  const params = core.focusParams(uri, { line: 5, character: 8 }, "", "        return 3.14159 * self.radius * self.radius", settings);
  assert.deepEqual(params.focus, { uri, position: { line: 5, character: 8 } });
  assert.equal(params.query, "return 3.14159 * self.radius * self.radius");
  // The same request through workspace/executeCommand, as a command palette entry could send it.
  const result = await withTimeout(
    connection.sendRequest("workspace/executeCommand", { command: "ctxzip.compress", arguments: [params] }),
    60_000,
    "ctxzip.compress",
  );
  assert.ok(result.chunks.some((c) => c.name === "area" || c.name === "Circle"), JSON.stringify(result.chunks));
  assert.ok(core.renderResult(params.query, result).includes("self.radius"));
});

test("a refused request is logged with its code and message, and worded from its code and data", async () => {
  const refused = await connection.sendRequest(core.COMPRESS_REQUEST, { query: "anything", budget: -1 }).then(
    () => assert.fail("a budget of -1 was accepted"),
    (err) => err,
  );
  assert.equal(refused.code, core.ERROR_CODES.badBudget);
  assert.deepEqual(refused.data, { kind: "bad_budget", budget: -1 });
  assert.match(core.errorLogLine(refused), /ctxzip\/compress failed \(code -32052\): `budget` must be a positive number/);
  assert.match(core.errorMessage(refused), /got -1\): set ctxzip\.budget to e\.g\. 2000/);

  // A budget below the smallest chunk: the fix names the setting and the smallest budget.
  const small = await withTimeout(
    connection.sendRequest(core.COMPRESS_REQUEST, core.queryParams("how are failed connections retried?", settings, 1)).then(
      () => assert.fail("a budget of 1 was accepted"),
      (err) => err,
    ),
    60_000,
    "the refused request",
  );
  assert.equal(small.code, core.ERROR_CODES.budgetTooSmall);
  assert.equal(small.data.kind, "budget_too_small");
  assert.equal(small.data.budget, 1);
  assert.ok(small.data.smallest > 1, JSON.stringify(small));
  assert.ok(core.errorMessage(small).includes(`set ctxzip.budget to at least ${small.data.smallest}`), core.errorMessage(small));
  assert.ok(!core.errorMessage(small).includes('"budget"'), core.errorMessage(small));

  // A tokenizer file that does not exist: its code, the file as data, the fix as the setting.
  const missing = join(root, "no-such-tokenizer.json");
  const noTokenizer = await connection.sendRequest(core.COMPRESS_REQUEST, { query: "retries", tokenizer: missing }).then(
    () => assert.fail("a missing tokenizer file was accepted"),
    (err) => err,
  );
  assert.equal(noTokenizer.code, core.ERROR_CODES.tokenizerFile);
  assert.deepEqual(noTokenizer.data, { kind: "tokenizer_file", path: missing, problem: "not_found" });
  assert.equal(
    core.errorMessage(noTokenizer),
    `the tokenizer file ${missing} does not exist: set ctxzip.tokenizer to model, o200k, cl100k or the absolute path of a tokenizer.json`,
  );
});

test("the server's 'nothing indexed yet' refusal is recognised for a retry by its code", () => {
  assert.ok(core.stillIndexing({ code: core.ERROR_CODES.indexNotReady, message: "anything", data: { kind: "index_not_ready" } }));
  assert.ok(!core.stillIndexing({ code: -32602, message: "the workspace is still being indexed" }));
  assert.ok(!core.stillIndexing(undefined));
});
