//! `otkd-capi`: the C API of [`otkd_runtime`], for firmware and programs written in C.
//!
//! Roles:
//! - **load** ([`otkd_load`]): checks a blob in place (header, CRC, every length) and fills a
//!   caller-provided [`OtkdModel`] that borrows it; the blob may be a whole flash region
//!   (the header's length is used, bounded by the region's).
//! - **encode** ([`otkd_encode`]): a UTF-8 text to an [`OtkdEmbedding`] (int8 values and a scale),
//!   in caller-provided scratch memory of [`otkd_scratch_size`] bytes.
//! - **search** ([`otkd_search`]): the top `k` documents of the blob's index by cosine or CSLS,
//!   into caller-provided id and score arrays.
//! - **status codes** ([`OtkdStatus`]): `OTKD_OK` (0) or a negative code; every runtime error
//!   ([`LoadError`], [`EncodeError`], [`SearchError`]) has its own, and [`otkd_status_name`]
//!   names each.
//!
//! Nothing allocates and nothing panics (clippy denies `unwrap`, `expect`, `panic!` and
//! indexing, as in the runtime); every pointer is checked for NULL. The answers are the runtime's,
//! bit for bit: a C program gets the ids and score bits a Rust caller gets (tested by compiling a
//! C program against `include/otkd.h` and the host staticlib).
//!
//! The crate is `#![no_std]`. On the host the staticlib links `std` (its panic and unwinding
//! machinery; link with the system libraries `rustc --print native-static-libs` names); on a bare
//! target (`target_os = "none"`) it brings its own panic handler, which never runs.
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(not(target_os = "none"))]
extern crate std;

use core::ffi::{c_char, c_void};
use core::mem::{align_of, size_of};

use otkd_runtime::{
    Embedding, EncodeError, Feature, LoadError, MAX_OUT_DIM, Model, Scoring, Scratch, SearchError,
};

/// A bare target has no `std` to bring one; nothing here panics (see the crate docs).
#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// What every function returns: [`OTKD_OK`] (0) or a negative error code.
pub type OtkdStatus = i32;

/// Success.
pub const OTKD_OK: OtkdStatus = 0;
/// A required pointer is NULL.
pub const OTKD_ERR_NULL: OtkdStatus = -1;
/// The model was not filled by a successful `otkd_load`.
pub const OTKD_ERR_NOT_LOADED: OtkdStatus = -2;
/// An argument is out of range: a scoring other than `OTKD_SCORING_*`, `k` above `OTKD_MAX_K`,
/// more words than `OTKD_MAX_FEATURES` features hold, an embedding longer than
/// `OTKD_MAX_OUT_DIM` or with a scale that is not finite.
pub const OTKD_ERR_BAD_ARGUMENT: OtkdStatus = -3;
/// The text is not UTF-8.
pub const OTKD_ERR_BAD_UTF8: OtkdStatus = -4;
/// The blob has no document index to search.
pub const OTKD_ERR_NO_INDEX: OtkdStatus = -5;

