/**
 * `--launcher procs`: ranks never outlive their launcher (issue #11, 5).
 *
 * A tiny TP=2 training run is started as a user would, then its launcher is
 * signalled mid-run: SIGKILL (the ranks notice their stdin pipe close and
 * exit), SIGTERM with `--save` (passed on: the ranks finish the step, save and
 * exit 0), SIGINT twice (the second kills them). Each time, every process of
 * the run (the launcher and everything under it, found in /proc before the
 * signal) must be gone within a bound, and the rendezvous port free again.
 */

import assert from "node:assert/strict";
import { freeLocalPort } from "../collectives/tcp.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Every process below `pid` (children, grandchildren …), from /proc. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(e.name), ppid);
    } catch { /* exited meanwhile */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) {
      if (pp === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  return out;
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

interface Run {
  code: number;
  stderr: string;
  /** ms from the (last) signal until no process of the run was left. */
  goneMs: number;
  /** The rank processes seen before the signal. */
  ranks: number[];
}

async function signalMidRun(dir: string, signals: Deno.Signal[], extra: string[]): Promise<Run> {
  const port = freeLocalPort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}cli/train.ts`,
      "--num-layers",
      "1",
      "--hidden-size",
      "32",
      "--num-attention-heads",
      "2",
      "--seq-length",
      "16",
      "--micro-batch-size",
      "2",
      "--train-iters",
      "2000",
      "--eval-interval",
      "100000",
      "--eval-iters",
      "1",
      "--sample-tokens",
      "0",
      "--log-interval",
      "1",
      "--data-path",
      `${dir}/data.txt`,
      "--tp",
      "2",
      "--nproc-per-node",
      "2",
      "--launcher",
      "procs",
      "--backend",
      "deno",
      "--master-port",
      String(port),
      "--dist-timeout",
      "20s",
      ...extra,
    ],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const dec = new TextDecoder();
  let stdout = "";
  let stderr = "";
  let seen: () => void = () => {};
  const started = new Promise<void>((r) => (seen = r));
  const readOut = (async () => {
    for await (const b of child.stdout) {
      stdout += dec.decode(b);
      if (/iteration\s+3\//.test(stdout)) seen();
    }
  })();
  const readErr = (async () => {
    for await (const b of child.stderr) stderr += dec.decode(b);
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ok = await Promise.race([
    started.then(() => true),
    child.status.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 40000))),
  ]);
  clearTimeout(timer);
  if (!ok) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await Promise.all([child.status, readOut, readErr]);
    throw new Error(`the run did not reach iteration 3:\n${stdout}\n${stderr}`);
  }
  const ranks = descendants(child.pid);
  assert.equal(ranks.length, 2, `expected 2 rank processes under the launcher, found ${ranks}`);
  let t0 = 0;
  for (const s of signals) {
    if (t0) await new Promise((r) => setTimeout(r, 150));
    child.kill(s);
    t0 = performance.now();
  }
  const status = await child.status;
  // Ranks hold the launcher's stdout and stderr: both end only when every rank is gone too.
  await Promise.all([readOut, readErr]);
  while ([child.pid, ...ranks].some(alive) && performance.now() - t0 < 30000) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const goneMs = performance.now() - t0;
  const left = [child.pid, ...ranks].filter(alive);
  assert.deepEqual(left, [], `processes still alive: ${left}\n${stderr}`);
  assert.ok(portFree(port), `port ${port} still held`);
  return { code: status.code, stderr, goneMs, ranks };
}

async function setup(): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/xdg`, { mode: 0o700 });
  await Deno.writeTextFile(
    `${dir}/data.txt`,
    "It was the best of times, it was the worst. ".repeat(80),
  );
  return dir;
}

Deno.test({
  name: "launcher SIGKILL: its ranks notice and exit, nothing survives",
  timeout: 80_000,
  fn: async () => {
    const dir = await setup();
    const r = await signalMidRun(dir, ["SIGKILL"], []);
    assert.equal(r.code, 137);
    assert.match(r.stderr, /the launcher \(pid \d+\) is gone \(its pipe closed\); exiting/);
    assert.ok(r.goneMs < 10000, `ranks took ${r.goneMs} ms to go`);
    console.log(`SIGKILL: every rank gone ${Math.round(r.goneMs)} ms after the launcher died`);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "launcher SIGTERM (with --save): passed on, the ranks save and exit 0, nothing survives",
  timeout: 80_000,
  fn: async () => {
    const dir = await setup();
    const r = await signalMidRun(dir, ["SIGTERM"], [
      "--save",
      `${dir}/ck`,
      "--save-interval",
      "100000",
    ]);
    assert.match(r.stderr, /launcher: SIGTERM: passed on to ranks 0, 1/);
    assert.equal(r.code, 0, r.stderr);
    const latest = Number((await Deno.readTextFile(`${dir}/ck/latest`)).trim());
    assert.ok(latest >= 3, `checkpoint at iteration ${latest}`);
    console.log(`SIGTERM: saved iteration ${latest}, all gone in ${Math.round(r.goneMs)} ms`);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "launcher SIGINT twice: the second kills the ranks, nothing survives",
  timeout: 80_000,
  fn: async () => {
    const dir = await setup();
    const r = await signalMidRun(dir, ["SIGINT", "SIGINT"], [
      "--save",
      `${dir}/ck`,
      "--save-interval",
      "100000",
    ]);
    assert.match(r.stderr, /launcher: SIGINT: passed on/);
    assert.notEqual(r.code, 0);
    assert.ok(r.goneMs < 10000, `ranks took ${r.goneMs} ms to go`);
    console.log(`SIGINT ×2: exit ${r.code}, all gone in ${Math.round(r.goneMs)} ms`);
    await Deno.remove(dir, { recursive: true });
  },
});
