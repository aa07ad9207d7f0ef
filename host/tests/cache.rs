//! The teacher cache: a miss encodes and writes, a hit reads back the same outputs, a corrupted
//! entry (even one whose values stay finite) is re-encoded, and the key changes with the model,
//! the sentences and the options.

use std::path::{Path, PathBuf};

use otkd::paths::{DEFAULT_TEACHER, TEACHER_ENV, resolve_dir};
use otkd::teacher::Teacher;
use otkd::teacher::cache::{CacheStatus, TeacherCache};

const SENTENCES: [&str; 3] = ["a dog runs on the grass", "two men ride bikes", "a child"];

fn teacher_dir() -> PathBuf {
    resolve_dir(None, TEACHER_ENV, DEFAULT_TEACHER)
        .unwrap_or_else(|tried| panic!("the teacher is needed for this test; tried {tried:?}"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otkd-cache-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Byte range of tensor `name`'s data in a safetensors file.
fn tensor_bytes(file: &[u8], name: &str) -> std::ops::Range<usize> {
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
    8 + header_len + start..8 + header_len + end
}

fn encode(
    cache: &TeacherCache,
    teacher: &Teacher,
    states: bool,
) -> (otkd::teacher::TeacherOutputs, CacheStatus) {
    cache.load_or_encode(teacher, "test.en", &SENTENCES, states, 8, |_| {}).unwrap()
}

#[test]
fn miss_hit_corruption_and_keys() {
    let teacher = Teacher::load(&teacher_dir()).unwrap();
    let dir = temp_dir("entries");
    let cache = TeacherCache::new(&dir, &teacher).unwrap();

    let (first, status) = encode(&cache, &teacher, true);
    assert!(matches!(status, CacheStatus::Encoded { .. }));
    let (again, status) = encode(&cache, &teacher, true);
    assert_eq!(status, CacheStatus::Hit);
    assert_eq!(first.embeddings, again.embeddings);
    assert_same_states(&first, &again);
    // Both read their token states from the entry; both equal the teacher's in-memory outputs
    // bit for bit (the same batches, so the same arithmetic).
    assert!(
        first.token_states.as_ref().unwrap().is_on_disk()
            && again.token_states.as_ref().unwrap().is_on_disk()
    );
    let in_memory = teacher.encode(&SENTENCES, 8, true, |_| {}).unwrap();
    assert!(!in_memory.token_states.as_ref().unwrap().is_on_disk());
    assert_eq!(bits(&first.embeddings), bits(&in_memory.embeddings));
    assert_same_states(&first, &in_memory);
    // Without token states too.
    let (plain, _) = encode(&cache, &teacher, false);
    assert!(plain.token_states.is_none());
    assert_eq!(bits(&plain.embeddings), bits(&in_memory.embeddings));
    assert_eq!(encode(&cache, &teacher, false).1, CacheStatus::Hit);

    // A flipped bit in the token states is caught too, and the entry is re-encoded.
    let path = cache.entry_path("test.en", &SENTENCES, true);
    let mut bytes = std::fs::read(&path).unwrap();
    let range = tensor_bytes(&bytes, "token_states");
    bytes[range.start + 100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (repaired, status) = encode(&cache, &teacher, true);
    assert!(matches!(status, CacheStatus::Encoded { .. }), "corrupted token states were used");
    assert_same_states(&repaired, &in_memory);

    // Flip the lowest mantissa bit of one embedding value: still finite, still the right shape.
    let mut bytes = std::fs::read(&path).unwrap();
    let range = tensor_bytes(&bytes, "embeddings");
    bytes[range.start + 40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (repaired, status) = encode(&cache, &teacher, true);
    assert!(matches!(status, CacheStatus::Encoded { .. }), "a corrupted entry was used");
    assert_eq!(repaired.embeddings, first.embeddings);
    assert_eq!(encode(&cache, &teacher, true).1, CacheStatus::Hit);

    // A truncated entry is re-encoded too.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(encode(&cache, &teacher, true).1, CacheStatus::Encoded { .. }));

    // The key covers the options and the sentences...
    assert_ne!(path, cache.entry_path("test.en", &SENTENCES, false));
    assert_ne!(path, cache.entry_path("test.en", &SENTENCES[..2], true));
    assert_ne!(
        path,
        cache.entry_path("test.en", &["a dog runs on the grass", "two men ride bikes", "a child."], true)
    );
    // ... and the model's files: the same model with an edited config.json keys differently.
    let other = temp_dir("model");
    copy_model(&teacher_dir(), &other);
    let mut config = std::fs::read_to_string(other.join("config.json")).unwrap();
    config.push('\n');
    std::fs::write(other.join("config.json"), config).unwrap();
    let other_teacher = Teacher::load(&other).unwrap();
    let other_cache = TeacherCache::new(&dir, &other_teacher).unwrap();
    assert_ne!(path, other_cache.entry_path("test.en", &SENTENCES, true));
    // ... and its pooling, which lives in other files.
    copy_model(&teacher_dir(), &other);
    std::fs::write(other.join("1_Pooling/config.json"), r#"{"pooling_mode_cls_token": true}"#).unwrap();
    let cls_teacher = Teacher::load(&other).unwrap();
    assert_eq!(cls_teacher.pooling(), otkd::teacher::Pooling::Cls);
    assert_ne!(path, TeacherCache::new(&dir, &cls_teacher).unwrap().entry_path("test.en", &SENTENCES, true));

    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(other).unwrap();
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The same token states, bit for bit.
fn assert_same_states(a: &otkd::teacher::TeacherOutputs, b: &otkd::teacher::TeacherOutputs) {
    let (x, y) = (a.token_states.as_ref().unwrap(), b.token_states.as_ref().unwrap());
    assert_eq!(x.offsets, y.offsets);
    for i in 0..x.len() {
        let (p, q) = (x.sentence(i, a.dim), y.sentence(i, b.dim));
        assert_eq!(
            p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            q.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "sentence {i}"
        );
    }
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("1_Pooling")).unwrap();
    for name in
        ["config.json", "tokenizer.json", "model.safetensors", "modules.json", "1_Pooling/config.json"]
    {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}
