/**
 * Reads the text files vendored under `data/assets/` by URL relative to this module, so they load
 * from a local checkout (`file:`, needs `--allow-read`) and when the library is imported by URL
 * (`http(s):`, needs `--allow-net` for that host) alike.
 * @module
 */

/** The URL of `name` under `data/assets/`. */
export function assetUrl(name: string): URL {
  return new URL(`./assets/${name}`, import.meta.url);
}

/** Reads `data/assets/<name>` as UTF-8 text: `Deno.readTextFile` for `file:`, `fetch` otherwise. */
export async function readAssetText(name: string): Promise<string> {
  const url = assetUrl(name);
  if (url.protocol === "file:") return await Deno.readTextFile(url);
  const res = await fetch(url);
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${url.href}: HTTP ${res.status} ${res.statusText}`);
  }
  return await res.text();
}
