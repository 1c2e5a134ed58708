/**
 * Whether every rank of a group holds the same settings: each rank's record is
 * all-gathered as JSON and compared with the first member's, so a job whose
 * nodes were started with different flags can stop with the difference named
 * instead of waiting in mismatched collectives until the dist timeout.
 * @module
 */

import type { ProcessGroup } from "./group.ts";

/** One setting a rank holds differently from the group's first member. */
export interface Disagreement {
  /** The global rank that differs. */
  rank: number;
  /** The setting's name. */
  key: string;
  /** The rank's value (undefined: the rank does not have the setting). */
  value: unknown;
  /** The first member's value. */
  firstValue: unknown;
}

/**
 * Every way a member's `record` differs from the group's first member's, the
 * same list on every member (two small all-gathers; an empty list when all
 * agree). Values compare as JSON, so keep them JSON-representable.
 */
export async function disagreements(
  group: ProcessGroup,
  record: Readonly<Record<string, unknown>>,
): Promise<Disagreement[]> {
  if (group.size === 1) return [];
  const sorted = Object.fromEntries(Object.entries(record).sort(([a], [b]) => a < b ? -1 : 1));
  const mine = new TextEncoder().encode(JSON.stringify(sorted));
  const lengths = await group.allGather(new Uint32Array([mine.length]));
  const width = Math.ceil(Math.max(...lengths) / 4) * 4;
  const padded = new Uint8Array(width);
  padded.set(mine);
  const all = await group.allGather(padded);
  const records = group.ranks.map((_, i) =>
    JSON.parse(new TextDecoder().decode(all.subarray(i * width, i * width + lengths[i]))) as Record<
      string,
      unknown
    >
  );
  const first = records[0];
  const found: Disagreement[] = [];
  for (let i = 1; i < records.length; i++) {
    const keys = new Set([...Object.keys(first), ...Object.keys(records[i])]);
    for (const key of [...keys].sort()) {
      const [value, firstValue] = [records[i][key], first[key]];
      if (JSON.stringify(value) !== JSON.stringify(firstValue)) {
        found.push({ rank: group.ranks[i], key, value, firstValue });
      }
    }
  }
  return found;
}
