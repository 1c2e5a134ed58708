#!/usr/bin/env bash
# Runs test files each in its own Deno process, TEST_JOBS (default 2) at a time,
# under the per-test watchdog (tests/watchdog.ts), then prints every file's
# output in order and the failing files. One process per file, so a file's time
# limit and output are its own. (It began as a way around a crash of processes
# that ran many GPU test files in Workers, since fixed: see README, Platform
# notes.)
# Usage: bash scripts/test.sh [FILE ...]   (default: tests/*_test.ts tests/browser/*_test.ts)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deno="$root/node_modules/.bin/deno"
[ -x "$deno" ] || deno="deno"
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(tests/*_test.ts tests/browser/*_test.ts)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The CLIs the tests run tune their matmuls and save the choices in the default
# tuning cache ($XDG_CACHE_HOME/webgpu-megatron): the run gets a cache home of
# its own, removed with $out, so testing leaves the user's tuning cache as it
# was. Deno's and Mesa's caches (packages, compiled shaders) stay where they were.
cache_home="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}"
export DENO_DIR="${DENO_DIR:-$cache_home/deno}"
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$cache_home}" # Mesa adds /mesa_shader_cache
export XDG_CACHE_HOME="$out/cache"
printf '%s\n' "${files[@]}" | xargs -P "${TEST_JOBS:-2}" -I{} bash -c '
  f="$1"; log="$2/$(basename "$f").log"
  # A folder with its own deno.json (tests/browser/: its npm pins and lockfile kept out of the
  # root lockfile, whose every package Deno installs for any command) runs under that config.
  config=""; [ -f "$(dirname "$f")/deno.json" ] && config="--config=$(dirname "$f")/deno.json"
  "$3" test -A $config --preload tests/watchdog.ts "$f" >"$log" 2>&1
  echo $? >"$log.rc"' _ {} "$out" "$deno"
failed=()
for f in "${files[@]}"; do
  log="$out/$(basename "$f").log"
  cat "$log"
  rc="$(cat "$log.rc" 2>/dev/null || echo 1)"
  [ "$rc" = 0 ] || failed+=("$f (exit $rc)")
done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test files that failed:\n'
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
