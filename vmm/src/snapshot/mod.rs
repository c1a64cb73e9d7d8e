//! Snapshots of a booted guest, and restoring them (docs/snapshot.md).
//!
//! `ringvisor snapshot --out DIR` boots a guest whose /init waits for a
//! workload, pauses the vCPUs once it says so, and writes `DIR/memory`
//! (guest RAM) and `DIR/state` (everything else). `ringvisor run --restore
//! DIR` maps the memory file copy-on-write, loads the state and hands the
//! workload to /init through the guest-signal device's mailbox.
//!
//! - [`format`]: the state file's header, checksum and encoding;
//! - [`decode`]: a state file's bytes to a checked state (fuzzed);
//! - [`state`]: what the state holds, and its consistency check;
//! - [`vcpu`], [`vm`]: KVM state of the vCPUs and of the VM;
//! - [`memory`]: guest RAM to the memory file;
//! - [`devices`]: device states.

pub mod cache;
pub mod decode;
pub mod devices;
pub mod format;
pub mod memory;
pub mod restore;
pub mod state;
pub mod vcpu;
pub mod vm;

use std::path::{Path, PathBuf};

use state::Snapshot;

/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The guest RAM file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// The kernel parameter that makes rv-init wait for its workload in the
/// guest-signal mailbox (added by `ringvisor snapshot`).
pub const SNAPSHOT_PARAM: &str = "rv.snapshot=1";
/// The clock source a snapshot's guest boots with (before the user's
/// command line, which may override it). Its TSC clock source would jump
/// over the time the snapshot sat on disk on nested PVM, where the guest's
/// TSC is the host's (KVM cannot offset a TSC read natively in guest user
/// mode); kvm-clock goes on from the value KVM_SET_CLOCK restores.
pub const SNAPSHOT_CLOCKSOURCE: &str = "clocksource=kvm-clock";
pub use decode::{decode, Decoded, RINGVISOR_VERSION};

