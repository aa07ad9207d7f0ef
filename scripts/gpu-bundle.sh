#!/usr/bin/env bash
# Builds the GPU bundle on this machine (no GPU, no driver, no CUDA toolkit needed): one folder,
# at most 56 MiB, that checks otkd on a bare CUDA machine without cargo (docs/CUDA.md).
#
#   scripts/gpu-bundle.sh [BUNDLE_DIR]      (default gpu-bundle/, git-ignored)
#
#  1. a CUDA 13.0 build environment from pinned PyPI wheels (scripts/cuda-build-env.sh: nvcc,
#     the CUDA 13 libraries to link against, a libcuda link stub; CUDA_COMPUTE_CAP=90,
#     CUDARC_CUDA_VERSION=13000);
#  2. `--features cuda` release builds: the `otkd` binary, the kernels' CUDA tests (cuda_parity,
#     sinkhorn, nvrtc: `cargo test --no-run`) and benchmark (gpu: `cargo bench --no-run`);
#  3. the data slice `otkd train` needs without the teacher model (scripts/gpu/data_slice.py):
#     2000 en-ay training pairs, dev and test, the teacher cache of their English side computed
#     here with the real teacher, and a stand-in teacher directory;
#  4. the folder: bin.tar.xz (the executables), data/, peers/ (the PyTorch peers), summary.py,
#     run.sh, MANIFEST;
#  5. the checks: every executable's libraries (NEEDED sonames, no RPATH/RUNPATH, ldd), the
#     folder's size, the data slice trains through the bundled otkd here (CPU, stand-in teacher,
#     every cache entry a hit), and run.sh here stops at once with a named error (no GPU).
#
# Environment:
#   CARGO_TARGET_DIR       default target-cuda/ (git-ignored; kept, so reruns are incremental)
#   OTKD_CUDA_BUILD_VENV   the wheels' venv (default .venv-cuda-build/, git-ignored); point it at
#                          an existing one to skip the ~1.2 GB download in a fresh clone
#   OTKD_DATA, OTKD_TEACHER  Multi30k and the teacher (defaults ../shared/...)
#   OTKD_PEERS             the folder of torch_student.py (default ../shared/peers)
# Time: a cold build is dominated by candle-kernels (nvcc on every candle kernel) and candle's
# CUDA backend; see docs/CUDA.md for measured times. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

bundle="$(realpath -m "${1:-gpu-bundle}")"
export CARGO_TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-target-cuda}")"
data_src="${OTKD_DATA:-../shared/data/multi30k}"
teacher_src="${OTKD_TEACHER:-../shared/models/all-MiniLM-L6-v2}"
peers_src="${OTKD_PEERS:-../shared/peers}"
limit_mib=56
lang=ay
pairs=2000
for path in "$data_src/task1" "$teacher_src/model.safetensors" "$peers_src/torch_student.py"; do
    [ -e "$path" ] || { echo "gpu-bundle: $path not found (set OTKD_DATA / OTKD_TEACHER / OTKD_PEERS)" >&2; exit 2; }
done
t_start=$(date +%s)

# --- 1. build environment ----------------------------------------------------------------------
# shellcheck source=scripts/cuda-build-env.sh
source scripts/cuda-build-env.sh
cuda_build_env_setup

# --- 2. builds ---------------------------------------------------------------------------------
# Executable paths from cargo's JSON messages (compiler artifacts with an executable).
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
build() {
    local log="$CARGO_TARGET_DIR/gpu-bundle-build.log"
    echo "-- cargo $* (log: $log)" >&2
    nice -n 5 cargo "$@" --message-format=json-render-diagnostics 2>>"$log" | executables
}
# Both packages in every call, so that features unify to one set (otkd-host turns on gemm's
# x86-v4 kernels): the tests and the bench then reuse the candle build of `otkd` instead of
# compiling candle a second time.
packages=(-p otkd-host -p otkd-kernels --features otkd-host/cuda,otkd-kernels/cuda)
mkdir -p "$CARGO_TARGET_DIR"
: >"$CARGO_TARGET_DIR/gpu-bundle-build.log"
t_build=$(date +%s)
artifacts="$(
    build build --release "${packages[@]}" --bin otkd &&
        build test --release "${packages[@]}" --no-run --test cuda_parity --test sinkhorn --test nvrtc &&
        build bench "${packages[@]}" --no-run --bench gpu
)" || { tail -30 "$CARGO_TARGET_DIR/gpu-bundle-build.log" >&2; echo "gpu-bundle: build failed" >&2; exit 1; }
t_build=$(( $(date +%s) - t_build ))
echo "-- builds: ${t_build} s"
exe() { awk -v n="$1" '$1 == n { print $2 }' <<<"$artifacts" | tail -1; }

