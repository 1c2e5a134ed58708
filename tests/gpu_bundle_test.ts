/**
 * The offline smoke test of the GPU check (issue #16): builds the bundle (`scripts/gpu_bundle.sh
 * --fast`, xz -0), copies the repository as the device tool sends it (tracked and untracked files
 * that git does not ignore) plus the bundle into an empty folder with no `node_modules`, and runs
 * `scripts/gpu_check.sh --smoke` there with the network cut off (`unshare -n`, loopback up; as
 * root only, else with the network and a note) on the software adapters. Every step must pass and
 * the report must hold each section's numbers.
 * @module
 */

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { withTimeLimit } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname;

async function sh(
  cmd: string,
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("bash", {
    args: ["-c", cmd],
    cwd: opts.cwd ?? root,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

async function canCutNetwork(): Promise<boolean> {
  if (Deno.uid() !== 0) return false;
  // Loopback must come up inside (the ladder's ranks talk TCP over 127.0.0.1).
  return (await sh("unshare -n sh -c 'ip link set lo up'")).code === 0;
}

Deno.test(
  "gpu_check.sh --smoke runs offline from the bundle alone",
  withTimeLimit(720),
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "gpu_bundle_test_" });
    try {
      const bundle = `${tmp}/repo/.gpu`;
      const build = await sh(`bash scripts/gpu_bundle.sh --fast`, {
        env: { GPU_BUNDLE_DIR: `${tmp}/bundle` },
      });
      assertEquals(build.code, 0, `gpu_bundle.sh failed:\n${build.out}`);
      const copy = await sh(
        `mkdir -p "${tmp}/repo" && git ls-files -co --exclude-standard -z | ` +
          `xargs -0 cp --parents -t "${tmp}/repo" 2>/dev/null; mv "${tmp}/bundle" "${bundle}"`,
      );
      assertEquals(copy.code, 0, copy.out);
      const offline = await canCutNetwork();
      const env = [
        `OUT=${tmp}/out`,
        "GPU_CHECK_BUNDLED_LOADER=1",
        "GPU_CHECK_TEST_JOBS=1",
        `GPU_CHECK_WORK=${tmp}/work`,
      ].join(" ");
      const check = `env ${env} bash scripts/gpu_check.sh --smoke`;
      const cmd = offline
        ? `unshare -n sh -c 'ip link set lo up 2>/dev/null; exec "$@"' _ ${check}`
        : check;
      if (!offline) console.log("gpu_bundle_test: not root or no unshare -n: the network stays on");
      const run = await sh(cmd, { cwd: `${tmp}/repo` });
      const log = await Deno.readTextFile(`${tmp}/out/gpu_check.log`).catch(() => run.out);
      assertEquals(run.code, 0, log);
      const report = JSON.parse(await Deno.readTextFile(`${tmp}/out/gpu_check.json`));
      const md = await Deno.readTextFile(`${tmp}/out/gpu_check.md`);
      const failed = (report.steps as { name: string; status: string }[])
        .filter((s) => s.status !== "ok" && s.status !== "note");
      assertEquals(failed, [], `steps that did not pass:\n${log}`);
      assert(report.smoke);
      // The Deno that ran is the bundle's, not one on this machine.
      assert(/deno: deno \d/.test(log), log);
      assert(report.adapters.deno?.name, JSON.stringify(report.adapters));
      for (const t of Object.values(report.tests) as { passed: number; failed: number }[]) {
        assert(t.passed > 0 && t.failed === 0, JSON.stringify(report.tests));
      }
      const mm = report.matmul as { variant: string; gflops?: number }[];
      assert(mm.some((r) => r.variant === "gpu" && r.gflops! > 0), JSON.stringify(mm));
      assert(mm.some((r) => r.variant === "software" && r.gflops! > 0), JSON.stringify(mm));
      const train = report.train as { name: string; msPerStep?: number }[];
      assertEquals(train.map((r) => r.name), ["reference", "gpt2-small", "gpt2-medium"]);
      assert(train.every((r) => r.msPerStep! > 0), JSON.stringify(train));
      assert(report.trainCli?.lastLoss > 0, JSON.stringify(report.trainCli));
      assertEquals(report.tp2.length, 2);
      assertEquals(report.scaling.length, 2);
      for (
        const h of ["## Matmul", "## GPT training", "## TP=2", "## Weak-scaling", "## Targets"]
      ) {
        assert(md.includes(h), `${h} missing from the report:\n${md}`);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
);
