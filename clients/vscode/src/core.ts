// The extension's plain logic: settings → server launch, command input → `ctxzip/compress`
// params, result → document text, progress/status → status bar text. No `vscode` import,
// so `node --test` exercises it against the real server without VS Code.

/** The `ctxzip.*` settings, as VS Code's configuration returns them. */
export interface Settings {
  path?: string;
  model?: string;
  budget?: number;
  threads?: number;
  gpuLayers?: number;
  scorerUrl?: string;
  scorerModel?: string;
  scorerMaxInFlight?: number;
  scorerTimeoutS?: number;
  candidates?: number;
  deadlineMs?: number;
  maxModelTokens?: number;
  tokenizer?: string;
  ignore?: string[];
  format?: string;
  extraArgs?: string[];
}

/** The names of the `ctxzip.*` settings a package.json declares, without the prefix. */
export function settingNames(manifest: unknown): string[] {
  const properties = (manifest as any)?.contributes?.configuration?.properties ?? {};
  return Object.keys(properties)
    .filter((key) => key.startsWith("ctxzip."))
    .map((key) => key.slice("ctxzip.".length));
}

/** Every declared setting's value, as `get` (VS Code's configuration) returns it. */
export function readSettings(manifest: unknown, get: (name: string) => unknown): Settings {
  return Object.fromEntries(settingNames(manifest).map((name) => [name, get(name)])) as Settings;
}

/** How to start the server: `command args...` with these initializationOptions. */
export interface ServerLaunch {
  command: string;
  args: string[];
  initializationOptions: Record<string, unknown>;
}

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

/** `ctxzip/compress` params (lsp/README.md). */
export interface CompressParams {
  query: string;
  budget?: number;
  format?: string;
  focus?: { uri: string; position: Position };
  paths?: string[];
  /** The token the server reports this request's stages on (`$/progress`). */
  workDoneToken?: string;
}

export interface ChunkResult {
  uri: string;
  range: Range;
  path: string;
  name: string | null;
  kind: string;
  score: number;
  tokens: number;
}

export interface CompressResult {
  context: string;
  chunks: ChunkResult[];
  stats: Record<string, unknown>;
  partial: boolean;
}

export const COMPRESS_REQUEST = "ctxzip/compress";
export const STATUS_REQUEST = "ctxzip/status";

/** Settings left at 0 or empty mean "the server's default", so they are not sent. */
export function serverLaunch(settings: Settings): ServerLaunch {
  const options: Record<string, unknown> = {};
  if (settings.model) options.model = settings.model;
  if (positive(settings.budget)) options.budget = settings.budget;
  if (positive(settings.threads)) options.threads = settings.threads;
  if (positive(settings.gpuLayers)) options.gpuLayers = settings.gpuLayers;
  if (settings.scorerUrl && settings.scorerUrl.trim() !== "") options.scorerUrl = settings.scorerUrl.trim();
  if (settings.scorerModel && settings.scorerModel.trim() !== "") {
    options.scorerModel = settings.scorerModel.trim();
  }
  if (positive(settings.scorerMaxInFlight)) options.scorerMaxInFlight = settings.scorerMaxInFlight;
  if (positive(settings.scorerTimeoutS)) options.scorerTimeoutS = settings.scorerTimeoutS;
  if (positive(settings.candidates)) options.candidates = settings.candidates;
  if (positive(settings.deadlineMs)) options.deadlineMs = settings.deadlineMs;
  if (positive(settings.maxModelTokens)) options.maxModelTokens = settings.maxModelTokens;
  if (settings.tokenizer && settings.tokenizer.trim() !== "") options.tokenizer = settings.tokenizer.trim();
  if (settings.ignore && settings.ignore.length > 0) options.ignore = [...settings.ignore];
  return {
    command: settings.path && settings.path.trim() !== "" ? settings.path : "ctxzip",
    args: ["lsp", ...(settings.extraArgs ?? [])],
    initializationOptions: options,
  };
}

/** A budget typed into the input box: a positive whole number of tokens, else an error. */
export function parseBudget(text: string): number | string {
  const value = Number(text.trim().replace(/_/g, ""));
  if (!Number.isInteger(value) || value <= 0) {
    return `a budget is a positive whole number of tokens, not "${text}"`;
  }
  return value;
}

