#!/usr/bin/env bash
# The kernels whose workgroups follow llvmpipe's vector width, again at Mesa's
# own default of 256 bits (LP_NATIVE_VECTOR_WIDTH=256), where the CPU has
# AVX-512: there the project runs Mesa's CPU adapters at 512 bits (16 lanes,
# core/simd.ts), so the main suite tests those tilings and tuner candidates,
# and this tests the ones a user who keeps Mesa's default gets. Elsewhere the
# main suite already ran at Mesa's default: it says so and skips.
# Usage: bash scripts/test_mesa_width.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "test_mesa_width: no AVX-512 on this CPU: the main suite ran at Mesa's default width"
  exit 0
fi
LP_NATIVE_VECTOR_WIDTH=256 exec bash "$root/scripts/test.sh" tests/simd_test.ts \
  tests/kernels_matmul_test.ts tests/autotune_test.ts tests/attention_fused_test.ts \
  tests/ops_forward_test.ts
