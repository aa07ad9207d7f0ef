#!/usr/bin/env bash
# The GPU check, for a bare CUDA machine (H100/H200, CUDA 13 toolkit with nvcc, driver 580):
#  1. builds otkd-kernels with `--features cuda` (candle's CUDA backend + the custom ops' CUDA
#     kernels, compiled at run time by the toolkit's NVRTC);
#  2. runs the parity tests (kernels/tests/cuda_parity.rs: fresh random inputs, NaN-poisoned
#     outputs, relative error <= 1e-5 against the CPU reference, marginals) and the Sinkhorn
#     contract tests on the CUDA device (kernels/tests/sinkhorn.rs, its `_cuda` arms);
#  3. runs the kernel benchmarks (kernels/benches/gpu.rs: Sinkhorn 256 x 64 x 64 and
#     64 x 256 x 256, 100 iterations, and the KD losses, fused vs composed candle ops, with the
#     measured copy bandwidth);
#  4. builds otkd with `--features cuda` and trains 200 steps per method on the GPU
#     (`otkd train --device cuda`; data and teacher from OTKD_DATA / OTKD_TEACHER or the defaults);
#  5. prints one table. Logs go to $OUT (the device tool's folder) or a temporary folder.
# Needs cargo/rustc and the crates (the machine has no registry access: vendor them or carry
# CARGO_HOME). One release build of candle with CUDA (its kernels through nvcc) dominates the
# time; the tests and benchmarks take well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

logs="${OUT:-$(mktemp -d)}"
command -v cargo >/dev/null || { echo "gpu-check: no cargo on PATH (this check builds Rust code)" >&2; exit 3; }
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || { echo "gpu-check: no nvcc (candle's CUDA backend builds its kernels with it)" >&2; exit 3; }
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
# candle-kernels asks nvidia-smi for the architecture unless this is set; cudarc asks nvcc for
# the CUDA version unless CUDARC_CUDA_VERSION is set (both work here; set for repeatability).
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

echo "== build (release, --features cuda)"
start=$(date +%s)
cargo build --release -p otkd-kernels --features cuda --tests --benches 2>&1 | tail -3
echo "build: $(( $(date +%s) - start )) s"

echo "== parity and contract tests on the GPU"
set -o pipefail
cargo test --release -q -p otkd-kernels --features cuda --test cuda_parity --test sinkhorn -- --nocapture \
    2>&1 | tee "$logs/parity.log"

echo "== kernel benchmarks"
cargo bench -q -p otkd-kernels --features cuda --bench gpu 2>&1 | tee "$logs/bench.log"

echo "== training on the GPU (otkd train --device cuda: the graph step, the CUDA kernels)"
cargo build --release -p otkd-host --features cuda 2>&1 | tail -1
for method in kd ot; do
    (target/release/otkd train --device cuda --method "$method" --lang ay --steps 200 --eval-every 100 \
        --out "$logs/train-$method" 2>&1 || echo "otkd train exited with $?") | tail -4 | tee "$logs/train-$method.log"
done

echo
echo "== summary ($(cut -d, -f1 "$logs/gpu.txt" | head -1))"
echo "| check | result |"
echo "|---|---|"
grep -E "^test result" "$logs/parity.log" | sed 's/^/| tests | /; s/$/ |/'
grep -E "rel. error" "$logs/parity.log" | sed 's/^/| parity | /; s/$/ |/'
grep -E "copy:" "$logs/bench.log" | sed 's/^/| bandwidth | /; s/$/ |/'
echo
grep -E "^\|" "$logs/bench.log"
for method in kd ot; do
    python3 - "$logs/train-$method/final.json" "$method" <<'PY' || echo "| train $method | no final.json |"
import json, sys
report = json.load(open(sys.argv[1]))
last = report["checkpoints"][0]
print(f"| train {sys.argv[2]} (GPU, 200 steps) | {report['pairs_per_second']:.0f} pairs/s, test X->en R@1 {last['test']['x_to_en']['r1']:.3f} |")
PY
done
