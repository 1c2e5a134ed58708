#!/usr/bin/env bash
# The one-command check on a GPU machine with no network, no Node and no Deno (issue #16). Run from
# the repository root with the bundle of scripts/gpu_bundle.sh in .gpu/:
#
#     OUT=/some/dir bash scripts/gpu_check.sh [--smoke]
#
# It unpacks Deno, its npm packages and (where the machine has none) the Vulkan loader into a
# scratch folder, points the loader at the NVIDIA driver when there is one, then runs each step
# under its own time limit; a step that fails or times out is recorded and the rest go on:
#   system        nvidia-smi, CPUs, python3/torch versions
#   probe, info   the adapters (deno task info), limits, features; Dawn's shader-f16 with and
#                 without the toggle vulkan_enable_f16_on_nvidia
#   matmul-*      fp32 matmul GFLOP/s at 1024³, 4096³, 8192³: both WGSL variants (shared-memory
#                 tiled "gpu" and the CPU-adapter "software" one) beside PyTorch's fp32 matmul
#   train-*       GPT training steps (reference config, GPT-2 small, GPT-2 medium): ms/step,
#                 tokens/s, MFU vs the fp32 peak, beside an eager fp32 PyTorch GPT of the same shape
#   tests-*       the kernel, gradient and TP-equivalence test files on each backend, and on Dawn
#                 again with the other kernel variant family forced (WEBGPU_KERNEL_VARIANTS)
#   train-cli     `deno task train` on the vendored Moby Dick (default config): losses, tokens/s
#   tp2           TP=2 on two devices of the one adapter vs TP=1: the host round trips' cost
#   scaling       the weak-scaling ladder 1/2/4/8 ranks, one pinned process per rank, one lavapipe
#                 thread each where the machine has lavapipe (else the ranks share the GPU)
# Everything goes to $OUT: gpu_check.json, gpu_check.md and gpu_check.log (all step logs).
# --smoke (or GPU_CHECK_SMOKE=1) shrinks every step to seconds, for software adapters and CI.
# Environment: OUT (default ./gpu_check_out), GPU_CHECK_BUDGET_S (whole run, default 450; smoke
# 480), GPU_CHECK_BUNDLE (default .gpu), GPU_CHECK_WORK (scratch, default a fresh mktemp -d),
# GPU_CHECK_TESTS (test files), GPU_CHECK_STEPS (which steps, comma-separated; default all),
# GPU_CHECK_BUNDLED_LOADER=1 (use the bundled Vulkan loader even where the machine has one).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
smoke="${GPU_CHECK_SMOKE:-0}"
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
    *) echo "gpu_check: unknown argument $a (--smoke, --help)" >&2 && exit 2 ;;
  esac
