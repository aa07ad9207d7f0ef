"""Index.from_embeddings -> Model.with_index -> save -> load: the round trip."""

import numpy as np
import pytest

import otkd
from texts import QUERIES


def numpy_hubness(docs, reference, k=10):
    d = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    r = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cos = d.astype(np.float64) @ r.astype(np.float64).T
    k = min(k, r.shape[0])
    return np.sort(cos, axis=1)[:, ::-1][:, :k].mean(axis=1)


def test_round_trip_keeps_weights_and_finds_each_document(tmp_path):
    model = otkd.Model.load(otkd.seeded_blob("micro"))
    docs = list(QUERIES)
    emb = model.encode(docs) * 3.0  # any scale: rows are normalised by the writer
    ids = np.arange(500, 500 + len(docs))
    index = otkd.Index.from_embeddings(emb, ids, texts=docs, reference=model.encode(QUERIES), source="test docs")
    assert len(index) == len(docs)
    saved = model.with_index(index).save(tmp_path / "mine.otkd")
    loaded = otkd.Model.load(saved)
    assert loaded.documents == len(docs)
    assert loaded.config["index_source"] == "test docs"
    assert loaded.config["lang"] == model.config["lang"]
    assert loaded.config["weight_bytes"] == model.config["weight_bytes"]
    # Same student: the same embeddings, bit for bit.
    assert loaded.encode(QUERIES).tobytes() == model.encode(QUERIES).tobytes()
    # Each document is its own nearest neighbour by cosine (its embedding is the query's).
    top, scores = loaded.search(docs, k=1, scoring="cosine")
    assert top[:, 0].tolist() == ids.tolist()
    assert np.all(scores[:, 0] > 0.98)
    tsv = (tmp_path / "mine.otkd.docs.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0] == f"500\t{docs[0]}"


def test_the_same_index_twice_gives_the_same_bytes():
    model = otkd.Model.load(otkd.seeded_blob("tiny"))
    emb = model.encode(QUERIES)
    a = model.with_index(otkd.Index.from_embeddings(emb, reference=emb)).to_bytes()
    b = model.with_index(otkd.Index.from_embeddings(emb.copy(), reference=emb.copy())).to_bytes()
    assert a == b
    # Re-indexing the re-indexed model with the same index changes nothing.
    again = otkd.Model.load(a).with_index(otkd.Index.from_embeddings(emb, reference=emb)).to_bytes()
    assert again == a


def test_hubness_is_the_mean_cosine_to_the_k_nearest_reference_rows():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(50, 32)).astype(np.float32)
    ref = rng.normal(size=(40, 32)).astype(np.float32)
    index = otkd.Index.from_embeddings(docs, reference=ref)
    assert np.allclose(index.hubness, numpy_hubness(docs, ref), atol=1e-6)
    few = otkd.Index.from_embeddings(docs, reference=ref[:3])
    assert np.allclose(few.hubness, numpy_hubness(docs, ref[:3]), atol=1e-6)
    assert np.all(otkd.Index.from_embeddings(docs).hubness == 0)


def test_csls_demotes_the_hub():
    model = otkd.Model.load(otkd.seeded_blob("tiny"))
    queries = model.encode(QUERIES)
    hub = queries.mean(axis=0)  # near every query
    docs = np.vstack([queries[:5], hub[None, :]])
    plain = model.with_index(otkd.Index.from_embeddings(docs))
    corrected = model.with_index(otkd.Index.from_embeddings(docs, reference=queries))
    hub_id = 5
    hits_cos = (plain.search(QUERIES[5:], k=1, scoring="cosine")[0] == hub_id).sum()
    hits_csls = (corrected.search(QUERIES[5:], k=1, scoring="csls")[0] == hub_id).sum()
    assert hits_csls <= hits_cos


def test_index_errors_are_clear():
    model = otkd.Model.load(otkd.seeded_blob("tiny"))
    with pytest.raises(ValueError, match="2-D"):
        otkd.Index.from_embeddings(np.zeros(32))
    with pytest.raises(ValueError, match="NaN"):
        otkd.Index.from_embeddings(np.full((2, 32), np.nan))
    with pytest.raises(ValueError, match="ids must have shape"):
        otkd.Index.from_embeddings(np.ones((2, 32)), ids=[1])
    with pytest.raises(ValueError, match=r"\[0, 2\*\*32\)"):
        otkd.Index.from_embeddings(np.ones((2, 32)), ids=[-1, 2])
    with pytest.raises(ValueError, match="texts"):
        otkd.Index.from_embeddings(np.ones((2, 32)), texts=["one"])
    with pytest.raises(ValueError, match="wide"):
        otkd.Index.from_embeddings(np.ones((2, 32)), reference=np.ones((3, 16)))
    with pytest.raises(ValueError, match="out_dim"):
        model.with_index(otkd.Index.from_embeddings(np.ones((2, 16))))
    bad = otkd.Index.from_embeddings(np.ones((2, 32)))
    bad.hubness = np.array([np.inf, 0], dtype=np.float32)
    with pytest.raises(otkd.WriteError) as info:
        model.with_index(bad)
    assert info.value.name == "NonFinite"