/// `LoadError::TooShort`: the blob is shorter than its 16-byte header.
pub const OTKD_ERR_LOAD_TOO_SHORT: OtkdStatus = -100;
/// `LoadError::BadMagic`: not an otkd blob (an erased flash region reads as this).
pub const OTKD_ERR_LOAD_BAD_MAGIC: OtkdStatus = -101;
/// `LoadError::UnsupportedVersion`: a blob of another format version.
pub const OTKD_ERR_LOAD_UNSUPPORTED_VERSION: OtkdStatus = -102;
/// `LoadError::Truncated`: fewer bytes than the header declares.
pub const OTKD_ERR_LOAD_TRUNCATED: OtkdStatus = -103;
/// `LoadError::TrailingBytes`: bytes after the payload or the model inside it.
pub const OTKD_ERR_LOAD_TRAILING_BYTES: OtkdStatus = -104;
/// `LoadError::BadCrc`: the payload's CRC-32 differs from the header's (a corrupt blob).
pub const OTKD_ERR_LOAD_BAD_CRC: OtkdStatus = -105;
/// `LoadError::Decode`: the payload is not a postcard encoding of the format.
pub const OTKD_ERR_LOAD_DECODE: OtkdStatus = -106;
/// `LoadError::BadTokenizerConfig`: the tokenizer config is invalid.
pub const OTKD_ERR_LOAD_BAD_TOKENIZER_CONFIG: OtkdStatus = -107;
/// `LoadError::ZeroDimension`: `dim`, `heads`, `ffn` or `out_dim` is 0.
pub const OTKD_ERR_LOAD_ZERO_DIMENSION: OtkdStatus = -108;
/// `LoadError::HeadsDoNotDivideDim`: `heads` does not divide `dim`.
pub const OTKD_ERR_LOAD_HEADS_DO_NOT_DIVIDE_DIM: OtkdStatus = -109;
/// `LoadError::TooManyLayers`: more layers than the runtime holds.
pub const OTKD_ERR_LOAD_TOO_MANY_LAYERS: OtkdStatus = -110;
/// `LoadError::OutDimTooLarge`: `out_dim` above `OTKD_MAX_OUT_DIM`.
pub const OTKD_ERR_LOAD_OUT_DIM_TOO_LARGE: OtkdStatus = -111;
/// `LoadError::BadLayerNormEps`: the LayerNorm epsilon is not finite and positive.
pub const OTKD_ERR_LOAD_BAD_LAYER_NORM_EPS: OtkdStatus = -112;
/// `LoadError::SizeOverflow`: a tensor's size overflows.
pub const OTKD_ERR_LOAD_SIZE_OVERFLOW: OtkdStatus = -113;
/// `LoadError::ShapeMismatch`: a tensor's length does not match the config.
pub const OTKD_ERR_LOAD_SHAPE_MISMATCH: OtkdStatus = -114;
/// `LoadError::NonFinite`: a scale or f32 parameter is NaN or infinite.
pub const OTKD_ERR_LOAD_NON_FINITE: OtkdStatus = -115;
/// A `LoadError` of a newer runtime than this API knows.
pub const OTKD_ERR_LOAD_OTHER: OtkdStatus = -199;

/// `EncodeError::EmptyQuery`: the text has no word.
pub const OTKD_ERR_EMPTY_QUERY: OtkdStatus = -200;
/// `EncodeError::ScratchTooSmall`: the text has more words than the scratch memory holds.
pub const OTKD_ERR_SCRATCH_TOO_SMALL: OtkdStatus = -201;
/// An `EncodeError` of a newer runtime than this API knows.
pub const OTKD_ERR_ENCODE_OTHER: OtkdStatus = -299;

/// `SearchError::DimensionMismatch`: the embedding's width is not the index's.
pub const OTKD_ERR_DIMENSION_MISMATCH: OtkdStatus = -300;
/// A `SearchError` of a newer runtime than this API knows.
pub const OTKD_ERR_SEARCH_OTHER: OtkdStatus = -399;

/// Rank by `cos(q, d)`.
pub const OTKD_SCORING_COSINE: i32 = 0;
/// Rank by CSLS, `2 cos(q, d) - r(d)` (hubness-corrected).
pub const OTKD_SCORING_CSLS: i32 = 1;

/// The widest embedding a blob may have (`otkd_runtime::MAX_OUT_DIM`).
pub const OTKD_MAX_OUT_DIM: usize = 1024;
/// The most documents one `otkd_search` returns.
pub const OTKD_MAX_K: usize = 64;
/// The most features the scratch memory's feature buffer holds (46 per word for the default
/// tokenizer: 178 words).
pub const OTKD_MAX_FEATURES: usize = 8192;
/// Size of [`OtkdModel`]'s storage in `size_t` words.
pub const OTKD_MODEL_WORDS: usize = 448;

const _: () = assert!(OTKD_MAX_OUT_DIM == MAX_OUT_DIM);
const _: () = assert!(size_of::<Model<'static>>() <= OTKD_MODEL_WORDS * size_of::<usize>());
const _: () = assert!(align_of::<Model<'static>>() <= align_of::<usize>());
// The stored model is never dropped (a new `otkd_load` writes over it): it holds no resource, only
// borrowed slices and fixed-capacity lists of `Copy` values.

/// A loaded model: storage that `otkd_load` fills and the other functions read. It borrows the
/// blob: the blob's bytes must stay in place and unchanged while the model is used. Copy it only
/// with its blob; there is nothing to free.
#[repr(C)]
pub struct OtkdModel {
    /// Set by a successful `otkd_load`.
    _loaded: usize,
    /// The runtime's model.
    _storage: [usize; OTKD_MODEL_WORDS],
}

/// The sizes of a loaded model.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtkdInfo {
    /// Width inside the encoder.
    pub dim: u32,
    /// Transformer layers.
    pub layers: u32,
    /// Width of an embedding (`OtkdEmbedding.len`).
    pub out_dim: u32,
    /// Words a text may have: the tokenizer keeps no more.
    pub max_words: u32,
    /// Documents in the index (0: none).
    pub documents: u32,
}

/// A sentence embedding: `len` int8 values and one scale (value `i` is `values[i] * scale`),
/// L2-normalised before quantization, as the index's documents are.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OtkdEmbedding {
    /// The int8 values; those past `len` are 0.
    pub values: [i8; OTKD_MAX_OUT_DIM],
    /// Number of values (the model's `out_dim`).
    pub len: u32,
    /// The scale.
    pub scale: f32,
}

