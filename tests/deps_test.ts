/**
 * The npm pins live in one place: `deps/` for the library (versioned `npm:` specifiers, so
 * `mod.ts` works imported by URL), mirrored in deno.json's `imports` for `deno outdated`; the
 * TF.js comparison's in `bench/tfjs/`, mirrored in `bench/tfjs/deno.json` (its own config and
 * lockfile, so that nothing else installs TF.js). Fails when a pin and its mirror disagree, when
 * a mirrored pin is unused, or when any other module names an npm package itself; and the root
 * lockfile holds the library's packages only (the browser tests' driver is locked in
 * tests/browser/), and a host-only program of `data/mod.ts` does not fetch Dawn. No GPU.
 * @module
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const SPECIFIER = /["'](npm:((?:@[a-z0-9._-]+\/)?[a-z0-9._-]+)@([0-9][^/"']*)(\/[^"']*)?)["']/g;
/** Files allowed to name npm packages, and the config whose `imports` mirror their pins. */
const PIN_FILES: [RegExp, string][] = [
  [/^deps\/[a-z_]+\.ts$/, "deno.json"],
  [/^bench\/tfjs\/[^/]+\.ts$/, "bench/tfjs/deno.json"],
];

/** Package name → version, from a config's `imports`. */
async function mirrored(config: string): Promise<Map<string, string>> {
  const json = JSON.parse(await Deno.readTextFile(new URL(config, root)));
  const out = new Map<string, string>();
  for (const [name, target] of Object.entries((json.imports ?? {}) as Record<string, string>)) {
    const m = /^npm:((?:@[^/]+\/)?[^@]+)@(.+)$/.exec(target);
    assert.equal(m?.[1], name, `${config} imports "${name}": "${target}" names another package`);
    out.set(m![1], m![2]);
  }
  return out;
}

async function* sources(dir: URL, rel = ""): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = rel + e.name;
    if (e.isDirectory) {
      if (["node_modules", ".cache", ".git", "tests"].includes(e.name)) continue;
      yield* sources(new URL(`${e.name}/`, dir), `${path}/`);
    } else if (/\.(ts|js|mjs)$/.test(e.name)) yield path;
  }
}

Deno.test("npm pins: deps/ and bench/tfjs/ agree with their configs' imports; nothing else pins", async () => {
  const configs = new Map<string, Map<string, string>>();
  for (const [, config] of PIN_FILES) configs.set(config, await mirrored(config));
  const used = new Set<string>();
  const problems: string[] = [];
  for await (const path of sources(root)) {
    const text = await Deno.readTextFile(new URL(path, root));
    for (const m of text.matchAll(SPECIFIER)) {
      const [, spec, name, version] = m;
      const config = PIN_FILES.find(([re]) => re.test(path))?.[1];
      if (config === undefined) {
        problems.push(`${path}: ${spec} (import it through deps/)`);
        continue;
      }
      used.add(`${config} ${name}`);
      const want = configs.get(config)!.get(name);
      if (want === undefined) problems.push(`${path}: ${spec} is not in ${config}'s imports`);
      else if (want !== version) {
        problems.push(`${path}: ${spec}, but ${config}'s imports pin ${name}@${want}`);
      }
    }
  }
  for (const [config, pins] of configs) {
    for (const name of pins.keys()) {
      if (!used.has(`${config} ${name}`)) {
        problems.push(`${config}'s imports pin ${name}, which no module uses`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

Deno.test("the root lockfile holds the library's npm packages only", async () => {
  // Deno installs every npm package of a lockfile for any command: a test-only package here
  // (the browser tests' puppeteer-core, 24 packages, 32 MB) was fetched by a user's first
  // `deno task train`. tests/browser/ has a config and lockfile of its own for it.
  const lock = JSON.parse(await Deno.readTextFile(new URL("deno.lock", root)));
  const pins = await mirrored("deno.json");
  const npm = Object.keys(lock.specifiers ?? {}).filter((s) => s.startsWith("npm:"));
  assert.deepEqual(
    npm.map((s) => s.replace(/^npm:/, "").replace(/@[^@]*$/, "")).sort(),
    [...pins.keys()].sort(),
    `deno.lock's npm specifiers: ${npm.join(", ")}`,
  );
});

Deno.test("a program of data/mod.ts alone does not fetch Dawn (131 MB); mod.ts's does", async () => {
  // Deno fetches the targets of a module's literal dynamic imports with it: Dawn's pin and the
  // tokenizer's are in modules of their own (deps/), so data/ reaches the tokenizer's only.
  const graph = async (entry: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", new URL(entry, root).href],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const json = JSON.parse(new TextDecoder().decode(out.stdout));
    return JSON.stringify(json.modules.map((m: { specifier: string }) => m.specifier));
  };
  const data = await graph("data/mod.ts");
  assert.ok(!data.includes("webgpu@"), "data/mod.ts reaches npm:webgpu");
  assert.ok(data.includes("gpt-tokenizer@"), "data/mod.ts no longer reaches gpt-tokenizer");
  assert.ok((await graph("mod.ts")).includes("webgpu@"), "mod.ts does not reach npm:webgpu");
});