/** Params for a query typed by the user. */
export function queryParams(query: string, settings: Settings, budget?: number): CompressParams {
  const params: CompressParams = { query: query.trim() };
  const tokens = budget ?? settings.budget;
  if (positive(tokens)) params.budget = tokens;
  params.format = settings.format || "markdown";
  return params;
}

/**
 * Params for "context for the current function/selection": the cursor is the focus (its
 * chunk is always kept, its file favoured) and the query is the selected text, or the
 * cursor's line when nothing is selected, so the model ranks code related to it.
 */
export function focusParams(
  uri: string,
  position: Position,
  selectionText: string,
  lineText: string,
  settings: Settings,
  budget?: number,
): CompressParams {
  const snippet = (selectionText.trim() !== "" ? selectionText : lineText).trim();
  const query = snippet === "" ? "the code at the cursor and what it depends on" : clip(snippet, 2000);
  const params = queryParams(query, settings, budget);
  params.focus = { uri, position };
  return params;
}

/**
 * The server's codes for a refused `ctxzip/compress` (lsp/README.md); the error's `data`
 * holds the kind and its fields. The extension switches on these, never on the words.
 */
export const ERROR_CODES = {
  indexNotReady: -32050,
  emptyQuery: -32051,
  badBudget: -32052,
  badRate: -32053,
  budgetAndRate: -32054,
  budgetTooSmall: -32055,
  emptyWorkspace: -32056,
  pathOutsideRoot: -32057,
  tokenizerFile: -32058,
} as const;

interface RpcError {
  code?: unknown;
  message?: unknown;
  data?: Record<string, unknown> | null;
}

/** Whether `err` is the server's "nothing indexed yet" refusal: worth retrying shortly. */
export function stillIndexing(err: unknown): boolean {
  return (err as RpcError | null)?.code === ERROR_CODES.indexNotReady;
}

/**
 * A refused request in the extension's terms: the budget is the `ctxzip.budget` setting (0
 * asks for one each time), not the server's request key.
 */
export function errorMessage(err: unknown): string {
  const e = err as RpcError | null;
  const data = e?.data ?? {};
  switch (e?.code) {
    case ERROR_CODES.budgetTooSmall:
      return (
        `a budget of ${data.budget} tokens is smaller than any chunk (the smallest needs ${data.smallest} with its file header): ` +
        `set ctxzip.budget to at least ${data.smallest}, or to 0 to type a budget for each request`
      );
    case ERROR_CODES.badBudget:
      return `a budget is a positive number of tokens (got ${data.budget}): set ctxzip.budget to e.g. 2000, or to 0 to type one for each request`;
    case ERROR_CODES.emptyQuery:
      return "the query is empty: type what the context is for, e.g. where are retries handled?";
    case ERROR_CODES.tokenizerFile: {
      const problem = data.problem === "invalid" ? "is not a Hugging Face tokenizer.json" : data.problem === "unreadable" ? "cannot be read" : "does not exist";
      return `the tokenizer file ${data.path} ${problem}: set ctxzip.tokenizer to model, o200k, cl100k or the absolute path of a tokenizer.json`;
    }
    default:
      return String(e?.message ?? err);
  }
}

/** The document shown to the user: a header with the numbers, then the context itself. */
export function renderResult(query: string, result: CompressResult): string {
  const header = `<!-- ctxzip: ${oneLine(query)} | ${summary(result)} -->`;
  return `${header}\n\n${result.context.replace(/\s+$/, "")}\n`;
}

/** The URI scheme of the one result document (a read-only virtual document). */
export const RESULT_SCHEME = "ctxzip";

/**
 * The path of the result document for a format: one document per kind of highlighting, so
 * each new result replaces the last in the same tab (the extension picks the language).
 */
export function resultPath(format: string | undefined): string {
  return format === "markdown" || !format ? "/ctxzip-result.md" : "/ctxzip-result.txt";
}

/** The output channel's line for a request being sent. */
export function requestLogLine(params: CompressParams): string {
  const parts = [`query ${JSON.stringify(oneLine(params.query))}`];
  if (params.budget !== undefined) parts.push(`budget ${params.budget}`);
  if (params.format) parts.push(`format ${params.format}`);
  if (params.focus) parts.push(`focus ${params.focus.uri}:${params.focus.position.line + 1}`);
  if (params.paths && params.paths.length > 0) parts.push(`paths ${params.paths.join(", ")}`);
  return `${stamp()} ctxzip/compress: ${parts.join(", ")}`;
}

