//! `otkd._otkd`: the native module of the `otkd` Python package, over [`otkd_runtime`].
//!
//! It trades in bytes (little-endian f32, u32, i8 rows) so that it needs no numpy headers; the
//! Python layer (`python/otkd/__init__.py`) wraps them as numpy arrays without a copy, and owns the
//! public API and its docs. Every answer is the runtime's, computed by the same calls the host's
//! `HostRuntime` (`otkd query`, `otkd embed --blob`) makes: a loaded [`otkd_runtime::Model`], scratch memory for
//! the tokenizer's `max_words` words, [`otkd_runtime::Model::encode`], [`otkd_runtime::Index::search`] with the
//! runtime's streaming top-k. The GIL is released while a batch is encoded and searched.
//!
//! Errors are exceptions of the classes below, each carrying the runtime's error name (`name`,
//! e.g. `"BadCrc"`) and its `Display` message; an encode error also names the text's position in
//! the batch (`position`).

use std::ptr::NonNull;

use otkd_runtime::{
    Embedding, EncodeError, Feature, IndexParts, LoadError, Model as RuntimeModel, Query, QueryTerms,
    Scoring, Scratch, SearchError, WriteError,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::type_object::PyTypeInfo;
use pyo3::types::{PyBytes, PyDict};

/// The exception classes (`otkd.OtkdError` and its subclasses, named as the runtime's error types).
mod errors {
    use pyo3::create_exception;
    use pyo3::exceptions::PyException;

    create_exception!(otkd, OtkdError, PyException, "Base class of every error the otkd runtime reports.");
    create_exception!(
        otkd,
        LoadError,
        OtkdError,
        "The runtime refused the blob (`name`: the runtime's LoadError variant)."
    );
    create_exception!(
        otkd,
        EncodeError,
        OtkdError,
        "A text could not be encoded (`name`: the runtime's EncodeError variant)."
    );
    create_exception!(
        otkd,
        SearchError,
        OtkdError,
        "The index could not be searched (`name`: the runtime's SearchError variant)."
    );
    create_exception!(
        otkd,
        WriteError,
        OtkdError,
        "The blob writer refused the parts (`name`: the runtime's WriteError variant)."
    );
}

/// The most answers one query returns, as the host's `MAX_ANSWERS`.
const MAX_ANSWERS: usize = 100;
/// The feature buffer's capacity, as the host's `HostRuntime`.
const MAX_FEATURES: usize = 8192;
/// The neighbours a document's CSLS hubness term averages over: the host's `eval::CSLS_K`.
const CSLS_K: usize = 10;

/// The variant's name of a runtime error's `Debug` form (`UnsupportedVersion { .. }` ->
/// `UnsupportedVersion`).
fn variant_name(debug: &str) -> String {
    debug.split([' ', '{', '(']).next().unwrap_or(debug).to_string()
}

fn error<E: PyTypeInfo>(py: Python<'_>, name: &str, message: String) -> PyErr {
    let err = PyErr::new::<E, _>(message);
    // Setting an attribute on a fresh exception instance cannot fail in practice; if it did, the
    // exception still carries its message.
    let _ = err.value(py).setattr("name", name);
    err
}

fn load_error(py: Python<'_>, e: LoadError) -> PyErr {
    error::<errors::LoadError>(py, &variant_name(&format!("{e:?}")), e.to_string())
}

fn write_error(py: Python<'_>, e: WriteError) -> PyErr {
    error::<errors::WriteError>(py, &variant_name(&format!("{e:?}")), e.to_string())
}

fn search_error(py: Python<'_>, e: SearchError) -> PyErr {
    error::<errors::SearchError>(py, &variant_name(&format!("{e:?}")), e.to_string())
}

fn encode_error(py: Python<'_>, position: usize, text: &str, e: EncodeError) -> PyErr {
    let shown: String = text.chars().take(60).collect();
    let more = if shown.len() < text.len() { "..." } else { "" };
    let err = error::<errors::EncodeError>(
        py,
        &variant_name(&format!("{e:?}")),
        format!("text {position} ({shown:?}{more}): {e}"),
    );
    let _ = err.value(py).setattr("position", position);
    err
}

/// A blob's bytes, owned, and the runtime's model borrowing them.
///
/// The bytes live in a heap allocation that is never written, moved or freed while `model`
/// exists: they are freed in `Drop`, after which nothing reads `model`.
struct Loaded {
    model: RuntimeModel<'static>,
    bytes: NonNull<[u8]>,
}

// SAFETY: the blob bytes are immutable for the whole life of `Loaded` and the runtime's model only
// reads them (it holds shared borrows and plain values); sharing or sending it across threads is as
// safe as sharing a `&'static [u8]`.
unsafe impl Send for Loaded {}
// SAFETY: as above: no interior mutability anywhere in `Loaded`.
unsafe impl Sync for Loaded {}

impl Loaded {
    fn new(blob: Vec<u8>) -> Result<Self, LoadError> {
        let bytes = NonNull::from(Box::leak(blob.into_boxed_slice()));
        // SAFETY: `bytes` came from `Box::leak` just above: valid, initialised and unaliased; it is
        // only freed in `Drop` (or below, on failure), when no borrow of it is left.
        let slice: &'static [u8] = unsafe { bytes.as_ref() };
        match RuntimeModel::from_bytes(slice) {
            Ok(model) => Ok(Self { model, bytes }),
            Err(e) => {
                // SAFETY: the failed load left no borrow of the bytes; they were leaked from a Box.
                drop(unsafe { Box::from_raw(bytes.as_ptr()) });
                Err(e)
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: valid until `Drop` (see the type's docs).
        unsafe { self.bytes.as_ref() }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: the allocation came from `Box::leak` in `Loaded::new`; `self.model`, the only
        // borrower, is never read again (it has no `Drop` that reads the bytes: it is plain data).
        drop(unsafe { Box::from_raw(self.bytes.as_ptr()) });
    }
}

/// Scratch memory for texts of up to the tokenizer's `max_words` words (longer texts are cut
/// there by the tokenizer, as on the host and on a device), as the host's `HostRuntime` sizes it.
struct OwnedScratch {
    features: Box<heapless::Vec<Feature, MAX_FEATURES>>,
    floats: Vec<f32>,
    int8s: Vec<i8>,
}

impl OwnedScratch {
    fn new(model: &RuntimeModel<'_>) -> Self {
        let config = *model.config();
        let words = usize::from(config.tokenizer.max_words);
        Self {
            features: Box::default(),
            floats: vec![0.0; Scratch::floats_len(&config, words)],
            int8s: vec![0; Scratch::int8s_len(&config, words)],
        }
    }

    fn encode(&mut self, model: &RuntimeModel<'_>, text: &str) -> Result<Embedding, EncodeError> {
        self.features.clear();
        let mut scratch = Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s);
        model.encode(text, &mut scratch)
    }

    /// The text's lexical terms when the model's index has a lexicon (hybrid search), as the
    /// device and `otkd query` compute them.
    fn terms(&mut self, model: &RuntimeModel<'_>, text: &str) -> Result<Option<QueryTerms>, EncodeError> {
        if model.index().and_then(|i| i.lexical_weight()).is_none() {
            return Ok(None);
        }
        let mut scratch = Scratch::new(self.features.as_mut_view(), &mut self.floats, &mut self.int8s);
        let mut terms = QueryTerms::new();
        model.terms(text, &mut scratch, &mut terms)?;
        Ok(Some(terms))
    }
}

/// Encodes every text, stopping at the first that fails (its position and error).
fn encode_all<T>(
    model: &RuntimeModel<'_>,
    texts: &[String],
    mut each: impl FnMut(&Embedding) -> Result<T, SearchError>,
) -> Result<Vec<T>, (usize, Result<EncodeError, SearchError>)> {
    let mut scratch = OwnedScratch::new(model);
    let mut out = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let embedding = scratch.encode(model, text).map_err(|e| (i, Ok(e)))?;
        out.push(each(&embedding).map_err(|e| (i, Err(e)))?);
    }
    Ok(out)
}

fn encode_failure(
    py: Python<'_>,
    texts: &[String],
    (i, e): (usize, Result<EncodeError, SearchError>),
) -> PyErr {
    match e {
        Ok(e) => encode_error(py, i, texts.get(i).map_or("", String::as_str), e),
        Err(e) => search_error(py, e),
    }
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn read_f32s(bytes: &[u8], what: &str) -> PyResult<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(PyValueError::new_err(format!(
            "{what}: {} bytes is not a whole number of float32",
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn parse_scoring(scoring: &str) -> PyResult<Scoring> {
    match scoring.to_ascii_lowercase().as_str() {
        "csls" => Ok(Scoring::Csls),
        "cosine" => Ok(Scoring::Cosine),
        other => Err(PyValueError::new_err(format!("scoring {other:?}: use \"csls\" or \"cosine\""))),
    }
}

/// A loaded blob (native side of `otkd.Model`).
#[pyclass(module = "otkd._otkd", name = "NativeModel", frozen)]
struct NativeModel {
    loaded: Loaded,
}

#[pymethods]
impl NativeModel {
    /// Loads and checks `blob` exactly as the runtime does (`Model::from_bytes`).
    #[new]
    fn new(py: Python<'_>, blob: Vec<u8>) -> PyResult<Self> {
        let loaded = py.detach(|| Loaded::new(blob)).map_err(|e| load_error(py, e))?;
        Ok(Self { loaded })
    }

    /// The blob's bytes.
    fn blob<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.loaded.bytes())
    }

    /// The architecture and provenance as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = &self.loaded.model;
        let c = model.config();
        let d = PyDict::new(py);
        d.set_item("buckets", c.tokenizer.buckets)?;
        d.set_item("max_words", c.tokenizer.max_words)?;
        d.set_item("dim", c.dim)?;
        d.set_item("layers", c.layers)?;
        d.set_item("heads", c.heads)?;
        d.set_item("ffn", c.ffn)?;
        d.set_item("out_dim", c.out_dim)?;
        d.set_item("layer_norm_eps", c.layer_norm_eps)?;
        d.set_item("lang", model.provenance().lang)?;
        d.set_item("index_source", model.provenance().index_source)?;
        d.set_item("documents", model.index().map(|i| i.len()))?;
        d.set_item("blob_bytes", self.loaded.bytes().len())?;
        d.set_item("weight_bytes", model.weight_bytes())?;
        Ok(d)
    }

    /// Words of `text` past the tokenizer's `max_words`, which the runtime drops.
    fn words_dropped(&self, text: &str) -> u32 {
        let mut features = Box::new(heapless::Vec::<Feature, MAX_FEATURES>::new());
        otkd_runtime::tokenize(&self.loaded.model.config().tokenizer, text, features.as_mut_view())
            .words_dropped
    }

    /// The runtime's embeddings of `texts` dequantized (`Embedding::to_f32`): `len(texts) *
    /// out_dim` little-endian f32.
    fn encode<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyBytes>> {
        let model = &self.loaded.model;
        let rows = py
            .detach(|| encode_all(model, &texts, |e| Ok(f32_bytes(e.to_f32()))))
            .map_err(|f| encode_failure(py, &texts, f))?;
        Ok(PyBytes::new(py, &rows.concat()))
    }

    /// The runtime's embeddings as stored: int8 values (`len(texts) * out_dim` bytes) and one f32
    /// scale per text.
    fn encode_int8<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let model = &self.loaded.model;
        let rows = py
            .detach(|| {
                encode_all(model, &texts, |e| {
                    Ok((e.values().iter().map(|v| v.cast_unsigned()).collect::<Vec<u8>>(), e.scale()))
                })
            })
            .map_err(|f| encode_failure(py, &texts, f))?;
        let values: Vec<u8> = rows.iter().flat_map(|(v, _)| v.iter().copied()).collect();
        let scales = f32_bytes(rows.iter().map(|(_, s)| *s));
        Ok((PyBytes::new(py, &values), PyBytes::new(py, &scales)))
    }

    /// The top `k` documents of each text (ids u32, scores f32, `len(texts) * k'` each, where
    /// `k' = min(k, documents)`), best first, ties by smaller id, as the runtime ranks them.
    fn search<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        k: usize,
        scoring: &str,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, usize)> {
        let scoring = parse_scoring(scoring)?;
        let model = &self.loaded.model;
        let Some(index) = model.index() else {
            return Err(error::<errors::SearchError>(
                py,
                "NoIndex",
                "search: the blob has no document index".into(),
            ));
        };
        if k == 0 || k > MAX_ANSWERS {
            return Err(PyValueError::new_err(format!("k = {k}: ask for 1 to {MAX_ANSWERS} answers")));
        }
        let k = k.min(index.len());
        let rows = py
            .detach(|| {
                let mut scratch = OwnedScratch::new(model);
                let mut rows = Vec::with_capacity(texts.len());
                for (i, text) in texts.iter().enumerate() {
                    let embedding = scratch.encode(model, text).map_err(|e| (i, Ok(e)))?;
                    let terms = scratch.terms(model, text).map_err(|e| (i, Ok(e)))?;
                    let query = Query { embedding: &embedding, terms: terms.as_ref() };
                    let hits = index.search::<MAX_ANSWERS>(query, k, scoring).map_err(|e| (i, Err(e)))?;
                    rows.push(hits.to_vec());
                }
                Ok(rows)
            })
            .map_err(|f| encode_failure(py, &texts, f))?;
        let ids: Vec<u8> = rows.iter().flatten().flat_map(|h| h.id.to_le_bytes()).collect();
        let scores = f32_bytes(rows.iter().flatten().map(|h| h.score));
        Ok((PyBytes::new(py, &ids), PyBytes::new(py, &scores), k))
    }

    /// This blob's student (weights byte for byte) with a new index: `ids` (u32), `embeddings`
    /// (f32, `len(ids) * out_dim`, L2-normalised here as the host's exporter does) and `hubness`
    /// (f32 per document); returns the new blob's bytes.
    fn with_index<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        embeddings: &[u8],
        hubness: &[u8],
        index_source: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let dim = usize::from(self.loaded.model.config().out_dim);
        let embeddings = read_f32s(embeddings, "embeddings")?;
        let hubness = read_f32s(hubness, "hubness")?;
        if embeddings.len() != ids.len() * dim || hubness.len() != ids.len() {
            return Err(PyValueError::new_err(format!(
                "index: {} ids, {} embedding values (out_dim {dim}), {} hubness terms",
                ids.len(),
                embeddings.len(),
                hubness.len()
            )));
        }
        let index = IndexParts { ids, embeddings: normalise_rows(embeddings, dim), hubness, lexical: None };
        let blob = py
            .detach(|| self.loaded.model.to_bytes_with_index(Some(&index), index_source))
            .map_err(|e| write_error(py, e))?;
        Ok(PyBytes::new(py, &blob))
    }
}

