#!/usr/bin/env python3
"""summary.md of the GPU bundle's run.sh, from the logs in OUTDIR (stdout). Exit 1 when a line
failed. Usage: summary.py OUTDIR SECONDS"""

import json
import os
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
seconds = sys.argv[2] if len(sys.argv) > 2 else "?"
rows, failed = [], []


def status(name):
    """(exit code, seconds) of a stage, or (None, None) when it did not run."""
    try:
        rc, secs = (out / f"{name}.status").read_text().split()
        return int(rc), int(secs)
    except (OSError, ValueError):
        return None, None


def log(name):
    try:
        return (out / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""


def check(what, ok, result):
    rows.append((what, result, "pass" if ok else "FAIL"))
    if not ok:
        failed.append(what)


def stage_note(name):
    rc, secs = status(name)
    if rc is None:
        return "did not run"
    if rc == 124 or rc == 137:
        return f"stopped by its time limit after {secs} s"
    return f"exit {rc}, {secs} s"


def json_lines(path):
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip().startswith("{")]
    except (OSError, json.JSONDecodeError):
        return []


def report(name):
    """otkd train --json's final report from a stage log (the last top-level JSON object)."""
    lines = log(name).splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    ends = [i for i, line in enumerate(lines) if line == "}"]
    if not starts or not ends:
        return None
    try:
        return json.loads("\n".join(lines[starts[-1] : ends[-1] + 1]))
    except json.JSONDecodeError:
        return None


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


# --- checks ---------------------------------------------------------------------------------------
gpu = (out / "gpu.txt").read_text().strip().splitlines()[0] if (out / "gpu.txt").exists() else "?"
check("GPU (nvidia-smi: name, compute capability, driver, memory)", gpu != "?", gpu)

for name, what in [
    ("test-parity", "kernel parity tests vs the CPU reference (cuda_parity, OTKD_REQUIRE_CUDA=1)"),
    ("test-sinkhorn", "Sinkhorn contract tests, CPU and CUDA arms (OTKD_REQUIRE_CUDA=1)"),
    ("test-nvrtc", "NVRTC compiles every kernel on this machine (OTKD_REQUIRE_NVRTC=1)"),
]:
    rc, _ = status(name)
    text = log(name)
    results = re.findall(r"test result: .*", text)
    errors = re.findall(r"rel\. error ([0-9.e+-]+)", text)
    worst = f"; worst rel. error {max(float(e) for e in errors):.1e}" if errors else ""
    check(what, rc == 0 and bool(results) and "skipped" not in text,
          (results[-1] if results else stage_note(name)) + worst)

bench = json_lines(out / "bench.jsonl")
torch_bench = {(r["kernel"], r["shape"]): r for r in json_lines(out / "bench-torch.jsonl")}
check("kernel benchmark, otkd (fused and composed candle ops)", status("bench-otkd")[0] == 0 and len(bench) == 5,
      f"{len(bench)} of 5 rows; {stage_note('bench-otkd')}")
check("kernel benchmark, PyTorch peer on the same GPU", status("bench-torch")[0] == 0 and len(torch_bench) == 5,
      f"{len(torch_bench)} of 5 rows; {stage_note('bench-torch')}")

train = {}
for device in ("gpu", "cpu"):
    for method in ("kd", "ot"):
        name = f"train-{device}-{method}"
        r = report(name)
        ok = status(name)[0] == 0 and r is not None
        if r is not None:
            last = r["checkpoints"][0]
            train[(device, method)] = (r["pairs_per_second"], last["dev_r1"], r["elapsed_seconds"])
            result = f"{r['pairs_per_second']:.0f} pairs/s, dev R@1 {last['dev_r1']:.3f} at step {last['step']}"
        else:
            lines = log(name).strip().splitlines() or ["no output"]
            errors = [line for line in lines if line.lower().startswith("error")]
            result = stage_note(name) + "; " + (errors[0] if errors else lines[-1])[:300]
        flag = "cuda" if device == "gpu" else "cpu"
        check(f"otkd train --device {flag} --method {method}, 200 steps", ok, result)

peer = {r["config"]: r for r in json_lines(out / "torch-student.log")}
check("PyTorch peer student on the GPU (torch_student.py)", status("torch-student")[0] == 0 and len(peer) >= 2,
      ", ".join(f"{k} {v['pairs_per_s']:.0f} pairs/s" for k, v in peer.items()) or stage_note("torch-student"))