/** The output channel's line for a result: the summary, then the stats the server sent. */
export function resultLogLine(result: CompressResult): string {
  const stats = Object.entries(result.stats ?? {})
    .map(([key, value]) => `${key}=${typeof value === "number" && !Number.isInteger(value) ? value.toFixed(1) : value}`)
    .join(" ");
  return `${stamp()} ctxzip/compress done: ${summary(result)}; ${stats}`;
}

/** The output channel's line for a failed request. */
export function errorLogLine(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "number" ? ` (code ${e.code})` : "";
  return `${stamp()} ctxzip/compress failed${code}: ${e?.message ?? String(err)}`;
}

function stamp(): string {
  return `[${new Date().toISOString()}]`;
}

/** "412 of 9,876 tokens, 7 chunks from 3 files, 120 ms" (+ "partial index" while indexing). */
export function summary(result: CompressResult): string {
  const stats = result.stats ?? {};
  const parts: string[] = [];
  const kept = num(stats.compressed_tokens);
  const total = num(stats.original_tokens);
  if (kept !== undefined) {
    parts.push(total !== undefined ? `${fmt(kept)} of ${fmt(total)} tokens` : `${fmt(kept)} tokens`);
  }
  const files = new Set(result.chunks.map((c) => c.path)).size;
  parts.push(`${result.chunks.length} chunk${result.chunks.length === 1 ? "" : "s"} from ${files} file${files === 1 ? "" : "s"}`);
  const ms = num(stats.elapsed_ms);
  if (ms !== undefined) parts.push(`${fmt(Math.round(ms))} ms`);
  if (result.partial) parts.push("partial index (still indexing)");
  return parts.join(", ");
}

/** `$/progress` values of the index token → status bar text. */
export function progressText(value: { kind: string; message?: string; percentage?: number }): string {
  if (value.kind === "end") return `$(check) ctxzip`;
  const pct = value.percentage !== undefined ? ` ${value.percentage}%` : "";
  return `$(sync~spin) ctxzip indexing${pct}`;
}

/** One `$/progress` value of a compress request's own token. */
export interface ProgressValue {
  kind: string;
  message?: string;
  percentage?: number;
}

/**
 * A compress request's `$/progress` value → what its notification reports: the stage in words
 * (e.g. "scoring candidates with the model: 8/24 candidates, 2048 model tokens, about 40 s
 * left") and the increment since `lastPercentage`, since VS Code's progress adds increments.
 * The end fills the bar. A value with no percentage changes only the message.
 */
export function compressProgressStep(
  value: ProgressValue,
  lastPercentage: number,
): { message?: string; increment: number; percentage: number } {
  const percentage = value.kind === "end" ? 100 : Math.min(100, value.percentage ?? lastPercentage);
  return {
    message: value.message,
    increment: Math.max(0, percentage - lastPercentage),
    percentage: Math.max(percentage, lastPercentage),
  };
}

/** `ctxzip/status` → status bar text and tooltip. */
export function statusText(status: any): { text: string; tooltip: string } {
  const indexing = status?.indexing ?? {};
  const model = status?.model ?? {};
  const files = num(status?.files) ?? 0;
  const chunks = num(status?.chunks) ?? 0;
  const state = String(indexing.state ?? "ready");
  const text =
    state === "indexing"
      ? `$(sync~spin) ctxzip ${fmt(num(indexing.doneFiles) ?? 0)}/${fmt(num(indexing.totalFiles) ?? 0)} files`
      : `$(check) ctxzip ${fmt(files)} files`;
  const tooltip = [
    `ctxzip: ${state}`,
    `${fmt(files)} files, ${fmt(chunks)} chunks`,
    `model ${model.name ?? "?"} (${model.loaded ? "loaded" : "not loaded yet"})`,
    ...(Array.isArray(status?.roots) ? status.roots.map((r: string) => `root ${r}`) : []),
  ].join("\n");
  return { text, tooltip };
}

function positive(n: number | undefined): n is number {
  return typeof n === "number" && Number.isFinite(n) && n > 0;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function fmt(n: number): string {
  return n.toLocaleString("en-US");
}

function oneLine(text: string): string {
  return clip(text.replace(/\s+/g, " ").replace(/--/g, "- -").trim(), 120);
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