/// [`OtkdModel::_loaded`] of a loaded model.
const LOADED: usize = 0x6f74_6b64;

/// The code of a [`LoadError`].
pub fn load_status(error: LoadError) -> OtkdStatus {
    match error {
        LoadError::TooShort => OTKD_ERR_LOAD_TOO_SHORT,
        LoadError::BadMagic => OTKD_ERR_LOAD_BAD_MAGIC,
        LoadError::UnsupportedVersion { .. } => OTKD_ERR_LOAD_UNSUPPORTED_VERSION,
        LoadError::Truncated => OTKD_ERR_LOAD_TRUNCATED,
        LoadError::TrailingBytes => OTKD_ERR_LOAD_TRAILING_BYTES,
        LoadError::BadCrc => OTKD_ERR_LOAD_BAD_CRC,
        LoadError::Decode => OTKD_ERR_LOAD_DECODE,
        LoadError::BadTokenizerConfig => OTKD_ERR_LOAD_BAD_TOKENIZER_CONFIG,
        LoadError::ZeroDimension => OTKD_ERR_LOAD_ZERO_DIMENSION,
        LoadError::HeadsDoNotDivideDim => OTKD_ERR_LOAD_HEADS_DO_NOT_DIVIDE_DIM,
        LoadError::TooManyLayers => OTKD_ERR_LOAD_TOO_MANY_LAYERS,
        LoadError::OutDimTooLarge => OTKD_ERR_LOAD_OUT_DIM_TOO_LARGE,
        LoadError::BadLayerNormEps => OTKD_ERR_LOAD_BAD_LAYER_NORM_EPS,
        LoadError::SizeOverflow => OTKD_ERR_LOAD_SIZE_OVERFLOW,
        LoadError::ShapeMismatch => OTKD_ERR_LOAD_SHAPE_MISMATCH,
        LoadError::NonFinite => OTKD_ERR_LOAD_NON_FINITE,
        _ => OTKD_ERR_LOAD_OTHER,
    }
}

/// The code of an [`EncodeError`].
pub fn encode_status(error: EncodeError) -> OtkdStatus {
    match error {
        EncodeError::EmptyQuery => OTKD_ERR_EMPTY_QUERY,
        EncodeError::ScratchTooSmall => OTKD_ERR_SCRATCH_TOO_SMALL,
        _ => OTKD_ERR_ENCODE_OTHER,
    }
}

/// The code of a [`SearchError`].
pub fn search_status(error: SearchError) -> OtkdStatus {
    match error {
        SearchError::DimensionMismatch => OTKD_ERR_DIMENSION_MISMATCH,
        _ => OTKD_ERR_SEARCH_OTHER,
    }
}

