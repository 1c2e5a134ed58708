/**
 * `deno task serve` without a browser: its permission set suffices to bundle
 * and serve; every response carries the cross-origin isolation headers; the
 * page, both bundles and the corpus are served and nothing else; it listens on
 * 127.0.0.1 by default; `--help` says how. No GPU.
 * @module
 */

import assert from "node:assert/strict";
import { listeningLine } from "../cli/serve.ts";
import { rootPath, serve } from "./serve_helpers.ts";

Deno.test("serve: isolation headers, the page, the bundles and the corpus; 404 otherwise", async () => {
  const server = await serve();
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const paths: [string, number, RegExp][] = [
      ["", 200, /text\/html/],
      ["app.js", 200, /javascript/],
      ["worker.js", 200, /javascript/],
      ["data/moby_dick.txt", 200, /text\/plain/],
      ["nope.js", 404, /text\/plain/],
      ["../deno.json", 404, /text\/plain/],
    ];
    for (const [path, status, type] of paths) {
      const r = await fetch(server.url + path);
      const body = await r.text();
      assert.equal(r.status, status, path);
      assert.match(r.headers.get("content-type") ?? "", type, path);
      assert.equal(r.headers.get("cross-origin-opener-policy"), "same-origin", path);
      assert.equal(r.headers.get("cross-origin-embedder-policy"), "require-corp", path);
      if (path.endsWith(".js")) {
        // A browser module: no TypeScript left, no static import of Node or npm modules.
        assert.doesNotMatch(body, /^import .* from "(node|npm):/m, path);
        assert.doesNotMatch(body, /^import "(node|npm):/m, path);
      }
      if (path === "data/moby_dick.txt") assert.match(body, /Call me Ishmael/);
    }
    const post = await fetch(server.url, { method: "POST" });
    await post.body?.cancel();
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    // HEAD: GET's headers, the length included, and no body.
    const get = await fetch(server.url + "app.js");
    const length = (await get.arrayBuffer()).byteLength;
    const head = await fetch(server.url + "app.js", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(length));
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  } finally {
    await server.close();
  }
});

Deno.test("serve --help says what it does; a stray argument is a usage error", async () => {
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "-P=serve", "cli/serve.ts", ...args],
      cwd: rootPath,
      stdout: "piped",
      stderr: "piped",
    }).output();
  const help = await run(["--help"]);
  const text = new TextDecoder().decode(help.stdout);
  assert.equal(help.code, 0);
  assert.match(text, /--port/);
  assert.match(text, /--host/);
  assert.match(text, /127\.0\.0\.1/);
  assert.match(text, /enable-unsafe-webgpu/);
  const bad = await run(["extra"]);
  assert.equal(bad.code, 2, new TextDecoder().decode(bad.stderr));
  // A host name that does not resolve is the user's input, not a bug.
  const host = await run(["--host", "not-a-host.invalid", "--port", "0"]);
  const err = new TextDecoder().decode(host.stderr);
  assert.equal(host.code, 2, err);
  assert.match(err, /--host not-a-host\.invalid: no such host name/);
  assert.doesNotMatch(err, /a bug/);
  // Refused before bundling at port 0 too (it bundled, then refused the host).
  assert.doesNotMatch(new TextDecoder().decode(host.stdout), /bundled/);
  // A port in use is refused before the bundle is rebuilt (it replaced the files a running
  // server serves, then said the port was taken).
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    const busy = await run(["--port", String(port)]);
    const said = new TextDecoder().decode(busy.stderr);
    assert.equal(busy.code, 2, said);
    assert.match(said, new RegExp(`--port ${port} is in use`));
    assert.doesNotMatch(new TextDecoder().decode(busy.stdout), /bundled/);
  } finally {
    taken.close();
  }
});

Deno.test("serve: on every interface it prints a URL a browser opens, and how to reach it from elsewhere", () => {
  assert.equal(
    listeningLine("127.0.0.1", 8000),
    "serving the browser trainer at http://127.0.0.1:8000/ (Ctrl-C stops)",
  );
  assert.match(listeningLine("::1", 8000), /at http:\/\/\[::1\]:8000\//);
  for (const any of ["0.0.0.0", "::"]) {
    const line = listeningLine(any, 8731);
    // http://0.0.0.0:8731/ is not a secure context: the page got no WebGPU there.
    assert.match(
      line,
      /^serving the browser trainer at http:\/\/localhost:8731\/ on every interface/,
    );
    assert.match(line, /ssh -L 8731:localhost:8731/);
  }
});

Deno.test("serve run by URL over http says it needs a checkout, in one line", async () => {
  // Its bundle goes beside the module, which an http module has no folder for.
  const files = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    try {
      return new Response(await Deno.readFile(`${rootPath}${path}`), {
        headers: { "content-type": "application/typescript" },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const { port } = files.addr as Deno.NetAddr;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `http://127.0.0.1:${port}/cli/serve.ts`, "--port", "0"],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 2, err);
    assert.match(err, /^error: serve bundles the page from web\/ into \.cache\/web\/ beside it/m);
    assert.doesNotMatch(err, /^\s+at /m);
  } finally {
    await files.shutdown();
  }
});
