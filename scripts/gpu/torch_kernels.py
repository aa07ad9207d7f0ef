#!/usr/bin/env python3
"""PyTorch peer of otkd's kernel benchmark (kernels/benches/gpu.rs), on the same GPU.

What a user would write in PyTorch instead of otkd's fused kernels, eager mode:
  - batched log-domain Sinkhorn on a [b, n, m] cost: eps 0.05, exactly 100 iterations (tolerance 0),
    uniform marginals given as per-item log-marginal vectors (so padding would cost nothing extra),
    then the plan exp(K + u + v), the loss sum(P * C) per item and the row marginal error, as
    otkd's op returns them. No autograd (otkd's plan is a constant too).
  - the KD losses on [64, 384] (MSE; MSE + KL of the in-batch softmax at tau 0.05; MSE + InfoNCE
    both directions at tau 0.05), forward + backward with autograd, the definitions of
    kernels/src/kd/mod.rs.
Shapes, inputs (uniform costs in [0, 2), embeddings in [-0.05, 0.05)) and timing rules as the Rust
bench: median of 20 timed calls (5 for nothing here) after 3 warm-up calls, each synchronised;
microseconds per solve. Kernel launches per solve come from torch.profiler (CUPTI): the CUDA
kernels of one call, memcpy and memset excluded.

    python3 torch_kernels.py [--json FILE]     # prints a markdown table; JSON lines to FILE
    python3 torch_kernels.py --device cpu      # the same on the CPU: checks the script without a GPU
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

WARMUP, REPS = 3, 20
DEVICE = torch.device("cuda")


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def sinkhorn(cost, rows, cols, eps=0.05, iterations=100):
    b, n, m = cost.shape
    k = cost * (-1.0 / eps)
    ninf = torch.tensor(float("-inf"), device=cost.device)
    rmask = torch.arange(n, device=cost.device)[None, :] < rows[:, None]
    cmask = torch.arange(m, device=cost.device)[None, :] < cols[:, None]
    log_a = torch.where(rmask, -torch.log(rows.to(cost.dtype))[:, None], ninf)
    log_b = torch.where(cmask, -torch.log(cols.to(cost.dtype))[:, None], ninf)
    v = torch.where(cmask, 0.0, ninf)
    for _ in range(iterations):
        u = log_a - torch.logsumexp(k + v[:, None, :], dim=2)
        v = log_b - torch.logsumexp(k + u[:, :, None], dim=1)
    plan = torch.exp(k + u[:, :, None] + v[:, None, :])
    loss = (plan * cost).sum((1, 2))
    error = (plan.sum(2) - torch.exp(log_a)).abs().sum(1)
    return plan, loss, error


def kd(student, teacher, term, tau=0.05):
    mse = ((student - teacher) ** 2).sum(1).mean()
    if term == "mse":
        return mse
    z = student @ teacher.T / tau
    if term == "kl":
        p = torch.softmax(teacher @ teacher.T / tau, dim=1)
        return mse + (p * (torch.log(p + 1e-12) - torch.log_softmax(z, dim=1))).sum(1).mean()
    target = torch.arange(z.shape[0], device=z.device)
    return mse + 0.5 * (F.cross_entropy(z, target) + F.cross_entropy(z.T, target))


def measure(f, reps=REPS):
    for _ in range(WARMUP):
        f()
    synchronize()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        synchronize()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6, launches(f)


def launches(f):
    """CUDA kernels of one call of f, from torch.profiler; None when the profiler cannot trace."""
    try:
        from torch.profiler import ProfilerActivity, profile

        if DEVICE.type != "cuda":
            return None
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            f()
            synchronize()
        kinds = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        return sum(1 for e in kinds if not e.name.startswith(("Memcpy", "Memset", "[memory]")))
    except Exception as e:  # no CUPTI: the time is still measured
        print(f"torch.profiler unavailable ({e}); launches not counted", flush=True)
        return None


def uniform(shape, lo, hi, seed):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, device=DEVICE, generator=g)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None, help="write one JSON object per row to this file")
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    global DEVICE
    DEVICE = device = torch.device(a.device)
    rows_out = []
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}")
    print("| kernel | shape | torch µs/solve | torch launches |")
    print("|---|---|---|---|")

    def row(kernel, shape, micros, count):
        rows_out.append({"kernel": kernel, "shape": shape, "torch_us": round(micros, 3), "torch_kernels": count})
        print(f"| {kernel} | {shape} | {micros:.1f} | {count if count is not None else '-'} |", flush=True)

    with torch.no_grad():
        for b, n, m in [(256, 64, 64), (64, 256, 256)]:
            cost = uniform((b, n, m), 0.0, 2.0, b * n)
            rows = torch.full((b,), n, device=device)
            cols = torch.full((b,), m, device=device)
            micros, count = measure(lambda: sinkhorn(cost, rows, cols))
            row("sinkhorn, 100 it", f"{b}x{n}x{m}", micros, count)
            plan, _, _ = sinkhorn(cost, rows, cols)
            col_error = float((plan.sum(1) - 1.0 / m).abs().max())
            assert math.isfinite(col_error) and col_error < 1e-4, f"torch Sinkhorn columns off by {col_error}"

    b, d = 64, 384
    student = uniform((b, d), -0.05, 0.05, 1).requires_grad_(True)
    teacher = uniform((b, d), -0.05, 0.05, 2)
    for name, term in [("kd mse, fwd+bwd", "mse"), ("kd kl, fwd+bwd", "kl"), ("kd infonce, fwd+bwd", "infonce")]:
        def step():
            student.grad = None
            kd(student, teacher, term).backward()

        micros, count = measure(step)
        row(name, f"{b}x{d}", micros, count)

    if a.json:
        with open(a.json, "w") as f:
            for r in rows_out:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