/// Rows L2-normalised in f64 and rounded once to f32, as the host's exporter (`normalise_rows`).
fn normalise_rows(mut rows: Vec<f32>, dim: usize) -> Vec<f32> {
    for row in rows.chunks_mut(dim.max(1)) {
        let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
    }
    rows
}

/// NaN ranks last, as the host's `eval::metrics::key`.
fn key(s: f32) -> f32 {
    if s.is_nan() { f32::NEG_INFINITY } else { s }
}

/// The CSLS hubness term of every document, as the host's `eval::metrics::hubness`: the mean
/// cosine (rows normalised in f64, rounded to f32, f32 dot products) of each document to its `k`
/// nearest reference rows, averaged in f64; with fewer than `k` reference rows, over all of them;
/// with none, 0.
fn hubness_terms(documents: &[f32], reference: &[f32], dim: usize, k: usize) -> Vec<f32> {
    let docs = documents.len() / dim.max(1);
    let refs = reference.len() / dim.max(1);
    let k = k.min(refs);
    if k == 0 {
        return vec![0.0; docs];
    }
    let documents = normalise_rows(documents.to_vec(), dim);
    let reference = normalise_rows(reference.to_vec(), dim);
    let mut row = vec![0f32; refs];
    documents
        .chunks_exact(dim)
        .map(|d| {
            for (r, q) in row.iter_mut().zip(reference.chunks_exact(dim)) {
                *r = d.iter().zip(q).map(|(a, b)| a * b).sum();
            }
            row.select_nth_unstable_by(k - 1, |a, b| key(*b).total_cmp(&key(*a)));
            (row[..k].iter().map(|&v| f64::from(key(v).max(-1.0))).sum::<f64>() / k as f64) as f32
        })
        .collect()
}

