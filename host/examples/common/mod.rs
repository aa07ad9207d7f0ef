//! What the examples share: the languages argument, and Multi30k with the teacher's English
//! embeddings of train and val, read from the same places as `otkd` (`OTKD_DATA`, `OTKD_TEACHER`,
//! `OTKD_CACHE` or the defaults).

use anyhow::Result;
use otkd::data::{Lang, Multi30k, Split, resolve_data_dir};
use otkd::paths::{DEFAULT_TEACHER, TEACHER_ENV, cache_dir, resolve_dir};
use otkd::teacher::cache::TeacherCache;
use otkd::teacher::{Teacher, TeacherOutputs};

/// A comma-separated list of language codes (`ay` when absent).
pub fn languages(arg: Option<String>) -> Result<Vec<Lang>> {
    arg.unwrap_or_else(|| "ay".into()).split(',').map(|l| l.parse().map_err(anyhow::Error::msg)).collect()
}

/// The data, and the teacher's English embeddings of train and val (through the cache).
pub fn multi30k_english() -> Result<(Multi30k, TeacherOutputs, TeacherOutputs)> {
    let data = Multi30k::open(resolve_data_dir(None)?)?;
    let teacher_dir = resolve_dir(None, TEACHER_ENV, DEFAULT_TEACHER)
        .map_err(|tried| anyhow::anyhow!("teacher not found (tried {tried:?})"))?;
    let teacher = Teacher::load(&teacher_dir)?;
    let cache = TeacherCache::new(cache_dir(None), &teacher)?;
    let english = |split: Split| -> Result<TeacherOutputs> {
        let captions = data.captions(split, Lang::EN)?;
        Ok(cache.load_or_encode(&teacher, &format!("{split}.en"), &captions, false, 64, |_| {})?.0)
    };
    let (train, val) = (english(Split::Train)?, english(Split::Dev)?);
    Ok((data, train, val))
}
