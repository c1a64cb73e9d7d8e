//! Building a VM: KVM, irqchip and PIT, guest RAM slots, devices on their
//! buses, the loaded guest, and the vCPUs ready to run.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use devices::legacy::{
    ConsoleWriter, EventFdTrigger, GuestSignal, PanicDetector, SerialConsole, I8042,
};
use devices::{Bus, VmEvent, VmEventSink};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, cpu, BootError, KernelFormat};
use crate::config::VmConfig;
use crate::error::{kvm_err, VmError};
use crate::guest_profile::GuestProfile;
use crate::layout::{KVM_IDENTITY_MAP_START, KVM_TSS_START};
use crate::memory::{create_guest_ram, map_snapshot_ram, GuestRam};
use crate::pvm;
use crate::snapshot::{self, devices::DeviceHandles, state::Snapshot};
use crate::vcpu::{RunStats, Vcpu};
use crate::virtio_mmio::SlotAllocator;
use crate::VmmEvent;

/// Sends device events into the VMM's event channel.
#[derive(Clone)]
struct DeviceEvents(Sender<VmmEvent>);

impl VmEventSink for DeviceEvents {
    fn report(&self, event: VmEvent) {
        let _ = self.0.send(VmmEvent::Device(event));
    }
}

/// How a VM starts.
pub enum Start<'a> {
    /// Booting the kernel of the configuration.
    Boot,
    /// From a snapshot: its state and its memory file.
    Restore {
        /// The checked state.
        snapshot: &'a Snapshot,
        /// The memory file.
        memory: &'a std::path::Path,
    },
}

/// A VM ready to run.
pub struct Vm {
    /// The KVM VM, kept open (with its irqfds) for the VM's life.
    pub fd: VmFd,
    /// The MMIO bus (snapshots find the virtio transports on it).
    pub mmio: Arc<Bus>,
    /// How many virtio-mmio devices sit in the slots from 0 on.
    pub virtio_devices: usize,
    /// The guest-signal device.
    pub guest_signal: Arc<Mutex<GuestSignal>>,
    /// The vCPUs' TSC frequency (kHz), when KVM says.
    pub tsc_khz: Option<u32>,
    /// Guest RAM.
    pub ram: GuestRam,
    /// vCPUs, not yet running.
    pub vcpus: Vec<Vcpu>,
    /// How many vCPUs the VM has.
    pub vcpus_count: usize,
    /// The console UART (for stdin input and the final flush).
    pub serial: Arc<Mutex<SerialConsole>>,
    /// Set once the guest printed a kernel panic.
    pub panic_seen: Arc<AtomicBool>,
    /// Shared run counters.
    pub stats: Arc<RunStats>,
    /// Tells the vCPUs that the run has ended.
    pub stop: Arc<AtomicBool>,
    /// Tells the vCPUs to save their state and stop (for a snapshot).
    pub pause: Arc<AtomicBool>,
    /// Whether PVM measures are applied.
    pub pvm: bool,
    /// The full kernel command line.
    pub cmdline: String,
    /// Which image format booted.
    pub kernel_format: KernelFormat,
    /// `--guest-profile`'s samples.
    pub profile: Option<Arc<GuestProfile>>,
}

impl Vm {
    /// The devices whose state a snapshot keeps.
    pub fn devices(&self) -> DeviceHandles<'_> {
        DeviceHandles {
            mmio: &self.mmio,
            virtio_devices: self.virtio_devices,
            serial: &self.serial,
            guest_signal: &self.guest_signal,
        }
    }
}

