#!/usr/bin/env python3
"""Runs the PyTorch peer student (../shared/peers/torch_student.py, copied beside this file by
scripts/gpu-bundle.sh) on the GPU, unchanged: its model, losses, optimiser and timing, with torch's
default device set to CUDA and its synthetic batches moved there once (they are prebuilt and
cycled). Each step ends in `loss.item()`, which synchronises, so its steps/s are wall-clock.

Configurations, matching `otkd train`'s defaults (KD variant InfoNCE, English weight 0):
  kd-infonce             KD, InfoNCE + MSE
  ot-adaptive-infonce    OT with otkd's Sinkhorn settings (at most 100 iterations, tolerance 1e-3,
                         batch-wide stop) + the InfoNCE KD term; added here to the peer's table
  ot30-infonce           OT with exactly 30 iterations (the peer's own configuration)
Batch 64, synthetic batches shaped like Aymara captions (--words 10 --feats 18, as
scripts/bench-vs-torch.py uses). One JSON line per configuration.

    python3 torch_student_gpu.py [--config NAME ...] [--steps 50] [--repeats 3]
    python3 torch_student_gpu.py --device cpu --steps 2 --repeats 1   # checks the script without a GPU
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_student as peer  # noqa: E402

peer.CONFIGS.setdefault("ot-adaptive-infonce", ("ot", "infonce", 0.0, (100, 1e-3)))


def to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", nargs="+", default=["kd-infonce", "ot-adaptive-infonce", "ot30-infonce"])
    p.add_argument("--words", type=int, default=10)
    p.add_argument("--feats", type=int, default=18)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.set_default_device(device)
    make_batch = peer.make_batch
    peer.make_batch = lambda *args, **kw: to_device(make_batch(*args, **kw), device)
    for name in a.config:
        r = peer.time_config(name, feats=a.feats, words=a.words, steps=a.steps, repeats=a.repeats)
        r["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