/// Every status code with its name, as [`otkd_status_name`] gives it.
pub const STATUS_NAMES: [(OtkdStatus, &core::ffi::CStr); 28] = [
    (OTKD_OK, c"OTKD_OK"),
    (OTKD_ERR_NULL, c"OTKD_ERR_NULL"),
    (OTKD_ERR_NOT_LOADED, c"OTKD_ERR_NOT_LOADED"),
    (OTKD_ERR_BAD_ARGUMENT, c"OTKD_ERR_BAD_ARGUMENT"),
    (OTKD_ERR_BAD_UTF8, c"OTKD_ERR_BAD_UTF8"),
    (OTKD_ERR_NO_INDEX, c"OTKD_ERR_NO_INDEX"),
    (OTKD_ERR_LOAD_TOO_SHORT, c"OTKD_ERR_LOAD_TOO_SHORT"),
    (OTKD_ERR_LOAD_BAD_MAGIC, c"OTKD_ERR_LOAD_BAD_MAGIC"),
    (OTKD_ERR_LOAD_UNSUPPORTED_VERSION, c"OTKD_ERR_LOAD_UNSUPPORTED_VERSION"),
    (OTKD_ERR_LOAD_TRUNCATED, c"OTKD_ERR_LOAD_TRUNCATED"),
    (OTKD_ERR_LOAD_TRAILING_BYTES, c"OTKD_ERR_LOAD_TRAILING_BYTES"),
    (OTKD_ERR_LOAD_BAD_CRC, c"OTKD_ERR_LOAD_BAD_CRC"),
    (OTKD_ERR_LOAD_DECODE, c"OTKD_ERR_LOAD_DECODE"),
    (OTKD_ERR_LOAD_BAD_TOKENIZER_CONFIG, c"OTKD_ERR_LOAD_BAD_TOKENIZER_CONFIG"),
    (OTKD_ERR_LOAD_ZERO_DIMENSION, c"OTKD_ERR_LOAD_ZERO_DIMENSION"),
    (OTKD_ERR_LOAD_HEADS_DO_NOT_DIVIDE_DIM, c"OTKD_ERR_LOAD_HEADS_DO_NOT_DIVIDE_DIM"),
    (OTKD_ERR_LOAD_TOO_MANY_LAYERS, c"OTKD_ERR_LOAD_TOO_MANY_LAYERS"),
    (OTKD_ERR_LOAD_OUT_DIM_TOO_LARGE, c"OTKD_ERR_LOAD_OUT_DIM_TOO_LARGE"),
    (OTKD_ERR_LOAD_BAD_LAYER_NORM_EPS, c"OTKD_ERR_LOAD_BAD_LAYER_NORM_EPS"),
    (OTKD_ERR_LOAD_SIZE_OVERFLOW, c"OTKD_ERR_LOAD_SIZE_OVERFLOW"),
    (OTKD_ERR_LOAD_SHAPE_MISMATCH, c"OTKD_ERR_LOAD_SHAPE_MISMATCH"),
    (OTKD_ERR_LOAD_NON_FINITE, c"OTKD_ERR_LOAD_NON_FINITE"),
    (OTKD_ERR_LOAD_OTHER, c"OTKD_ERR_LOAD_OTHER"),
    (OTKD_ERR_EMPTY_QUERY, c"OTKD_ERR_EMPTY_QUERY"),
    (OTKD_ERR_SCRATCH_TOO_SMALL, c"OTKD_ERR_SCRATCH_TOO_SMALL"),
    (OTKD_ERR_ENCODE_OTHER, c"OTKD_ERR_ENCODE_OTHER"),
    (OTKD_ERR_DIMENSION_MISMATCH, c"OTKD_ERR_DIMENSION_MISMATCH"),
    (OTKD_ERR_SEARCH_OTHER, c"OTKD_ERR_SEARCH_OTHER"),
];

/// The name of a status code (`"OTKD_ERR_LOAD_BAD_CRC"`), a static NUL-terminated string;
/// `"OTKD_UNKNOWN"` for a code that is none of them.
#[unsafe(no_mangle)]
pub extern "C" fn otkd_status_name(status: OtkdStatus) -> *const c_char {
    STATUS_NAMES.iter().find(|(code, _)| *code == status).map_or(c"OTKD_UNKNOWN", |(_, name)| name).as_ptr()
}

/// The model `otkd_load` filled, or the status to return.
///
/// # Safety
/// `model` is NULL or points to an [`OtkdModel`] that is readable; when it was loaded, its blob is
/// still in place.
unsafe fn loaded<'m>(model: *const OtkdModel) -> Result<&'m Model<'static>, OtkdStatus> {
    if model.is_null() {
        return Err(OTKD_ERR_NULL);
    }
    // SAFETY: non-NULL and readable (the caller's contract); raw field access, no reference to
    // storage that may be uninitialised.
    if unsafe { (&raw const (*model)._loaded).read() } != LOADED {
        return Err(OTKD_ERR_NOT_LOADED);
    }
    // SAFETY: `otkd_load` wrote a `Model` at the start of `_storage` (size and alignment fit:
    // asserted above) before setting `_loaded`.
    Ok(unsafe { &*(&raw const (*model)._storage).cast::<Model<'static>>() })
}

/// Checks a blob and fills `model`, which then borrows the blob: keep the blob's bytes in place
/// and unchanged while the model is used.
///
/// `blob_len` may be more than the blob, e.g. the size of a whole flash region holding it: the
/// blob's header says its length (bounded by `blob_len`) and nothing past it is read. An erased
/// region gives `OTKD_ERR_LOAD_BAD_MAGIC`, a corrupt blob `OTKD_ERR_LOAD_BAD_CRC`. On an error the
/// model is marked not loaded.
///
/// # Safety
/// `blob` is NULL or points to `blob_len` readable bytes; `model` is NULL or points to writable
/// memory for an [`OtkdModel`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn otkd_load(blob: *const u8, blob_len: usize, model: *mut OtkdModel) -> OtkdStatus {
    if model.is_null() {
        return OTKD_ERR_NULL;
    }
    // SAFETY: `model` is non-NULL and writable.
    unsafe { (&raw mut (*model)._loaded).write(0) };
    if blob.is_null() {
        return OTKD_ERR_NULL;
    }
    // SAFETY: `blob_len` readable bytes (the caller's contract), kept unchanged while the model is
    // used (the documented borrow).
    let region: &'static [u8] = unsafe { core::slice::from_raw_parts(blob, blob_len) };
    match Model::from_bytes(otkd_runtime::blob::in_region(region)) {
        Ok(loaded) => {
            // SAFETY: `_storage` is writable and fits a `Model` (asserted above).
            unsafe {
                (&raw mut (*model)._storage).cast::<Model<'static>>().write(loaded);
                (&raw mut (*model)._loaded).write(LOADED);
            }
            OTKD_OK
        }
        Err(e) => load_status(e),
    }
}

