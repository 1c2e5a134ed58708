/**
 * `deno task info`: the adapters each backend finds, their features and the
 * limits that matter. Exits non-zero, saying how to get one, when none is found.
 * @module
 */

import { parseArgs } from "node:util";
import { type AdapterSummary, Device } from "../core/device.ts";
import { type BackendName, BACKENDS, parseBackend } from "../core/gpu.ts";
import { handled } from "./errors.ts";
import { UsageError } from "./flags.ts";

const HELP = `Usage: deno task info [--backend deno|dawn] [--json]

Prints the WebGPU adapter each backend finds, its features and the limits that
matter for training (binding sizes, workgroup sizes, storage buffers per stage).

  --backend NAME   only this backend (default: all of ${BACKENDS.join(", ")})
  --json           one JSON object per backend instead of text
  --debug          print the stack trace of any error
  -h, --help       this text`;

/** Probes one backend; returns its summary or the error message. */
export async function probe(backend: BackendName): Promise<AdapterSummary | { error: string }> {
  try {
    const dev = await Device.create({ backend });
    const s = dev.summary();
    dev.destroy();
    return s;
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/**
 * Which 16-bit path `--fp16`/`--bf16` takes on an adapter: packed storage (two
 * values per u32, f32 arithmetic) everywhere; where `shader-f16` is offered, the
 * matmuls read fp16 weights as native `f16` (bf16 has no native type).
 */
export function mixedPrecisionPath(s: Pick<AdapterSummary, "features">): string {
  return "packed 16-bit storage (two values per u32, f32 arithmetic)" +
    (s.features.includes("shader-f16")
      ? "; shader-f16: matmuls read --fp16 weights as native f16 " +
        "(and compute in f16 with --f16-arithmetic)"
      : "; no shader-f16: --fp16 weights unpacked with integer operations");
}

/** What a software adapter's lane count means for the user, and how to change it. */
export function describeLanes(lanes: number): string {
  return lanes === 16
    ? "16 lanes (llvmpipe at 512 bits, the project's default on CPUs with AVX-512; LP_NATIVE_VECTOR_WIDTH=256 keeps Mesa's default)"
    : `${lanes} lanes`;
}

function printSummary(s: AdapterSummary): void {
  console.log(`${s.backend}: ${s.name}${s.isFallback ? "  [software adapter]" : ""}`);
  console.log(`  features: ${s.features.join(", ") || "(none)"}`);
  console.log(`  mixed precision (--fp16/--bf16): ${mixedPrecisionPath(s)}`);
  if (s.softwareLanes) console.log(`  software kernels: ${describeLanes(s.softwareLanes)}`);
  for (const [k, v] of Object.entries(s.limits)) console.log(`  ${k.padEnd(36)} ${v}`);
}

/** Entry point. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        backend: { type: "string" },
        json: { type: "boolean", default: false },
        debug: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify.*$/s, "");
    throw new UsageError(`${msg} (--help lists the flags)`);
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.backend !== undefined && !(BACKENDS as readonly string[]).includes(values.backend)) {
    throw new UsageError(
      `--backend must be one of ${BACKENDS.join(", ")}, got "${values.backend}"`,
    );
  }
  const backends = values.backend ? [parseBackend(values.backend)] : [...BACKENDS];
  let found = 0;
  for (const b of backends) {
    const r = await probe(b);
    if ("error" in r) {
      if (values.json) console.log(JSON.stringify({ backend: b, error: r.error }));
      else console.log(`${b}: no adapter\n  ${r.error.replaceAll("\n", "\n  ")}`);
    } else {
      found++;
      if (values.json) console.log(JSON.stringify(r));
      else printSummary(r);
    }
  }
  if (found === 0) {
    console.error("error: no WebGPU adapter found on any backend (see the advice above)");
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  const code = await main(Deno.args);
  // Exit deliberately (devices were destroyed above); see PLATFORM.md on exit hazards.
  Deno.exit(code);
}
