#!/usr/bin/env bash
# The otkd GPU check, for a bare CUDA machine without cargo (H100/H200 = sm_90, NVIDIA driver
# 580, CUDA 13 libraries, python3 with a CUDA build of PyTorch). Copied into the bundle by
# scripts/gpu-bundle.sh, which built everything it runs; docs/CUDA.md explains each part.
#
#   gpu-bundle/run.sh OUTDIR        one command; about 3-5 minutes; at most ~7.5 (a deadline caps
#                                   every stage); writes OUTDIR/summary.md and one log per stage
#
#  0. preflight: a GPU (nvidia-smi), the executables' libraries (ldd); a named error otherwise
#  1. kernel parity and contract tests on the GPU, OTKD_REQUIRE_CUDA=1 (they fail, not skip, when
#     no device opens), and the NVRTC compile test (OTKD_REQUIRE_NVRTC=1)
#  2. kernel benchmarks: Sinkhorn 256x64x64 and 64x256x256 (100 iterations) and the KD losses,
#     µs and launches per solve, fused vs composed candle ops vs PyTorch on this GPU
#  3. `otkd train` KD and OT, 200 steps each, on the GPU and on this machine's CPU (the same
#     binary), and the PyTorch peer student on the GPU: pairs/s and dev R@1
#  4. OUTDIR/summary.md: the table, pass/fail per line
# Exit status: 0 when every line passed, 1 when one failed, 3 when the preflight stopped it.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1" || exit 2
out="$(cd "$1" && pwd)"
start=$(date +%s)
deadline=$((start + ${OTKD_GPU_BUDGET_S:-450}))

stop() {
    printf '# otkd GPU check: stopped\n\n%s\n' "run.sh: $*" >"$out/summary.md"
    echo "run.sh: $*" >&2
    exit 3
}

# --- 0. preflight -------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 ||
    stop "no GPU: nvidia-smi is not on PATH (this bundle runs on a CUDA machine: H100/H200, driver 580, CUDA 13)"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>&1 ||
    stop "no GPU: nvidia-smi failed: $(head -c 300 "$out/gpu.txt")"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
echo "GPU: $(head -1 "$out/gpu.txt")"

# The CUDA 13 libraries the executables name (libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libnvrtc.so.13, libcudart.so.13): the toolkit's, else the ones PyTorch's wheels bring.
lib_dirs=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64)
if command -v python3 >/dev/null 2>&1; then
    while IFS= read -r d; do lib_dirs+=("$d"); done < <(python3 - 2>/dev/null <<'PY'
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
            print(d)
except ImportError:
    pass
PY
)
fi
for d in "${lib_dirs[@]}"; do
    [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH

bin="$here/bin"
if [ -f "$here/bin.tar.xz" ]; then
    unpacked="$(mktemp -d "${TMPDIR:-/tmp}/otkd-gpu-bin.XXXXXX")"
    trap 'rm -rf "$unpacked"' EXIT
    # tar needs the xz program; python3's lzma module is the fallback.
    tar -xJf "$here/bin.tar.xz" -C "$unpacked" 2>/dev/null ||
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
            "$here/bin.tar.xz" "$unpacked" ||
        stop "could not unpack $here/bin.tar.xz (neither tar -J nor python3's tarfile)"
    bin="$unpacked/bin"
fi
for exe in otkd cuda_parity sinkhorn nvrtc gpu_bench; do
    [ -x "$bin/$exe" ] || stop "bundle incomplete: no executable $exe"
    missing="$(ldd "$bin/$exe" 2>&1 | grep -E 'not found|version .* not found' || true)"
    [ -z "$missing" ] || stop "missing libraries for $exe (LD_LIBRARY_PATH=$LD_LIBRARY_PATH): $(echo $missing)"
done
ldd "$bin/otkd" >"$out/ldd-otkd.txt" 2>&1

remaining() {
    local left=$((deadline - $(date +%s)))
    [ "$left" -gt "$1" ] && left="$1"
    [ "$left" -lt 5 ] && left=5
    echo "$left"
}

# Runs a stage: NAME LIMIT_S COMMAND...; its output goes to $out/NAME.log, its status to
# $out/NAME.status ("124" = stopped by its time limit).
stage() {
    local name="$1" limit
    limit="$(remaining "$2")"
    shift 2
    local t0=$(date +%s)
    echo "== $name (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$rc $(( $(date +%s) - t0 ))" >"$out/$name.status"
    echo "   exit $rc, $(( $(date +%s) - t0 )) s"
}

cd "$out" || exit 2

# --- 1. tests --------------------------------------------------------------------------------------
export OTKD_REQUIRE_CUDA=1 OTKD_REQUIRE_NVRTC=1
stage test-parity 90 "$bin/cuda_parity" --nocapture --test-threads 1
stage test-sinkhorn 90 "$bin/sinkhorn" --nocapture --test-threads 1
stage test-nvrtc 60 "$bin/nvrtc" --nocapture

# --- 2. kernel benchmarks ----------------------------------------------------------------------
stage bench-otkd 90 env OTKD_BENCH_JSON="$out/bench.jsonl" "$bin/gpu_bench"
stage bench-torch 90 python3 "$here/peers/torch_kernels.py" --json "$out/bench-torch.jsonl"

# --- 3. training -------------------------------------------------------------------------------
data="$here/data"
common=(--data "$data/multi30k" --teacher "$data/teacher" --cache "$data/cache")
train_args=(--lang ay --pairs 2000 --steps 200 --eval-every 100 --json)
for method in kd ot; do
    stage "train-gpu-$method" 100 "$bin/otkd" train "${common[@]}" "${train_args[@]}" --method "$method" \
        --device cuda --out "$out/run-gpu-$method"
done
stage torch-student 100 python3 "$here/peers/torch_student_gpu.py"
for method in kd ot; do
    stage "train-cpu-$method" 120 "$bin/otkd" train "${common[@]}" "${train_args[@]}" --method "$method" \
        --device cpu --out "$out/run-cpu-$method"
done

# --- 4. summary --------------------------------------------------------------------------------
python3 "$here/summary.py" "$out" "$(( $(date +%s) - start ))" >"$out/summary.md" 2>"$out/summary.err"
summary_rc=$?
cat "$out/summary.md"
[ -s "$out/summary.err" ] && cat "$out/summary.err" >&2
exit "$summary_rc"
