#!/usr/bin/env bash
# CI's check of the CUDA kernels on a machine without a GPU, a driver or a CUDA toolkit:
#  1. installs NVRTC and ptxas from pinned PyPI wheels into a local venv (ignored by git);
#  2. compiles every kernel source (kernels/cuda/*.cu) with NVRTC for compute_80 and compute_90
#     through cudarc (otkd-kernels' `nvrtc-check` feature, test kernels/tests/nvrtc.rs), failing
#     on any error or warning, and keeps the PTX;
#  3. assembles each PTX with ptxas -v for sm_80 / sm_90, prints registers, shared memory and
#     spills per entry, and fails on any spill.
# Usage: scripts/nvrtc-check.sh   (from anywhere; OTKD_CUDA_VENV overrides the venv folder)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${OTKD_CUDA_VENV:-.venv-cuda}"
# One CUDA release for both wheels (13.0: the PTX ISA the GPU machines' driver 580 loads).
# --no-deps: the nvcc wheel's ptxas is self-contained; its declared deps (nvvm, crt, runtime)
# are only for nvcc itself and add ~250 MB.
wheels=(nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88)
if ! "$venv/bin/pip" show -q "${wheels[@]%%==*}" >/dev/null 2>&1; then
    echo "-- installing ${wheels[*]} into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "${wheels[@]}"
fi
cu13="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
[ -x "$cu13/bin/ptxas" ] && [ -e "$cu13/lib/libnvrtc.so.13" ] || { echo "no ptxas/libnvrtc under $cu13" >&2; exit 1; }
# cudarc finds libnvrtc by dlopen, which searches LD_LIBRARY_PATH (cudarc has no path variable).
export LD_LIBRARY_PATH="$(realpath "$cu13/lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

ptx_dir="$(mktemp -d)"
trap 'rm -rf "$ptx_dir"' EXIT

echo "-- lints with the nvrtc-check feature"
cargo clippy -q -p otkd-kernels --features nvrtc-check --all-targets -- -D warnings

echo "-- NVRTC: every kernel for compute_80 and compute_90"
OTKD_REQUIRE_NVRTC=1 OTKD_PTX_DIR="$ptx_dir" \
    cargo test -q -p otkd-kernels --features nvrtc-check --test nvrtc -- --nocapture

echo "-- ptxas resource report"
printf '%-20s %-6s %9s %11s %13s %12s\n' entry arch registers "smem(B)" "spill st(B)" "spill ld(B)"
spilled=0
for ptx in "$ptx_dir"/*.ptx; do
    arch="sm_$(basename "$ptx" .ptx | sed 's/.*compute_//')"
    report="$("$cu13/bin/ptxas" -arch="$arch" -v --warn-on-spills "$ptx" -o /dev/null 2>&1)"
    if grep -qi "warning\|error" <<<"$report"; then
        echo "$report" >&2
        spilled=1
    fi
    # One line per entry: "Compiling entry function 'NAME'", then spills, then registers/smem.
    awk -v arch="$arch" '
        /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); entry = substr($0, RSTART + 1, RLENGTH - 2) }
        /spill stores/ { stores = $5; loads = $9 }
        /Used [0-9]+ registers/ {
            match($0, /Used [0-9]+ registers/); registers = substr($0, RSTART + 5, RLENGTH - 15)
            smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
            printf "%-20s %-6s %9s %11s %13s %12s\n", entry, arch, registers, smem, stores, loads
        }' <<<"$report"
    if grep -Eq "[1-9][0-9]* bytes spill (stores|loads)" <<<"$report"; then
        spilled=1
    fi
done
echo "(smem: static shared memory; the kernels' dynamic shared memory is sized per launch)"
if [ "$spilled" -ne 0 ]; then
    echo "ptxas reported spills, warnings or errors" >&2
    exit 1
fi
echo "nvrtc-check: every kernel compiles for sm_80 and sm_90 without warnings or spills"
