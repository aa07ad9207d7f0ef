//! Where otkd finds its inputs: a flag, else an environment variable, else the shared folder
//! beside the checkout (`../shared/...`, from the current directory or from the workspace root).

use std::path::{Path, PathBuf};

/// Environment variable naming the Multi30k directory.
pub const DATA_ENV: &str = "OTKD_DATA";
/// Environment variable naming the teacher model directory.
pub const TEACHER_ENV: &str = "OTKD_TEACHER";
/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "OTKD_CACHE";

/// Default Multi30k location, relative to the project root.
pub const DEFAULT_DATA: &str = "../shared/data/multi30k";
/// Default teacher location, relative to the project root.
pub const DEFAULT_TEACHER: &str = "../shared/models/all-MiniLM-L6-v2";
/// Default cache location, relative to the project root.
pub const DEFAULT_CACHE: &str = ".otkd-cache";

/// The candidate directories for an input, in the order they are tried.
pub fn candidates(flag: Option<&Path>, env_var: &str, default_relative: &str) -> Vec<PathBuf> {
    let env = std::env::var_os(env_var).filter(|v| !v.is_empty()).map(PathBuf::from);
    candidates_from(flag, env, default_relative)
}

/// [`candidates`] with the environment variable's value given: a flag, else the variable, is
/// authoritative (a path the user named is never silently replaced by a default).
pub fn candidates_from(flag: Option<&Path>, env: Option<PathBuf>, default_relative: &str) -> Vec<PathBuf> {
    if let Some(flag) = flag {
        return vec![flag.to_path_buf()];
    }
    if let Some(value) = env {
        return vec![value];
    }
    vec![PathBuf::from(default_relative), workspace_root().join(default_relative)]
}

/// The first existing directory among [`candidates`], or all candidates tried when none exists.
pub fn resolve_dir(
    flag: Option<&Path>,
    env_var: &str,
    default_relative: &str,
) -> Result<PathBuf, Vec<PathBuf>> {
    let tried = candidates(flag, env_var, default_relative);
    tried.iter().find(|p| p.is_dir()).cloned().ok_or(tried)
}

/// The cache directory: flag, else `OTKD_CACHE`, else `.otkd-cache` in the current directory.
pub fn cache_dir(flag: Option<&Path>) -> PathBuf {
    candidates(flag, CACHE_ENV, DEFAULT_CACHE).swap_remove(0)
}

/// The workspace root this binary was built from; a fallback so tests and `cargo run` from any
/// member directory find `../shared`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Writes a file atomically: `write` fills a temporary file beside `path`, which is then renamed
/// over `path`, so a crash or Ctrl-C never leaves a half-written file under the final name.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Stable 64-bit FNV-1a, for content keys that must not change between Rust releases.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds a length-prefixed string, so that ("ab","c") and ("a","bc") differ.
    pub fn update_str(&mut self, s: &str) {
        self.update(&(s.len() as u64).to_le_bytes());
        self.update(s.as_bytes());
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv64_matches_published_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv64::default();
            h.update(s.as_bytes());
            h.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("otkd-atomic-{}", std::process::id()));
        let path = dir.join("out.txt");
        write_atomically(&path, |tmp| std::fs::write(tmp, "one")).unwrap();
        write_atomically(&path, |tmp| std::fs::write(tmp, "two")).unwrap();
        let failed = write_atomically(&path, |tmp| {
            std::fs::write(tmp, "partial")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flag_wins_over_env_and_defaults() {
        let c = candidates(Some(Path::new("/x")), "OTKD_TEST_UNSET_VAR", DEFAULT_DATA);
        assert_eq!(c, vec![PathBuf::from("/x")]);
        let c = candidates(None, "OTKD_TEST_UNSET_VAR", DEFAULT_DATA);
        assert_eq!(c.len(), 2);
        assert!(c[1].ends_with("shared/data/multi30k"));
        let c = candidates_from(None, Some(PathBuf::from("/env")), DEFAULT_DATA);
        assert_eq!(c, vec![PathBuf::from("/env")]);
    }
}
