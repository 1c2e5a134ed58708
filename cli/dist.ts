/**
 * The job layout of a command that launches ranks (`train`, `launch`), from the
 * distributed flags and the launchers' variables, with every refusal turned
 * into a {@link UsageError} naming the flag or variable.
 * @module
 */

import {
  type DistConfig,
  DistConfigError,
  parseDuration,
  resolveDistConfig,
} from "../collectives/env.ts";
import { oneLine } from "../core/files.ts";
import { UsageError } from "./flags.ts";

/** The job layout from the distributed flags and the environment; bad values are usage errors. */
export function distConfig(flags: Record<string, string>): DistConfig {
  const env = Deno.env.toObject();
  const timeout = flags["dist-timeout"] ?? env.DIST_TIMEOUT;
  if (timeout !== undefined) {
    const from = flags["dist-timeout"] !== undefined ? "--dist-timeout" : "DIST_TIMEOUT";
    try {
      parseDuration(timeout);
    } catch {
      throw new UsageError(
        `${from} "${timeout}" is not a duration: use e.g. 30, 30s, 500ms or 2m`,
      );
    }
  }
  try {
    return resolveDistConfig(flags, env);
  } catch (e) {
    // What is refused there is a flag or a launcher's variable; anything else is a bug.
    if (e instanceof DistConfigError) throw new UsageError(oneLine(e.message));
    throw e;
  }
}
