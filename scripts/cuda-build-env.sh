# shellcheck shell=bash
# Sourced by scripts/gpu-bundle.sh: a CUDA 13.0 build environment for `--features cuda` on a
# machine without a GPU, a driver or a CUDA toolkit, made only of pinned PyPI wheels.
# Facts and reasons: docs/CUDA.md.
#
# After `source scripts/cuda-build-env.sh` (from the repository root):
#   CUDA_HOME, NVCC, PATH   the wheels' nvcc (13.0.88) and its toolkit layout (nvidia/cu13)
#   CUDA_COMPUTE_CAP=90     candle-kernels (cudaforge) compiles for sm_90 without asking nvidia-smi
#   CUDARC_CUDA_VERSION     13000: cudarc's bindings for CUDA 13.0 without asking nvcc
#   cu13                    the wheels' toolkit folder
# The link-time libraries: `lib*.so` development links to the wheels' `lib*.so.N` (the wheels
# ship only the versioned names), and `lib/stubs/libcuda.so`, a stub with soname `libcuda.so.1`
# that defines every driver function cudarc's bindings name (the driver itself is not a wheel).
# Nothing of this folder is recorded in the executables: no RPATH, only sonames.
#
# OTKD_CUDA_BUILD_VENV overrides the venv folder (default .venv-cuda-build, git-ignored), so a
# fresh clone can reuse an existing one.

cuda_build_venv="${OTKD_CUDA_BUILD_VENV:-.venv-cuda-build}"
# One CUDA release (13.0, update 2 where the package has one): the GPU machines run CUDA 13.0
# with driver 580. cublas and curand at their 13.0 GA versions: only their sonames and symbols
# matter here (the GPU machine's toolkit supplies the libraries at run time).
cuda_build_wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35
)

cuda_build_env_setup() {
    local installed
    installed="$("$cuda_build_venv/bin/pip" freeze 2>/dev/null || true)"
    local wheel missing=()
    for wheel in "${cuda_build_wheels[@]}"; do
        grep -qx "$wheel" <<<"$installed" || missing+=("$wheel")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "-- installing ${missing[*]} into $cuda_build_venv"
        [ -x "$cuda_build_venv/bin/pip" ] || python3 -m venv "$cuda_build_venv"
        # --no-deps: every dependency is pinned above (nvcc alone pulls nvvm/crt/runtime 13.5).
        "$cuda_build_venv/bin/pip" install -q --disable-pip-version-check --no-deps "${missing[@]}"
    fi
    cu13="$(realpath "$(echo "$cuda_build_venv"/lib/python3*/site-packages/nvidia/cu13)")"
    [ -x "$cu13/bin/nvcc" ] || { echo "cuda-build-env: no nvcc under $cu13" >&2; return 1; }

    local lib
    for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
        [ -e "$cu13/lib/$lib" ] || { echo "cuda-build-env: no $lib under $cu13/lib" >&2; return 1; }
        ln -sfn "$lib" "$cu13/lib/${lib%.so.*}.so"
    done
    cuda_build_libcuda_stub "$cu13/lib/stubs"

    export CUDA_HOME="$cu13" NVCC="$cu13/bin/nvcc" PATH="$cu13/bin:$PATH"
    export CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
}

# A link stub for the driver: one `int f(void){return 999;}` (CUDA_ERROR_UNKNOWN) per `cu*`
# function of cudarc's driver bindings, soname libcuda.so.1 (the name the driver installs).
cuda_build_libcuda_stub() {
    local dir="$1" bindings
    [ -e "$dir/libcuda.so" ] && return 0
    local version
    version="$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
    cargo fetch -q
    bindings="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$version" | head -1)/src/driver/sys/mod.rs"
    [ -f "$bindings" ] || { echo "cuda-build-env: no cudarc $version bindings ($bindings)" >&2; return 1; }
    mkdir -p "$dir"
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | sed 's/^pub unsafe fn //' | sort -u |
        sed 's/.*/int &(void) { return 999; }/' >"$dir/libcuda-stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/libcuda.so" "$dir/libcuda-stub.c"
    echo "-- libcuda link stub: $(wc -l <"$dir/libcuda-stub.c") functions, $dir/libcuda.so"
}
