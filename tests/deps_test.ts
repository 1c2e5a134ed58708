/**
 * The npm pins live in one place: `deps.ts` for the library (versioned `npm:` specifiers, so
 * `mod.ts` works imported by URL), mirrored in deno.json's `imports` for `deno outdated`; the
 * TF.js comparison's in `bench/tfjs/`, mirrored in `bench/tfjs/deno.json` (its own config and
 * lockfile, so that nothing else installs TF.js). Fails when a pin and its mirror disagree, when
 * a mirrored pin is unused, or when any other module names an npm package itself; and the root
 * lockfile holds the library's packages only (the browser tests' driver is locked in
 * tests/browser/). No GPU.
 * @module
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const SPECIFIER = /["'](npm:((?:@[a-z0-9._-]+\/)?[a-z0-9._-]+)@([0-9][^/"']*)(\/[^"']*)?)["']/g;
/** Files allowed to name npm packages, and the config whose `imports` mirror their pins. */
const PIN_FILES: [RegExp, string][] = [
  [/^deps\.ts$/, "deno.json"],
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

Deno.test("npm pins: deps.ts and bench/tfjs/ agree with their configs' imports; nothing else pins", async () => {
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
        problems.push(`${path}: ${spec} (import it through deps.ts)`);
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
