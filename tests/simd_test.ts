/**
 * core/simd.ts: the SIMD width read from adapter names, and the device's
 * lanes agreeing with the width Mesa was asked for.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { LLVMPIPE_WIDTH_ENV, softwareLanesOf } from "../core/simd.ts";
import { testDevice, withTimeLimit } from "./helpers.ts";

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
