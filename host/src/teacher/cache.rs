//! The cache of teacher outputs: one safetensors file per sentence list (e.g. `train.en`), keyed
//! by a hash of the teacher's files, the sentences and the encoding options, written atomically
//! and reused across runs. Each entry stores an FNV-64 checksum of its contents: flipped bits that
//! leave the values finite would otherwise become teacher targets without a word; an entry whose
//! checksum does not match is re-encoded.
//!
//! Neither side holds a corpus's token states (f16, about 23 KB per 30-token sentence: 4.6 GB
//! for 200k sentences) in memory. Encoding writes each sentence's rows into the entry as its
//! batch finishes; reading checks the checksum by streaming the file once and then leaves the
//! rows on disk, where [`TokenStates::read_sentence`] reads a sentence at a time. The sentence
//! embeddings (f32, 1.5 KB a sentence) are read into memory: every consumer (ridge fits,
//! evaluation, the KD loss) reads all of them.
//!
//! The file is laid out exactly as `safetensors::serialize` lays out the same tensors (by
//! descending dtype alignment, then name: `offsets` i64, `embeddings` f32, `token_states` f16,
//! `checksum` u8), so entries written before streaming stay valid.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::paths::write_atomically;
use crate::rng::Fnv64;
use crate::teacher::model::read_exact_at;
use crate::teacher::{Teacher, TeacherError, TeacherOutputs, TokenStates};

/// Bumped whenever the file layout or the teacher's numerics change, so old entries miss.
const FORMAT_VERSION: &str = "otkd-teacher-cache-v2";

/// Bytes per read while streaming an entry through the checksum.
const CHUNK: usize = 8 << 20;

