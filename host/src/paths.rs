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

/// Writes a file atomically: `write` fills a temporary file beside `path`, which is synced to
/// disk and renamed over `path` (and the directory synced), so a crash or Ctrl-C never leaves a
/// half-written file under the final name. `path` must be a regular file or not exist: renaming
/// over a device node, FIFO, directory or symlink would replace it rather than write to it.
/// Temporary files that an earlier, killed otkd left beside `path` are removed.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_file()
    {
        let kind = if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is {kind}; otkd writes only regular files", path.display()),
        ));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    remove_stale_temporaries(parent, &name);
    let tmp = parent.join(format!("{name}.{}.tmp", std::process::id()));
    let result = write(&tmp)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| sync_directory(parent));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `<name>.<pid>.tmp` files in `dir` whose process no longer runs (a write killed
/// before its rename).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_is_running(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(target_os = "linux")]
fn process_is_running(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_is_running(_pid: u32) -> bool {
    // Without /proc there is no cheap check: keep the file rather than delete another writer's.
    true
}

/// Makes a rename in `dir` durable (on Unix a directory can be opened and synced).
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn atomic_write_refuses_non_regular_destinations_and_cleans_stale_temporaries() {
        let dir = std::env::temp_dir().join(format!("otkd-atomic-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A directory, a symlink and a device node are refused and left as they were.
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(dir.join("target"), &link).unwrap();
        for path in [&sub, &link, &PathBuf::from("/dev/null")] {
            let err = write_atomically(path, |tmp| std::fs::write(tmp, "x")).unwrap_err();
            assert!(err.to_string().contains("otkd writes only regular files"), "{err}");
        }
        assert!(sub.is_dir());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(!dir.join("target").exists());
        // A temporary file of a process that no longer runs goes; the write succeeds.
        let stale = dir.join("out.bin.4294967295.tmp");
        std::fs::write(&stale, "half").unwrap();
        write_atomically(&dir.join("out.bin"), |tmp| std::fs::write(tmp, "whole")).unwrap();
        assert!(!stale.exists());
        assert_eq!(std::fs::read_to_string(dir.join("out.bin")).unwrap(), "whole");
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