# Running the CUDA build here: the libcuda stub as libcuda.so.1 (every driver call fails with
# CUDA_ERROR_UNKNOWN, so `--device cpu` works and `--device cuda` is a named error) and the
# wheels' libraries. Only for the checks below; the bundle carries neither.
stub_run="$CARGO_TARGET_DIR/stub-runtime"
mkdir -p "$stub_run"
ln -sfn "$cu13/lib/stubs/libcuda.so" "$stub_run/libcuda.so.1"
run_here() { LD_LIBRARY_PATH="$stub_run:$cu13/lib" "$@"; }

# --- 3. data slice -----------------------------------------------------------------------------
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/data" "$bundle/peers"
python3 scripts/gpu/data_slice.py slice "$data_src" "$teacher_src" "$lang" "$pairs" "$bundle/data"
echo "-- teacher cache of the slice's English captions (the real teacher, on this CPU)"
t_cache=$(date +%s)
run_here "$(exe otkd)" train --data "$bundle/data/multi30k" --teacher "$teacher_src" --cache "$work/cache" \
    --method kd --lang "$lang" --pairs "$pairs" --steps 1 --eval-every 1 --device cpu --out "$work/run-real" \
    >"$work/real.log" 2>&1 || { cat "$work/real.log" >&2; exit 1; }
python3 scripts/gpu/data_slice.py rekey "$work/cache" "$bundle/data/teacher" "$bundle/data/cache" "$bundle/data/multi30k"
echo "-- teacher cache: $(( $(date +%s) - t_cache )) s"

# --- 4. the folder -----------------------------------------------------------------------------
for name in otkd cuda_parity sinkhorn nvrtc; do
    cp "$(exe "$name")" "$bundle/bin/$name"
