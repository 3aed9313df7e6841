// The extension inside a real VS Code: installs the .vsix into code-server, opens a small
// workspace in headless Chromium through Playwright, runs "ctxzip: Compress context for a
// query…" from the command palette and checks the result editor, the tab it reuses and the
// output channel. Run with Node 24 (what code-server needs) by tests/client_vscode_e2e.rs,
// which installs everything first.
//
// Environment: CTXZIP_BIN (the binary under test), CTXZIP_VSIX (the packaged extension),
// CTXZIP_E2E_TOOLS (the folder whose node_modules holds code-server and playwright-core),
// CHROMIUM (default /usr/bin/chromium), CTXZIP_E2E_ARTIFACTS (where a failure's screenshot
// goes). Exits non-zero with the reason on stderr when a check fails.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeWorkspace } from "../test/workspace.mjs";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run this through \`cargo test --test client_vscode_e2e\`)`);
  return value;
}

const ctxzipBin = required("CTXZIP_BIN");
const vsix = required("CTXZIP_VSIX");
const tools = required("CTXZIP_E2E_TOOLS");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const artifacts = process.env.CTXZIP_E2E_ARTIFACTS ?? tmpdir();
// Run with this Node (24), not the `node` first on PATH that the bin script's shebang finds.
const codeServer = join(tools, "node_modules", "code-server", "out", "node", "entry.js");
for (const [what, path] of [
  ["the ctxzip binary", ctxzipBin],
  ["the .vsix", vsix],
  ["code-server", codeServer],
  ["Chromium (apt-get install chromium; scripts/setup does)", chromiumPath],
]) {
  if (!existsSync(path)) throw new Error(`${what} not found at ${path}`);
}
const { chromium } = createRequire(join(tools, "package.json"))("playwright-core");

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const log = (line) => console.log(`[${elapsed()}] ${line}`);

// A workspace of the client tests' two Python files plus a Rust one, and a throwaway
// profile: nothing of the user's VS Code or code-server setup is read or written.
const workspace = makeWorkspace();
writeFileSync(
  join(workspace, "src", "ring.rs"),
  `/// A fixed-size ring buffer that overwrites its oldest entry when full.
pub struct RingBuffer<T> {
    items: Vec<Option<T>>,
    head: usize,
}

impl<T> RingBuffer<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        RingBuffer { items: (0..capacity).map(|_| None).collect(), head: 0 }
    }

    /// Stores \`item\`, overwriting the oldest entry once the buffer is full.
    pub fn push_overwriting(&mut self, item: T) {
        let slot = self.head % self.items.len();
        self.items[slot] = Some(item);
        self.head += 1;
    }
}
`,
);
const profile = mkdtempSync(join(tmpdir(), "ctxzip-code-server-"));
const userData = join(profile, "user-data");
const extensionsDir = join(profile, "extensions");
mkdirSync(join(userData, "User"), { recursive: true });
// The small model the other client tests use, one thread, a small budget: the fast
// configuration. The rest keeps VS Code from showing anything that would cover the editor.
writeFileSync(
  join(userData, "User", "settings.json"),
  JSON.stringify(
    {
      "ctxzip.path": ctxzipBin,
      "ctxzip.model": "smollm2-135m",
      "ctxzip.threads": 1,
      "ctxzip.budget": 300,
      "workbench.startupEditor": "none",
      "workbench.tips.enabled": false,
      "workbench.enableExperiments": false,
      "security.workspace.trust.enabled": false,
      "telemetry.telemetryLevel": "off",
      "extensions.autoUpdate": false,
      "extensions.autoCheckUpdates": false,
      "update.mode": "none",
      "chat.disableAIFeatures": true,
      "chat.commandCenter.enabled": false,
      "workbench.secondarySideBar.defaultVisibility": "hidden",
      // One rendered line per document line, so the editor's text can be read back.
      "editor.wordWrap": "off",
      "[markdown]": { "editor.wordWrap": "off" },
    },
    null,
    2,
  ),
);
const configFile = join(profile, "config.yaml");
writeFileSync(configFile, "auth: none\ncert: false\n");
const commonArgs = ["--config", configFile, "--user-data-dir", userData, "--extensions-dir", extensionsDir];

