/**
 * Grid helpers: a 1-D range of work items or workgroups laid out on a 2-D grid so
 * that no dimension passes the 65,535 workgroup limit.
 * @module
 */

import { ceilDiv } from "./kernel.ts";

/** Max workgroups per dimension every adapter supports. */
export const MAX_GROUPS = 65535;

/** Workgroups (x, y) covering `groups` workgroups in total. */
export function grid2d(groups: number): [number, number, number] {
  if (groups <= MAX_GROUPS) return [groups, 1, 1];
  const y = ceilDiv(groups, MAX_GROUPS);
  return [ceilDiv(groups, y), y, 1];
}

/** Workgroups covering `items` items at `wg` items per workgroup. */
export function gridFor(items: number, wg: number): [number, number, number] {
  return grid2d(ceilDiv(items, wg));
}

/** WGSL expression for the linear workgroup index on a {@link grid2d} grid. */
export const GROUP_INDEX = "(wid.x + wid.y * nwg.x)";

/** WGSL builtins parameter list matching {@link GROUP_INDEX}. */
export const GRID_BUILTINS =
  "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, " +
  "@builtin(local_invocation_index) lid: u32";
