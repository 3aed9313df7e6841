// A small workspace for the tests, and the path of the ctxzip binary under test.
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** CTXZIP_BIN (set by tests/client_vscode.rs), else the workspace's debug build. */
export const ctxzipBin = process.env.CTXZIP_BIN ?? resolve(here, "../../../target/debug/ctxzip");

export function makeWorkspace() {
  const root = mkdtempSync(join(tmpdir(), "ctxzip-vscode-"));
  mkdirSync(join(root, "src"));
  writeFileSync(
    join(root, "src", "net.py"),
    `import time


def retry_with_backoff(call, attempts=5, base_delay=0.1):
    """Call \`call\` until it succeeds, sleeping twice as long after each failure."""
    for attempt in range(attempts):
        try:
            return call()
        except ConnectionError:
            time.sleep(base_delay * 2 ** attempt)
    raise ConnectionError("gave up after %d attempts" % attempts)


def open_socket(host, port):
    return retry_with_backoff(lambda: connect(host, port))
`,
  );
  writeFileSync(
    join(root, "src", "shapes.py"),
    `class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return 3.14159 * self.radius * self.radius


def parse_color(text):
    """Parse '#rrggbb' into an (r, g, b) tuple."""
    return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
`,
  );
  return root;
}
