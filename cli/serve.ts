/**
 * `deno task serve`: the browser trainer (web/) on a small static server. The
 * page and its rank Worker are TypeScript, bundled for the browser at start-up
 * by `deno bundle` (esbuild) into `.cache/web/`; the corpus is the vendored
 * Moby Dick. Every response carries `Cross-Origin-Opener-Policy: same-origin`
 * and `Cross-Origin-Embedder-Policy: require-corp`, which make the page
 * cross-origin isolated, so `SharedArrayBuffer` (the collectives' shared memory)
 * exists. Listens on 127.0.0.1 unless `--host` says otherwise.
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import { oneLine } from "../core/files.ts";
import { handled } from "./errors.ts";
import { type FlagSpec, type FlagValues, parseCommandLine, UsageError } from "./flags.ts";

/** Every flag of `deno task serve`. */
export const SERVE_FLAGS: Record<string, FlagSpec> = {
  "port": { type: "int", default: 8000, min: 0, help: "port to listen on (0: any free port)" },
  "host": {
    type: "string",
    default: "127.0.0.1",
    help: "address to listen on (0.0.0.0 exposes the page to the network, but a browser gives " +
      "WebGPU only to https or localhost: from another machine, forward the port, e.g. ssh -L)",
  },
};

const USAGE = `Usage: deno task serve [--port 8000] [--host 127.0.0.1]

Serves the browser trainer: open the printed URL in a browser with WebGPU (Chrome or Edge 113+;
on Linux start Chrome with --enable-unsafe-webgpu --enable-features=Vulkan), pick a model size,
tensor-parallel size, steps and learning rate, and press Train. The page and its Worker are bundled
from web/*.ts with deno bundle at start-up (into .cache/web/).`;

const root = new URL("../", import.meta.url);
const OUT = new URL(".cache/web/", root);

/** Headers on every response: cross-origin isolation (SharedArrayBuffer) and no caching. */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "Cache-Control": "no-store",
};

/** Path → [file, content type]. */
const ROUTES: Record<string, [URL, string]> = {
  "/": [new URL("web/index.html", root), "text/html; charset=utf-8"],
  "/index.html": [new URL("web/index.html", root), "text/html; charset=utf-8"],
  "/app.js": [new URL("app.js", OUT), "text/javascript; charset=utf-8"],
  "/app.js.map": [new URL("app.js.map", OUT), "application/json"],
  "/worker.js": [new URL("worker.js", OUT), "text/javascript; charset=utf-8"],
  "/worker.js.map": [new URL("worker.js.map", OUT), "application/json"],
  "/data/moby_dick.txt": [new URL("data/assets/moby_dick.txt", root), "text/plain; charset=utf-8"],
};

/**
 * Bundles web/app.ts and web/worker.ts for the browser into `.cache/web/`.
 * npm packages stay external: the only ones the graph names are Dawn and
 * GPT-2's tokenizer, dynamic imports a browser never makes (core/gpu.ts,
 * data/gpt2_tokenizer.ts). The Node built-ins that the library's file-system
 * paths name map to stand-ins (web/import_map.json, web/shims/node.ts).
 * Returns the milliseconds it took.
 */
export async function bundleWeb(): Promise<number> {
  const t0 = performance.now();
  await Deno.mkdir(OUT, { recursive: true });
  for (const name of ["app", "worker"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "browser",
        "--external",
        "npm:*",
        "--import-map",
        fromFileUrl(new URL("web/import_map.json", root)),
        "--sourcemap",
        "linked",
        "-o",
        fromFileUrl(new URL(`${name}.js`, OUT)),
        fromFileUrl(new URL(`web/${name}.ts`, root)),
      ],
      cwd: fromFileUrl(root),
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `deno bundle web/${name}.ts failed:\n${new TextDecoder().decode(out.stderr)}`,
      );
    }
  }
  return performance.now() - t0;
}

