//! What a snapshot holds besides guest RAM: the machine it was taken of,
//! the KVM state of the VM and of each vCPU, and each device's state. Plain
//! data with serde; [`Snapshot::check`] says whether its parts agree, before
//! anything of it reaches KVM or a device. Nothing here calls KVM, so the
//! fuzz target decodes and checks states as they are.

use devices::legacy::guest_signal::{GuestSignalState, COMMAND_MAX};
use devices::legacy::serial::SerialSnapshot;
use devices::virtio::mmio::MmioState;
use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use serde::{Deserialize, Serialize};

/// The most vCPUs a snapshot may hold (as `--cpus`).
pub const MAX_CPUS: u8 = 8;
/// The most MSRs one vCPU may hold.
pub const MAX_MSRS: usize = 4096;
/// The most CPUID entries one vCPU may hold (KVM_MAX_CPUID_ENTRIES).
pub const MAX_CPUID: usize = 256;

/// A host file a device was attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its path when the snapshot was taken (the default on restore).
    pub path: String,
    /// Its size then, in bytes: the guest knows it.
    pub size: u64,
    /// Attached read-only.
    pub readonly: bool,
    /// Opened with O_DIRECT.
    pub direct: bool,
}

/// The pv-uring device's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UringInfo {
    /// Ring slots.
    pub rings: u32,
    /// Polled rings at once.
    pub polled: u32,
    /// Registered-bytes budget.
    pub max_registered: Option<u64>,
    /// Backend files.
    pub backends: Vec<FileInfo>,
}

/// The machine the snapshot is of: what a restore must build the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// vCPUs.
    pub cpus: u8,
    /// Whether the PVM measures were on.
    pub pvm: bool,
    /// The kernel command line the guest booted with.
    pub cmdline: String,
    /// The kernel image format booted.
    pub kernel_format: String,
    /// virtio-blk disks, in order.
    pub disks: Vec<FileInfo>,
    /// The pv-uring device, if any.
    pub uring: Option<UringInfo>,
    /// The TSC frequency of the vCPUs, kHz.
    pub tsc_khz: Option<u32>,
}

/// VM-wide KVM state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    /// PIC master, PIC slave, IOAPIC (KVM_GET_IRQCHIP, chip ids 0 to 2).
    pub irqchips: Vec<kvm_irqchip>,
    /// KVM_GET_PIT2.
    pub pit: kvm_pit_state2,
    /// KVM_GET_CLOCK: kvmclock at the time of the snapshot.
    pub clock: kvm_clock_data,
}

/// One vCPU's KVM state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU index (and APIC ID).
    pub id: u8,
    /// KVM_GET_CPUID2: set again before anything else.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// KVM_GET_REGS.
    pub regs: kvm_regs,
    /// KVM_GET_SREGS.
    pub sregs: kvm_sregs,
    /// KVM_GET_XSAVE (x87, SSE and the rest of the legacy 4 KiB area).
    pub xsave: kvm_xsave,
    /// KVM_GET_XCRS.
    pub xcrs: kvm_xcrs,
    /// KVM_GET_DEBUGREGS.
    pub debug_regs: kvm_debugregs,
    /// KVM_GET_LAPIC.
    pub lapic: kvm_lapic_state,
    /// KVM_GET_MP_STATE.
    pub mp_state: kvm_mp_state,
    /// KVM_GET_VCPU_EVENTS.
    pub events: kvm_vcpu_events,
    /// Every MSR of KVM_GET_MSR_INDEX_LIST that read back: (index, value).
    pub msrs: Vec<(u32, u64)>,
}

/// Each device's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStates {
    /// The COM1 UART.
    pub serial: SerialSnapshot,
    /// The guest-signal device.
    pub guest_signal: GuestSignalState,
    /// Each virtio-mmio transport: the disks in order, then pv-uring.
    pub virtio: Vec<MmioState>,
}

/// Everything in a snapshot's state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The ringvisor version that wrote it (`CARGO_PKG_VERSION`).
    pub ringvisor_version: String,
    /// The machine.
    pub machine: Machine,
    /// VM-wide KVM state.
    pub vm: VmState,
    /// Each vCPU, by index.
    pub vcpus: Vec<VcpuState>,
    /// Devices.
    pub devices: DeviceStates,
    /// What the memory file must hold.
    pub memory: MemoryDigest,
}

