#!/usr/bin/env python3
"""Training throughput of otkd against the same student in PyTorch, alternated (ABAB).

For each configuration pair, every round runs `otkd bench train --configs C --json` and then the
peer `torch_student.py --config P`, and prints the median pairs/s of each side and their ratio.
otkd trains on real batches of the chosen language; the peer's synthetic batches are shaped like
them with --words/--feats (Aymara: about 10 words of about 18 features).

    python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install torch numpy
    scripts/bench-vs-torch.py --python /tmp/peer-venv/bin/python --rounds 3

Exits 1 when a side fails; prints a Markdown table and, with --json, the raw numbers.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# otkd `bench train` configuration -> torch_student.py configuration (same loss, same English
# weight; OT with exactly 30 Sinkhorn iterations, as otkd runs about 25-30 from the ridge start).
PAIRS = [
    ("kd-mse", "kd-mse"),
    ("kd-infonce", "kd-infonce"),
    ("kd-mse-en1", "kd-mse-en1"),
    ("ot-mse", "ot30"),
    ("ot-infonce", "ot30-infonce"),
    ("ot-mse-en1", "ot30-en1"),
]


def otkd_pairs_per_second(otkd, config, lang, steps):
    out = subprocess.run(
        [otkd, "bench", "train", "--lang", lang, "--configs", config, "--steps", str(steps), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = json.loads(out)
    return rows[0]["pairs_per_second"], rows[0].get("sinkhorn_iterations")


def torch_pairs_per_second(python, script, config, words, feats, steps):
    out = subprocess.run(
        [python, script, "--config", config, "--words", str(words), "--feats", str(feats),
         "--steps", str(steps), "--repeats", "3", "--threads", "2"],
        check=True, capture_output=True, text=True,
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return row["pairs_per_s"]


def main():
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--otkd", default=str(root / "target/release/otkd"))
    p.add_argument("--python", default="/tmp/peer-venv/bin/python")
    p.add_argument("--peer", default=str(root.parent / "shared/peers/torch_student.py"))
    p.add_argument("--lang", default="ay")
    p.add_argument("--words", type=int, default=10)
    p.add_argument("--feats", type=int, default=18)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=100, help="timed steps per side per round")
    p.add_argument("--only", nargs="+", help="otkd configuration names to keep")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    pairs = [x for x in PAIRS if not a.only or x[0] in a.only]
    results = {c: {"otkd": [], "torch": [], "sinkhorn_iterations": []} for c, _ in pairs}
    for r in range(a.rounds):
        for ours, theirs in pairs:
            try:
                pps, iters = otkd_pairs_per_second(a.otkd, ours, a.lang, a.steps)
                tps = torch_pairs_per_second(a.python, a.peer, theirs, a.words, a.feats, a.steps)
            except (subprocess.CalledProcessError, ValueError, KeyError) as e:
                print(f"{ours} / {theirs}: {e}", file=sys.stderr)
                if isinstance(e, subprocess.CalledProcessError):
                    print(e.stderr, file=sys.stderr)
                return 1
            results[ours]["otkd"].append(pps)
            results[ours]["torch"].append(tps)
            results[ours]["sinkhorn_iterations"].append(iters)
            print(f"round {r + 1}: {ours} otkd {pps:.0f} pairs/s, {theirs} torch {tps:.0f} pairs/s",
                  file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| otkd config | PyTorch config | otkd pairs/s | PyTorch pairs/s | otkd / PyTorch |")
    print("|---|---|---|---|---|")
    for ours, theirs in pairs:
        o = statistics.median(results[ours]["otkd"])
        t = statistics.median(results[ours]["torch"])
        print(f"| {ours} | {theirs} | {o:.0f} | {t:.0f} | {o / t:.2f}x |")
    for ot, kd in [("ot-mse", "kd-mse"), ("ot-infonce", "kd-infonce"), ("ot-mse-en1", "kd-mse-en1")]:
        if ot in results and kd in results:
            cost = statistics.median(results[kd]["otkd"]) / statistics.median(results[ot]["otkd"])
            print(f"otkd step cost {ot} / {kd}: {cost:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
