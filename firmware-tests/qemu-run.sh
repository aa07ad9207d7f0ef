#!/usr/bin/env bash
# cargo's runner for this workspace (`cargo run`, `cargo test`): runs an ELF on QEMU's mps2-an386
# (Cortex-M4F) with semihosting, one instruction per ns of virtual time (`-icount shift=0`, so the
# SysTick ticks the firmware prints count instructions), and decodes its defmt frames. The exit
# status is QEMU's, which is the firmware's semihosting exit code (124: the time limit).
set -euo pipefail
elf="$1"
for tool in qemu-system-arm defmt-print; do
    if ! command -v "$tool" >/dev/null; then
        echo "qemu-run.sh: $tool not found; install: apt-get install -y qemu-system-arm;" \
            "cargo install defmt-print --version 1.2.0 --locked" >&2
        exit 127
    fi
done
timeout "${OTKD_QEMU_TIMEOUT:-120}" qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -semihosting-config enable=on,target=native -icount shift=0 -kernel "$elf" \
    | defmt-print -e "$elf"
