"""Load, encode and search through the binding (no binary needed)."""

import numpy as np
import pytest

import otkd
from texts import QUERIES


def test_load_from_bytes_and_path(tmp_path, tiny):
    path = tmp_path / "tiny.otkd"
    path.write_bytes(otkd.seeded_blob("tiny"))
    model = otkd.Model.load(path)
    assert model.to_bytes() == tiny.to_bytes()
    assert otkd.Model.load(str(path)).out_dim == 32
    assert otkd.Model.load(bytearray(path.read_bytes())).documents == 64
    c = model.config
    assert (c["dim"], c["layers"], c["heads"], c["ffn"], c["out_dim"]) == (32, 1, 4, 64, 32)
    assert "documents 64" in repr(model)


def test_encode_is_a_float32_batch_of_unit_rows(tiny):
    e = tiny.encode(QUERIES)
    assert e.dtype == np.float32 and e.shape == (len(QUERIES), 32)
    assert e.flags.writeable and e.flags.c_contiguous
    norms = np.linalg.norm(e, axis=1)
    assert np.all(np.abs(norms - 1) < 0.02), norms
    # One text at a time gives the same bits as the batch, and encoding is deterministic.
    one = np.stack([tiny.encode([q])[0] for q in QUERIES])
    assert one.tobytes() == e.tobytes()
    assert tiny.encode(QUERIES).tobytes() == e.tobytes()
    assert tiny.encode([]).shape == (0, 32)


def test_encode_int8_dequantizes_to_encode(tiny):
    values, scales = tiny.encode_int8(QUERIES)
    assert values.dtype == np.int8 and scales.dtype == np.float32
    assert np.abs(values).max() == 127
    assert ((values.astype(np.float32) * scales[:, None]).tobytes() == tiny.encode(QUERIES).tobytes())


def test_search_ranks_best_first(tiny):
    ids, scores = tiny.search(QUERIES, k=5)
    assert ids.shape == scores.shape == (len(QUERIES), 5)
    assert ids.dtype == np.uint32 and scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert np.all((ids >= 1000) & (ids < 1064))
    cos_ids, cos_scores = tiny.search(QUERIES, k=5, scoring="cosine")
    assert np.all(cos_scores <= 1.01)
    # k above the index size returns every document once.
    all_ids, _ = tiny.search(QUERIES[:1], k=100)
    assert sorted(all_ids[0].tolist()) == list(range(1000, 1064))


def test_search_cosine_matches_numpy_on_the_int8_embeddings(tiny):
    # Documents as unit vectors: a one-document index per probe is overkill; instead check that
    # cosine scores are the dot products of the query's int8 embedding with the index's documents
    # by re-ranking the full list.
    ids, scores = tiny.search(QUERIES, k=64, scoring="cosine")
    csls_ids, csls_scores = tiny.search(QUERIES, k=64, scoring="csls")
    for row in range(len(QUERIES)):
        cos = dict(zip(ids[row].tolist(), scores[row].tolist()))
        for i, s in zip(csls_ids[row].tolist(), csls_scores[row].tolist()):
            # CSLS = 2 cos - r(d), r(d) in [0, 0.5) for the seeded index.
            r = 2 * cos[i] - s
            assert -1e-4 <= r < 0.5 + 1e-4


def test_bad_arguments_are_clear(tiny):
    with pytest.raises(TypeError, match="list of str"):
        tiny.encode("one string")
    with pytest.raises(TypeError, match="not str"):
        tiny.encode(["ok", 3])
    with pytest.raises(ValueError, match="scoring"):
        tiny.search(["a"], k=3, scoring="dot")
    with pytest.raises(ValueError, match="k = 0"):
        tiny.search(["a"], k=0)
    with pytest.raises(ValueError, match="k = 101"):
        tiny.search(["a"], k=101)


def test_a_blob_without_index_cannot_search():
    model = otkd.Model.load(otkd.seeded_blob("tiny"))
    # An index of no document.
    empty = otkd.Index.from_embeddings(np.zeros((0, 32), dtype=np.float32))
    no_docs = model.with_index(empty)
    assert no_docs.documents == 0
    ids, scores = no_docs.search(["a dog"], k=3)
    assert ids.shape == (1, 0)


def test_empty_query_is_an_encode_error(tiny):
    for texts, position in [([""], 0), (["a dog", "  ?! ,", "x"], 1)]:
        with pytest.raises(otkd.EncodeError) as info:
            tiny.encode(texts)
        assert info.value.name == "EmptyQuery"
        assert info.value.position == position
        assert "no word" in str(info.value)
        assert isinstance(info.value, otkd.OtkdError)
        with pytest.raises(otkd.EncodeError):
            tiny.search(texts, k=3)


def test_a_100kB_query_is_cut_at_max_words_not_a_crash(tiny):
    words = ("palabra " * 12_500)[:100_000]
    one_run = "a" * 100_000
    mixed = "🐕" * 25_000  # 100 kB of UTF-8
    for text in (words, one_run, mixed):
        assert len(text.encode("utf-8")) >= 100_000
        e = tiny.encode([text])
        assert np.all(np.isfinite(e)) and abs(np.linalg.norm(e) - 1) < 0.02
        ids, _ = tiny.search([text], k=3)
        assert ids.shape == (1, 3)
    assert tiny.words_dropped(words) == 12_500 - 32
    # The words past max_words are ignored: the embedding is that of the first 32 words.
    assert tiny.encode([words]).tobytes() == tiny.encode(["palabra " * 32]).tobytes()


def test_threads_share_a_model_while_encoding(tiny):
    """encode releases the GIL (py.detach); threads on one model get the same bits."""
    import threading

    model = otkd.Model.load(otkd.seeded_blob("micro"))
    texts = QUERIES * 20
    expected = model.encode(texts)
    results = [None] * 4

    def work(i):
        results[i] = model.encode(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.tobytes() == expected.tobytes() for r in results)