let server;
let browser;
let page;
let serverLog = "";

async function main() {
  log(`installing ${vsix}`);
  const installed = execFileSync(process.execPath, [codeServer, ...commonArgs, "--install-extension", vsix], { encoding: "utf8" });
  if (!/ctxzip\.ctxzip/.test(execFileSync(process.execPath, [codeServer, ...commonArgs, "--list-extensions"], { encoding: "utf8" }))) {
    throw new Error(`the extension is not listed after --install-extension:\n${installed}`);
  }

  // Port 0: the system picks a free port, and code-server says which.
  server = spawn(
    process.execPath,
    [codeServer, ...commonArgs, "--bind-addr", "127.0.0.1:0", "--auth", "none", "--disable-telemetry", "--disable-update-check",
      "--disable-workspace-trust", "--disable-getting-started-override", workspace],
    // CTXZIP_CACHE reaches `ctxzip lsp` through the extension host: a score cache of the test's own.
    // Its own process group, so that the cleanup ends the extension host and `ctxzip lsp` too.
    { env: { ...process.env }, stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`code-server did not say where it listens within 60 s:\n${serverLog}`)), 60_000);
    const onData = (data) => {
      serverLog += data;
      const m = /HTTP server listening on (http:\/\/127\.0\.0\.1:\d+\/?)/.exec(serverLog);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    server.stdout.on("data", onData);
    server.stderr.on("data", onData);
    server.once("exit", (code) => reject(new Error(`code-server exited (${code}) before listening:\n${serverLog}`)));
  });
  log(`code-server listening on ${url}`);
  // If this script dies another way (a signal, a crash), its group goes with it.
  process.on("exit", () => {
    try {
      process.kill(-server.pid, "SIGKILL");
    } catch {}
  });
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(1));

  browser = await chromium.launch({ executablePath: chromiumPath, headless: true });
  const context = await browser.newContext({ viewport: { width: 1600, height: 1200 } });
  page = await context.newPage();
  await page.goto(`${url}?folder=${encodeURIComponent(workspace)}`);
  await page.locator(".monaco-workbench").waitFor({ timeout: 90_000 });
  // The extension's status bar item: once it names a file count, the server has indexed.
  await page.locator(".statusbar-item", { hasText: /ctxzip 3 files/ }).first().waitFor({ timeout: 120_000 });
  log("workbench loaded, extension active, workspace indexed (3 files)");

  const firstQuery = "how are failed connections retried with backoff?";
  await compress(firstQuery);
  const first = await resultText(firstQuery);
  for (const expected of [`<!-- ctxzip: ${firstQuery} |`, "src/net.py", "def retry_with_backoff("]) {
    if (!first.includes(expected)) throw new Error(`the result editor does not show ${JSON.stringify(expected)}:\n${first}`);
  }
  // The extension copies the context and says so in the status bar.
  await page.locator(".statusbar-item", { hasText: /ctxzip: [\d,]+ of [\d,]+ tokens, \d+ chunks? from \d files?, .*\(copied\)/ }).first().waitFor({ timeout: 5_000 });
  log("first result shows src/net.py and retry_with_backoff; the status bar says it was copied");

  // A second query replaces the result in the same tab (issue 13: a second tab was opened).
  const secondQuery = "which buffer overwrites its oldest entry when full?";
  await compress(secondQuery);
  const tabs = await page.locator(".tabs-container .tab").allTextContents();
  if (tabs.length !== 1 || !tabs[0].includes("ctxzip-result.md")) {
    throw new Error(`tabs after two queries: ${JSON.stringify(tabs)} (expected the one result tab, ctxzip-result.md)`);
  }
  const second = await resultText(secondQuery);
  for (const expected of ["src/ring.rs", "push_overwriting"]) {
    if (!second.includes(expected)) throw new Error(`the second result does not show ${JSON.stringify(expected)}:\n${second}`);
  }
  log("second result replaced the first in the same tab");

  // The output channel the extension logs each request and its outcome to (issue 13: it
  // stayed empty), opened as a user would: "Output: Show Output Channels...", then ctxzip.
  await palette("Output: Show Output Channels", "Show Output Channels");
  const input = page.locator(".quick-input-widget input");
  await input.fill("ctxzip");
  await page.locator(".quick-input-list .monaco-list-row", { hasText: /^ctxzip/ }).first().waitFor({ timeout: 10_000 });
  await input.press("Enter");
  const output = page.locator(".part.panel .view-lines", { hasText: "ctxzip/compress done:" }).first();
  await output.waitFor({ timeout: 10_000 }).catch(async () => {
    const shown = await page.locator(".part.panel").first().textContent().catch(() => "(no panel)");
    throw new Error(`the ctxzip output channel does not show a finished request; the panel shows:\n${shown}`);
  });
  const logged = await linesOf(output);
  for (const query of [firstQuery, secondQuery]) {
    if (!logged.includes(`ctxzip/compress: query "${query}"`)) throw new Error(`the output channel does not log ${JSON.stringify(query)}:\n${logged}`);
  }
  log("the ctxzip output channel logs both requests and their results");
}

