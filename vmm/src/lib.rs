//! ringvisor: a KVM virtual machine monitor that boots a Linux guest and
//! serves its io_uring rings from the host.
//!
//! The `vmm` library holds the whole VMM (configuration, guest memory, the
//! VM and its vCPUs, boot, devices' attachment, the run loop); the
//! `ringvisor` binary (src/main.rs) is its command line.

pub use devices::affinity;
pub mod boot;
pub mod compat_patch;
pub mod config;
pub mod disks;
pub mod emulation;
pub mod error;
pub mod guest_files;
pub mod guest_image;
pub mod guest_profile;
pub mod layout;
pub mod logging;
pub mod memory;
pub mod outcome;
pub mod pvm;
pub mod run;
pub mod snapshot;
pub mod timings;
pub mod uring;
pub mod vcpu;
pub mod virtio_mmio;
pub mod vm;

/// Events that end or change a VM run, sent to the main loop.
#[derive(Debug)]
pub enum VmmEvent {
    /// A device event.
    Device(devices::VmEvent),
    /// A vCPU shut down (triple fault).
    TripleFault { cpu: u8 },
    /// KVM reported a system event (reset, shutdown).
    SystemEvent { cpu: u8, kind: u32 },
    /// A vCPU stopped on something the VMM cannot handle.
    Unhandled { cpu: u8, what: String },
    /// A vCPU paused for a snapshot, with its saved state.
    Paused {
        cpu: u8,
        state: Box<Result<snapshot::state::VcpuState, snapshot::SnapshotError>>,
    },
    /// A vCPU stopped on an emulation failure the VMM cannot handle, with a
    /// hint for the instructions a stock kernel is known to stop on.
    EmulationFailure {
        cpu: u8,
        what: String,
        hint: Option<&'static str>,
    },
}