/// The sizes of a loaded model into `info`.
///
/// # Safety
/// `model` is NULL or an [`OtkdModel`] (loaded or not); `info` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn otkd_info(model: *const OtkdModel, info: *mut OtkdInfo) -> OtkdStatus {
    // SAFETY: the caller's contract.
    let model = match unsafe { loaded(model) } {
        Ok(model) => model,
        Err(status) => return status,
    };
    if info.is_null() {
        return OTKD_ERR_NULL;
    }
    let config = model.config();
    let documents = model.index().map_or(0, |index| index.len());
    let sizes = OtkdInfo {
        dim: u32::from(config.dim),
        layers: u32::from(config.layers),
        out_dim: u32::from(config.out_dim),
        max_words: u32::from(config.tokenizer.max_words),
        documents: u32::try_from(documents).unwrap_or(u32::MAX),
    };
    // SAFETY: non-NULL and writable.
    unsafe { info.write(sizes) };
    OTKD_OK
}

/// The alignment the scratch memory's parts need; a scratch pointer may have any alignment, this
/// much padding is counted in.
const SCRATCH_ALIGN: usize = if align_of::<usize>() > 4 { align_of::<usize>() } else { 4 };

/// Capacities of the feature buffer (its type has a const capacity): from 64 to
/// [`OTKD_MAX_FEATURES`], each at most 1.5 times the one before, so the buffer is at most a third
/// larger than a text of the promised words needs (1,536 features, 12 KiB, for 32 words of the
/// default tokenizer, which needs 1,473).
macro_rules! with_features {
    ($needed:expr, |$n:ident| $body:expr) => {{
        let needed: usize = $needed;
        macro_rules! arm {
            ($cap:expr) => {{
                const $n: usize = $cap;
                Some($body)
            }};
        }
        match needed {
            0..=64 => arm!(64),
            65..=128 => arm!(128),
            129..=192 => arm!(192),
            193..=256 => arm!(256),
            257..=384 => arm!(384),
            385..=512 => arm!(512),
            513..=768 => arm!(768),
            769..=1024 => arm!(1024),
            1025..=1536 => arm!(1536),
            1537..=2048 => arm!(2048),
            2049..=3072 => arm!(3072),
            3073..=4096 => arm!(4096),
            4097..=6144 => arm!(6144),
            6145..=OTKD_MAX_FEATURES => arm!(OTKD_MAX_FEATURES),
            _ => None,
        }
    }};
}

/// Bytes of scratch memory for texts of up to `words` words of a model of `config`: alignment
/// padding, the feature buffer, the f32s and the int8s; `None` when the features are more than
/// [`OTKD_MAX_FEATURES`] or the sum overflows.
fn scratch_bytes(config: &otkd_runtime::ModelConfig, words: usize) -> Option<usize> {
    let features =
        with_features!(Scratch::features_len(config, words), |N| size_of::<heapless::Vec<Feature, N>>())?;
    (SCRATCH_ALIGN - 1)
        .checked_add(features)?
        .checked_add(Scratch::floats_len(config, words).checked_mul(size_of::<f32>())?)?
        .checked_add(Scratch::int8s_len(config, words))
}

