// Packaging: `vsce package` builds a .vsix that holds the bundled extension and the manifest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateRawSync } from "node:zlib";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Entry names and contents of a zip file, from its central directory. */
function unzip(buffer) {
  const eocd = buffer.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  assert.ok(eocd >= 0, "not a zip file");
  const count = buffer.readUInt16LE(eocd + 10);
  let at = buffer.readUInt32LE(eocd + 16);
  const entries = new Map();
  for (let i = 0; i < count; i++) {
    const method = buffer.readUInt16LE(at + 10);
    const size = buffer.readUInt32LE(at + 20);
    const nameLength = buffer.readUInt16LE(at + 28);
    const extra = buffer.readUInt16LE(at + 30) + buffer.readUInt16LE(at + 32);
    const local = buffer.readUInt32LE(at + 42);
    const name = buffer.toString("utf8", at + 46, at + 46 + nameLength);
    const dataAt = local + 30 + buffer.readUInt16LE(local + 26) + buffer.readUInt16LE(local + 28);
    const data = buffer.subarray(dataAt, dataAt + size);
    entries.set(name, () => (method === 8 ? inflateRawSync(data) : data));
    at += 46 + nameLength + extra;
  }
  return entries;
}

test("vsce package builds a .vsix with the compiled extension and package.json", () => {
  const vsix = join(dir, "out", "ctxzip.vsix");
  rmSync(vsix, { force: true });
  execFileSync("npm", ["run", "--silent", "package"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  assert.ok(existsSync(vsix));
  const entries = unzip(readFileSync(vsix));
  const names = [...entries.keys()].sort();
  assert.ok(names.includes("extension/out/extension.js"), names.join("\n"));
  assert.ok(names.includes("extension/package.json"), names.join("\n"));
  assert.ok(names.includes("extension.vsixmanifest"), names.join("\n"));
  assert.ok(!names.some((n) => n.includes("node_modules") || n.includes("/src/") || n.includes("/test/")), names.join("\n"));
  const manifest = JSON.parse(entries.get("extension/package.json")().toString("utf8"));
  assert.equal(manifest.main, "./out/extension.js");
  assert.deepEqual(
    manifest.contributes.commands.map((c) => c.command),
    ["ctxzip.compressQuery", "ctxzip.compressFocus", "ctxzip.restart"],
  );
  const bundled = entries.get("extension/out/extension.js")().toString("utf8");
  // The language client is bundled in, and only `vscode` is left to the editor.
  assert.ok(bundled.includes("ctxzip/compress"));
  assert.ok(!/require\("vscode-languageclient/.test(bundled));
});

test("every declared setting is read by name, and only those", async () => {
  const { createRequire } = await import("node:module");
  const core = createRequire(import.meta.url)(join(dir, "out", "lib", "core.js"));
  const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const names = core.settingNames(manifest);
  for (const name of ["path", "budget", "gpuLayers", "scorerUrl", "scorerTimeoutS", "deadlineMs", "extraArgs"]) {
    assert.ok(names.includes(name), `${name} not in ${names}`);
  }
  const read = core.readSettings(manifest, (name) => (name === "gpuLayers" ? 12 : undefined));
  assert.deepEqual(Object.keys(read).sort(), [...names].sort());
  assert.equal(read.gpuLayers, 12);
  assert.equal(core.serverLaunch(read).initializationOptions.gpuLayers, 12);
});

test("the bundle loads with only `vscode` missing and exports activate/deactivate", async () => {
  const { createRequire, default: Module } = await import("node:module");
  // Any property, call or `new` on this stub gives the stub: enough for module load time,
  // where vscode-languageclient only reads names off `vscode`.
  const stub = new Proxy(function () {}, {
    get: (_t, key) => (key === "then" ? undefined : key === Symbol.toPrimitive ? () => "" : stub),
    apply: () => stub,
    construct: () => stub,
  });
  const load = Module._load;
  Module._load = function (request, ...rest) {
    return request === "vscode" ? stub : load.call(this, request, ...rest);
  };
  try {
    const extension = createRequire(import.meta.url)(join(dir, "out", "extension.js"));
    assert.equal(typeof extension.activate, "function");
    assert.equal(typeof extension.deactivate, "function");
  } finally {
    Module._load = load;
  }
});