/** Opens the command palette and runs the command whose title starts with `title`. */
async function palette(title, rowText) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout: 10_000 });
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: rowText }).first().waitFor({ timeout: 10_000 });
  await input.press("Enter");
}

/** Runs the command from the palette (as a user would: F1, its title, Enter), then the query. */
async function compress(query) {
  await palette("ctxzip: Compress context for a query", "Compress context for a query");
  const input = page.locator(".quick-input-widget input");
  // The extension's own input box: its prompt is shown under the input.
  await page.locator(".quick-input-widget", { hasText: "what should the context be about?" }).waitFor({ timeout: 30_000 });
  await input.fill(query);
  await input.press("Enter");
  log(`asked: ${query}`);
  // The result editor's first line is the header with the query; the first request may
  // wait for the model to load (or download on a fresh machine).
  await page
    .locator(".editor-instance .view-lines", { hasText: `ctxzip: ${query}` })
    .first()
    .waitFor({ timeout: 180_000 });
  log("result editor shows the answer");
}

/** The text of the result editor whose header names `query`. */
async function resultText(query) {
  return linesOf(page.locator(".editor-instance .view-lines", { hasText: `ctxzip: ${query}` }).first());
}

/**
 * An editor's rendered lines (`.view-lines`), in order, one per line. Monaco renders only
 * what is in view (hence the tall viewport) and spaces as U+00A0.
 */
async function linesOf(viewLines) {
  const text = await viewLines.evaluate((e) =>
    [...e.querySelectorAll(".view-line")]
      .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
      .map((line) => line.textContent)
      .join("\n"),
  );
  return text.replace(/\u00a0/g, " ");
}

/** Ends the process group `pid` leads: SIGTERM, then SIGKILL to what is left after 10 s. */
async function endGroup(pid) {
  const alive = () => {
    try {
      process.kill(-pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  process.kill(-pid, "SIGTERM");
  for (let i = 0; i < 100 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive()) process.kill(-pid, "SIGKILL");
}

let failed = false;
try {
  await main();
  log("passed");
} catch (err) {
  failed = true;
  console.error(`FAILED after ${elapsed()}: ${err?.stack ?? err}`);
  if (page) {
    const shot = join(artifacts, "vscode-e2e-failure.png");
    await page.screenshot({ path: shot }).then(() => console.error(`screenshot: ${shot}`), () => {});
  }
  // The end of the log: code-server prints whole minified source lines with some errors.
  console.error(`--- code-server log (last 8000 characters)\n${serverLog.slice(-8000)}`);
} finally {
  await browser?.close().catch(() => {});
  if (server?.pid) await endGroup(server.pid);
  rmSync(workspace, { recursive: true, force: true });
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