/// CSLS hubness terms (f32 per document) of `documents` against `reference` (both f32 rows of
/// width `dim`), over the `k` nearest reference rows (default: the host's 10).
#[pyfunction]
#[pyo3(signature = (documents, reference, dim, k = CSLS_K))]
fn hubness<'py>(
    py: Python<'py>,
    documents: &[u8],
    reference: &[u8],
    dim: usize,
    k: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    if dim == 0 {
        return Err(PyValueError::new_err("dim must be positive"));
    }
    let documents = read_f32s(documents, "documents")?;
    let reference = read_f32s(reference, "reference")?;
    if !documents.len().is_multiple_of(dim) || !reference.len().is_multiple_of(dim) {
        return Err(PyValueError::new_err(format!("documents and reference must be rows of width {dim}")));
    }
    let terms = py.detach(|| hubness_terms(&documents, &reference, dim, k));
    Ok(PyBytes::new(py, &f32_bytes(terms)))
}

/// A seeded test blob of the runtime's fixtures (`otkd_runtime::testing`): `"tiny"` (the
/// firmware's default, 64 documents), `"micro"` (the micro student's shape, 1000 documents) or
/// `"minimal"` (every part at its smallest, 4 documents). For tests and examples only.
#[pyfunction]
fn seeded_blob<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
    use otkd_runtime::testing;
    let blob = match name {
        "tiny" => testing::tiny_blob(),
        "micro" => testing::micro_blob(),
        "minimal" => testing::seeded_blob(testing::MINIMAL, 4, testing::SEED),
        other => {
            return Err(PyValueError::new_err(format!("no seeded blob {other:?}: tiny, micro or minimal")));
        }
    };
    Ok(PyBytes::new(py, &blob))
}

#[pymodule]
fn _otkd(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(hubness, m)?)?;
    m.add_function(wrap_pyfunction!(seeded_blob, m)?)?;
    m.add("OtkdError", py.get_type::<errors::OtkdError>())?;
    m.add("LoadError", py.get_type::<errors::LoadError>())?;
    m.add("EncodeError", py.get_type::<errors::EncodeError>())?;
    m.add("SearchError", py.get_type::<errors::SearchError>())?;
    m.add("WriteError", py.get_type::<errors::WriteError>())?;
    m.add("CSLS_K", CSLS_K)?;
    m.add("MAX_ANSWERS", MAX_ANSWERS)?;
    Ok(())
}