done
OUT="${OUT:-$root/gpu_check_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
bundle="${GPU_CHECK_BUNDLE:-$root/.gpu}"
budget="${GPU_CHECK_BUDGET_S:-$([ "$smoke" = 1 ] && echo 480 || echo 450)}"
W="${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$W/bin" "$W/logs" "$W/res"
log="$OUT/gpu_check.log"
: >"$log"
: >"$W/steps.tsv"
start=$(date +%s)
say() { echo "gpu_check: $*" | tee -a "$log" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
only="${GPU_CHECK_STEPS:-}"
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# step NAME LIMIT_S COMMAND...: runs COMMAND under min(LIMIT_S, time left), logs to
# $W/logs/NAME.log, records "name status rc seconds limit" in $W/steps.tsv.
step() {
  local name="$1" limit="$2"
  shift 2
  wanted "$name" || return 0
  local left=$((budget - ($(date +%s) - start) - 15))
  if [ "$left" -lt 5 ]; then
    printf '%s\tskipped\t\t0\t%s\tno time left in the %ss budget\n' "$name" "$limit" "$budget" \
      >>"$W/steps.tsv"
    say "$name: skipped (no time left)"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name: running (limit ${limit}s)"
  local t0 rc status
  t0=$(date +%s.%N)
  if have timeout; then
    # bash -c: COMMAND may be one of this script's functions (exported below).
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" >"$W/logs/$name.log" 2>&1 </dev/null
  else
    bash -c '"$@"' _ "$@" >"$W/logs/$name.log" 2>&1 </dev/null
  fi
  rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  case "$rc" in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t\n' "$name" "$status" "$rc" "$secs" "$limit" >>"$W/steps.tsv"
  {
    echo "===== $name: $status (exit $rc, ${secs}s of ${limit}s) ====="
    # Dawn's adapter warnings repeat on every start; keep the log readable.
    grep -v -E 'artificially reduced|shaderUniform\*ArrayDynamicIndexing|While initializing adapter|PhysicalDeviceVk.cpp|^$' \
      "$W/logs/$name.log" | tail -n 300
  } >>"$log"
  say "$name: $status (exit $rc, ${secs}s)"
}
note() { printf '%s\tnote\t\t0\t0\t%s\n' "$1" "$2" >>"$W/steps.tsv"; say "$1: $2"; }

# ---- 1. Unpack: Deno, its npm packages, the Vulkan loader -------------------------------------
unxz_to() { # unxz_to FILE: decompress an .xz file to stdout with xz, else python3's lzma
  if have xz; then
    xz -dc "$1"
  elif have python3; then
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer, 1 << 20)' "$1"
  else
    echo "gpu_check: neither xz nor python3 to unpack $1" >&2
    return 1
  fi
}
t0=$(date +%s)
deno="$W/bin/deno"
if [ -x "$deno" ]; then
  :
elif [ -f "$bundle/deno.xz" ]; then
  unxz_to "$bundle/deno.xz" >"$deno.tmp" && chmod +x "$deno.tmp" && mv "$deno.tmp" "$deno" ||
    note unpack "could not unpack $bundle/deno.xz"
elif have deno; then
  deno="$(command -v deno)"
  note unpack "no $bundle/deno.xz: using the machine's deno ($deno)"
fi
if [ ! -d "$W/deno_dir" ] && [ -f "$bundle/deno_dir.tar.xz" ]; then
  unxz_to "$bundle/deno_dir.tar.xz" | tar -C "$W" -xf - || note unpack "could not unpack the DENO_DIR"
