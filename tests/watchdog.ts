/**
 * Time limits for tests. Preloaded by the test task (`--preload
 * tests/watchdog.ts`) and imported by `helpers.ts`, it gives every `Deno.test`
 * a limit, in two layers:
 *
 * 1. Deno's own `timeout` option (set to the limit unless the test sets one):
 *    a test that hangs in JavaScript or awaits forever fails with its name and
 *    the run goes on.
 * 2. A watchdog thread, for what (1) cannot stop: a thread blocked inside a
 *    native call, as a stuck GPU wait is (Deno's WebGPU polls inside Rust; Dawn
 *    waits inside its addon). When a test is still running 30 s after its
 *    limit (env `TEST_KILL_GRACE_S`), it prints
 *
 *        test "NAME" exceeded its time limit of N s …
 *
 *    and kills the test process and the processes it started. It also bounds
 *    each test file as a whole.
 *
 * Limits: env `TEST_TIME_LIMIT_S` (default 300) per test, including its steps;
 * a test's own `timeout` option (milliseconds; `withTimeLimit(seconds)` in
 * helpers.ts); env `TEST_FILE_TIME_LIMIT_S` (default 900) per test file.
 * @module
 */

import { Worker } from "node:worker_threads";

/** Default limit per test (steps included), in seconds. */
export const DEFAULT_TEST_TIME_LIMIT_S = 300;

/** Default limit per test file, in seconds. */
export const DEFAULT_FILE_TIME_LIMIT_S = 900;

/** How long after a test's limit the watchdog kills the process (env `TEST_KILL_GRACE_S`). */
export const DEFAULT_KILL_GRACE_S = 30;

function envSeconds(name: string, fallback: number): number {
  let raw: string | undefined;
  try {
    raw = Deno.env.get(name);
  } catch {
    return fallback; // no --allow-env
  }
  if (raw === undefined || raw === "") return fallback;
  const v = Number(raw);
  if (!(v > 0)) throw new Error(`${name}=${raw}: expected a positive number of seconds`);
  return v;
}

// The watchdog runs in its own thread (unref'd: it never keeps a test file
// alive). It holds a deadline for the running test and one for the file; when
// one passes it names it, kills the processes this one started (Linux: found
// through /proc), then this process.
const WATCHDOG_SOURCE = `
const { parentPort } = require("node:worker_threads");
let test = null; // { name, limit, deadline }
let file = null; // { name, limit, deadline }
function descendants(root) {
  const children = new Map();
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^[0-9]+$/.test(e.name)) continue;
      try {
        const stat = Deno.readTextFileSync("/proc/" + e.name + "/stat");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        if (!children.has(ppid)) children.set(ppid, []);
        children.get(ppid).push(Number(e.name));
      } catch {}
    }
  } catch {}
  const out = [];
  const todo = [root];
  while (todo.length) for (const c of children.get(todo.pop()) ?? []) { out.push(c); todo.push(c); }
  return out;
}
// Deno's test runner passes console output through a pipe that another thread
// reads, so a line logged just before SIGKILL can be lost. The line goes
// straight to the process's own stderr instead; where that cannot be opened,
// to the console, with a pause for the runner to pass it on.
function say(line) {
  try {
    const bytes = new TextEncoder().encode("\\n" + line + "\\n");
    const f = Deno.openSync("/dev/stderr", { write: true });
    try {
      for (let at = 0; at < bytes.length;) at += f.writeSync(bytes.subarray(at));
    } finally {
      f.close();
    }
  } catch {
    console.error("\\n" + line);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
  }
}
function fail(line) {
  say(line);
  for (const pid of descendants(Deno.pid).reverse()) {
    try { Deno.kill(pid, "SIGKILL"); } catch {}
  }
  Deno.kill(Deno.pid, "SIGKILL");
}
setInterval(() => {
  const now = Date.now();
  if (test && now > test.deadline) {
    fail('test "' + test.name + '" exceeded its time limit of ' + test.limit + " s; its thread " +
      "is blocked (a stuck GPU wait?), so the test process is killed");
  } else if (file && now > file.deadline) {
    fail('test file "' + file.name + '" exceeded its time limit of ' + file.limit + " s" +
      (test ? ' (running: "' + test.name + '")' : "") + "; the test process is killed");
  }
}, 250);
parentPort.on("message", (m) => {
  const entry = m.name === null ? null
    : { name: m.name, limit: m.limit, deadline: Date.now() + (m.limit + m.grace) * 1000 };
  if (m.kind === "test") test = entry;
  else if (m.kind === "file") file = entry;
});
`;

interface Message {
  kind: "test" | "file";
  name: string | null;
  limit?: number;
  grace?: number;
}