/** Answers one request. */
export async function handle(req: Request): Promise<Response> {
  const path = new URL(req.url).pathname;
  const route = ROUTES[path];
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed\n", {
      status: 405,
      headers: { ...ISOLATION_HEADERS, "allow": "GET, HEAD" },
    });
  }
  if (!route) {
    return new Response(`not found: ${path}\n`, {
      status: 404,
      headers: { ...ISOLATION_HEADERS, "content-type": "text/plain" },
    });
  }
  try {
    const body = await Deno.readFile(route[0]);
    // A HEAD answer carries GET's headers, its length included; Deno.serve sends no body.
    return new Response(body, {
      headers: {
        ...ISOLATION_HEADERS,
        "content-type": route[1],
        "content-length": String(body.length),
      },
    });
  } catch (e) {
    return new Response(`cannot read ${path}: ${(e as Error).message}\n`, {
      status: 500,
      headers: { ...ISOLATION_HEADERS, "content-type": "text/plain" },
    });
  }
}

/** A listen failure as the user's error: the port in use, or the host; else `e` itself. */
function listenError(e: unknown, f: FlagValues): unknown {
  if (e instanceof Deno.errors.AddrInUse) {
    return new UsageError(`--port ${f.port} is in use (another server?); choose another --port`);
  }
  if (e instanceof Deno.errors.AddrNotAvailable) {
    return new UsageError(`--host ${f.host} is not an address of this machine`);
  }
  if (/lookup address|Name or service not known|nodename nor servname/i.test(String(e))) {
    return new UsageError(`--host ${f.host}: no such host name (${(e as Error).message})`);
  }
  // Deno's own check of the name's characters ("invalid char found in FQDN"): no host at all.
  if (e instanceof URIError) {
    return new UsageError(
      `--host ${f.host} is not a host name or an address (${(e as Error).message}); a port goes ` +
        "in --port",
    );
  }
  return e;
}

/**
 * What `serve` prints once it listens: the URL to open. Every interface
 * (0.0.0.0, ::) is not an address a browser opens, and another machine reaches
 * it over plain http, where a browser gives no WebGPU: localhost is printed,
 * with how to reach it from elsewhere.
 */
export function listeningLine(hostname: string, port: number): string {
  if (hostname === "0.0.0.0" || hostname === "::") {
    return `serving the browser trainer at http://localhost:${port}/ on every interface ` +
      "(Ctrl-C stops); from another machine, a browser gives WebGPU only to https or localhost: " +
      `forward the port (ssh -L ${port}:localhost:${port} THIS_HOST) and open the same URL there`;
  }
  const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
  return `serving the browser trainer at http://${shown}:${port}/ (Ctrl-C stops)`;
}

/** Runs the command line; resolves when the server stops (on SIGINT/SIGTERM). */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    const f = parseCommandLine(args, SERVE_FLAGS, USAGE);
    if (typeof f === "number") return f;
    if (root.protocol !== "file:") {
      throw new UsageError(
        `serve bundles the page from web/ into .cache/web/ beside it, which ${root.href} is not: ` +
          "run it from a checkout of the repository (deno task serve)",
      );
    }
    if ((f.port as number) > 65535) throw new UsageError(`--port must be ≤ 65535, got ${f.port}`);
    // A port in use or a bad host is refused before bundling, which would replace the files a
    // running server is serving (port 0 takes any free port: only the host is tried).
    try {
      Deno.listen({ port: f.port as number, hostname: f.host as string }).close();
    } catch (e) {
      throw listenError(e, f);
    }
    const ms = await bundleWeb().catch((e) => {
      if (
        !(e instanceof Deno.errors.PermissionDenied || /read-only file system/i.test(String(e)))
      ) {
        throw e;
      }
      throw new UsageError(
        `cannot write the page's bundle into ${fromFileUrl(OUT)} (${oneLine(e.message)}): ` +
          "serve writes it there at start-up, so run it from a writable checkout",
      );
    });
    console.log(`bundled web/app.ts and web/worker.ts in ${(ms / 1000).toFixed(1)} s`);
    const ac = new AbortController();
    let server: Deno.HttpServer;
    try {
      server = Deno.serve({
        port: f.port as number,
        hostname: f.host as string,
        signal: ac.signal,
        onListen: ({ hostname, port }) => console.log(listeningLine(hostname, port)),
      }, handle);
    } catch (e) {
      throw listenError(e, f);
    }
    const stop = () => ac.abort();
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      try {
        Deno.addSignalListener(sig, stop);
      } catch { /* not on this platform */ }
    }
    await server.finished;
    return 0;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
