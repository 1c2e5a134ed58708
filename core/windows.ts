/**
 * Tensors larger than one storage binding. WebGPU binds at most
 * `maxStorageBufferBindingSize` bytes per binding (128 MiB on the software
 * adapters and many GPUs) while one buffer may be far larger: GPT-2's f32
 * embedding table alone is 154 MB. Ops that touch such a tensor split it into
 * windows (element ranges), each bound on its own at an aligned offset, and
 * dispatch once per window.
 * @module
 */

import type { BufferBinding, Device } from "./device.ts";

/** A storage binding (defined beside the device that dispatches it). */
export type { BufferBinding } from "./device.ts";

/** `[start, count]` element ranges covering `[0, n)`. */
export type Window = readonly [start: number, count: number];

/**
 * The most 4-byte elements one window may hold on `device` such that every
 * window starts at an aligned byte offset and at a multiple of `unit` elements
 * (e.g. a row length, so that a window holds whole rows).
 */
export function windowElements(device: Device, unit = 1): number {
  const maxBytes = device.maxBindingBytes;
  const align = device.limits.minStorageBufferOffsetAlignment ?? 256;
  const step = lcm(unit, Math.max(1, align / 4));
  const elems = Math.floor(maxBytes / 4 / step) * step;
  if (elems < step) {
    throw new Error(
      `a unit of ${unit} elements (${unit * 4} bytes) does not fit in one storage binding ` +
        `(maxStorageBufferBindingSize ${maxBytes} bytes)`,
    );
  }
  return elems;
}

/** Splits `[0, n)` into windows of at most `max` elements (one window when it fits). */
export function windows(n: number, max: number): Window[] {
  if (n <= max) return [[0, n]];
  const out: Window[] = [];
  for (let s = 0; s < n; s += max) out.push([s, Math.min(max, n - s)]);
  return out;
}

/**
 * Row blocks `[firstRow, rows]` of a `[rows, cols]` matrix for kernels that walk
 * columns: at most `maxRows` rows each (the software loop cap), each block
 * within one binding and starting at a multiple of 64 rows (an aligned offset
 * for the matrix and for per-row vectors alike).
 */
export function rowBlocks(device: Device, rows: number, cols: number, maxRows: number): Window[] {
  const fit = Math.floor(device.maxBindingBytes / 4 / cols / 64) * 64;
  if (fit < 64) {
    throw new Error(
      `rows of ${cols} columns are too long: 64 of them exceed one storage binding ` +
        `(maxStorageBufferBindingSize ${device.maxBindingBytes} bytes)`,
    );
  }
  return windows(rows, Math.min(maxRows, fit));
}

/** The binding of elements `[start, start + count)` of a 4-byte-element binding. */
export function subBinding(b: BufferBinding, start: number, count: number): BufferBinding {
  return { ...b, offset: (b.offset ?? 0) + start * 4, size: Math.max(count, 1) * 4 };
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}
