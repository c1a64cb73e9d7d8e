//! Cached snapshots: `ringvisor snapshot --cached` and `ringvisor demo`
//! take a snapshot on first use and reuse it, as the guest image is cached.
//! The key is the kernel and initramfs (path, size, modification time),
//! the kernel command line, the vCPUs, the RAM size, the PVM mode and the
//! ringvisor and format versions; the snapshot lies in
//! `${RINGVISOR_CACHE:-~/.cache/ringvisor}/snapshots/KEY`. It is taken by a
//! child `ringvisor snapshot --out` into a temporary directory renamed into
//! place, so concurrent first uses each get a whole snapshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::state::Snapshot;
use super::{format::FORMAT_VERSION, SnapshotError, RINGVISOR_VERSION};
use crate::config::PvmMode;

/// What a cached snapshot is of.
#[derive(Debug, Clone)]
pub struct CachedMachine {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: Option<PathBuf>,
    /// The user's part of the kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM, bytes.
    pub memory: u64,
    /// `--pvm`.
    pub pvm: PvmMode,
}

/// The cache root, as for the guest image.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("RINGVISOR_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ringvisor")
}

fn file_id(path: &Path) -> Result<String, SnapshotError> {
    let meta = std::fs::metadata(path).map_err(|source| SnapshotError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{}:{mtime}", path.display(), meta.len()))
}

/// The cache key of `m`: 16 hex digits.
pub fn key(m: &CachedMachine) -> Result<String, SnapshotError> {
    let initramfs = match &m.initramfs {
        Some(p) => file_id(p)?,
        None => String::new(),
    };
    let text = format!(
        "ringvisor {RINGVISOR_VERSION} format {FORMAT_VERSION}\nkernel {}\ninitramfs {initramfs}\n\
         cmdline {}\ncpus {}\nmemory {}\npvm {:?}\n",
        file_id(&m.kernel)?,
        m.cmdline.trim(),
        m.cpus,
        m.memory,
        m.pvm
    );
    // Two CRC-32s of different halves' seeds: a cache key, not a defence.
    let a = crc32fast::hash(text.as_bytes());
    let mut h = crc32fast::Hasher::new_with_initial(0x5256_534e);
    h.update(text.as_bytes());
    Ok(format!("{a:08x}{:08x}", h.finalize()))
}

/// The directory of the cached snapshot of `m` and the snapshot, loaded
/// and checked ([`super::load`]), taking it with `exe` (this ringvisor)
/// first when missing or unreadable. A caller that restores it uses the
/// loaded snapshot rather than loading it again (the check reads the
/// memory file's data).
pub fn ensure(exe: &Path, m: &CachedMachine) -> Result<(PathBuf, Snapshot), SnapshotError> {
    let root = cache_root().join("snapshots");
    let dir = root.join(key(m)?);
    if let Ok(snapshot) = super::load(&dir) {
        return Ok((dir, snapshot));
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { what, path, source }
    };
    std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
    let tmp = root.join(format!(
        "{}.tmp-{}",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cmd = Command::new(exe);
    cmd.arg("snapshot")
        .arg("--out")
        .arg(&tmp)
        .arg("--kernel")
        .arg(&m.kernel);
    if let Some(i) = &m.initramfs {
        cmd.arg("--initramfs").arg(i);
    }
    let pvm = match m.pvm {
        PvmMode::Auto => "auto",
        PvmMode::On => "on",
        PvmMode::Off => "off",
    };
    cmd.args(["--cpus", &m.cpus.to_string()])
        .args(["--memory", &format!("size={}", m.memory)])
        .args(["--pvm", pvm, "--timeout", "900"]);
    if !m.cmdline.trim().is_empty() {
        cmd.args(["--cmdline", m.cmdline.trim()]);
    }
    log::info!("taking the cached snapshot {}", dir.display());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io("running", exe))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(SnapshotError::CacheTake {
            status: out.status.code(),
            last,
        });
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process put its snapshot there first: use that one.
        if let Ok(snapshot) = super::load(&dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok((dir, snapshot));
        }
        // A broken one from before: replace it.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|_| SnapshotError::Io {
            what: "renaming",
            path: tmp.clone(),
            source: e,
        })?;
    }
    let snapshot = super::load(&dir)?;
    Ok((dir, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_every_option() {
        let dir = std::env::temp_dir().join(format!("rv-cache-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("vmlinux");
        std::fs::write(&kernel, b"kernel").unwrap();
        let m = CachedMachine {
            kernel: kernel.clone(),
            initramfs: None,
            cmdline: "rv.workload=demo".into(),
            cpus: 1,
            memory: 256 << 20,
            pvm: PvmMode::Auto,
        };
        let k = key(&m).unwrap();
        assert_eq!(k.len(), 16);
        assert_eq!(key(&m).unwrap(), k);
        for other in [
            CachedMachine {
                cpus: 2,
                ..m.clone()
            },
            CachedMachine {
                memory: 512 << 20,
                ..m.clone()
            },
            CachedMachine {
                cmdline: "rv.workload=other".into(),
                ..m.clone()
            },
            CachedMachine {
                pvm: PvmMode::Off,
                ..m.clone()
            },
        ] {
            assert_ne!(key(&other).unwrap(), k, "{other:?}");
        }
        std::fs::write(&kernel, b"another kernel").unwrap();
        assert_ne!(key(&m).unwrap(), k, "a rebuilt kernel");
        assert!(key(&CachedMachine {
            kernel: dir.join("missing"),
            ..m
        })
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
