/**
 * Stand-ins for the Node built-ins (`node:path`, `node:crypto`) that modules
 * of the page's import graph name for their file-system paths (checkpoint and
 * Hugging Face directories). The page never calls those paths; the bundle maps
 * the built-ins here (web/import_map.json) so it loads in a browser, and each
 * stand-in says so if it is ever called.
 * @module
 */

function unavailable(name: string): never {
  throw new Error(`${name} is not available in a browser (a file-system path of the library)`);
}

/** Stand-in for `node:crypto`'s createHash. */
export function createHash(_algorithm: string): never {
  return unavailable("node:crypto createHash");
}

/** Stand-in for `node:path`'s join. */
export function join(..._parts: string[]): never {
  return unavailable("node:path join");
}

/** Stand-in for `node:path`'s dirname. */
export function dirname(_path: string): never {
  return unavailable("node:path dirname");
}

/** Stand-in for `node:path`'s basename. */
export function basename(_path: string): never {
  return unavailable("node:path basename");
}

/** Stand-in for `node:path`'s isAbsolute. */
export function isAbsolute(_path: string): never {
  return unavailable("node:path isAbsolute");
}

/** Stand-in for `node:path`'s relative. */
export function relative(_from: string, _to: string): never {
  return unavailable("node:path relative");
}

/** Stand-in for `node:path`'s resolve. */
export function resolve(..._parts: string[]): never {
  return unavailable("node:path resolve");
}

/** Stand-in for `node:path`'s sep. */
export const sep = "/";