/// Builds the VM described by `config`, booting or restoring. Device events
/// go to `events`.
pub fn build(config: &VmConfig, events: Sender<VmmEvent>, start: Start) -> Result<Vm, VmError> {
    let kvm = Kvm::new().map_err(VmError::KvmUnavailable)?;
    let fd = create_vm(&kvm)?;
    let ram = match start {
        Start::Boot => create_guest_ram(&config.memory)?,
        Start::Restore { memory, snapshot } => {
            map_snapshot_ram(memory, snapshot.machine.memory_size)?
        }
    };
    map_guest_ram(&fd, &ram)?;
    let devices = attach_devices(&fd, &ram, config, &events)?;

    // The guest.
    let pvm = match start {
        Start::Boot => pvm::pvm_enabled(config.pvm, pvm::host_is_pvm()),
        Start::Restore { snapshot, .. } => snapshot.machine.pvm,
    };
    let vcpu_fds = (0..config.cpus)
        .map(|id| fd.create_vcpu(u64::from(id)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let tsc_khz = vcpu_fds[0].get_tsc_khz().ok();
    let msr_index = kvm
        .get_msr_index_list()
        .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
        .as_slice()
        .to_vec();
    let (cmdline, kernel_format) = match start {
        Start::Boot => {
            let base = pvm::base_cmdline(pvm, tsc_khz);
            let parts: [&str; 3] = [&base, &devices.cmdline, &config.cmdline];
            load_guest(&kvm, &ram, config, &vcpu_fds, pvm, &parts)?
        }
        Start::Restore { snapshot, .. } => {
            restore_state(&fd, &vcpu_fds, tsc_khz, snapshot)?;
            let format = if snapshot.machine.kernel_format == "BzImage" {
                KernelFormat::BzImage
            } else {
                KernelFormat::Elf
            };
            (snapshot.machine.cmdline.clone(), format)
        }
    };

    let stats = Arc::new(RunStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let msr_index = Arc::new(msr_index);
    let profile = match &config.guest_profile {
        Some(p) => Some(Arc::new(GuestProfile::start(
            p,
            &config.kernel,
            usize::from(config.cpus),
        )?)),
        None => None,
    };
    let (pio, mmio) = (Arc::new(devices.pio), Arc::new(devices.mmio));
    let mut vcpus = Vec::new();
    for (id, vcpu_fd) in (0..config.cpus).zip(vcpu_fds) {
        vcpus.push(Vcpu {
            fd: vcpu_fd,
            id,
            pio: pio.clone(),
            mmio: mmio.clone(),
            mem: ram.memory.clone(),
            events: events.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            pause: pause.clone(),
            msr_index: msr_index.clone(),
            profile: profile.clone(),
        });
    }
    log::debug!(
        "guest RAM ends at {:#x}",
        ram.memory.last_addr().raw_value()
    );
    let vm = Vm {
        fd,
        mmio,
        virtio_devices: devices.virtio_devices,
        guest_signal: devices.guest_signal,
        tsc_khz,
        ram,
        vcpus_count: vcpus.len(),
        vcpus,
        serial: devices.serial,
        panic_seen: devices.panic_seen,
        stats,
        stop,
        pause,
        pvm,
        cmdline,
        kernel_format,
        profile,
    };
    if let Start::Restore { snapshot, .. } = start {
        snapshot::devices::restore(vm.devices(), &snapshot.devices)?;
    }
    Ok(vm)
}

/// Creates the KVM VM with its TSS and identity map, the in-kernel irqchip
/// and the PIT.
fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    fd.set_tss_address(KVM_TSS_START as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    fd.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    Ok(fd)
}

/// Gives each guest RAM region a KVM memory slot, from slot 0 on.
fn map_guest_ram(fd: &VmFd, ram: &GuestRam) -> Result<(), VmError> {
    for (slot, region) in ram.memory.iter().enumerate() {
        let mem_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `ram`, which the
        // returned Vm keeps for as long as the VM fd exists.
        unsafe { fd.set_user_memory_region(mem_region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// The devices of a VM on their buses, before the vCPUs share the buses.
struct Devices {
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<SerialConsole>>,
    panic_seen: Arc<AtomicBool>,
    guest_signal: Arc<Mutex<GuestSignal>>,
    /// How many virtio-mmio slots the devices took.
    virtio_devices: usize,
    /// The kernel command-line entries announcing the virtio devices.
    cmdline: String,
}

/// Puts the serial console, i8042, guest-signal device, `--disk`s and the
/// pv-uring device (`--uring`) on their buses, wired to KVM.
fn attach_devices(
    fd: &VmFd,
    ram: &GuestRam,
    config: &VmConfig,
    events: &Sender<VmmEvent>,
) -> Result<Devices, VmError> {
    let panic_seen = Arc::new(AtomicBool::new(false));
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::Eventfd {
        what: "serial",
        source,
    })?;
    fd.register_irqfd(&serial_irq, SerialConsole::IRQ)
        .map_err(kvm_err("KVM_IRQFD (serial)"))?;
    let console = ConsoleWriter::new(
        Box::new(std::io::stdout()),
        PanicDetector::new(panic_seen.clone()),
    );
    let serial = Arc::new(Mutex::new(SerialConsole::new(
        EventFdTrigger(serial_irq),
        console,
    )));
    let device_events = DeviceEvents(events.clone());
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let device_err = |what| move |source| VmError::Bus { what, source };
    pio.insert(
        serial.clone(),
        SerialConsole::PORT_BASE,
        SerialConsole::PORT_LEN,
    )
    .map_err(device_err("serial"))?;
    pio.insert(
        Arc::new(Mutex::new(I8042::new(Box::new(device_events.clone())))),
        I8042::PORT_BASE,
        I8042::PORT_LEN,
    )
    .map_err(device_err("i8042"))?;
    let guest_signal = Arc::new(Mutex::new(GuestSignal::new(Box::new(device_events))));
    mmio.insert(
        guest_signal.clone(),
        GuestSignal::MMIO_BASE,
        GuestSignal::MMIO_LEN,
    )
    .map_err(device_err("guest-signal"))?;
    // virtio-blk disks (--disk), then the pv-uring device (--uring), in
    // virtio-mmio slots from 0 on, announced on the command line.
    let mut slots = SlotAllocator::new();
    let disks = crate::disks::attach(fd, &mut mmio, &ram.memory, &mut slots, config)?;
    let uring = crate::uring::attach(fd, &mut mmio, &ram.memory, &mut slots, config)?;
    let cmdline = [disks, uring]
        .into_iter()
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Devices {
        pio,
        mmio,
        serial,
        panic_seen,
        guest_signal,
        virtio_devices: slots.allocated(),
        cmdline,
    })
}

/// Loads the kernel, initramfs and command line (from `cmdline_parts`)
/// into guest RAM, writes the boot tables, and sets up each vCPU's CPUID,
/// registers and LAPIC for the boot. Returns the full command line and the
/// kernel's format.
fn load_guest(
    kvm: &Kvm,
    ram: &GuestRam,
    config: &VmConfig,
    vcpu_fds: &[kvm_ioctls::VcpuFd],
    pvm: bool,
    cmdline_parts: &[&str],
) -> Result<(String, KernelFormat), VmError> {
    let cmdline = boot::build_cmdline(cmdline_parts)?;
    let text = cmdline
        .as_cstring()
        .map_err(BootError::Cmdline)?
        .into_string()
        .unwrap_or_default();
    let (entry, kernel_format) = boot::load_guest(
        &ram.memory,
        &config.kernel,
        config.initramfs.as_deref(),
        &config.files,
        &cmdline,
        config.cpus,
    )?;
    cpu::write_boot_tables(&ram.memory)?;
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    for (id, vcpu_fd) in (0..config.cpus).zip(vcpu_fds) {
        let cpuid = cpu::vcpu_cpuid(&supported, id, config.cpus, pvm);
        vcpu_fd
            .set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
        cpu::setup_registers(vcpu_fd, id, &entry)?;
        cpu::setup_lapic(vcpu_fd, id)?;
    }
    Ok((text, kernel_format))
}

/// Loads a snapshot's KVM state: the VM's first (PIT, clock, irqchip), then
/// each vCPU's, CPUID first; the TSC frequency is set to the snapshot's
/// when KVM lets the VMM.
fn restore_state(
    fd: &VmFd,
    vcpu_fds: &[kvm_ioctls::VcpuFd],
    tsc_khz: Option<u32>,
    snapshot: &Snapshot,
) -> Result<(), VmError> {
    snapshot::vm::restore(fd, &snapshot.vm)?;
    for (vcpu_fd, state) in vcpu_fds.iter().zip(&snapshot.vcpus) {
        if let Some(saved) = snapshot.machine.tsc_khz {
            if tsc_khz != Some(saved) {
                if let Err(e) = vcpu_fd.set_tsc_khz(saved) {
                    log::warn!(
                        "vCPU {}: the snapshot's TSC runs at {saved} kHz, this host's at {tsc_khz:?} \
                         and KVM_SET_TSC_KHZ failed ({e}): guest time may drift",
                        state.id
                    );
                }
            }
        }
        vcpu_fd
            .set_cpuid2(&snapshot::vcpu::cpuid(state)?)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
        snapshot::vcpu::restore(vcpu_fd, state)?;
    }
    Ok(())
}
