#!/usr/bin/env bash
# Fills .gpu/ (ignored: added to .git/info/exclude) with what scripts/gpu_check.sh needs on a
# machine with no network, no Node and no Deno (issue #16), under 60 MiB in all:
#   deno.xz            the pinned Deno binary (package.json), xz-compressed (python3's lzma or
#                      xz unpacks it there)
#   deno_dir.tar.xz    a DENO_DIR holding just the npm packages the check imports (webgpu with
#                      only Dawn's linux-x64/dawn.node, gpt-tokenizer), filled by `deno cache`
#   debs/*.deb         Debian's Vulkan loader and GL dispatch libraries (libvulkan1, libegl1,
#                      libglvnd0, …), unpacked there with dpkg -x only when the machine has none
#   MANIFEST.txt       versions, sizes and sha256 sums
# The corpus travels with the repository (data/assets/moby_dick.txt); the check's benchmarks use
# seeded random tokens. Mesa's lavapipe does not fit: it needs libLLVM-15 (22 MB as xz) plus
# libz3 and ICU (another ~15 MB), beside Deno's 30 MB; the check's CPU ladder uses a lavapipe
# the machine has, else runs its ranks on the GPU and says so.
# Usage: bash scripts/gpu_bundle.sh [--fast]   (--fast or GPU_BUNDLE_FAST=1: xz -0, for the CI
#        smoke test; env GPU_BUNDLE_DIR: where to build, default .gpu)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
fast="${GPU_BUNDLE_FAST:-0}"
for arg in "$@"; do
  case "$arg" in
    --fast) fast=1 ;;
    -h | --help)
      sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "gpu_bundle: unknown argument '$arg' (--help says what it takes)" >&2
      exit 2
      ;;
  esac
done
out="${GPU_BUNDLE_DIR:-$root/.gpu}"
limit_mib=60
level=-9
[ "$fast" = 1 ] && level=-0
say() { echo "gpu_bundle: $*" >&2; }

# Keep the bundle out of git (and so out of the tracked tree); it travels as a carried path.
if [ "$out" = "$root/.gpu" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  exclude="$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)"
  mkdir -p "$(dirname "$exclude")"
  grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
fi

want="$(sed -n 's/.*"deno": *"\([^"]*\)".*/\1/p' package.json | head -n1)"
deno="$root/node_modules/.bin/deno"
if [ ! -x "$deno" ] || [ "$("$deno" --version | head -n1 | awk '{print $2}')" != "$want" ]; then
  say "installing Deno $want from npm"
  npm install --no-audit --no-fund --loglevel=error >&2
fi
deno_bin="$(readlink -f "$deno")"
mkdir -p "$out"
stamp="deno $want xz $level"

# 1. Deno, compressed (the slow part: ~60 s at -9 on two cores; skipped when up to date).
if [ ! -f "$out/deno.xz" ] || [ "$(cat "$out/deno.stamp" 2>/dev/null)" != "$stamp" ]; then
  say "compressing Deno $want (xz $level)"
  xz -T2 "$level" -c "$deno_bin" >"$out/deno.xz.tmp"
  mv "$out/deno.xz.tmp" "$out/deno.xz"
  echo "$stamp" >"$out/deno.stamp"
fi

# 2. A DENO_DIR with the npm packages the check imports, and nothing else.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
entries=(cli/info.ts scripts/gpu_bench.ts bench/scaling.ts bench/scaling_worker.ts mod.ts
  tests/watchdog.ts tests/kernels_matmul_test.ts tests/ops_forward_test.ts tests/grad_test.ts
  tests/model_grad_test.ts tests/tp_blocks_test.ts tests/tp_gpt_test.ts)
say "filling a DENO_DIR (deno cache ${#entries[@]} entry points)"
DENO_DIR="$tmp/deno_dir" DENO_NO_UPDATE_CHECK=1 "$deno" cache --quiet "${entries[@]}" >&2
# Deno makes sure the whole npm snapshot of deno.lock is cached before it runs anything that uses
# npm packages, so every package of deno.json's imports must be there too (deno install).
DENO_DIR="$tmp/deno_dir" DENO_NO_UPDATE_CHECK=1 "$deno" install --quiet >&2
# deps/ imports these dynamically, so `deno cache` may not have fetched them: ask directly.
DENO_DIR="$tmp/deno_dir" DENO_NO_UPDATE_CHECK=1 "$deno" cache --quiet deps/*.ts >&2
printf 'import "npm:webgpu@0.6.2";\nimport "npm:gpt-tokenizer@4.0.0/encoding/r50k_base";\n' \
  >"$tmp/deps_entry.ts"
DENO_DIR="$tmp/deno_dir" DENO_NO_UPDATE_CHECK=1 "$deno" cache --quiet --no-config \
  "$tmp/deps_entry.ts" >&2 || true
npm="$tmp/deno_dir/npm/registry.npmjs.org"
[ -f "$npm/webgpu/0.6.2/dist/linux-x64/dawn.node" ] ||
  { say "Dawn's linux-x64/dawn.node is missing from the DENO_DIR"; exit 1; }
# Only Dawn for linux-x64 travels (the other four builds are ~67 MB).
for d in "$npm"/webgpu/*/dist/*; do
  [ "$(basename "$d")" = linux-x64 ] || rm -rf "$d"
done
# gpt-tokenizer ships CommonJS and ES builds of the same data: Deno imports the ES one.
rm -rf "$npm"/gpt-tokenizer/*/cjs
say "compressing the DENO_DIR ($(du -sh "$tmp/deno_dir" | cut -f1))"
tar -C "$tmp" -cf - deno_dir | xz -T2 "$level" >"$out/deno_dir.tar.xz"

# 3. Debian's Vulkan loader and GL dispatch libraries (the GPU machine may have none).
debs=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
if [ "$(ls "$out"/debs/*.deb 2>/dev/null | wc -l)" -lt "${#debs[@]}" ]; then
  mkdir -p "$out/debs"
  if command -v apt-get >/dev/null 2>&1; then
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64)
    if ! (cd "$out/debs" && apt-get "${o[@]}" download "${debs[@]}" >&2 2>/dev/null); then
      say "apt-get download failed; updating package lists into $tmp/lists and retrying"
      mkdir -p "$tmp/lists/partial"
      o+=("-oDir::State::Lists=$tmp/lists")
      apt-get "${o[@]}" update -qq >&2 &&
        (cd "$out/debs" && apt-get "${o[@]}" download "${debs[@]}" >&2) ||
        say "could not download the Vulkan loader .debs: the check will use the machine's own loader"
    fi
  else
    say "no apt-get: the check will use the machine's own Vulkan loader"
  fi
fi

# 4. The manifest, and the size limit.
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "deno $want (xz $level); webgpu 0.6.2 linux-x64 dawn.node; gpt-tokenizer 4.0.0"
  (cd "$out" && find . -type f ! -name MANIFEST.txt ! -name '*.stamp' | sort |
    while read -r f; do echo "$(sha256sum "$f" | cut -c1-16) $(stat -c %s "$f") ${f#./}"; done)
} >"$out/MANIFEST.txt"
bytes="$(du -sb "$out" | cut -f1)"
mib=$(((bytes + 1048575) / 1048576))
say "$out: $mib MiB ($bytes bytes)"
cat "$out/MANIFEST.txt" >&2
if [ "$mib" -gt "$limit_mib" ]; then
  say "the bundle is over $limit_mib MiB"
  exit 1
fi
