/**
 * The launchers' shared wait: for every rank to finish, but after the first
 * failure only for a grace period (the others should notice the missing peer
 * and fail on their own; stragglers are then stopped by the caller).
 * @module
 */

/**
 * Waits until `allDone()`, re-checking whenever `progress()` resolves (call it
 * anew each time: it must resolve on the next change). Once `failedAt()`
 * returns a time (`performance.now()`, 0 while nothing failed), waits at most
 * `graceMs` past it (a function: asked anew at each wait).
 */
export async function waitForAllOrGrace(
  allDone: () => boolean,
  progress: () => Promise<unknown>,
  failedAt: () => number,
  graceMs: number | (() => number),
): Promise<void> {
  while (!allDone()) {
    const wait = progress();
    const failed = failedAt();
    if (!failed) {
      await wait;
      continue;
    }
    const left = failed + (typeof graceMs === "number" ? graceMs : graceMs()) - performance.now();
    if (left <= 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([wait, new Promise((r) => (timer = setTimeout(r, left)))]);
    clearTimeout(timer);
  }
}
