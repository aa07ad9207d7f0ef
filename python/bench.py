"""Throughput of the Python binding next to the Rust runtime on the same blob and queries.

    python python/bench.py --blob model.otkd [--otkd target/release/otkd] [--lang ay] [--rounds 3]

Rust side: `otkd bench query --blob B --only runtime --json` (median microseconds per query of
encode + top-10 cosine search over the blob's index, 200 Multi30k test queries of --lang).
Python side, on the same 200 queries (read from the same Multi30k file):
- `search` one query per call (the Rust bench's shape, so the binding's per-call cost shows);
- `search` of the whole batch in one call;
- `encode` of the whole batch in one call (texts/s).
Each side is run --rounds times, alternated, and the best round is kept (the machine may be shared).
Without the Multi30k data or the binary, pass --queries FILE (one per line) and/or --no-rust.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Run as `python python/bench.py`, the script's folder (which holds the package's sources, without
# the built module) would shadow the installed package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
import otkd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def multi30k_queries(lang: str, n: int) -> list:
    data = Path(os.environ.get("OTKD_DATA", ROOT.parent / "shared/data/multi30k"))
    path = data / "task1" / f"test_2016_flickr.{lang}.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line][:n]


def rust_median_us(binary: Path, blob: Path, lang: str, n: int) -> float:
    out = subprocess.run(
        [str(binary), "bench", "query", "--blob", str(blob), "--only", "runtime", "--lang", lang,
         "--queries", str(n), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return float(json.loads(out.stdout)["runtime_median_us"])


def python_round(model: otkd.Model, queries: list) -> dict:
    per_query = []
    for q in queries:
        start = time.perf_counter()
        model.search([q], k=10, scoring="cosine")
        per_query.append(time.perf_counter() - start)
    start = time.perf_counter()
    model.search(queries, k=10, scoring="cosine")
    batch_search = time.perf_counter() - start
    start = time.perf_counter()
    model.encode(queries)
    batch_encode = time.perf_counter() - start
    return {
        "search_1_median_us": statistics.median(per_query) * 1e6,
        "search_1_mean_us": statistics.mean(per_query) * 1e6,
        "search_batch_us_per_query": batch_search / len(queries) * 1e6,
        "encode_batch_texts_per_s": len(queries) / batch_encode,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blob", type=Path, required=True)
    parser.add_argument("--otkd", type=Path, default=ROOT / "target" / "release" / "otkd")
    parser.add_argument("--lang", default="ay")
    parser.add_argument("--queries", type=Path, help="one query per line instead of Multi30k test")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-rust", action="store_true")
    args = parser.parse_args()

    if args.queries:
        queries = [q for q in args.queries.read_text(encoding="utf-8").splitlines() if q.strip()][: args.count]
    else:
        queries = multi30k_queries(args.lang, args.count)
    model = otkd.Model.load(args.blob)
    rust_runs, py_runs = [], []
    for _ in range(args.rounds):
        if not args.no_rust:
            rust_runs.append(rust_median_us(args.otkd, args.blob, args.lang, args.count))
        py_runs.append(python_round(model, queries))

    py = {key: (min if key.endswith("_us") or key.endswith("per_query") else max)(r[key] for r in py_runs)
          for key in py_runs[0]}
    print(f"{len(queries)} {args.lang} queries, {model.documents} documents, best of {args.rounds} rounds")
    print(f"python encode (batch)         {py['encode_batch_texts_per_s']:>9.0f} texts/s")
    print(f"python search, batch          {py['search_batch_us_per_query']:>9.1f} us per query "
          f"({1e6 / py['search_batch_us_per_query']:.0f} queries/s)")
    print(f"python search, 1 per call     {py['search_1_median_us']:>9.1f} us per query (median), "
          f"{py['search_1_mean_us']:.1f} (mean; the batch's figure is a mean)")
    if rust_runs:
        rust = min(rust_runs)
        print(f"rust otkd bench query         {rust:>9.1f} us per query (median, --only runtime)"
              f" ({1e6 / rust:.0f} queries/s)")
        print(f"binding overhead, 1 query per call (median vs median): {py['search_1_median_us'] / rust - 1:+.1%}")
    print(f"batch vs 1 per call (mean vs mean): {py['search_batch_us_per_query'] / py['search_1_mean_us'] - 1:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
