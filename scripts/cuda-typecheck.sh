#!/usr/bin/env bash
# Type-checks and lints otkd-kernels and otkd-host with `--features cuda` on a machine without
# nvcc or a GPU.
#
# `--features cuda` turns on candle's CUDA backend, whose candle-kernels build script compiles
# every candle kernel with nvcc; `cargo check` needs nothing else (no linking). This script
# copies the workspace to a temporary folder, adds a `[patch]` that replaces candle-kernels by a
# copy of its own source with empty PTX strings and no build script, and runs `cargo check` and
# `cargo clippy -D warnings` on all targets there. The real candle-core and cudarc sources are
# checked as they are: only candle's PTX is missing, which no type depends on.
# Not part of CI (a cold run checks candle and cudarc once more: ~5-10 min on 2 cores).
# Usage: scripts/cuda-typecheck.sh   (CARGO_TARGET_DIR defaults to $TMPDIR/otkd-cuda-typecheck)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

version="$(grep -A1 '^name = "candle-kernels"' "$repo/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
cargo fetch -q --manifest-path "$repo/Cargo.toml"
source_dir="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-kernels-"$version" | head -1)"
cp -r "$source_dir" "$work/candle-kernels-stub"
python3 - "$work/candle-kernels-stub" <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
(root / "build.rs").unlink()
manifest = root / "Cargo.toml"
text = re.sub(r'\[build-dependencies[^\]]*\][^\[]*', '', manifest.read_text())
manifest.write_text(text.replace('build = "build.rs"\n', ''))
lib = root / "src" / "lib.rs"
names = sorted(p.stem.upper() for p in (root / "src").glob("*.cu")
               if not p.stem.startswith(("moe", "mmvq", "mmq")))
stub = "".join(f'    pub const {n}: &str = "";\n' for n in names)
lib.write_text(lib.read_text().replace('    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));\n', stub))
PY
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --) | (mkdir "$work/repo" && cd "$work/repo" && tar -xf -)
printf '\n[patch.crates-io]\ncandle-kernels = { path = "%s" }\n' "$work/candle-kernels-stub" >> "$work/repo/Cargo.toml"

cd "$work/repo"
export CUDARC_CUDA_VERSION=13000 CUDA_COMPUTE_CAP=90
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/otkd-cuda-typecheck}"
cargo check -p otkd-kernels -p otkd-host --features cuda --all-targets
cargo clippy -p otkd-kernels -p otkd-host --features cuda --all-targets -- -D warnings
echo "cuda-typecheck: otkd-kernels and otkd-host --features cuda type-check and lint clean (candle's PTX stubbed)"
