//! Finding (and on first use building) the default guest image with
//! `guest-images/build.sh`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use thiserror::Error;

/// Errors building the default guest.
#[derive(Debug, Error)]
pub enum GuestImageError {
    /// The build script is missing.
    #[error("guest build script {0} not found; set RINGVISOR_GUEST_BUILD to its path")]
    NoScript(PathBuf),
    /// The build script could not be run.
    #[error("running {script} failed: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    /// The build script failed.
    #[error("{script} failed with {status}; its output above says why")]
    Failed {
        script: PathBuf,
        status: std::process::ExitStatus,
    },
    /// The build script did not print both paths.
    #[error("{script} did not print KERNEL= and INITRAMFS= lines")]
    NoPaths { script: PathBuf },
}

/// The kernel and initramfs of a guest.
pub struct GuestImage {
    /// ELF vmlinux.
    pub kernel: PathBuf,
    /// cpio initramfs with every guest program and busybox (a shell).
    pub initramfs: PathBuf,
    /// The same without busybox, when built: what the demo and the boot
    /// benchmark boot (each initramfs MiB costs about a second on PVM).
    pub initramfs_min: Option<PathBuf>,
}

impl GuestImage {
    /// The smallest initramfs that runs the guest programs.
    pub fn smallest_initramfs(&self) -> &std::path::Path {
        self.initramfs_min.as_deref().unwrap_or(&self.initramfs)
    }
}

/// Extracts `KERNEL=` and `INITRAMFS=` from the build script's stdout.
pub fn parse_paths(stdout: &str) -> Option<GuestImage> {
    let find = |key: &str| {
        stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| PathBuf::from(v.trim()))
    };
    Some(GuestImage {
        kernel: find("KERNEL=")?,
        initramfs: find("INITRAMFS=")?,
        initramfs_min: find("INITRAMFS_MIN="),
    })
}

/// Builds the default guest (a no-op when cached) and returns its paths.
/// The script's progress goes to stderr.
pub fn build_default() -> Result<GuestImage, GuestImageError> {
    let script = std::env::var_os("RINGVISOR_GUEST_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../guest-images/build.sh"
            ))
        });
    if !script.exists() {
        return Err(GuestImageError::NoScript(script));
    }
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| GuestImageError::Spawn {
            script: script.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(GuestImageError::Failed {
            script,
            status: output.status,
        });
    }
    parse_paths(&String::from_utf8_lossy(&output.stdout)).ok_or(GuestImageError::NoPaths { script })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_the_last_lines() {
        let out = "building...\nKERNEL=/c/vmlinux\nINITRAMFS=/c/initramfs.cpio\n";
        let image = parse_paths(out).unwrap();
        assert_eq!(image.kernel, PathBuf::from("/c/vmlinux"));
        assert_eq!(image.initramfs, PathBuf::from("/c/initramfs.cpio"));
        assert_eq!(
            image.smallest_initramfs(),
            PathBuf::from("/c/initramfs.cpio")
        );
        let out = "INITRAMFS_MIN=/c/min.cpio\nKERNEL=/c/vmlinux\nINITRAMFS=/c/initramfs.cpio\n";
        let image = parse_paths(out).unwrap();
        assert_eq!(image.smallest_initramfs(), PathBuf::from("/c/min.cpio"));
        assert!(parse_paths("KERNEL=/x\n").is_none());
    }
}