/// Bytes of scratch memory `otkd_encode` needs for texts of up to `words` words (more than the
/// model's `max_words` counts as `max_words`: the tokenizer keeps no more) into `bytes`.
/// `OTKD_ERR_BAD_ARGUMENT` when that is more than `OTKD_MAX_FEATURES` features.
///
/// # Safety
/// `model` is NULL or an [`OtkdModel`]; `bytes` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn otkd_scratch_size(
    model: *const OtkdModel,
    words: usize,
    bytes: *mut usize,
) -> OtkdStatus {
    // SAFETY: the caller's contract.
    let model = match unsafe { loaded(model) } {
        Ok(model) => model,
        Err(status) => return status,
    };
    if bytes.is_null() {
        return OTKD_ERR_NULL;
    }
    let config = model.config();
    let Some(size) = scratch_bytes(config, words.min(usize::from(config.tokenizer.max_words))) else {
        return OTKD_ERR_BAD_ARGUMENT;
    };
    // SAFETY: non-NULL and writable.
    unsafe { bytes.write(size) };
    OTKD_OK
}

/// The most words whose scratch memory fits in `len` bytes (0: not even one word).
fn words_fitting(config: &otkd_runtime::ModelConfig, len: usize) -> usize {
    let fits = |words: usize| scratch_bytes(config, words).is_some_and(|need| need <= len);
    // `scratch_bytes` grows with `words`: binary search for the last word count that fits.
    let (mut fit, mut unfit) = (0usize, usize::from(config.tokenizer.max_words) + 1);
    while unfit - fit > 1 {
        let mid = fit + (unfit - fit) / 2;
        if fits(mid) {
            fit = mid;
        } else {
            unfit = mid;
        }
    }
    fit
}

/// Encodes `text` in the scratch memory at `scratch` (`len` bytes) cut for `words` words, with a
/// feature buffer of capacity `N`.
///
/// # Safety
/// `scratch` points to `len` writable bytes that nothing else uses during the call.
unsafe fn encode_in<const N: usize>(
    model: &Model<'_>,
    text: &str,
    scratch: *mut u8,
    len: usize,
    words: usize,
) -> Result<Embedding, OtkdStatus> {
    let config = model.config();
    let (floats, int8s) = (Scratch::floats_len(config, words), Scratch::int8s_len(config, words));
    let pad = scratch.align_offset(SCRATCH_ALIGN);
    let features_bytes = size_of::<heapless::Vec<Feature, N>>();
    let floats_at = pad.checked_add(features_bytes).ok_or(OTKD_ERR_SCRATCH_TOO_SMALL)?;
    let int8s_at = floats.checked_mul(size_of::<f32>()).and_then(|b| b.checked_add(floats_at));
    let end = int8s_at.and_then(|at| at.checked_add(int8s));
    let (Some(int8s_at), Some(end)) = (int8s_at, end) else { return Err(OTKD_ERR_SCRATCH_TOO_SMALL) };
    if end > len {
        return Err(OTKD_ERR_SCRATCH_TOO_SMALL);
    }
    // SAFETY: every part lies inside the `len` bytes (checked above); the feature buffer starts at
    // a multiple of SCRATCH_ALIGN (its alignment at most that), the f32s after it at a multiple
    // of 4 (the buffer's size is a multiple of its alignment, at least 4). Each part is
    // initialised before a reference to it is made, and the parts do not overlap.
    unsafe {
        let features = scratch.add(pad).cast::<heapless::Vec<Feature, N>>();
        features.write(heapless::Vec::new());
        let floats_ptr = scratch.add(floats_at).cast::<f32>();
        floats_ptr.write_bytes(0, floats);
        let int8s_ptr = scratch.add(int8s_at).cast::<i8>();
        int8s_ptr.write_bytes(0, int8s);
        let mut scratch = Scratch::new(
            (*features).as_mut_view(),
            core::slice::from_raw_parts_mut(floats_ptr, floats),
            core::slice::from_raw_parts_mut(int8s_ptr, int8s),
        );
        model.encode(text, &mut scratch).map_err(encode_status)
    }
}