/// Errors taking, reading or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file operation.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The state file is not a valid snapshot.
    #[error("{path}: {source}")]
    Format {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        source: format::FormatError,
    },
    /// Written by another ringvisor version.
    #[error("{path}: written by ringvisor {found}; this is ringvisor {RINGVISOR_VERSION} (take the snapshot again)")]
    RingvisorVersion {
        /// The state file.
        path: PathBuf,
        /// The version that wrote it.
        found: String,
    },
    /// Parts of the state disagree or exceed a limit.
    #[error("invalid snapshot state: {0}")]
    State(#[from] state::StateError),
    /// The memory file does not hold the guest's RAM.
    #[error("invalid snapshot state: {} holds {len} bytes for {size} bytes of guest RAM (truncated?)", .path.display())]
    MemoryFileSize {
        /// The memory file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// Guest RAM's size in the state.
        size: u64,
    },
    /// The memory file's contents are not what the snapshot wrote.
    #[error(
        "invalid snapshot state: {} is corrupted: {} bytes of data with CRC-32 {:#010x}, \
         the state says {} bytes with CRC-32 {:#010x}",
        .path.display(), .found.data_bytes, .found.crc32, .want.data_bytes, .want.crc32
    )]
    MemoryCorrupted {
        /// The memory file.
        path: PathBuf,
        /// What it holds.
        found: state::MemoryDigest,
        /// What the state says it must hold.
        want: state::MemoryDigest,
    },
    /// No virtio transport sits in a slot the VM has.
    #[error("invalid snapshot state: no virtio device in slot {0}")]
    NoVirtioDevice(usize),
    /// A slot's device is not a virtio transport.
    #[error("invalid snapshot state: slot {0} holds no virtio device")]
    NotVirtio(usize),
    /// The saved virtio device states do not match the VM's devices.
    #[error("invalid snapshot state: {states} virtio device states for {devices} devices")]
    VirtioCount {
        /// Saved states.
        states: usize,
        /// Devices of the VM.
        devices: usize,
    },
    /// The UART's state cannot be loaded.
    #[error("invalid snapshot state: serial: {0}")]
    Serial(#[source] std::io::Error),
    /// The guest-signal device's state cannot be loaded.
    #[error("invalid snapshot state: guest-signal: {0}")]
    GuestSignal(#[source] ::devices::legacy::guest_signal::CommandError),
    /// A list of MSRs does not fit KVM's structure.
    #[error("invalid snapshot state: MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
    /// A vCPU's CPUID does not fit KVM's structure.
    #[error("invalid snapshot state: vCPU {cpu} CPUID: {source:?}")]
    Cpuid {
        /// The vCPU.
        cpu: u8,
        /// Why.
        source: vmm_sys_util::fam::Error,
    },
    /// KVM refused a saved MSR value.
    #[error("invalid snapshot state: vCPU {cpu}: KVM refused MSR {index:#x} = {value:#x}")]
    MsrRefused {
        /// The vCPU.
        cpu: u8,
        /// The MSR.
        index: u32,
        /// The value.
        value: u64,
    },
    /// The VM has a pv-uring arena, which a snapshot does not save.
    #[error(
        "invalid snapshot state: a VM with a pv-uring arena (--uring arena=) cannot be snapshotted"
    )]
    Arena,
    /// The `ringvisor snapshot` run that fills the cache failed.
    #[error("invalid snapshot state: taking the cached snapshot failed (exit status {status:?}): {last}")]
    CacheTake {
        /// Its exit status.
        status: Option<i32>,
        /// The last line it printed on stderr.
        last: String,
    },
    /// The snapshot's machine cannot be built as asked.
    #[error("the snapshot cannot be restored as asked: {0}")]
    Mismatch(#[from] restore::MismatchError),
    /// A KVM ioctl failed.
    #[error("{what}{} failed: {source}", cpu.map(|c| format!(" (vCPU {c})")).unwrap_or_default())]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The vCPU, for vCPU ioctls.
        cpu: Option<u8>,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// A device cannot be saved or restored.
    #[error("virtio device in slot {slot}: {source}")]
    Device {
        /// Its slot (disks first, then pv-uring).
        slot: usize,
        /// Why.
        source: ::devices::virtio::mmio::MmioStateError,
    },
    /// A vCPU could not save its state.
    #[error("vCPU {cpu} did not pause for the snapshot: {source}")]
    PauseFailed {
        /// The vCPU.
        cpu: u8,
        /// Why.
        source: Box<SnapshotError>,
    },
    /// A vCPU did not answer in time.
    #[error("vCPU {cpu} did not pause for the snapshot: no answer in {} s", .timeout.as_secs())]
    PauseTimeout {
        /// The first vCPU still missing.
        cpu: u8,
        /// How long the VMM waited.
        timeout: std::time::Duration,
    },
    /// Something else happened while the vCPUs paused.
    #[error("vCPU {cpu} did not pause for the snapshot: {event}")]
    PauseInterrupted {
        /// The first vCPU still missing.
        cpu: u8,
        /// The event that came instead, as the VMM prints it.
        event: String,
    },
}

/// Reads and checks the snapshot in `dir`: the state's format, version and
/// consistency, and the memory file's size and contents (its digest, over
/// the RAM in use). Nothing is built yet, so an error here leaves nothing
/// behind.
pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|source| SnapshotError::Io {
        what: "reading",
        path: path.clone(),
        source,
    })?;
    let snapshot = decode(&bytes).map_err(|e| match e {
        Decoded::Format(source) => SnapshotError::Format {
            path: path.clone(),
            source,
        },
        Decoded::Version(found) => SnapshotError::RingvisorVersion {
            path: path.clone(),
            found,
        },
        Decoded::Invalid(why) => SnapshotError::State(why),
    })?;
    let memory = dir.join(MEMORY_FILE);
    let len = std::fs::metadata(&memory)
        .map_err(|source| SnapshotError::Io {
            what: "reading",
            path: memory.clone(),
            source,
        })?
        .len();
    if len != snapshot.machine.memory_size {
        return Err(SnapshotError::MemoryFileSize {
            path: memory,
            len,
            size: snapshot.machine.memory_size,
        });
    }
    memory::check(&memory, &snapshot.memory)?;
    Ok(snapshot)
}

/// Writes `snapshot` as `dir/state`, through a temporary file renamed into
/// place (a reader never sees half a state).
pub fn write_state(dir: &Path, snapshot: &Snapshot) -> Result<u64, SnapshotError> {
    let bytes = format::encode(snapshot).map_err(|source| SnapshotError::Format {
        path: dir.join(STATE_FILE),
        source,
    })?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let path = dir.join(STATE_FILE);
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { what, path, source }
    };
    std::fs::write(&tmp, &bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    Ok(bytes.len() as u64)
}
