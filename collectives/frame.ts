/**
 * The header every collective message carries, on both transports, and the
 * errors collectives raise. The header names the operation, its element count
 * and the call's sequence number, so ranks that disagree on what they are doing
 * get an error instead of corrupt data.
 * @module
 */

/** Bytes of a frame header. */
export const HEADER_BYTES = 32;

/**
 * Frame kinds: data (the payload follows the header), abort, and data whose
 * payload is in the link's shared mapping (collectives/mapping.ts).
 */
export const KIND_DATA = 1, KIND_ABORT = 2, KIND_MAPPED = 3;

/** Operation codes carried in frame headers. */
export const OPS = [
  "barrier",
  "allReduce(sum)",
  "allReduce(avg)",
  "allReduce(max)",
  "reduceScatter(sum)",
  "reduceScatter(avg)",
  "reduceScatter(max)",
  "allGather",
  "broadcast",
  "allReduceHalf(sum)",
  "allReduceHalf(avg)",
] as const;

/** One of {@link OPS}. */
export type OpName = typeof OPS[number];

/** What a collective call is: checked on every message between ranks. */
export interface CallDesc {
  /** Operation. */
  op: OpName;
  /** Per-call sequence number within the group (same on all ranks). */
  seq: number;
  /** Element count as the caller passed it (per-rank part for allGather). */
  count: number;
  /** Bytes per element. */
  elemBytes: number;
  /** Extra agreement value (the root for broadcast), else 0. */
  extra: number;
}

/** A decoded header: the call plus where this message sits in it. */
export interface Frame extends CallDesc {
  /** Frame kind (data or abort). */
  kind: number;
  /** Algorithm stage (ring step). */
  stage: number;
  /** Sub-chunk index. */
  sub: number;
  /** Payload bytes that follow. */
  bytes: number;
}

/** Writes a header into `h` (8 Int32 words). */
export function encodeHeader(h: Int32Array, f: Frame): void {
  h[0] = f.kind | (OPS.indexOf(f.op) << 8) | (f.elemBytes << 16);
  h[1] = f.seq;
  h[2] = f.count % 0x100000000;
  h[3] = Math.floor(f.count / 0x100000000);
  h[4] = f.extra;
  h[5] = f.stage;
  h[6] = f.sub;
  h[7] = f.bytes;
}

/** Reads a header from `h` (8 Int32 words). */
export function decodeHeader(h: Int32Array): Frame {
  const op = OPS[(h[0] >>> 8) & 0xff] ?? "barrier";
  return {
    kind: h[0] & 0xff,
    op,
    elemBytes: (h[0] >>> 16) & 0xff,
    seq: h[1],
    count: (h[2] >>> 0) + (h[3] >>> 0) * 0x100000000,
    extra: h[4],
    stage: h[5],
    sub: h[6],
    bytes: h[7] >>> 0,
  };
}

/** Describes a call for error messages. */
export function describeCall(d: CallDesc): string {
  const extra = d.op === "broadcast" ? ` from root ${d.extra}` : "";
  return `${d.op} #${d.seq} of ${d.count} elements (${d.elemBytes}-byte)${extra}`;
}

/** Where a collective's timeout is set, for the errors that end in one. */
export const TIMEOUT_SETTING = "see --dist-timeout, DistConfig.distTimeoutMs in the library";

/** Every collective failure: names the rank involved where one is known. */
export class CollectiveError extends Error {
  /** Creates the error; `rank` is the global rank at fault, if known. */
  constructor(message: string, readonly rank?: number) {
    super(message);
    this.name = "CollectiveError";
  }
}

/**
 * Checks a received data frame against what this rank expects; throws a
 * {@link CollectiveError} naming the sender when they disagree.
 */
export function checkFrame(
  got: Frame,
  want: CallDesc & { stage: number; sub: number; bytes: number },
  from: number,
  self: number,
): void {
  if (
    got.op !== want.op || got.count !== want.count || got.elemBytes !== want.elemBytes ||
    got.extra !== want.extra || got.seq !== want.seq
  ) {
    throw new CollectiveError(
      `collective mismatch: rank ${from} called ${describeCall(got)} but rank ${self} called ` +
        `${describeCall(want)}; every rank of a group must make the same calls in the same order`,
      from,
    );
  }
  if (got.stage !== want.stage || got.sub !== want.sub || got.bytes !== want.bytes) {
    throw new CollectiveError(
      `protocol error from rank ${from} in ${describeCall(want)}: got stage ${got.stage} ` +
        `sub ${got.sub} (${got.bytes} bytes), expected stage ${want.stage} sub ${want.sub} ` +
        `(${want.bytes} bytes)`,
      from,
    );
  }
}
