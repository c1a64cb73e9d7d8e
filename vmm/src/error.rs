//! Errors building and starting a VM: one type for vm.rs, disks.rs,
//! uring.rs and run.rs, kept apart so that those modules do not import each
//! other for it.

use thiserror::Error;

use crate::boot::{cpu, BootError};
use crate::memory::MemoryError;
use crate::snapshot::SnapshotError;

/// Errors building a VM.
#[derive(Debug, Error)]
pub enum VmError {
    /// /dev/kvm cannot be opened.
    #[error("KVM is unavailable: cannot open /dev/kvm: {0} (is the kvm module loaded and do you have access to /dev/kvm?)")]
    KvmUnavailable(kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    /// Guest RAM.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading the guest.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// `--guest-profile`.
    #[error(transparent)]
    Profile(#[from] crate::guest_profile::ProfileError),
    /// vCPU register set-up.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuSetupError),
    /// A device's eventfd cannot be created.
    #[error("setting up device {what}: eventfd: {source}")]
    Eventfd {
        /// The device.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A device's range on its bus is empty or taken.
    #[error("setting up device {what}: {source}")]
    Bus {
        /// The device.
        what: &'static str,
        /// Why.
        source: devices::BusError,
    },
    /// A virtio device cannot be attached in a virtio-mmio slot.
    #[error(transparent)]
    VirtioMmio(#[from] crate::virtio_mmio::AttachError),
    /// A `--disk` cannot be opened.
    #[error("setting up device virtio-blk: {0}")]
    Block(#[from] devices::virtio::block::BlockError),
    /// The pv-uring device cannot be created.
    #[error("setting up device pv-uring: {0}")]
    PvUring(#[from] devices::virtio::uring::PvUringError),
    /// A part of the pv-uring ring area cannot be mapped into the guest.
    #[error(
        "setting up device pv-uring: KVM_SET_USER_MEMORY_REGION (ring area at {gpa:#x}, {} MiB{}): {source}",
        .len >> 20,
        if *.read_only { ", read-only" } else { "" }
    )]
    RingArea {
        /// Its guest-physical address.
        gpa: u64,
        /// Its length in bytes.
        len: u64,
        /// Whether it is mapped read-only.
        read_only: bool,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// The VM fd cannot be duplicated for the pv-uring device.
    #[error("setting up device pv-uring: dup of the VM fd: {0}")]
    DupVmFd(std::io::Error),
    /// The guest-signal device refuses the restored workload's command.
    #[error("setting up device guest-signal: {0}")]
    Command(#[from] devices::legacy::guest_signal::CommandError),
    /// A vCPU thread cannot be started.
    #[error("setting up device vCPU thread: {0}")]
    VcpuThread(std::io::Error),
    /// A vCPU thread ended before it said where it runs.
    #[error("setting up device vCPU thread: a vCPU thread ended before it started")]
    VcpuThreadEnded,
    /// Restoring a snapshot.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A vCPU thread cannot be restricted to `--vcpu-affinity`.
    #[error("--vcpu-affinity: vCPU {cpu}: {source}")]
    VcpuAffinity {
        /// The vCPU.
        cpu: u8,
        /// Why.
        source: crate::affinity::AffinityError,
    },
}

/// Maps a failed KVM ioctl `what` to a [`VmError`].
pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}