/// Encodes `text` (`text_len` bytes of UTF-8, not NUL-terminated; NULL when `text_len` is 0) into
/// `out`, in the scratch memory at `scratch` (`scratch_len` bytes, any alignment, contents
/// ignored).
///
/// `scratch_len` bytes hold texts of up to W words, the most for which `otkd_scratch_size` is at
/// most `scratch_len`; a longer text gives `OTKD_ERR_SCRATCH_TOO_SMALL` (never cut short), a text
/// without a word `OTKD_ERR_EMPTY_QUERY`. The result is the Rust runtime's `Model::encode` with
/// scratch memory for W words, bit for bit.
///
/// # Safety
/// `model` is NULL or an [`OtkdModel`]; `text` is NULL or points to `text_len` readable bytes;
/// `scratch` is NULL or points to `scratch_len` writable bytes that nothing else uses during the
/// call (not the blob, `text` or `out`); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn otkd_encode(
    model: *const OtkdModel,
    text: *const c_char,
    text_len: usize,
    scratch: *mut c_void,
    scratch_len: usize,
    out: *mut OtkdEmbedding,
) -> OtkdStatus {
    // SAFETY: the caller's contract.
    let model = match unsafe { loaded(model) } {
        Ok(model) => model,
        Err(status) => return status,
    };
    if out.is_null() || scratch.is_null() || (text.is_null() && text_len > 0) {
        return OTKD_ERR_NULL;
    }
    let bytes: &[u8] = if text_len == 0 {
        &[]
    } else {
        // SAFETY: `text_len` readable bytes (the caller's contract).
        unsafe { core::slice::from_raw_parts(text.cast::<u8>(), text_len) }
    };
    let Ok(text) = core::str::from_utf8(bytes) else { return OTKD_ERR_BAD_UTF8 };
    let config = model.config();
    let words = words_fitting(config, scratch_len);
    if words == 0 {
        return OTKD_ERR_SCRATCH_TOO_SMALL;
    }
    let scratch = scratch.cast::<u8>();
    // SAFETY: `scratch_len` writable bytes for this call only (the caller's contract).
    let encoded = with_features!(Scratch::features_len(config, words), |N| unsafe {
        encode_in::<N>(model, text, scratch, scratch_len, words)
    });
    let embedding = match encoded {
        Some(Ok(embedding)) => embedding,
        Some(Err(status)) => return status,
        None => return OTKD_ERR_SCRATCH_TOO_SMALL,
    };
    let mut result = OtkdEmbedding { values: [0; OTKD_MAX_OUT_DIM], len: 0, scale: embedding.scale() };
    result.values.iter_mut().zip(embedding.values()).for_each(|(to, &from)| *to = from);
    // At most OTKD_MAX_OUT_DIM values.
    result.len = u32::try_from(embedding.len()).unwrap_or(u32::MAX);
    // SAFETY: non-NULL and writable.
    unsafe { out.write(result) };
    OTKD_OK
}