fi
export DENO_DIR="$W/deno_dir" DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1 NO_COLOR=1
export PATH="$W/bin:$PATH"
export XDG_RUNTIME_DIR="$W/xdg"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
loader_note="the machine's own Vulkan loader"
missing_libs() { # the loader libraries the machine lacks (ldconfig's cache)
  local l
  for l in libvulkan.so.1 libGLdispatch.so.0 libEGL.so.1; do
    ldconfig -p 2>/dev/null | grep -qF "$l " || echo "$l"
  done
}
if { [ "${GPU_CHECK_BUNDLED_LOADER:-0}" = 1 ] || [ -n "$(missing_libs)" ]; } &&
  ls "$bundle"/debs/*.deb >/dev/null 2>&1; then
  # Unpacked beside the check, not into / (other packages' files there could break the machine).
  for f in "$bundle"/debs/*.deb; do
    if have dpkg; then
      dpkg -x "$f" "$W/sysroot"
    else
      mkdir -p "$W/sysroot" && ar p "$f" data.tar.xz | unxz_to /dev/stdin | tar -C "$W/sysroot" -xf -
    fi
  done
  export LD_LIBRARY_PATH="$W/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  loader_note="the bundled Debian Vulkan loader ($(ls "$bundle"/debs | grep -o '^libvulkan1_[^_]*' || true))"
fi
# The NVIDIA driver's Vulkan ICD and EGL vendor file (where the GPU machine mounts them).
nv=/usr/local/nvidia
gpu=0
if [ -f "$nv/share/vulkan/icd.d/nvidia_icd.json" ]; then
  gpu=1
  export VK_DRIVER_FILES="$nv/share/vulkan/icd.d/nvidia_icd.json"
  export VK_ICD_FILENAMES="$VK_DRIVER_FILES" # loaders older than 1.3.207 read this name
  [ -f "$nv/share/glvnd/egl_vendor.d/10_nvidia.json" ] &&
    export __EGL_VENDOR_LIBRARY_FILENAMES="$nv/share/glvnd/egl_vendor.d/10_nvidia.json"
  for d in "$nv/lib64" "$nv/lib"; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
  done
  # Dawn's default picks Mesa's GL when /dev/dri has no render node, as in a VM: ask for Vulkan.
  export WEBGPU_DAWN_BACKEND=vulkan
elif [ -n "${VK_DRIVER_FILES:-}" ]; then
  gpu=1
fi
cat >"$W/env.txt" <<EOF
smoke=$smoke
gpu=$gpu
loader=$loader_note
VK_DRIVER_FILES=${VK_DRIVER_FILES:-}
WEBGPU_DAWN_BACKEND=${WEBGPU_DAWN_BACKEND:-}
unpack_s=$(($(date +%s) - t0))
budget_s=$budget
commit=$(git rev-parse --short HEAD 2>/dev/null || cat "$bundle/MANIFEST.txt" 2>/dev/null | head -n1)
EOF
say "unpacked in $(($(date +%s) - t0))s; Vulkan: $loader_note; NVIDIA ICD: $([ "$gpu" = 1 ] && echo "${VK_DRIVER_FILES:-}" || echo none)"
if ! "$deno" --version >/dev/null 2>&1; then
  note deno "no runnable Deno: the Deno steps will fail"
fi

# ---- 2. The steps ------------------------------------------------------------------------------
S=()
[ "$smoke" = 1 ] && S=(--smoke)
bench() { "$deno" run -A scripts/gpu_bench.ts "$@"; }
peer() {
  if have python3; then
    python3 scripts/gpu_torch_peer.py "$@"
  else
    echo '{"skipped": "no python3 here"}'
  fi
}
system_info() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uname: $(uname -srm)"
  echo "cpus: $(nproc 2>/dev/null)"
  have nvidia-smi && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv,noheader 2>&1 || echo "nvidia-smi: absent"
  have python3 && python3 -c 'import sys; print("python", sys.version.split()[0])
try:
    import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except Exception as e: print("torch: absent", e)' 2>&1 || echo "python3: absent"
  echo "deno: $("$deno" --version 2>&1 | head -n1)"
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d "$nv/share/vulkan/icd.d" 2>/dev/null
  cat "$W/env.txt"
}
if [ "$smoke" = 1 ]; then
  sizes=64,128
  tests="${GPU_CHECK_TESTS:-tests/ops_forward_test.ts}"
  torch_dev=(--device cpu)
else
  sizes=1024,4096,8192
  tests="${GPU_CHECK_TESTS:-tests/kernels_matmul_test.ts tests/ops_forward_test.ts tests/grad_test.ts tests/model_grad_test.ts tests/tp_blocks_test.ts tests/tp_gpt_test.ts}"
  torch_dev=()
fi
# shellcheck disable=SC2086 # $tests is a list of paths
# All files at once (16 cores there), each bounded by the watchdog below the step's own limit, so
# that a stuck file is reported with the others' results instead of the step timing out silently
# (scripts/test.sh prints the files' output when all are done).
run_tests() { # run_tests BACKEND [software|gpu]: the test files, with the variant family forced
  WEBGPU_BACKEND="$1" WEBGPU_KERNEL_VARIANTS="${2:-}" TEST_JOBS="${GPU_CHECK_TEST_JOBS:-6}" \
    TEST_FILE_TIME_LIMIT_S="${GPU_CHECK_TEST_FILE_LIMIT_S:-70}" TEST_KILL_GRACE_S=5 \
    bash scripts/test.sh $tests
}
# The kernel variant family the adapter does not pick by itself (tested by forcing it).
other_variant=$([ "$gpu" = 1 ] && echo software || echo gpu)
export deno W nv tests
export -f have bench peer system_info run_tests

step system 30 system_info
step probe 60 bench probe --out "$W/res/probe.json"
step info 60 "$deno" task info
step matmul-torch 60 peer matmul --sizes "$sizes" --out "$W/res/matmul-torch.json" "${torch_dev[@]}"
step matmul-dawn 90 bench matmul --backend dawn --sizes "$sizes" --out "$W/res/matmul-dawn.json"
step train-torch 90 peer train "${S[@]}" --out "$W/res/train-torch.json" "${torch_dev[@]}"
step train-dawn 150 bench train --backend dawn "${S[@]}" --out "$W/res/train-dawn.json"
# Where Dawn could not train, Deno's WebGPU (wgpu) takes its place in the report.
if ! grep -q $'^train-dawn\tok' "$W/steps.tsv" && wanted train-dawn; then
  step train-deno 120 bench train --backend deno "${S[@]}" --out "$W/res/train-deno.json"
fi
step tests-dawn 120 run_tests dawn
step tp2 60 bench tp2 --backend deno "${S[@]}" --steps "$([ "$smoke" = 1 ] && echo 1 || echo 4)" \
  --out "$W/res/tp2.json"
# The command line end to end on the vendored corpus (Moby Dick, byte-level, the default config).
# --smoke: no matmul autotuning (on a slow CPU with Mesa's shader cache cold, compiling the
# candidates alone outlasts the step's limit; the GPU run tunes, as users' runs do).
step train-cli 90 "$deno" task train --train-iters "$([ "$smoke" = 1 ] && echo 3 || echo 300)" \
  --eval-iters 2 --sample-tokens 0 --log-json "$W/res/train-cli.jsonl" \
  $([ "$smoke" = 1 ] && echo --no-matmul-autotune)
# The ladder: one lavapipe thread per rank where the machine has lavapipe, else the GPU.
lvp="$(ls /usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null | head -n1)"
ranks=8
cores="$(nproc 2>/dev/null || echo 1)"
[ "$smoke" = 1 ] && ranks=2
[ "$cores" -lt "$ranks" ] && ranks="$cores"
[ "$ranks" -lt 1 ] && ranks=1
if [ -n "$lvp" ]; then
  scaling_on="lavapipe ($lvp), one thread per rank (LP_NUM_THREADS=1), one pinned process per rank"
  scaling_env=(env VK_DRIVER_FILES="$lvp" VK_ICD_FILENAMES="$lvp" LP_NUM_THREADS=1)
else
  scaling_on="no lavapipe on this machine: the ranks are pinned processes sharing the GPU"
  scaling_env=(env)
fi
note scaling-adapter "$scaling_on; up to $ranks ranks"
# --smoke on a slow CPU: the ranks tune their matmuls after the first step (minutes on a Zen 1 core)
step scaling "$([ "$smoke" = 1 ] && echo 300 || echo 120)" "${scaling_env[@]}" "$deno" run -A scripts/gpu_bench.ts scaling --backend deno \
  --max-ranks "$ranks" --placement procs "${S[@]}" \
  $([ "$smoke" = 1 ] && echo "--ladder small --steps 1 --warmup 1" || echo "--steps 3 --warmup 2") \
  --out "$W/res/scaling.json"
step "tests-dawn-$other_variant" 90 run_tests dawn "$other_variant"
step matmul-deno 60 bench matmul --backend deno --sizes "$sizes" --out "$W/res/matmul-deno.json"
step tests-deno 90 run_tests deno

# ---- 3. The report -----------------------------------------------------------------------------
elapsed=$(($(date +%s) - start))
echo "total_s=$elapsed" >>"$W/env.txt"
if have python3; then
  python3 scripts/gpu_report.py "$W" "$OUT" 2>&1 | tee -a "$log"
else
  # No python3: the raw step table and results, as JSON lines.
  { cat "$W/steps.tsv"; cat "$W"/res/*.json 2>/dev/null; } >"$OUT/gpu_check.json"
  cp "$W/steps.tsv" "$OUT/gpu_check.md"
fi
say "done in ${elapsed}s: $OUT/gpu_check.json, $OUT/gpu_check.md, $OUT/gpu_check.log"
[ -z "${GPU_CHECK_WORK:-}" ] && [ "${GPU_CHECK_KEEP:-0}" != 1 ] && rm -rf "$W"
exit 0
