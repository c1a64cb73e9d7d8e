//! What `run --restore` asks against what the snapshot holds: the VM
//! configuration to build (the snapshot's machine, with the user's disk and
//! backend files, timeout, timings and affinity) and the workload command
//! for /init. Pure logic: every mismatch is an error naming both values.

use std::path::PathBuf;
use std::time::Duration;

use super::state::{FileInfo, Snapshot};
use super::SnapshotError;
use crate::config::{DiskConfig, HugepagePolicy, MemoryConfig, PvmMode, UringConfig, VmConfig};

/// The options of `run --restore` that bear on the machine.
#[derive(Debug, Default, Clone)]
pub struct RestoreRequest {
    /// `--cpus`, when given.
    pub cpus: Option<u8>,
    /// `--memory size=`, when given.
    pub memory_size: Option<u64>,
    /// `--disk` files (none: the snapshot's own paths).
    pub disks: Vec<DiskConfig>,
    /// Whether `--uring` was given.
    pub uring: bool,
    /// `--uring-backend` files (none: the snapshot's own paths).
    pub uring_backends: Vec<DiskConfig>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--timings`.
    pub timings: bool,
    /// `--vcpu-affinity`.
    pub vcpu_affinity: Option<Vec<usize>>,
    /// `--guest-profile`.
    pub guest_profile: Option<crate::guest_profile::ProfileConfig>,
}

/// How the machine asked for differs from the snapshot's.
#[derive(Debug, thiserror::Error)]
pub enum MismatchError {
    /// Another number of disks or backends.
    #[error("the snapshot has {saved} {kind}(s), {given} given")]
    FileCount {
        /// "disk" or "pv-uring backend".
        kind: &'static str,
        /// In the snapshot.
        saved: usize,
        /// Given.
        given: usize,
    },
    /// A file cannot be looked at.
    #[error("{kind} {index} {}: {source}", .path.display())]
    File {
        /// "disk" or "pv-uring backend".
        kind: &'static str,
        /// Its place.
        index: usize,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file has another size.
    #[error("{kind} {index} {} has {size} bytes; the snapshot's had {saved} (the guest knows its size)", .path.display())]
    FileSize {
        /// "disk" or "pv-uring backend".
        kind: &'static str,
        /// Its place.
        index: usize,
        /// Its path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The size in the snapshot.
        saved: u64,
    },
    /// A file is read-only where it was writable, or the other way round.
    #[error("{kind} {index} {} is {}; in the snapshot it was {}", .path.display(), access(*.readonly), access(!*.readonly))]
    FileAccess {
        /// "disk" or "pv-uring backend".
        kind: &'static str,
        /// Its place.
        index: usize,
        /// Its path.
        path: PathBuf,
        /// Whether it is read-only now.
        readonly: bool,
    },
    /// Another vCPU count.
    #[error("the snapshot has {saved} vCPUs, --cpus asks {asked}")]
    Cpus {
        /// In the snapshot.
        saved: u8,
        /// Asked.
        asked: u8,
    },
    /// Another guest RAM size.
    #[error("the snapshot has {} MiB of guest RAM, --memory asks {} MiB", .saved >> 20, .asked >> 20)]
    Memory {
        /// In the snapshot, in bytes.
        saved: u64,
        /// Asked, in bytes.
        asked: u64,
    },
    /// `--uring` for a snapshot without pv-uring.
    #[error("the snapshot has no pv-uring device, --uring asks one")]
    NoUring,
}

fn access(readonly: bool) -> &'static str {
    if readonly {
        "read-only"
    } else {
        "writable"
    }
}

/// The files to attach in place of the snapshot's `saved` ones: `given`,
/// or the saved paths; each must have the saved size and read-only mode
/// (the guest knows both).
fn files(
    kind: &'static str,
    saved: &[FileInfo],
    given: &[DiskConfig],
) -> Result<Vec<DiskConfig>, SnapshotError> {
    let chosen: Vec<DiskConfig> = if given.is_empty() {
        saved
            .iter()
            .map(|f| DiskConfig {
                path: PathBuf::from(&f.path),
                readonly: f.readonly,
                direct: f.direct,
            })
            .collect()
    } else {
        given.to_vec()
    };
    if chosen.len() != saved.len() {
        return Err(MismatchError::FileCount {
            kind,
            saved: saved.len(),
            given: chosen.len(),
        }
        .into());
    }
    for (i, (c, s)) in chosen.iter().zip(saved).enumerate() {
        let size = std::fs::metadata(&c.path)
            .map_err(|source| MismatchError::File {
                kind,
                index: i,
                path: c.path.clone(),
                source,
            })?
            .len();
        if size != s.size {
            return Err(MismatchError::FileSize {
                kind,
                index: i,
                path: c.path.clone(),
                size,
                saved: s.size,
            }
            .into());
        }
        if c.readonly != s.readonly {
            return Err(MismatchError::FileAccess {
                kind,
                index: i,
                path: c.path.clone(),
                readonly: c.readonly,
            }
            .into());
        }
    }
    Ok(chosen)
}

/// The configuration to restore `snapshot` with, as `request` asks.
pub fn config(snapshot: &Snapshot, request: &RestoreRequest) -> Result<VmConfig, SnapshotError> {
    let m = &snapshot.machine;
    if let Some(cpus) = request.cpus.filter(|&c| c != m.cpus) {
        return Err(MismatchError::Cpus {
            saved: m.cpus,
            asked: cpus,
        }
        .into());
    }
    if let Some(size) = request.memory_size.filter(|&s| s != m.memory_size) {
        return Err(MismatchError::Memory {
            saved: m.memory_size,
            asked: size,
        }
        .into());
    }
    let disks = files("disk", &m.disks, &request.disks)?;
    let uring = match (
        &m.uring,
        request.uring || !request.uring_backends.is_empty(),
    ) {
        (None, true) => return Err(MismatchError::NoUring.into()),
        (None, false) => None,
        (Some(u), _) => Some(UringConfig {
            rings: u.rings,
            polled: u.polled,
            max_registered: u.max_registered,
            sq_cpu: None,
            backends: files("pv-uring backend", &u.backends, &request.uring_backends)?,
            // Snapshots of a VM with an arena are refused (run.rs).
            arena: None,
        }),
    };
    Ok(VmConfig {
        kernel: PathBuf::new(),
        initramfs: None,
        files: Vec::new(),
        cmdline: String::new(),
        cpus: m.cpus,
        memory: MemoryConfig {
            size: m.memory_size,
            hugepages: HugepagePolicy::Off,
        },
        timeout: request.timeout,
        pvm: if m.pvm { PvmMode::On } else { PvmMode::Off },
        timings: request.timings,
        disks,
        uring,
        vcpu_affinity: request.vcpu_affinity.clone(),
        guest_profile: request.guest_profile.clone(),
    })
}

/// Splits a command line into words as the kernel does for init's argv:
/// whitespace separates words except inside double quotes; a word's
/// leading and trailing quote are dropped.
fn kernel_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut in_word, mut in_quote) = (String::new(), false, false);
    for c in s.chars() {
        if c == '"' {
            in_quote = !in_quote;
        }
        if c.is_ascii_whitespace() && !in_quote {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            continue;
        }
        in_word = true;
        word.push(c);
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| {
            let w = w.strip_prefix('"').unwrap_or(&w);
            w.strip_suffix('"').unwrap_or(w).to_string()
        })
        .collect()
}

/// Why `--cmdline` of `run --restore` gives no workload command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    /// A word other than `-- WORKLOAD` or `rv.workload=NAME`.
    #[error(
        "--cmdline with --restore takes only `-- WORKLOAD` or `rv.workload=NAME`: \
         the kernel command line was fixed when the snapshot was taken (found {0:?})"
    )]
    KernelWord(String),
    /// A workload word holds a NUL byte.
    #[error("workload word {0:?} holds a NUL byte")]
    Nul(String),
    /// The command does not fit the mailbox.
    #[error(
        "the workload command is {0} bytes; at most {max} fit the guest-signal mailbox",
        max = devices::legacy::guest_signal::COMMAND_MAX
    )]
    TooLong(usize),
}

/// The mailbox command for `--cmdline` of `run --restore`: ` -- WORKLOAD`
/// gives its words, `rv.workload=NAME` gives `/bin/NAME`, nothing gives the
/// guest's default workload (an empty command). Kernel parameters were fixed
/// when the snapshot was taken: any other word is an error naming it.
pub fn workload_command(cmdline: &str) -> Result<Vec<u8>, WorkloadError> {
    let s = cmdline.trim();
    let (head, tail) = if s == "--" {
        ("", "")
    } else if let Some(rest) = s.strip_prefix("-- ") {
        ("", rest)
    } else if let Some((h, t)) = s.split_once(" -- ") {
        (h, t)
    } else {
        (s, "")
    };
    let mut argv = kernel_words(tail);
    for word in head.split_ascii_whitespace() {
        match word.strip_prefix("rv.workload=") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                if argv.is_empty() {
                    argv.push(format!("/bin/{name}"));
                }
            }
            _ => return Err(WorkloadError::KernelWord(word.to_string())),
        }
    }
    let mut bytes = Vec::new();
    for w in argv {
        if w.contains('\0') {
            return Err(WorkloadError::Nul(w));
        }
        bytes.extend_from_slice(w.as_bytes());
        bytes.push(0);
    }
    if bytes.len() > devices::legacy::guest_signal::COMMAND_MAX {
        return Err(WorkloadError::TooLong(bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_name_both_values() {
        let cases = [
            (
                MismatchError::Cpus { saved: 2, asked: 1 },
                "the snapshot has 2 vCPUs, --cpus asks 1",
            ),
            (
                MismatchError::Memory {
                    saved: 256 << 20,
                    asked: 512 << 20,
                },
                "the snapshot has 256 MiB of guest RAM, --memory asks 512 MiB",
            ),
            (
                MismatchError::FileCount {
                    kind: "disk",
                    saved: 1,
                    given: 2,
                },
                "the snapshot has 1 disk(s), 2 given",
            ),
            (
                MismatchError::FileSize {
                    kind: "disk",
                    index: 0,
                    path: "/d".into(),
                    size: 1,
                    saved: 4096,
                },
                "disk 0 /d has 1 bytes; the snapshot's had 4096 (the guest knows its size)",
            ),
            (
                MismatchError::FileAccess {
                    kind: "pv-uring backend",
                    index: 1,
                    path: "/b".into(),
                    readonly: true,
                },
                "pv-uring backend 1 /b is read-only; in the snapshot it was writable",
            ),
        ];
        for (err, says) in cases {
            assert_eq!(err.to_string(), says);
        }
    }

    #[test]
    fn workload_commands() {
        assert_eq!(workload_command("").unwrap(), b"");
        assert_eq!(
            workload_command("-- /bin/sh -c \"echo hi; exit 3\"").unwrap(),
            b"/bin/sh\0-c\0echo hi; exit 3\0"
        );
        assert_eq!(
            workload_command("rv.workload=blk-io").unwrap(),
            b"/bin/blk-io\0"
        );
        assert_eq!(
            workload_command("rv.workload=demo -- /bin/true").unwrap(),
            b"/bin/true\0"
        );
        let err = workload_command("loglevel=7 -- /bin/true").unwrap_err();
        assert_eq!(err, WorkloadError::KernelWord("loglevel=7".into()));
        assert!(err.to_string().contains("\"loglevel=7\""), "{err}");
        assert!(workload_command("rv.workload=../x").is_err());
        let long = format!("-- {}", "x".repeat(4000));
        let err = workload_command(&long).unwrap_err();
        assert_eq!(err, WorkloadError::TooLong(4001));
        assert!(err.to_string().contains("mailbox"));
    }
}