const KEY = Symbol.for("webgpu-megatron.test-watchdog");
// Deno.test reports this location (file:line:column) instead of its caller's.
const LOCATION = Symbol.for("Deno.test.location");

// deno-lint-ignore no-explicit-any
type AnyFn = (...args: any[]) => any;
type Definition = Deno.TestDefinition & { [LOCATION]?: string };

interface CallSite {
  getFileName(): string | null;
  getLineNumber(): number | null;
  getColumnNumber(): number | null;
}

/** The location of the code that called `fn` (for Deno's test report). */
function callerOf(fn: AnyFn): string | undefined {
  const E = Error as unknown as { prepareStackTrace?: (e: unknown, s: CallSite[]) => unknown };
  const prepare = E.prepareStackTrace;
  const holder: { stack?: CallSite[] } = {};
  try {
    E.prepareStackTrace = (_, sites) => sites;
    Error.captureStackTrace(holder, fn);
    const site = holder.stack?.[0];
    let file = site?.getFileName();
    if (!site || !file) return undefined;
    if (file.startsWith("/")) file = new URL(file, "file:///").href; // Deno gives paths
    return `${file}:${site.getLineNumber()}:${site.getColumnNumber()}`;
  } catch {
    return undefined;
  } finally {
    E.prepareStackTrace = prepare;
  }
}

function install(): void {
  const g = globalThis as unknown as Record<symbol, boolean | undefined>;
  if (g[KEY]) return;
  g[KEY] = true;
  const inWorker = typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !==
    "undefined";
  if (inWorker) return; // Workers run no tests
  const defaultLimit = envSeconds("TEST_TIME_LIMIT_S", DEFAULT_TEST_TIME_LIMIT_S);
  const grace = envSeconds("TEST_KILL_GRACE_S", DEFAULT_KILL_GRACE_S);
  let thread: Worker | null = null;
  const post = (msg: Message) => {
    if (!thread) {
      thread = new Worker(WATCHDOG_SOURCE, { eval: true });
      thread.unref();
    }
    thread.postMessage(msg);
  };
  let fileName = "?";
  try {
    fileName = Deno.mainModule.replace(/^file:\/\//, "").replace(Deno.cwd() + "/", "");
  } catch { /* no read permission for cwd */ }
  const fileLimit = envSeconds("TEST_FILE_TIME_LIMIT_S", DEFAULT_FILE_TIME_LIMIT_S);
  post({ kind: "file", name: fileName, limit: fileLimit, grace: 0 });
  // The file is done: stop the thread before the file's isolate is torn down.
  Deno.test.afterAll(async () => {
    const t = thread;
    thread = null;
    if (t) await t.terminate();
  });

  // Normalises every form of Deno.test's arguments to one definition with a
  // timeout, a body that tells the watchdog, and the caller's location.
  const define = (args: unknown[], location: string | undefined): Definition => {
    const [a, b, c] = args;
    let def: Definition;
    if (typeof a === "string") {
      def = typeof b === "function"
        ? { name: a, fn: b as AnyFn }
        : { ...(b as object), name: a, fn: c as AnyFn };
    } else if (typeof a === "function") {
      def = { name: a.name, fn: a as AnyFn };
    } else if (typeof b === "function") {
      def = { ...(a as object), name: (a as { name?: string }).name ?? b.name, fn: b as AnyFn };
    } else {
      def = { ...(a as Definition) };
    }
    if (typeof def.fn !== "function") return def; // Deno reports the mistake
    const limit = def.timeout ? def.timeout / 1000 : defaultLimit;
    const name = def.name;
    const fn = def.fn;
    const guarded = async function (this: unknown, t: Deno.TestContext) {
      post({ kind: "test", name, limit, grace });
      try {
        return await fn.call(this, t);
      } finally {
        post({ kind: "test", name: null });
      }
    } as Definition["fn"] & { [LOCATION]?: string };
    if (location) guarded[LOCATION] = location;
    return { ...def, timeout: Math.round(limit * 1000), fn: guarded };
  };

  const original = Deno.test;
  const patched = function test(...args: unknown[]) {
    return original(define(args, callerOf(patched)));
  } as typeof Deno.test;
  for (const k of Object.getOwnPropertyNames(original) as (keyof typeof original)[]) {
    if (k in patched) continue;
    const v = original[k] as unknown;
    (patched as unknown as Record<string, unknown>)[k] = v;
  }
  const ignore = (...args: unknown[]) =>
    original({ ...define(args, callerOf(ignore)), ignore: true });
  const only = (...args: unknown[]) => original({ ...define(args, callerOf(only)), only: true });
  (patched as unknown as Record<string, unknown>).ignore = ignore;
  (patched as unknown as Record<string, unknown>).only = only;
  (Deno as unknown as { test: unknown }).test = patched;
}

install();