/// Errors of the cache itself (a corrupt entry is not an error: it is re-encoded).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A teacher file could not be read for hashing.
    #[error("reading {path} to key the cache: {source}")]
    HashInput {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the cache entry failed.
    #[error("writing cache entry {path}: {source}")]
    Write {
        /// The entry.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The teacher failed.
    #[error(transparent)]
    Teacher(#[from] TeacherError),
}

/// Whether [`TeacherCache::load_or_encode`] found the entry or computed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CacheStatus {
    /// The entry existed and was read.
    Hit,
    /// The entry was computed and written.
    Encoded {
        /// Sentences per second of the encoding.
        sentences_per_second: f64,
    },
}

/// A directory of cached teacher outputs.
#[derive(Clone, Debug)]
pub struct TeacherCache {
    dir: PathBuf,
    model_key: u64,
}

impl TeacherCache {
    /// Opens (lazily creates) a cache for `teacher` under `dir`; hashes the teacher's files once.
    pub fn new(dir: impl Into<PathBuf>, teacher: &Teacher) -> Result<Self, CacheError> {
        let mut h = Fnv64::default();
        h.update_str(FORMAT_VERSION);
        for name in ["config.json", "tokenizer.json", "model.safetensors"] {
            let path = teacher.dir().join(name);
            let bytes = std::fs::read(&path).map_err(|source| CacheError::HashInput { path, source })?;
            h.update(&bytes);
        }
        // The pooling is read from other files (modules.json, the pooling config).
        h.update_str(&format!("{:?}", teacher.pooling()));
        Ok(Self { dir: dir.into(), model_key: h.finish() })
    }

    /// The entry file for a named sentence list.
    pub fn entry_path<S: AsRef<str>>(&self, name: &str, sentences: &[S], keep_token_states: bool) -> PathBuf {
        let mut h = Fnv64::default();
        h.update(&self.model_key.to_le_bytes());
        h.update(&[u8::from(keep_token_states)]);
        h.update(&(sentences.len() as u64).to_le_bytes());
        for s in sentences {
            h.update_str(s.as_ref());
        }
        self.dir.join(format!("teacher-{name}-{:016x}.safetensors", h.finish()))
    }

    /// Returns the cached outputs for `sentences`, encoding and storing them on a miss.
    /// `progress` receives the number of sentences encoded so far. With `keep_token_states`
    /// the returned token states are read from the entry on disk.
    pub fn load_or_encode<S: AsRef<str> + Sync>(
        &self,
        teacher: &Teacher,
        name: &str,
        sentences: &[S],
        keep_token_states: bool,
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<(TeacherOutputs, CacheStatus), CacheError> {
        let path = self.entry_path(name, sentences, keep_token_states);
        if path.is_file() {
            match read_entry(&path, sentences.len(), keep_token_states) {
                Ok(outputs) => return Ok((outputs, CacheStatus::Hit)),
                Err(reason) => {
                    eprintln!("warning: cache entry {} is unusable ({reason}); re-encoding", path.display())
                }
            }
        }
        let start = std::time::Instant::now();
        let ids = teacher.token_ids(sentences)?;
        let ids: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let dim = teacher.dim();
        let offsets = keep_token_states.then(|| {
            let mut offsets = vec![0usize; ids.len() + 1];
            for (i, s) in ids.iter().enumerate() {
                offsets[i + 1] = offsets[i] + s.len();
            }
            offsets
        });
        let layout = Layout::new(ids.len(), dim, offsets.as_deref());
        let write_error = |source| CacheError::Write { path: path.clone(), source };
        // The teacher's error, if encoding (rather than writing) failed inside the atomic write.
        let mut teacher_error = None;
        let mut encoded = None;
        let mut embeddings = None;
        let written = write_atomically(&path, |tmp| {
            let file = File::options().read(true).write(true).create(true).truncate(true).open(tmp)?;
            let mut writer = EntryWriter::new(file, &layout, offsets.as_deref())?;
            let encoded_embeddings = match teacher.encode_each(&ids, batch_size, &mut progress, |i, rows| {
                writer.write_sentence(i, rows).map_err(EncodeError::Io)
            }) {
                Ok(e) => e,
                Err(EncodeError::Io(e)) => return Err(e),
                Err(EncodeError::Teacher(e)) => {
                    teacher_error = Some(e);
                    return Err(std::io::Error::other("the teacher failed"));
                }
            };
            encoded = Some(start.elapsed());
            writer.finish(&encoded_embeddings)?;
            embeddings = Some(encoded_embeddings);
            Ok(())
        });
        if let Some(e) = teacher_error {
            return Err(e.into());
        }
        written.map_err(write_error)?;
        let embeddings = embeddings.expect("a successful write encoded the embeddings");
        let seconds = encoded.unwrap_or_else(|| start.elapsed()).as_secs_f64();
        let sentences_per_second = sentences.len() as f64 / seconds.max(1e-9);
        let token_states = match offsets {
            Some(offsets) => {
                let file = File::open(&path).map_err(write_error)?;
                Some(TokenStates::on_disk(offsets, file, layout.states_start()))
            }
            None => None,
        };
        Ok((TeacherOutputs { dim, embeddings, token_states }, CacheStatus::Encoded { sentences_per_second }))
    }
}

/// What stopped an encoding that writes as it goes.
enum EncodeError {
    Teacher(TeacherError),
    Io(std::io::Error),
}

impl From<TeacherError> for EncodeError {
    fn from(e: TeacherError) -> Self {
        Self::Teacher(e)
    }
}

/// Where each tensor of an entry lies in the file.
struct Layout {
    /// The safetensors header, padded to a multiple of 8 bytes.
    header: Vec<u8>,
    metadata: Metadata,
}

impl Layout {
    /// The layout of `sentences` embeddings of width `dim`, with the token states `offsets`
    /// describe when given.
    fn new(sentences: usize, dim: usize, offsets: Option<&[usize]>) -> Self {
        // Descending dtype alignment, then name: the order safetensors::serialize writes.
        let mut tensors: Vec<(&str, Dtype, Vec<usize>)> = Vec::new();
        if let Some(offsets) = offsets {
            tensors.push(("offsets", Dtype::I64, vec![sentences + 1]));
            tensors.push(("embeddings", Dtype::F32, vec![sentences, dim]));
            tensors.push(("token_states", Dtype::F16, vec![offsets[sentences], dim]));
        } else {
            tensors.push(("embeddings", Dtype::F32, vec![sentences, dim]));
        }
        tensors.push(("checksum", Dtype::U8, vec![8]));
        let mut at = 0;
        let infos = tensors
            .into_iter()
            .map(|(name, dtype, shape)| {
                let len = shape.iter().product::<usize>() * dtype.bitsize() / 8;
                at += len;
                (name.to_string(), TensorInfo { dtype, shape, data_offsets: (at - len, at) })
            })
            .collect();
        let metadata = Metadata::new(None, infos).expect("contiguous by construction");
        let mut header = serde_json::to_vec(&metadata).expect("a safetensors header serializes");
        header.resize(header.len().next_multiple_of(8), b' ');
        Self { header, metadata }
    }

    /// The byte range of tensor `name` in the file.
    fn range(&self, name: &str) -> std::ops::Range<u64> {
        let (start, end) = self.metadata.info(name).expect("a tensor of the layout").data_offsets;
        let base = 8 + self.header.len() as u64;
        base + start as u64..base + end as u64
    }

    fn states_start(&self) -> u64 {
        self.range("token_states").start
    }

    fn file_len(&self) -> u64 {
        8 + (self.header.len() + self.metadata.data_len()) as u64
    }
}

/// Writes an entry as the teacher produces it: the header and offsets first, each sentence's
/// token states where they belong as its batch finishes, then the embeddings and the checksum.
struct EntryWriter<'a> {
    file: File,
    layout: &'a Layout,
    offsets: Option<&'a [usize]>,
    dim: usize,
    /// One sentence's rows as little-endian f16, reused.
    buffer: Vec<u8>,
}

impl<'a> EntryWriter<'a> {
    fn new(file: File, layout: &'a Layout, offsets: Option<&'a [usize]>) -> std::io::Result<Self> {
        let dim = layout.metadata.info("embeddings").expect("embeddings in every entry").shape[1];
        let mut head = (layout.header.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&layout.header);
        if let Some(offsets) = offsets {
            head.extend(offsets.iter().flat_map(|&o| (o as i64).to_le_bytes()));
        }
        file.set_len(layout.file_len())?;
        write_all_at(&file, &head, 0)?;
        Ok(Self { file, layout, offsets, dim, buffer: Vec::new() })
    }

    /// Stores sentence `i`'s `[tokens, dim]` states (as f16, the cache's precision).
    fn write_sentence(&mut self, i: usize, rows: &[f32]) -> std::io::Result<()> {
        let Some(offsets) = self.offsets else { return Ok(()) };
        debug_assert_eq!(rows.len(), (offsets[i + 1] - offsets[i]) * self.dim);
        self.buffer.clear();
        self.buffer.extend(rows.iter().flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()));
        let at = self.layout.states_start() + (offsets[i] * self.dim * 2) as u64;
        write_all_at(&self.file, &self.buffer, at)
    }

    /// Writes the embeddings, then the checksum over the embeddings, offsets and states as
    /// they are in the file (the states are read back: they were written out of order).
    fn finish(self, embeddings: &[f32]) -> std::io::Result<()> {
        let mut h = Fnv64::default();
        let start = self.layout.range("embeddings").start;
        for (k, chunk) in embeddings.chunks(CHUNK / 4).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            h.update(&bytes);
            write_all_at(&self.file, &bytes, start + (k * CHUNK) as u64)?;
        }
        if self.offsets.is_some() {
            hash_range(&self.file, self.layout.range("offsets"), &mut h, |_| ())?;
            hash_range(&self.file, self.layout.range("token_states"), &mut h, |_| ())?;
        }
        write_all_at(&self.file, &h.finish().to_le_bytes(), self.layout.range("checksum").start)
    }
}

