"""Bit-exactness with the Rust side: `otkd embed --blob` and `otkd query --json` of the binary on
the same blobs and texts (the runtime's seeded tiny and micro blobs, and a trained blob when
OTKD_TRAINED_BLOB names one)."""

import json
import subprocess

import numpy as np
import pytest

import otkd
from texts import QUERIES

LONG = ("palabra " * 12_500)[:100_000]
# `otkd query` may refuse queries over a few kB (a CLI limit, not the runtime's): its texts stay short.
QUERY_TEXTS = QUERIES + [("palabra " * 400)[:3000]]
TEXTS = QUERY_TEXTS + [LONG]


def run(binary, *args, stdin=None):
    out = subprocess.run([str(binary), *map(str, args)], input=stdin, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_encode_is_bit_exact_with_otkd_embed(otkd_bin, blob_path):
    model = otkd.Model.load(blob_path)
    rust = run(otkd_bin, "embed", "--blob", blob_path, stdin="\n".join(TEXTS) + "\n")
    assert [r["text"] for r in rust] == TEXTS
    # serde_json prints each f32 in its shortest round-tripping form: parsing it back as f32 is exact.
    expected = np.array([r["embedding"] for r in rust], dtype=np.float32)
    got = model.encode(TEXTS)
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("scoring", ["csls", "cosine"])
def test_search_is_bit_exact_with_otkd_query(otkd_bin, blob_path, scoring):
    model = otkd.Model.load(blob_path)
    k = 10
    rust = run(otkd_bin, "query", "--blob", blob_path, "-k", k, "--scoring", scoring, "--json",
               stdin="\n".join(QUERY_TEXTS) + "\n")
    assert [r["query"] for r in rust] == QUERY_TEXTS
    ids, scores = model.search(QUERY_TEXTS, k=k, scoring=scoring)
    expected_ids = np.array([[a["id"] for a in r["answers"]] for r in rust], dtype=np.uint32)
    expected_scores = np.array([[a["score"] for a in r["answers"]] for r in rust], dtype=np.float32)
    assert ids.tobytes() == expected_ids.tobytes()
    assert scores.tobytes() == expected_scores.tobytes()


def test_an_index_built_in_python_is_read_by_otkd_query(otkd_bin, tmp_path):
    model = otkd.Model.load(otkd.seeded_blob("tiny"))
    docs = ["a dog runs", "two cats sleep", "a red bicycle", "children play football", "an old man reads"]
    index = otkd.Index.from_embeddings(model.encode(docs), texts=docs, reference=model.encode(QUERIES),
                                       source="python test")
    path = model.with_index(index).save(tmp_path / "mine.otkd")
    assert (tmp_path / "mine.otkd.docs.tsv").read_text() == "".join(f"{i}\t{d}\n" for i, d in enumerate(docs))
    rust = run(otkd_bin, "query", "--blob", path, "-k", 5, "--json", stdin="\n".join(docs) + "\n")
    ids, scores = otkd.Model.load(path).search(docs, k=5)
    for row, r in enumerate(rust):
        assert [a["id"] for a in r["answers"]] == ids[row].tolist()
        assert np.array([a["score"] for a in r["answers"]], dtype=np.float32).tobytes() == scores[row].tobytes()
        assert r["answers"][0]["text"] == docs[row]
