//! A temporary host file for the device tests (removed on drop).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file holding given bytes, named after the process and a counter.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A file `<prefix>-<pid>-<n>` in `dir` holding `bytes`.
    pub fn new_in(dir: &Path, prefix: &str, bytes: &[u8]) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }

    /// What the file holds now.
    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
