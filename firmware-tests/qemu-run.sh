#!/usr/bin/env bash
# cargo's runner for this workspace (`cargo run`, `cargo test`): runs an ELF on QEMU's mps2-an386
# (Cortex-M4F) with semihosting, one instruction per ns of virtual time (`-icount shift=0`, so the
# SysTick ticks the firmware prints count instructions), and decodes its defmt frames. The exit
# status is QEMU's, which is the firmware's semihosting exit code (124: the time limit).
#
# The firmware does not contain the blob: QEMU's loader places it in the blob region (memory.x's
# BLOB, OTKD_BLOB_ADDR). The blob is OTKD_QEMU_BLOB, else the one build.rs wrote for this build
# (OTKD_FIRMWARE_BLOB, default seeded-tiny); OTKD_QEMU_BLOB=none places nothing (an erased region).
set -euo pipefail
elf="$1"
for tool in qemu-system-arm defmt-print; do
    if ! command -v "$tool" >/dev/null; then
        echo "qemu-run.sh: $tool not found; install: apt-get install -y qemu-system-arm;" \
            "cargo install defmt-print --version 1.2.0 --locked" >&2
        exit 127
    fi
done
profile="$(dirname "$elf")"
[ -d "$profile/build" ] || profile="$(dirname "$profile")"   # tests live in PROFILE/deps
blob="${OTKD_QEMU_BLOB:-$(ls -t "$profile"/build/otkd-firmware-*/out/blob.otkd 2>/dev/null | head -n 1)}"
loader=()
if [ -n "$blob" ] && [ "$blob" != none ]; then
    loader=(-device "loader,file=$blob,addr=${OTKD_BLOB_ADDR:-0x00100000},force-raw=on")
fi
timeout "${OTKD_QEMU_TIMEOUT:-120}" qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -semihosting-config enable=on,target=native -icount shift=0 "${loader[@]}" -kernel "$elf" \
    | defmt-print -e "$elf"
