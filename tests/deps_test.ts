/**
 * The npm pins live in one place: `deps.ts` for the library (versioned `npm:` specifiers, so
 * `mod.ts` works imported by URL) and `bench/tfjs/` for the TF.js comparison, mirrored in
 * deno.json's `imports` for `deno outdated`. Fails when the two disagree, when a pin is unused,
 * or when any other module names an npm package itself. No GPU.
 * @module
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const SPECIFIER = /["'](npm:((?:@[a-z0-9._-]+\/)?[a-z0-9._-]+)@([0-9][^/"']*)(\/[^"']*)?)["']/g;
/** Files allowed to name npm packages. */
const PIN_FILES = /^(deps\.ts|bench\/tfjs\/[^/]+\.ts)$/;

async function* sources(dir: URL, rel = ""): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = rel + e.name;
    if (e.isDirectory) {
      if (["node_modules", ".cache", ".git", "tests"].includes(e.name)) continue;
      yield* sources(new URL(`${e.name}/`, dir), `${path}/`);
    } else if (/\.(ts|js|mjs)$/.test(e.name)) yield path;
  }
}

Deno.test("npm pins: deps.ts and bench/tfjs/ agree with deno.json's imports; nothing else pins", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const mapped = new Map<string, string>();
  for (const [name, target] of Object.entries(config.imports as Record<string, string>)) {
    const m = /^npm:((?:@[^/]+\/)?[^@]+)@(.+)$/.exec(target);
    if (m) mapped.set(m[1], m[2]);
    assert.equal(m?.[1], name, `deno.json imports "${name}": "${target}" names another package`);
  }
  const used = new Set<string>();
  const problems: string[] = [];
  for await (const path of sources(root)) {
    const text = await Deno.readTextFile(new URL(path, root));
    for (const m of text.matchAll(SPECIFIER)) {
      const [, spec, name, version] = m;
      if (!PIN_FILES.test(path)) {
        problems.push(`${path}: ${spec} (import it through deps.ts)`);
        continue;
      }
      used.add(name);
      const want = mapped.get(name);
      if (want === undefined) problems.push(`${path}: ${spec} is not in deno.json's imports`);
      else if (want !== version) {
        problems.push(`${path}: ${spec}, but deno.json's imports pin ${name}@${want}`);
      }
    }
  }
  for (const name of mapped.keys()) {
    if (!used.has(name)) problems.push(`deno.json's imports pin ${name}, which no module uses`);
  }
  assert.deepEqual(problems, []);
});
