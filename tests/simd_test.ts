/**
 * core/simd.ts: the SIMD width read from adapter names, the device's lanes
 * agreeing with the width Mesa was asked for, and the 512-bit default on CPUs
 * with AVX-512 (found under the train task's permissions, a user's setting
 * left alone), but 256 for a small model on an Intel CPU.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  chooseVectorWidth,
  cpuFacts,
  cpuHasAvx512,
  cpuinfoHasAvx512,
  cpuinfoVendor,
  LLVMPIPE_WIDTH_ENV,
  softwareLanesOf,
  WIDE_VECTORS_MIN_HIDDEN_INTEL,
  type WorkloadHint,
} from "../core/simd.ts";
import { testDevice, withTimeLimit } from "./helpers.ts";
import { runWithoutWidth } from "./cli_helpers.ts";

Deno.test("simd: lanes from the names lavapipe and Dawn's OpenGL backend give", () => {
  assertEquals(softwareLanesOf("llvmpipe (LLVM 15.0.6, 256 bits) 0"), 8);
  assertEquals(softwareLanesOf("llvmpipe (LLVM 15.0.6, 512 bits) 0"), 16);
  assertEquals(
    softwareLanesOf("OpenGL version 4.5 (Core Profile) Mesa 22.3.6 llvmpipe-llvm-15-0-6-512-bits-"),
    16,
  );
  assertEquals(softwareLanesOf("OpenGL version 4.5 (Core Profile) Mesa 22.3.6 "), 8);
  assertEquals(softwareLanesOf("SwiftShader Device (Subzero) 512 bits"), 8);
  assertEquals(softwareLanesOf("NVIDIA H200"), 8);
});

Deno.test("simd: the device's lanes follow the width Mesa runs at", withTimeLimit(60), async () => {
  const dev = await testDevice();
  const info = dev.adapter.info;
  const name = `${info.description} ${info.device}`;
  if (!/llvmpipe/i.test(name)) return; // not Mesa's CPU adapter: nothing to compare
  const width = Deno.env.get(LLVMPIPE_WIDTH_ENV);
  // set by the project before Mesa loaded (CPUs with AVX-512), or by the user
  const expected = width === "512" ? 16 : 8;
  assertEquals(dev.softwareLanes, expected, `${name}; ${LLVMPIPE_WIDTH_ENV}=${width}`);
});

Deno.test("simd: AVX-512 from /proc/cpuinfo's flags line", () => {
  const zen5 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma avx512f " +
    "avx512dq avx512_bf16\nbugs\t\t: sysret_ss_attrs\n";
  const zen2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\nbugs\t\t: avx512f_only_here\n";
  assertEquals(cpuinfoHasAvx512(zen5), true);
  assertEquals(cpuinfoHasAvx512(zen2), false); // the word elsewhere than the flags line
  assertEquals(cpuinfoHasAvx512("flags : avx512fp16\n"), false); // another extension's name
  assertEquals(cpuinfoHasAvx512(""), false);
});

Deno.test("simd: the vendor from /proc/cpuinfo's vendor_id line", () => {
  const intel = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: avx512f\n";
  assertEquals(cpuinfoVendor(intel), "GenuineIntel");
  assertEquals(
    cpuinfoVendor("vendor_id : AuthenticAMD\nvendor_id : GenuineIntel\n"),
    "AuthenticAMD",
  );
  assertEquals(cpuinfoVendor("flags : avx512f\n"), undefined);
});

Deno.test("simd: the width chosen for a CPU and a model", () => {
  const intel = { avx512: true, vendor: "GenuineIntel" };
  const amd = { avx512: true, vendor: "AuthenticAMD" };
  const small: WorkloadHint = { hiddenSize: 128 };
  const large: WorkloadHint = { hiddenSize: WIDE_VECTORS_MIN_HIDDEN_INTEL };
  assertEquals(chooseVectorWidth(intel, small), 256);
  assertEquals(chooseVectorWidth(intel, large), 512);
  assertEquals(chooseVectorWidth(intel), 512); // no model named: the large products decide
  assertEquals(chooseVectorWidth(amd, small), 512);
  assertEquals(chooseVectorWidth({ avx512: true, vendor: undefined }, small), 512);
  assertEquals(chooseVectorWidth({ avx512: false, vendor: "GenuineIntel" }, small), null);
  assertEquals(chooseVectorWidth({ avx512: undefined, vendor: undefined }, small), null);
});

/**
 * Runs core/simd.ts's `preferWideVectors` (with `workload`, then again without)
 * in a fresh process under the train task's permissions.
 */
async function widthInFreshProcess(env: Record<string, string>, workload?: WorkloadHint) {
  const here = new URL(".", import.meta.url);
  const script = `import { preferWideVectors } from ${
    JSON.stringify(new URL("../core/simd.ts", here).href)
  };
    const first = await preferWideVectors(${workload ? JSON.stringify(workload) : ""});
    const again = await preferWideVectors();
    if (again !== first) throw new Error("a second call changed the source: " + again);
    console.log(JSON.stringify([first, Deno.env.get(${
    JSON.stringify(LLVMPIPE_WIDTH_ENV)
  }) ?? null]));`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, script);
    const config = new URL("../deno.json", here).pathname;
    const out = await runWithoutWidth(["run", "-q", "-P=train", "--config", config, file], env);
    assertEquals(out.code, 0, out.stderr);
    return JSON.parse(out.stdout.trim()) as [string, string | null];
  } finally {
    await Deno.remove(file);
  }
}

Deno.test(
  "simd: 512-bit vectors by default where the CPU has AVX-512, a user's width kept",
  withTimeLimit(60),
  async () => {
    const avx512 = await cpuHasAvx512(); // this test runs with every permission: reads the file
    // under the train task's narrower permissions the file is read by grep, to the same answer
    assertEquals(
      await widthInFreshProcess({}),
      avx512 ? ["avx512", "512"] : ["mesa", null],
    );
    assertEquals(await widthInFreshProcess({ [LLVMPIPE_WIDTH_ENV]: "256" }), ["user", "256"]);
    // a small model: 256 on an Intel CPU with AVX-512, kept by the backend's later call
    const small = { hiddenSize: 128 };
    const width = chooseVectorWidth(await cpuFacts(), small);
    assertEquals(
      await widthInFreshProcess({}, small),
      width === null ? ["mesa", null] : [width === 512 ? "avx512" : "small-model", String(width)],
    );
    assertEquals(
      await widthInFreshProcess({ [LLVMPIPE_WIDTH_ENV]: "512" }, small),
      ["user", "512"],
    );
  },
);
