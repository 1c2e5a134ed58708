/**
 * Reading the environment and the host without a permission prompt: a program
 * run without the permission (a library program given only what its README
 * names) gets `undefined`, as if the variable were unset, where `Deno.env.get`
 * would stop at a prompt on a terminal and throw elsewhere. In a web browser
 * (no `Deno`) nothing is read.
 * @module
 */

/** Whether this program may read and set the variable `name` (asked without a prompt). */
export function mayUseEnv(name: string): boolean {
  if (!("Deno" in globalThis)) return false;
  return Deno.permissions.querySync({ name: "env", variable: name }).state === "granted";
}

/** `name`'s value, or undefined when it is unset or this program may not read it. */
export function readEnv(name: string): string | undefined {
  return mayUseEnv(name) ? Deno.env.get(name) : undefined;
}

/** Whether this program may read `path` (asked without a prompt). */
export function mayRead(path: string): boolean {
  if (!("Deno" in globalThis)) return false;
  return Deno.permissions.querySync({ name: "read", path }).state === "granted";
}