for method in ("kd", "ot"):
    g, c = train.get(("gpu", method)), train.get(("cpu", method))
    if g and c:
        diff = abs(g[1] - c[1])
        check(f"{method}: GPU training reaches the CPU's dev R@1 (|diff| <= 0.05)", diff <= 0.05,
              f"GPU {g[1]:.3f} vs CPU {c[1]:.3f}")
    else:
        check(f"{method}: GPU training reaches the CPU's dev R@1 (|diff| <= 0.05)", False, "a run is missing")

# --- output ---------------------------------------------------------------------------------------
print("# otkd GPU check\n")
print(f"{gpu}; {os.cpu_count()} CPU cores; run.sh took {seconds} s. "
      f"{'All checks passed.' if not failed else f'{len(failed)} check(s) FAILED.'}\n")
print("| check | result | |\n|---|---|---|")
for what, result, verdict in rows:
    print(f"| {what} | {result} | {verdict} |")

print("\n## Kernels: µs per solve and kernel launches per solve (same GPU, same run)\n")
print("A solve: one Sinkhorn of the whole batch (100 iterations, eps 0.05) or one forward + backward of a KD "
      "loss. otkd launches counted at cuLaunchKernel (+ cuBLAS GEMM calls, each one or more kernels); "
      "PyTorch's from torch.profiler. Ratios > 1: otkd's fused op is faster.\n")
print("| kernel | shape | otkd fused µs | launches | candle composed µs | launches | PyTorch µs | launches "
      "| composed / fused | PyTorch / fused | floor GB/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")


def launches(r, prefix):
    k, g = r.get(f"{prefix}_kernels"), r.get(f"{prefix}_gemms", 0)
    return "-" if k is None else (str(k) if not g else f"{k} + {g} GEMM")


for r in bench:
    t = torch_bench.get((r["kernel"], r["shape"]), {})
    tu = t.get("torch_us")
    print(f"| {r['kernel']} | {r['shape']} | {r['fused_us']:.1f} | {launches(r, 'fused')} | {r['composed_us']:.1f} "
          f"| {launches(r, 'composed')} | {fmt(tu)} | {'-' if t.get('torch_kernels') is None else t['torch_kernels']} "
          f"| {r['composed_us'] / r['fused_us']:.1f}x | {fmt(tu / r['fused_us'] if tu else None)}x "
          f"| {fmt(r.get('floor_gbs'), 0) if r.get('floor_gbs') is not None else '-'} |")

print("\n## Training: otkd train, 200 steps, batch 64, micro student, ay-en, 2000 pairs\n")
print("otkd: pairs/s as its final report gives them (`pairs_per_second`, evaluation time excluded) and dev R@1 of the last checkpoint; the CPU "
      "run is the same binary with --device cpu. PyTorch: torch_student.py (same student and losses, AdamW, "
      "batch 64) on the GPU, synthetic batches shaped like Aymara captions, so no dev R@1; OT against "
      "`ot-adaptive-infonce` (otkd's Sinkhorn settings).\n")
print("| method | otkd GPU pairs/s | otkd CPU pairs/s | PyTorch GPU pairs/s | GPU / CPU | GPU / PyTorch "
      "| dev R@1 GPU | dev R@1 CPU |")
print("|---|---|---|---|---|---|---|---|")
for method, peer_name in (("kd", "kd-infonce"), ("ot", "ot-adaptive-infonce")):
    g, c = train.get(("gpu", method)), train.get(("cpu", method))
    p = peer.get(peer_name, {}).get("pairs_per_s")
    print(f"| {method} | {fmt(g and g[0], 0)} | {fmt(c and c[0], 0)} | {fmt(p, 0)} "
          f"| {fmt(g[0] / c[0] if g and c else None, 2)} | {fmt(g[0] / p if g and p else None, 2)} "
          f"| {fmt(g and g[1], 3)} | {fmt(c and c[1], 3)} |")
if "ot30-infonce" in peer:
    print(f"\nPyTorch OT with exactly 30 Sinkhorn iterations (ot30-infonce): {peer['ot30-infonce']['pairs_per_s']:.0f} pairs/s; "
          f"ot-adaptive-infonce ran {peer.get('ot-adaptive-infonce', {}).get('sinkhorn_iters_mean')} iterations per step on average.")
print("\nLogs: one `<stage>.log` and `<stage>.status` (exit code, seconds) per stage in this folder.")
sys.exit(1 if failed else 0)
