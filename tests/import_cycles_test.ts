/**
 * The module graph has no import cycles: walking it from `mod.ts` and from every
 * `cli/*.ts` entry point (static imports, type-only ones included, as `deno info`
 * resolves them), every strongly connected component is a single module. A cycle
 * fails the test naming one import path around it. No module that `mod.ts`
 * imports statically awaits at its top (npm packages load on demand). No GPU.
 */

import { deepStrictEqual } from "node:assert/strict";
import { relative } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

const root = fromFileUrl(new URL("../", import.meta.url));

interface InfoModule {
  specifier: string;
  dependencies?: {
    isDynamic?: boolean;
    code?: { specifier?: string };
    type?: { specifier?: string };
  }[];
}

/** The project-local static import edges reachable from `entry`, per `deno info --json`. */
async function moduleGraph(entries: string[]): Promise<Map<string, Set<string>>> {
  const graph = new Map<string, Set<string>>();
  for (const entry of entries) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
    for (const m of info.modules) {
      if (!m.specifier.startsWith("file://")) continue;
      const edges = graph.get(m.specifier) ?? new Set<string>();
      graph.set(m.specifier, edges);
      for (const d of m.dependencies ?? []) {
        if (d.isDynamic) continue;
        for (const s of [d.code?.specifier, d.type?.specifier]) {
          if (s?.startsWith("file://")) edges.add(s);
        }
      }
    }
  }
  return graph;
}

/** One import path from `first` back to itself through the modules of `comp` (breadth first). */
function cyclePath(graph: Map<string, Set<string>>, comp: string[]): string[] {
  const inComp = new Set(comp);
  const first = comp[0];
  const prev = new Map<string, string>();
  const queue = [first];
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!inComp.has(w)) continue;
      if (w === first) {
        const path = [v];
        while (path[0] !== first) path.unshift(prev.get(path[0])!);
        return [...path, first];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return comp;
}

/**
 * Cycles of `graph`: for each strongly connected component of more than one
 * module (Tarjan), one import path around it, from its first module back to it.
 */
export function findCycles(graph: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || graph.get(v)?.has(v)) cycles.push(cyclePath(graph, comp.sort()));
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return cycles;
}

Deno.test("findCycles finds a two-module cycle and none in a chain", () => {
  const g = (edges: [string, string][]) => {
    const m = new Map<string, Set<string>>();
    for (const [a, b] of edges) {
      m.set(a, (m.get(a) ?? new Set()).add(b));
      if (!m.has(b)) m.set(b, new Set());
    }
    return m;
  };
  deepStrictEqual(findCycles(g([["a", "b"], ["b", "c"]])), []);
  deepStrictEqual(findCycles(g([["a", "b"], ["b", "a"], ["b", "c"]])), [["a", "b", "a"]]);
  deepStrictEqual(findCycles(g([["a", "b"], ["b", "c"], ["c", "a"]])), [["a", "b", "c", "a"]]);
});

Deno.test("no import cycles from mod.ts and cli/*.ts", async () => {
  const entries = ["mod.ts"];
  for await (const e of Deno.readDir(new URL("../cli/", import.meta.url))) {
    if (e.isFile && e.name.endsWith(".ts")) entries.push(`cli/${e.name}`);
  }
  const cycles = findCycles(await moduleGraph(entries.sort()));
  const named = cycles.map((c) => c.map((s) => relative(root, fromFileUrl(s))).join(" → "));
  deepStrictEqual(named, [], `import cycles:\n  ${named.join("\n  ")}`);
});

Deno.test("importing mod.ts runs no top-level await: npm packages load on demand", async () => {
  // data/gpt2_tokenizer.ts awaited gpt-tokenizer's tables at the top and was
  // re-exported by mod.ts, so every importer paid ~30 ms and 10 MB for them.
  const graph = await moduleGraph(["mod.ts"]);
  const modules = [new URL("../mod.ts", import.meta.url).href];
  for (let i = 0; i < modules.length; i++) {
    for (const w of graph.get(modules[i]) ?? []) if (!modules.includes(w)) modules.push(w);
  }
  const awaiting: string[] = [];
  for (const m of modules) {
    const source = await Deno.readTextFile(fromFileUrl(m));
    // A statement at column 0 that awaits: `await …`, `for await`, `const x = await …`.
    if (/^(?:(?:export\s+)?(?:const|let|var)\s[^\n]*=\s*|for\s+)?await\b/m.test(source)) {
      awaiting.push(relative(root, fromFileUrl(m)));
    }
  }
  deepStrictEqual(awaiting, [], `top-level await in ${awaiting.join(", ")}`);
  deepStrictEqual(modules.some((m) => m.endsWith("/data/gpt2_tokenizer.ts")), false);
});