/// A fingerprint of the memory file's contents, checked at every restore:
/// CRC-32 over each page that is not all zeros, with its file offset
/// (zero pages are holes, so the fingerprint reads only the RAM in use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryDigest {
    /// Bytes in pages that are not all zeros.
    pub data_bytes: u64,
    /// CRC-32 (IEEE) of, for each such page in file order, its offset (u64
    /// LE) then its bytes.
    pub crc32: u32,
}

/// How a snapshot's parts disagree with each other or with the limits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// The vCPU count is out of range.
    #[error("{0} vCPUs (1 to {MAX_CPUS})")]
    Cpus(u8),
    /// The vCPU states do not match the vCPU count.
    #[error("{states} vCPU states for {cpus} vCPUs")]
    VcpuStates {
        /// vCPU states.
        states: usize,
        /// vCPUs of the machine.
        cpus: u8,
    },
    /// A vCPU state is out of order.
    #[error("vCPU state {index} is for vCPU {id}")]
    VcpuId {
        /// Its place.
        index: usize,
        /// The vCPU it names.
        id: u8,
    },
    /// A vCPU has too many MSRs.
    #[error("vCPU {cpu} has {count} MSRs")]
    Msrs {
        /// The vCPU.
        cpu: usize,
        /// Its MSR count.
        count: usize,
    },
    /// A vCPU has no or too many CPUID entries.
    #[error("vCPU {cpu} has {count} CPUID entries")]
    Cpuid {
        /// The vCPU.
        cpu: usize,
        /// Its CPUID entry count.
        count: usize,
    },
    /// Guest RAM's size is out of range or not page-aligned.
    #[error("guest RAM of {0} bytes")]
    MemorySize(u64),
    /// Not the three irqchips (two PICs, the IOAPIC).
    #[error("{0} irqchip states (3)")]
    Irqchips(usize),
    /// An irqchip state is out of order.
    #[error("irqchip state {index} is of chip {chip}")]
    IrqchipId {
        /// Its place.
        index: usize,
        /// The chip it names.
        chip: u32,
    },
    /// The virtio device states do not match the machine's devices.
    #[error("{states} virtio device states for {disks} disks{}", if *.uring { " and pv-uring" } else { "" })]
    VirtioStates {
        /// Device states.
        states: usize,
        /// Disks of the machine.
        disks: usize,
        /// Whether the machine has pv-uring.
        uring: bool,
    },
    /// The guest-signal command is too long.
    #[error("a guest-signal command of {0} bytes")]
    Command(usize),
}

impl Snapshot {
    /// Whether the parts agree with each other and with the limits; the
    /// error names the value that does not.
    pub fn check(&self) -> Result<(), StateError> {
        let m = &self.machine;
        if m.cpus == 0 || m.cpus > MAX_CPUS {
            return Err(StateError::Cpus(m.cpus));
        }
        if self.vcpus.len() != usize::from(m.cpus) {
            return Err(StateError::VcpuStates {
                states: self.vcpus.len(),
                cpus: m.cpus,
            });
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            if usize::from(v.id) != i {
                return Err(StateError::VcpuId { index: i, id: v.id });
            }
            if v.msrs.len() > MAX_MSRS {
                return Err(StateError::Msrs {
                    cpu: i,
                    count: v.msrs.len(),
                });
            }
            if v.cpuid.is_empty() || v.cpuid.len() > MAX_CPUID {
                return Err(StateError::Cpuid {
                    cpu: i,
                    count: v.cpuid.len(),
                });
            }
        }
        if !(16 << 20..=1 << 40).contains(&m.memory_size) || !m.memory_size.is_multiple_of(4096) {
            return Err(StateError::MemorySize(m.memory_size));
        }
        if self.vm.irqchips.len() != 3 {
            return Err(StateError::Irqchips(self.vm.irqchips.len()));
        }
        for (i, chip) in self.vm.irqchips.iter().enumerate() {
            if chip.chip_id as usize != i {
                return Err(StateError::IrqchipId {
                    index: i,
                    chip: chip.chip_id,
                });
            }
        }
        let virtio = m.disks.len() + usize::from(m.uring.is_some());
        if self.devices.virtio.len() != virtio {
            return Err(StateError::VirtioStates {
                states: self.devices.virtio.len(),
                disks: m.disks.len(),
                uring: m.uring.is_some(),
            });
        }
        if let Some(c) = &self.devices.guest_signal.command {
            if c.len() > COMMAND_MAX {
                return Err(StateError::Command(c.len()));
            }
        }
        Ok(())
    }
}