/// The top `k` (at most `OTKD_MAX_K`) documents of the blob's index for `query`, best first (a
/// tie: smaller id first), ranked by `scoring` (`OTKD_SCORING_COSINE` or `OTKD_SCORING_CSLS`):
/// their ids into `ids[0..*found]` and scores into `scores[0..*found]`; `*found` is `k`, or the
/// number of documents when there are fewer. The Rust runtime's `Index::search`, bit for bit.
///
/// # Safety
/// `model` is NULL or an [`OtkdModel`]; `query` is NULL or a readable [`OtkdEmbedding`]; `ids`
/// and `scores` are NULL (only when `k` is 0) or point to `k` writable elements; `found` is NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn otkd_search(
    model: *const OtkdModel,
    query: *const OtkdEmbedding,
    scoring: i32,
    k: usize,
    ids: *mut u32,
    scores: *mut f32,
    found: *mut usize,
) -> OtkdStatus {
    // SAFETY: the caller's contract.
    let model = match unsafe { loaded(model) } {
        Ok(model) => model,
        Err(status) => return status,
    };
    if query.is_null() || found.is_null() || (k > 0 && (ids.is_null() || scores.is_null())) {
        return OTKD_ERR_NULL;
    }
    let scoring = match scoring {
        OTKD_SCORING_COSINE => Scoring::Cosine,
        OTKD_SCORING_CSLS => Scoring::Csls,
        _ => return OTKD_ERR_BAD_ARGUMENT,
    };
    if k > OTKD_MAX_K {
        return OTKD_ERR_BAD_ARGUMENT;
    }
    let Some(index) = model.index() else { return OTKD_ERR_NO_INDEX };
    // SAFETY: non-NULL and readable.
    let query = unsafe { &*query };
    let values = usize::try_from(query.len).ok().and_then(|len| query.values.get(..len));
    let embedding = match values {
        Some(values) if query.scale.is_finite() => Embedding::from_quantized(values, query.scale),
        _ => return OTKD_ERR_BAD_ARGUMENT,
    };
    let Ok(embedding) = embedding else { return OTKD_ERR_BAD_ARGUMENT };
    let hits = match index.search::<OTKD_MAX_K>(&embedding, k, scoring) {
        Ok(hits) => hits,
        Err(e) => return search_status(e),
    };
    for (i, hit) in hits.iter().enumerate() {
        // SAFETY: `i < hits.len() <= k` elements are writable.
        unsafe {
            ids.add(i).write(hit.id);
            scores.add(i).write(hit.score);
        }
    }
    // SAFETY: non-NULL and writable.
    unsafe { found.write(hits.len()) };
    OTKD_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::vec::Vec;

    #[test]
    fn every_status_has_one_code_and_one_name() {
        let codes: HashSet<_> = STATUS_NAMES.iter().map(|(code, _)| *code).collect();
        let names: HashSet<_> = STATUS_NAMES.iter().map(|(_, name)| *name).collect();
        assert_eq!((codes.len(), names.len()), (STATUS_NAMES.len(), STATUS_NAMES.len()));
        for (code, name) in STATUS_NAMES {
            // SAFETY: a static NUL-terminated string.
            let named = unsafe { core::ffi::CStr::from_ptr(otkd_status_name(code)) };
            assert_eq!(named, name);
            assert!(code <= 0 && (code == OTKD_OK) == (name == c"OTKD_OK"));
        }
    }

    #[test]
    fn every_runtime_error_maps_to_its_own_code() {
        let load = [
            LoadError::TooShort,
            LoadError::BadMagic,
            LoadError::UnsupportedVersion { found: 9, supported: 1 },
            LoadError::Truncated,
            LoadError::TrailingBytes,
            LoadError::BadCrc,
            LoadError::Decode,
            LoadError::BadTokenizerConfig,
            LoadError::ZeroDimension,
            LoadError::HeadsDoNotDivideDim,
            LoadError::TooManyLayers,
            LoadError::OutDimTooLarge,
            LoadError::BadLayerNormEps,
            LoadError::SizeOverflow,
            LoadError::ShapeMismatch,
            LoadError::NonFinite,
        ];
        let mut codes: Vec<OtkdStatus> = load.iter().map(|&e| load_status(e)).collect();
        codes.extend([EncodeError::EmptyQuery, EncodeError::ScratchTooSmall].map(encode_status));
        codes.push(search_status(SearchError::DimensionMismatch));
        let known: HashSet<_> = STATUS_NAMES.iter().map(|(code, _)| *code).collect();
        let distinct: HashSet<_> = codes.iter().copied().collect();
        assert_eq!(distinct.len(), codes.len(), "two runtime errors share a code: {codes:?}");
        for code in codes {
            assert!(known.contains(&code) && code < 0, "{code} has no name");
            assert!(![OTKD_ERR_LOAD_OTHER, OTKD_ERR_ENCODE_OTHER, OTKD_ERR_SEARCH_OTHER].contains(&code));
        }
    }

    #[test]
    fn a_model_fits_its_storage_on_this_target() {
        assert!(size_of::<Model<'static>>() <= size_of::<OtkdModel>() - size_of::<usize>());
        std::eprintln!(
            "Model: {} bytes; OtkdModel: {} bytes",
            size_of::<Model<'static>>(),
            size_of::<OtkdModel>()
        );
    }

    #[test]
    fn null_pointers_are_refused() {
        let mut info = OtkdInfo::default();
        let mut bytes = 0usize;
        // SAFETY: NULL or valid pointers only.
        unsafe {
            assert_eq!(otkd_load(core::ptr::null(), 0, core::ptr::null_mut()), OTKD_ERR_NULL);
            assert_eq!(otkd_info(core::ptr::null(), &mut info), OTKD_ERR_NULL);
            assert_eq!(otkd_scratch_size(core::ptr::null(), 4, &mut bytes), OTKD_ERR_NULL);
            assert_eq!(
                otkd_encode(
                    core::ptr::null(),
                    c"a".as_ptr(),
                    1,
                    core::ptr::null_mut(),
                    0,
                    core::ptr::null_mut()
                ),
                OTKD_ERR_NULL
            );
            assert_eq!(
                otkd_search(
                    core::ptr::null(),
                    core::ptr::null(),
                    0,
                    0,
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                    core::ptr::null_mut()
                ),
                OTKD_ERR_NULL
            );
        }
    }
}