done
cp "$(exe gpu)" "$bundle/bin/gpu_bench"
# Debug line tables out (file names and symbols stay, so backtraces still name functions).
strip --strip-debug "$bundle/bin"/*
cp "$peers_src/torch_student.py" scripts/gpu/torch_student_gpu.py scripts/gpu/torch_kernels.py "$bundle/peers/"
cp scripts/gpu/run.sh scripts/gpu/summary.py "$bundle/"
chmod +x "$bundle/run.sh"

# --- 5. checks ---------------------------------------------------------------------------------
echo "-- check: libraries of each executable"
allowed='^(libcuda\.so\.1|libcublas\.so\.13|libcublasLt\.so\.13|libcurand\.so\.10|libnvrtc\.so\.13|libcudart\.so\.13|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|ld-linux-x86-64\.so\.2)$'
ldd_report="$bundle/MANIFEST.ldd"
: >"$ldd_report"
bad=0
for f in "$bundle/bin"/*; do
    needed="$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
    paths="$(readelf -d "$f" | grep -E '\((RPATH|RUNPATH)\)' || true)"
    outside="$(grep -Ev "$allowed" <<<"$needed" || true)"
    # ldd with this machine's own library path only: the CUDA libraries are "not found" here (no
    # toolkit, no driver); nothing may resolve into the venv or the build tree.
    resolved="$(env -u LD_LIBRARY_PATH ldd "$f" 2>&1)"
    leaked="$(grep -E "$repo|\.venv|site-packages|target-cuda" <<<"$resolved" || true)"
    glibc="$(objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)"
    glibcxx="$(objdump -T "$f" | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1 || true)"
    {
        echo "== $(basename "$f"): NEEDED $(echo $needed); newest symbol versions: $glibc ${glibcxx:-(no libstdc++ symbols)}"
        echo "$resolved"
    } >>"$ldd_report"
    printf '   %-12s %s\n' "$(basename "$f")" "$(echo $needed)"
    if [ -n "$outside" ] || [ -n "$paths" ] || [ -n "$leaked" ]; then
        echo "   $(basename "$f"): not allowed: ${outside:+NEEDED $outside }${paths:+$paths }${leaked:+resolves to $leaked}" >&2
        bad=1
    fi
done
echo "   newest glibc symbol version needed: $(grep -o 'GLIBC_[0-9.]*' "$ldd_report" | sort -uV | tail -1);" \
    "libstdc++: $(grep -o 'GLIBCXX_[0-9.]*' "$ldd_report" | sort -uV | tail -1)"
[ "$bad" -eq 0 ] || { echo "gpu-bundle: an executable names a library a CUDA 13 machine does not have" >&2; exit 1; }

echo "-- check: the slice trains through the bundled otkd without the teacher model (CPU, 2 steps each)"
for method in kd ot; do
    run_here "$bundle/bin/otkd" train --data "$bundle/data/multi30k" --teacher "$bundle/data/teacher" \
        --cache "$bundle/data/cache" --method "$method" --lang "$lang" --pairs "$pairs" --steps 2 --eval-every 1 \
        --device cpu --json --out "$work/run-$method" >"$work/slice-$method.log" 2>&1 ||
        { cat "$work/slice-$method.log" >&2; echo "gpu-bundle: the data slice does not train" >&2; exit 1; }
    echo "   $method: $(grep -m1 '"pairs_per_second"' "$work/slice-$method.log" | tr -d ' ,')"
done
# The cache must still hold exactly the three entries (a miss would have tried the stand-in).
[ "$(ls "$bundle/data/cache" | wc -l)" -eq 3 ] || { echo "gpu-bundle: the cache changed during the check" >&2; exit 1; }
echo "-- check: --device cuda without a GPU is a named error"
if run_here "$bundle/bin/otkd" train --data "$bundle/data/multi30k" --teacher "$bundle/data/teacher" \
    --cache "$bundle/data/cache" --method kd --lang "$lang" --pairs "$pairs" --steps 1 --device cuda \
    --out "$work/run-cuda" >"$work/cuda.log" 2>&1; then
    echo "gpu-bundle: otkd --device cuda succeeded without a GPU?" >&2; exit 1
fi
echo "   $(head -1 "$work/cuda.log")"

# The executables go into one xz archive: they share candle's PTX and most code, which a
# dictionary larger than one executable stores once.
tar -C "$bundle" -cf - bin | xz -9 -T1 --lzma2=preset=9,dict=192MiB >"$bundle/bin.tar.xz"
rm -rf "$bundle/bin"

{
    echo "otkd GPU bundle, built $(date -u +%Y-%m-%dT%H:%MZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "run: gpu-bundle/run.sh OUTDIR (docs/CUDA.md)"
    echo "build: CUDA 13.0 wheels ${cuda_build_wheels[*]}; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION; rustc $(rustc --version | cut -d' ' -f2)"
    echo "data: Multi30k en-$lang, train first $pairs lines, val and test_2016_flickr whole; teacher cache of $(basename "$teacher_src") (stand-in teacher dir)"
    echo
    (cd "$bundle" && find . -type f ! -name MANIFEST | sort | xargs ls -l | awk '{ printf "%10d  %s\n", $5, $9 }')
} >"$bundle/MANIFEST"

echo "-- check: run.sh on this machine (no GPU) stops with a named error"
set +e
run_out="$(PATH="/usr/bin:/bin" bash "$bundle/run.sh" "$work/run-here" 2>&1)"
run_rc=$?
set -e
echo "   exit $run_rc: $run_out"
[ "$run_rc" -eq 3 ] || { echo "gpu-bundle: run.sh should stop with exit 3 here" >&2; exit 1; }

size=$(du -sb "$bundle" | cut -f1)
echo "-- check: size $size bytes ($(( size / 1024 / 1024 )) MiB; limit $limit_mib MiB)"
du -b "$bundle"/bin.tar.xz "$bundle"/data "$bundle"/peers | sed 's/^/   /'
[ "$size" -le $((limit_mib * 1024 * 1024)) ] || { echo "gpu-bundle: $bundle is over $limit_mib MiB" >&2; exit 1; }
echo "gpu-bundle: $bundle ready ($(( $(date +%s) - t_start )) s); on the GPU machine: $(basename "$bundle")/run.sh OUTDIR"
