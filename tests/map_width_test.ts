/**
 * The elementwise maps four elements per invocation (`mapKernel` width 4, which
 * `mapRaw` picks where the size and a broadcast operand divide by 4) give
 * exactly the values of the one-element kernel: every map op, plain and
 * broadcast, the same inputs through both widths, compared bit for bit.
 */

import assert from "node:assert/strict";
import { Tensor } from "../core/tensor.ts";
import {
  MAP_EXPRESSIONS,
  mapArity,
  mapDispatch,
  mapKernel,
  type MapOp,
} from "../kernels/elementwise.ts";
import { gpuTest, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

Deno.test("map: the vec4 and scalar kernels agree bit for bit on every op", gpuTest, async () => {
  const n = 12 * 101, ny = 12;
  const X = Tensor.fromArray(dev, randomArray(n, 1, -3, 3), [n]);
  const Yfull = Tensor.fromArray(dev, randomArray(n, 2, -3, 3), [n]);
  const Yb = Tensor.fromArray(dev, randomArray(ny, 3, -3, 3), [ny]);
  for (const op of Object.keys(MAP_EXPRESSIONS) as MapOp[]) {
    const binary = mapArity(op) === 2;
    for (const broadcast of binary ? [false, true] : [false]) {
      const results: Float32Array[] = [];
      for (const width of [1, 4] as const) {
        const out = Tensor.empty(dev, [n]);
        const Y = broadcast ? Yb : Yfull;
        const d = mapDispatch(n, binary ? Y.size : 1, 0.75, -0.25, width);
        const bufs = binary ? [X.binding, Y.binding, out.binding] : [X.binding, out.binding];
        dev.dispatch(mapKernel(op, broadcast, width), bufs, d.params, d.workgroups);
        results.push(await out.read());
        out.dispose();
      }
      const [a, b] = results;
      for (let i = 0; i < n; i++) {
        assert.ok(Object.is(a[i], b[i]), `${op}${broadcast ? " (broadcast)" : ""} at ${i}`);
      }
    }
  }
  for (const t of [X, Yfull, Yb]) t.dispose();
});
