#!/usr/bin/env python3
"""otkd's CPU Sinkhorn against POT on the same inputs, in the same run.

Shapes: batch 64 of 32 x 32 and batch 16 of 128 x 128, uniform marginals, log domain,
epsilon = reg = 0.05, exactly 100 iterations (otkd tolerance 0, POT stopThr=0 / tol=0).
Inputs are written once to a folder both sides read. Rounds alternate otkd, POT, otkd, POT
(ABAB); each side's time is the median over its rounds of its in-process median over reps
(otkd: the custom op, timed inside the Rust benchmark binary, excluding process start).
POT: `ot.sinkhorn(..., method="sinkhorn_log")` looped over the batch, and `ot.solve_batch(...,
method="log_sinkhorn")` where this POT has it. The plans are compared by max abs difference.

Usage: scripts/pot-bench.py OTKD_BENCH_BINARY   (e.g. the `sinkhorn` bench built by
`cargo bench -p otkd-kernels --bench sinkhorn --no-run`); needs numpy and pot.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import ot

SHAPES = [(64, 32, 32), (16, 128, 128)]
EPSILON = 0.05
ITERATIONS = 100
ROUNDS = 2  # ABAB
OTKD_REPS = 20
POT_REPS = 3


def costs(b, n, m, rng):
    """1 - cos between random teacher and student states: otkd's cost, in [0, 2]."""
    t = rng.standard_normal((b, n, 48)).astype(np.float32)
    s = rng.standard_normal((b, m, 48)).astype(np.float32)
    t /= np.linalg.norm(t, axis=2, keepdims=True)
    s /= np.linalg.norm(s, axis=2, keepdims=True)
    return (1.0 - np.einsum("bid,bjd->bij", t, s)).astype(np.float32)


def median_seconds(reps, f):
    f()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def pot_loop(cost):
    b, n, m = cost.shape
    a, bb = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    return np.stack([
        ot.sinkhorn(a, bb, cost[k].astype(np.float64), EPSILON, method="sinkhorn_log",
                    numItermax=ITERATIONS, stopThr=0)
        for k in range(b)
    ])


def pot_batch(cost):
    result = ot.solve_batch(cost.astype(np.float64), reg=EPSILON, max_iter=ITERATIONS, tol=0,
                            method="log_sinkhorn")
    return np.asarray(result.plan)


def run_otkd(binary, folder):
    out = subprocess.run([binary, "--inputs", folder, "--epsilon", str(EPSILON), "--iterations",
                          str(ITERATIONS), "--reps", str(OTKD_REPS)],
                         check=True, capture_output=True, text=True).stdout
    times = {}
    for line in out.splitlines():
        if line.startswith("otkd "):
            _, b, n, m, ms = line.split()
            times[(int(b), int(n), int(m))] = float(ms) / 1e3
    return times


def main():
    binary = sys.argv[1]
    rng = np.random.default_rng(12)
    solvers = [("ot.sinkhorn loop", pot_loop)]
    if hasattr(ot, "solve_batch"):
        solvers.append(("ot.solve_batch", pot_batch))
    print(f"POT {ot.__version__}, numpy {np.__version__}; eps {EPSILON}, {ITERATIONS} iterations, "
          f"{ROUNDS} ABAB rounds, threads: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        inputs = {}
        for (b, n, m) in SHAPES:
            inputs[(b, n, m)] = costs(b, n, m, rng)
            inputs[(b, n, m)].astype("<f4").tofile(os.path.join(folder, f"cost-{b}-{n}-{m}.f32"))
        otkd_times = {shape: [] for shape in SHAPES}
        pot_times = {(shape, name): [] for shape in SHAPES for name, _ in solvers}
        plans = {}
        for _ in range(ROUNDS):
            for shape, seconds in run_otkd(binary, folder).items():
                otkd_times[shape].append(seconds)
            for shape in SHAPES:
                for name, solve in solvers:
                    pot_times[(shape, name)].append(median_seconds(POT_REPS, lambda: solve(inputs[shape])))
                    plans[(shape, name)] = solve(inputs[shape])
        print("| shape | otkd CPU (ms) | POT solver | POT (ms) | POT / otkd | max abs diff of plans |")
        print("|---|---|---|---|---|---|")
        for (b, n, m) in SHAPES:
            shape = (b, n, m)
            ours = statistics.median(otkd_times[shape])
            plan = np.fromfile(os.path.join(folder, f"otkd-plan-{b}-{n}-{m}.f32"), dtype="<f4").reshape(shape)
            for name, _ in solvers:
                theirs = statistics.median(pot_times[(shape, name)])
                diff = np.max(np.abs(plans[(shape, name)] - plan))
                print(f"| {b} x {n} x {m} | {ours * 1e3:.2f} | {name} | {theirs * 1e3:.2f} | "
                      f"{theirs / ours:.1f}x | {diff:.2e} |")


if __name__ == "__main__":
    main()
