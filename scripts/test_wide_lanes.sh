#!/usr/bin/env bash
# The kernels with 16-invocation workgroups on llvmpipe at 512 bits
# (LP_NATIVE_VECTOR_WIDTH=512, core/simd.ts), where the CPU has AVX-512: the
# adapter then really runs 16 lanes per SIMD step, and the tests' tilings and
# tuner candidates are the ones such a user gets. Elsewhere says why it skips.
# Usage: bash scripts/test_wide_lanes.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "test_wide_lanes: no AVX-512 on this CPU: llvmpipe's 512-bit vectors not tested"
  exit 0
fi
LP_NATIVE_VECTOR_WIDTH=512 exec bash "$root/scripts/test.sh" tests/simd_test.ts \
  tests/kernels_matmul_test.ts tests/autotune_test.ts tests/attention_fused_test.ts \
  tests/ops_forward_test.ts