fn write_all_at(file: &File, bytes: &[u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, pos)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < bytes.len() {
            match std::os::windows::fs::FileExt::seek_write(file, &bytes[done..], pos + done as u64)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

/// Feeds the bytes of `range` to `h` and to `each`, a chunk at a time.
fn hash_range(
    file: &File,
    range: std::ops::Range<u64>,
    h: &mut Fnv64,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; CHUNK.min((range.end - range.start) as usize)];
    let mut at = range.start;
    while at < range.end {
        let len = ((range.end - at) as usize).min(CHUNK);
        read_exact_at(file, &mut buffer[..len], at)?;
        h.update(&buffer[..len]);
        each(&buffer[..len]);
        at += len as u64;
    }
    Ok(())
}

/// Opens an entry: checks its header, shapes and checksum (streaming the file once), reads the
/// embeddings and offsets, and leaves the token states on disk.
fn read_entry(path: &Path, sentences: usize, keep_token_states: bool) -> Result<TeacherOutputs, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|e| format!("header length: {e}"))?;
    let n = u64::from_le_bytes(n);
    // safetensors' own bound on a header.
    if n > 100_000_000 || 8 + n > file_len {
        return Err(format!("header length {n} does not fit a {file_len}-byte file"));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| format!("header: {e}"))?;
    let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| format!("header: {e}"))?;
    if 8 + n + metadata.data_len() as u64 != file_len {
        return Err(format!("{file_len} bytes, the header describes {}", 8 + n + metadata.data_len() as u64));
    }
    let tensor = |name: &str, dtype: Dtype| -> Result<(std::ops::Range<u64>, Vec<usize>), String> {
        let info = metadata.info(name).ok_or_else(|| format!("tensor {name:?} missing"))?;
        if info.dtype != dtype {
            return Err(format!("tensor {name:?} is {:?}, not {dtype:?}", info.dtype));
        }
        let range = 8 + n + info.data_offsets.0 as u64..8 + n + info.data_offsets.1 as u64;
        Ok((range, info.shape.clone()))
    };
    let (embeddings_range, shape) = tensor("embeddings", Dtype::F32)?;
    let [rows, dim] = shape[..] else { return Err(format!("embeddings of shape {shape:?}")) };
    if rows != sentences {
        return Err(format!("{rows} embeddings for {sentences} sentences"));
    }
    let (checksum_range, _) = tensor("checksum", Dtype::U8)?;
    if checksum_range.end - checksum_range.start != 8 {
        return Err("the checksum is not 8 bytes".into());
    }
    let io = |e: std::io::Error| e.to_string();
    let mut h = Fnv64::default();
    let mut embeddings = Vec::with_capacity(rows * dim);
    hash_range(&file, embeddings_range, &mut h, |bytes| {
        embeddings.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    })
    .map_err(io)?;
    if embeddings.iter().any(|v| !v.is_finite()) {
        return Err("non-finite embedding".into());
    }
    let token_states = if keep_token_states {
        let (offsets_range, shape) = tensor("offsets", Dtype::I64)?;
        if shape != [rows + 1] {
            return Err(format!("offsets of shape {shape:?} for {rows} sentences"));
        }
        let (states_range, shape) = tensor("token_states", Dtype::F16)?;
        let [total, states_dim] = shape[..] else { return Err(format!("token states of shape {shape:?}")) };
        let mut offsets = Vec::with_capacity(rows + 1);
        hash_range(&file, offsets_range, &mut h, |bytes| {
            offsets.extend(
                bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()).max(0) as usize),
            );
        })
        .map_err(io)?;
        // Every sentence has at least its [CLS] and [SEP] rows.
        let rows_ok = offsets.windows(2).all(|w| w[0] + 2 <= w[1]);
        if offsets[0] != 0 || !rows_ok || offsets[rows] != total || states_dim != dim {
            return Err("token state offsets do not match the states".into());
        }
        let states_start = states_range.start;
        hash_range(&file, states_range, &mut h, |_| ()).map_err(io)?;
        Some(TokenStates::on_disk(offsets, file.try_clone().map_err(io)?, states_start))
    } else {
        None
    };
    let mut stored = [0u8; 8];
    read_exact_at(&file, &mut stored, checksum_range.start).map_err(io)?;
    if stored != h.finish().to_le_bytes() {
        return Err("checksum mismatch: the file changed after it was written".into());
    }
    Ok(TeacherOutputs { dim, embeddings, token_states })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::data::Split;

    /// The pre-streaming writer: every tensor in memory, then `candle_core::safetensors::save`.
    fn save_whole(path: &Path, outputs: &TeacherOutputs) {
        let (n, dim) = (outputs.len(), outputs.dim);
        let mut h = Fnv64::default();
        outputs.embeddings.iter().for_each(|v| h.update(&v.to_le_bytes()));
        let mut tensors = HashMap::new();
        tensors
            .insert("embeddings", Tensor::from_slice(&outputs.embeddings, (n, dim), &Device::Cpu).unwrap());
        if let Some(states) = &outputs.token_states {
            let rows: Vec<half::f16> = (0..n).flat_map(|i| states.sentence(i, dim).into_owned()).collect();
            states.offsets.iter().for_each(|&o| h.update(&(o as u64).to_le_bytes()));
            rows.iter().for_each(|v| h.update(&v.to_bits().to_le_bytes()));
            let offsets: Vec<i64> = states.offsets.iter().map(|&o| o as i64).collect();
            tensors.insert("offsets", Tensor::from_vec(offsets, n + 1, &Device::Cpu).unwrap());
            let total = rows.len() / dim;
            tensors.insert("token_states", Tensor::from_vec(rows, (total, dim), &Device::Cpu).unwrap());
        }
        let sum = h.finish().to_le_bytes().to_vec();
        tensors.insert("checksum", Tensor::from_vec(sum, 8, &Device::Cpu).unwrap());
        candle_core::safetensors::save(&tensors, path).unwrap();
    }

    /// The streaming writer, fed the sentences in reverse (batches finish out of input order).
    fn write_streaming(path: &Path, outputs: &TeacherOutputs) {
        let offsets = outputs.token_states.as_ref().map(|s| s.offsets.clone());
        let layout = Layout::new(outputs.len(), outputs.dim, offsets.as_deref());
        let file = File::options().read(true).write(true).create(true).truncate(true).open(path).unwrap();
        let mut writer = EntryWriter::new(file, &layout, offsets.as_deref()).unwrap();
        if let Some(states) = &outputs.token_states {
            for i in (0..outputs.len()).rev() {
                let rows: Vec<f32> = states.sentence(i, outputs.dim).iter().map(|v| v.to_f32()).collect();
                writer.write_sentence(i, &rows).unwrap();
            }
        }
        writer.finish(&outputs.embeddings).unwrap();
    }

    fn assert_same(a: &TeacherOutputs, b: &TeacherOutputs) {
        assert_eq!(a.dim, b.dim);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.embeddings), bits(&b.embeddings));
        match (&a.token_states, &b.token_states) {
            (None, None) => {}
            (Some(x), Some(y)) => {
                assert_eq!(x.offsets, y.offsets);
                for i in 0..x.len() {
                    let (p, q) = (x.sentence(i, a.dim), y.sentence(i, a.dim));
                    assert_eq!(
                        p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        q.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "sentence {i}"
                    );
                }
            }
            _ => panic!("token states on one side only"),
        }
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("otkd-cache-unit-{}-{name}.safetensors", std::process::id()))
    }

    #[test]
    fn a_streamed_entry_is_the_whole_file_writer_s_entry_byte_for_byte_and_reads_back() {
        let (_, outputs) = crate::testing::synthetic(57, 4, Split::Train);
        for keep in [true, false] {
            let mut outputs = outputs.clone();
            if !keep {
                outputs.token_states = None;
            }
            let (streamed, whole) = (temp(&format!("streamed-{keep}")), temp(&format!("whole-{keep}")));
            write_streaming(&streamed, &outputs);
            save_whole(&whole, &outputs);
            assert_eq!(std::fs::read(&streamed).unwrap(), std::fs::read(&whole).unwrap(), "keep {keep}");
            let read = read_entry(&streamed, outputs.len(), keep).unwrap();
            assert_eq!(read.token_states.as_ref().map(TokenStates::is_on_disk), keep.then_some(true));
            assert_same(&read, &outputs);
            // A wrong sentence count is refused.
            assert!(read_entry(&streamed, outputs.len() + 1, keep).is_err());
            std::fs::remove_file(streamed).unwrap();
            std::fs::remove_file(whole).unwrap();
        }
    }

    #[test]
    fn any_flipped_byte_of_the_data_fails_the_entry() {
        let (_, outputs) = crate::testing::synthetic(20, 5, Split::Train);
        let path = temp("flip");
        write_streaming(&path, &outputs);
        let clean = std::fs::read(&path).unwrap();
        let header = 8 + u64::from_le_bytes(clean[..8].try_into().unwrap()) as usize;
        // A byte of each tensor (offsets, embeddings, token states, checksum), low bits that
        // leave every value finite and every offset plausible... and one in the header.
        let layout =
            Layout::new(20, crate::testing::DIM, outputs.token_states.as_ref().map(|s| &s.offsets[..]));
        let mut spots: Vec<usize> = ["offsets", "embeddings", "token_states", "checksum"]
            .iter()
            .map(|name| {
                let r = layout.range(name);
                (r.start + (r.end - r.start) / 2) as usize / 2 * 2
            })
            .collect();
        spots.push(20);
        for spot in spots {
            let mut bytes = clean.clone();
            bytes[spot] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                read_entry(&path, 20, true).is_err(),
                "a flip at byte {spot} (header {header}) went unseen"
            );
        }
        std::fs::write(&path, &clean[..clean.len() - 1]).unwrap();
        assert!(read_entry(&path, 20, true).is_err(), "a truncated entry was read");
        std::fs::remove_file(path).unwrap();
    }
}
