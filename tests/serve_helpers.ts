/**
 * Serving the browser trainer for tests: `deno task serve` started with its own
 * permission set on a free port (tests/serve_test.ts, and the browser tests in
 * tests/browser/, which drive the page).
 * @module
 */

/** The repository root. */
export const root: URL = new URL("../", import.meta.url);
/** The repository root as a path. */
export const rootPath: string = decodeURIComponent(root.pathname);

/** A running `deno task serve`. */
export interface Served {
  /** The page's URL. */
  url: string;
  /** Stops the server. */
  close(): Promise<void>;
}

/** Starts `deno task serve --port 0` (its permission set) and waits for its URL. */
export async function serve(): Promise<Served> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-P=serve", "cli/serve.ts", "--port", "0"],
    cwd: rootPath,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const m = /serving the browser trainer at (http:\/\/\S+\/)/.exec(text);
      if (!m) continue;
      // Keep draining stdout so the server never blocks on a full pipe.
      (async () => {
        try {
          while (!(await reader.read()).done) { /* drain */ }
        } catch { /* closed */ }
      })();
      return {
        url: m[1],
        close: async () => {
          child.kill("SIGTERM");
          await child.status;
        },
      };
    }
  } finally {
    clearTimeout(timer);
  }
  await child.status;
  throw new Error(`deno task serve did not print its URL; it printed:\n${text}`);
}
