"""otkd from Python: the int8 runtime of an otkd blob (the code a device runs), bit for bit.

>>> import otkd
>>> model = otkd.Model.load("best.otkd")            # or the blob's bytes
>>> emb = model.encode(["jaʼa, qhana!"])              # float32 [1, out_dim]
>>> ids, scores = model.search(["jaʼa, qhana!"], k=5) # [1, 5] each, CSLS by default

Every answer is computed by the Rust runtime (``otkd-runtime``) with the same calls as
``otkd query`` / ``otkd embed --blob``: same tokenizer, same int8 arithmetic, same top-k. Errors are
:class:`OtkdError` subclasses carrying the runtime's error name (``.name``) and message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from . import _otkd
from ._otkd import CSLS_K, MAX_ANSWERS, EncodeError, LoadError, OtkdError, SearchError, WriteError

__all__ = [
    "Model",
    "Index",
    "OtkdError",
    "LoadError",
    "EncodeError",
    "SearchError",
    "WriteError",
    "CSLS_K",
    "MAX_ANSWERS",
    "seeded_blob",
]

PathOrBytes = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


def _texts(texts: Union[str, Iterable[str]]) -> list:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str, not one str (wrap it: [text])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
    return texts


def _rows_f32(values: "np.typing.ArrayLike", what: str) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D [rows, dim], got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} holds NaN or infinite values")
    return array


class Index:
    """A document index for a blob: per document an id, its embedding and its CSLS hubness term.

    Build it with :meth:`Index.from_embeddings` from your own document embeddings (e.g. by
    sentence-transformers with the teacher the student was distilled from), then write it into a
    blob with ``model.with_index(index).save(path)``.
    """

    def __init__(self, embeddings: np.ndarray, ids: np.ndarray, hubness: np.ndarray,
                 texts: Optional[list] = None, source: str = "") -> None:
        self.embeddings = embeddings
        self.ids = ids
        self.hubness = hubness
        self.texts = texts
        self.source = source

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __repr__(self) -> str:
        return f"otkd.Index({len(self)} documents, dim {self.embeddings.shape[1]}, source {self.source!r})"

    @classmethod
    def from_embeddings(
        cls,
        embeddings: "np.typing.ArrayLike",
        ids: Optional["np.typing.ArrayLike"] = None,
        texts: Optional[Sequence[str]] = None,
        reference: Optional["np.typing.ArrayLike"] = None,
        source: str = "",
        k: int = CSLS_K,
    ) -> "Index":
        """An index of documents embedded by the teacher.

        Args:
            embeddings: ``[n, out_dim]`` document embeddings (need not be normalised; the writer
                L2-normalises each row in f64, as ``otkd export`` does).
            ids: ``n`` ids in ``[0, 2**32)`` that ``search`` returns (default ``0..n``);
                ``otkd query`` finds each hit's text by the position of its id in the index.
            texts: ``n`` document texts, written beside the blob as ``BLOB.docs.tsv`` (the
                format ``otkd query`` reads: ``id<TAB>text`` per line).
            reference: ``[m, out_dim]`` student embeddings of reference queries in the student's
                language (e.g. ``model.encode(queries)``), never the test queries. Each
                document's CSLS term is its mean cosine to its ``k`` nearest reference rows (as
                ``otkd export`` computes it); without a reference the terms are 0 and CSLS ranks
                as cosine does.
            source: where the documents come from, recorded in the blob's provenance.
            k: neighbours averaged per document (default the host's 10).
        """
        embeddings = _rows_f32(embeddings, "embeddings")
        n, dim = embeddings.shape
        if ids is None:
            ids = np.arange(n, dtype="<u4")
        else:
            raw = np.asarray(ids)
            if raw.shape != (n,):
                raise ValueError(f"ids must have shape ({n},), got {raw.shape}")
            if raw.size and (not np.issubdtype(raw.dtype, np.integer) or raw.min() < 0 or raw.max() > 0xFFFF_FFFF):
                raise ValueError("ids must be integers in [0, 2**32)")
            ids = raw.astype("<u4")
        if texts is not None:
            texts = [str(t) for t in texts]
            if len(texts) != n:
                raise ValueError(f"{len(texts)} texts for {n} embeddings")
        if reference is None:
            hubness = np.zeros(n, dtype="<f4")
        else:
            reference = _rows_f32(reference, "reference")
            if reference.shape[1] != dim:
                raise ValueError(f"reference rows are {reference.shape[1]} wide, documents {dim}")
            raw = _otkd.hubness(embeddings.tobytes(), reference.tobytes(), dim, k)
            hubness = np.frombuffer(raw, dtype="<f4").copy()
        return cls(embeddings, ids, hubness, texts, source)


class Model:
    """A loaded otkd blob: the int8 student (and its document index, when it has one)."""

    def __init__(self, native: "_otkd.NativeModel") -> None:
        self._native = native
        self._info = native.info()
        self._texts: Optional[list] = None

    @classmethod
    def load(cls, blob: PathOrBytes) -> "Model":
        """Loads a blob from a path or from its bytes, checked exactly as the runtime checks it.

        Raises:
            LoadError: the runtime refused the blob; ``.name`` is the runtime's ``LoadError``
                variant (``"BadMagic"``, ``"BadCrc"``, ``"Truncated"``, ...).
            OSError: the file cannot be read.
        """
        if isinstance(blob, (bytes, bytearray, memoryview)):
            data = bytes(blob)
        else:
            data = Path(blob).read_bytes()
        return cls(_otkd.NativeModel(data))

    @property
    def out_dim(self) -> int:
        """Width of an embedding."""
        return int(self._info["out_dim"])

    @property
    def config(self) -> dict:
        """The architecture, tokenizer and provenance the blob records, and its sizes."""
        return dict(self._info)

    @property
    def documents(self) -> Optional[int]:
        """Documents in the blob's index (``None`` without an index)."""
        return self._info["documents"]

    def to_bytes(self) -> bytes:
        """The blob's bytes."""
        return self._native.blob()

    def words_dropped(self, text: str) -> int:
        """Words of ``text`` past the tokenizer's ``max_words``, which the runtime ignores."""
        return self._native.words_dropped(text)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """The runtime's embeddings of ``texts``: float32 ``[len(texts), out_dim]``.

        Each row is the int8 embedding the runtime computes (unit length before quantization),
        dequantized as ``Embedding::to_f32`` does (``value * scale``): the numbers
        ``otkd embed --blob`` prints. One native call for the whole batch, without the GIL.
        Words past the tokenizer's ``max_words`` are ignored (see :meth:`words_dropped`).

        Raises:
            EncodeError: a text has no word (``.name == "EmptyQuery"``); ``.position`` is its
                index in ``texts``.
        """
        texts = _texts(texts)
        raw = self._native.encode(texts)
        return np.frombuffer(raw, dtype="<f4").reshape(len(texts), self.out_dim).copy()

    def encode_int8(self, texts: Iterable[str]) -> Tuple[np.ndarray, np.ndarray]:
        """The runtime's embeddings as stored: int8 ``[n, out_dim]`` and float32 scales ``[n]``."""
        texts = _texts(texts)
        values, scales = self._native.encode_int8(texts)
        return (np.frombuffer(values, dtype=np.int8).reshape(len(texts), self.out_dim).copy(),
                np.frombuffer(scales, dtype="<f4").copy())

    def search(self, texts: Iterable[str], k: int = 10, scoring: str = "csls") -> Tuple[np.ndarray, np.ndarray]:
        """The top ``k`` documents of the blob's index for each text, as ``otkd query`` ranks them.

        Args:
            texts: the queries.
            k: answers per query, 1 to ``MAX_ANSWERS`` (fewer when the index is smaller).
            scoring: ``"csls"`` (``2 cos - r(d)``, the hubness-corrected score) or ``"cosine"``.

        Returns:
            ``(ids, scores)``: uint32 and float32 arrays ``[len(texts), k]``, best first (ties by
            the smaller id).

        Raises:
            SearchError: the blob has no index (``.name == "NoIndex"``).
            EncodeError: a text has no word.
        """
        texts = _texts(texts)
        ids, scores, kk = self._native.search(texts, int(k), scoring)
        ids = np.frombuffer(ids, dtype="<u4").reshape(len(texts), kk).copy()
        scores = np.frombuffer(scores, dtype="<f4").reshape(len(texts), kk).copy()
        return ids, scores

    def with_index(self, index: Index) -> "Model":
        """This model (its int8 weights byte for byte) with ``index`` as its document index.

        The blob is written by the runtime's writer; the documents are quantized as
        ``otkd export`` quantizes them.

        Raises:
            WriteError: the writer refused the index (e.g. ``.name == "NonFinite"``).
            ValueError: the index's width is not the model's ``out_dim``.
        """
        if index.embeddings.shape[1] != self.out_dim:
            raise ValueError(f"index rows are {index.embeddings.shape[1]} wide; the model's out_dim is {self.out_dim}")
        blob = self._native.with_index(
            [int(i) for i in index.ids], index.embeddings.tobytes(), index.hubness.astype("<f4").tobytes(), index.source
        )
        model = Model(_otkd.NativeModel(blob))
        model._texts = None if index.texts is None else list(zip((str(int(i)) for i in index.ids), index.texts))
        return model

    def save(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """Writes the blob to ``path`` atomically (and, when the index came with texts, the
        ``PATH.docs.tsv`` texts file ``otkd query`` reads beside it). Returns the path."""
        path = Path(path)
        _write_atomically(path, self.to_bytes())
        if self._texts is not None:
            clean = lambda s: s.replace("\t", " ").replace("\n", " ").replace("\r", " ")  # noqa: E731
            tsv = "".join(f"{clean(i)}\t{clean(t)}\n" for i, t in self._texts)
            _write_atomically(path.with_name(path.name + ".docs.tsv"), tsv.encode("utf-8"))
        return path

    def __repr__(self) -> str:
        i = self._info
        return (f"otkd.Model(dim {i['dim']}, layers {i['layers']}, out_dim {i['out_dim']}, "
                f"lang {i['lang']!r}, documents {i['documents']}, {i['blob_bytes']} bytes)")


def seeded_blob(name: str = "tiny") -> bytes:
    """A seeded blob of the runtime's test fixtures (random weights, an index of random unit
    documents with ids ``1000 + i``): ``"tiny"`` (64 documents), ``"micro"`` (the micro student's
    shape, 1000 documents) or ``"minimal"``. For tests and examples; it retrieves nothing useful."""
    return _otkd.seeded_blob(name)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
