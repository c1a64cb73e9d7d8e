//! `--uring` / `--uring-backend`: the paravirtual io_uring device
//! (docs/pv-uring.md) on virtio-mmio, wired to KVM.
//!
//! - Its virtio-mmio window is the first slot after the disks, with that
//!   slot's IRQ for the control queue; completions
//!   raise [`COMPLETION_IRQ`] (ISA IRQ 3: no COM2 here, and never a disk's).
//! - The ring area is an extra KVM memory slot at
//!   [`ring_area_base`] (above guest RAM and the 32-bit gap, 1 GiB aligned).
//! - The buffer arena (`--uring arena=SIZE`), if any, is one more slot at
//!   [`arena_base`], the next 1 GiB boundary after the ring area.
//! - The doorbell page sits at [`DOORBELL_GPA`] on the MMIO bus; each ring
//!   also gets a KVM ioeventfd (datamatch: its id) so doorbells never exit
//!   to the VMM, and an irqfd for its completion eventfd.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, Mutex};

use devices::virtio::uring::arena::{Arena, ArenaConfig};
use devices::virtio::uring::{
    BackendConfig, GuestMapping, PvUring, PvUringConfig, RingHooks, DOORBELL_LEN,
};
use devices::Bus;
use kvm_bindings::{kvm_ioeventfd, kvm_irqfd, kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::config::{UringConfig, VmConfig};
use crate::error::VmError;
use crate::layout::{MMIO_GAP_END, URING_DOORBELL_START};
use crate::virtio_mmio::{self, Slot, SlotAllocator};

/// The doorbell page's guest-physical address.
pub const DOORBELL_GPA: u64 = URING_DOORBELL_START;
/// The IRQ raised on ring completions.
pub const COMPLETION_IRQ: u32 = 3;
/// Alignment of the ring area.
const RING_AREA_ALIGN: u64 = 1 << 30;

const KVMIO: u32 = 0xAE;
ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
const KVM_IOEVENTFD_FLAG_DATAMATCH: u32 = 1 << 0;
const KVM_IOEVENTFD_FLAG_DEASSIGN: u32 = 1 << 2;
const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1 << 0;

/// Where the ring area goes: the first 1 GiB boundary at or above both the
/// end of guest RAM and 4 GiB.
pub fn ring_area_base(ram_end: u64) -> u64 {
    ram_end.max(MMIO_GAP_END).next_multiple_of(RING_AREA_ALIGN)
}

/// Where the arena goes: the first 1 GiB boundary after the ring area
/// (which also aligns it to any chunk, at most 1 GiB).
pub fn arena_base(ring_area_base: u64, ring_area_len: u64) -> u64 {
    (ring_area_base + ring_area_len).next_multiple_of(RING_AREA_ALIGN)
}

/// Routes rings' doorbells and completions through KVM, with raw ioctls on
/// a duplicate of the VM fd (the device outlives this call).
struct KvmHooks {
    vm: File,
    irq: u32,
}

impl KvmHooks {
    fn ioeventfd(&self, id: u32, evt: &EventFd, deassign: bool) -> std::io::Result<()> {
        let mut flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
        if deassign {
            flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
        }
        let arg = kvm_ioeventfd {
            datamatch: u64::from(id),
            addr: DOORBELL_GPA,
            len: 4,
            fd: evt.as_raw_fd(),
            flags,
            ..Default::default()
        };
        // SAFETY: KVM_IOEVENTFD on a VM fd with a valid kvm_ioeventfd.
        let rc = unsafe { ioctl_with_ref(&self.vm, KVM_IOEVENTFD(), &arg) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn irqfd(&self, evt: &EventFd, deassign: bool) -> std::io::Result<()> {
        let arg = kvm_irqfd {
            fd: evt.as_raw_fd() as u32,
            gsi: self.irq,
            flags: if deassign { KVM_IRQFD_FLAG_DEASSIGN } else { 0 },
            ..Default::default()
        };
        // SAFETY: KVM_IRQFD on a VM fd with a valid kvm_irqfd.
        let rc = unsafe { ioctl_with_ref(&self.vm, KVM_IRQFD(), &arg) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl RingHooks for KvmHooks {
    fn ring_created(
        &self,
        id: u32,
        doorbell: &EventFd,
        completion: &EventFd,
    ) -> std::io::Result<()> {
        self.irqfd(completion, false)?;
        if let Err(e) = self.ioeventfd(id, doorbell, false) {
            // The MMIO doorbell page still works, with an exit per doorbell.
            log::warn!("pv-uring: no ioeventfd for ring {id} ({e}); doorbells take MMIO exits");
        }
        Ok(())
    }

    fn ring_destroyed(&self, id: u32, doorbell: &EventFd, completion: &EventFd) {
        if let Err(e) = self.ioeventfd(id, doorbell, true) {
            log::debug!("pv-uring: removing ring {id}'s ioeventfd: {e}");
        }
        if let Err(e) = self.irqfd(completion, true) {
            log::warn!("pv-uring: removing ring {id}'s irqfd: {e}");
        }
    }
}

/// Maps the ring area's parts into the guest as KVM memory slots from
/// `first_slot` on: the completion area with `KVM_MEM_READONLY`, so that
/// the words the host kernel reads there (the host SQ tail, the CQ head)
/// are the VMM's alone; a guest write to it exits to the VMM and is
/// dropped.
fn map_ring_area(fd: &VmFd, first_slot: u32, parts: &[GuestMapping]) -> Result<(), VmError> {
    for (i, part) in parts.iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: first_slot + i as u32,
            flags: if part.read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: part.gpa,
            memory_size: part.len,
            userspace_addr: part.host_addr,
        };
        // SAFETY: each part is a live shared mapping of the ring area,
        // which the device (kept on the MMIO bus for the VM's life) owns
        // through an Arc.
        unsafe { fd.set_user_memory_region(region) }.map_err(|source| VmError::RingArea {
            gpa: part.gpa,
            len: part.len,
            read_only: part.read_only,
            source,
        })?;
    }
    Ok(())
}

/// Bytes of the ring area the guest sees for `rings` slots.
fn uring_abi_area_len(rings: u32) -> u64 {
    devices::virtio::uring::AreaLayout { max_rings: rings }.len()
}

/// Hooks on a duplicate of the VM fd (the device outlives the caller's).
fn kvm_hooks(fd: &VmFd) -> Result<Arc<KvmHooks>, VmError> {
    // SAFETY: dup of a valid fd; the result is owned by the File.
    let vm = unsafe { libc::dup(fd.as_raw_fd()) };
    if vm < 0 {
        return Err(VmError::DupVmFd(std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd nothing else owns.
    let vm = unsafe { File::from_raw_fd(vm) };
    Ok(Arc::new(KvmHooks {
        vm,
        irq: COMPLETION_IRQ,
    }))
}

/// The device's configuration from `--uring` options, its ring area at
/// `area_gpa`.
fn device_config(uring: &UringConfig, area_gpa: u64) -> PvUringConfig {
    PvUringConfig {
        max_rings: uring.rings,
        backends: uring
            .backends
            .iter()
            .map(|b| BackendConfig {
                path: b.path.clone(),
                read_only: b.readonly,
                direct: b.direct,
            })
            .collect(),
        completion_irq: COMPLETION_IRQ,
        doorbell_gpa: DOORBELL_GPA,
        ring_area_gpa: area_gpa,
        // Parsed CPU numbers are below CPU_SETSIZE (1024).
        sq_cpu: uring.sq_cpu.map(|cpu| cpu as u32),
        max_polled: uring.polled,
        max_registered: uring.max_registered,
        arena: uring.arena.map(|a| ArenaConfig {
            len: a.size,
            page: a.page,
            required: a.required,
            gpa: arena_base(area_gpa, uring_abi_area_len(uring.rings)),
        }),
    }
}

/// With `--timings`: what setting up the arena cost, for people and (as
/// `RINGVISOR_ARENA` JSON) for the bench.
fn report_arena(arena: &Arena, timings: bool) {
    if !timings {
        return;
    }
    let setup = arena.setup();
    eprintln!(
        "ringvisor: timings: pv-uring arena: {} MiB, {} chunks of {} KiB on {}; \
         host allocation {:.1} ms, host registration {:.2} ms",
        arena.len() >> 20,
        arena.chunks(),
        arena.chunk_size() >> 10,
        if arena.is_hugetlb() {
            "hugetlb pages"
        } else {
            "ordinary shared memory"
        },
        setup.allocate.as_secs_f64() * 1e3,
        setup.register.as_secs_f64() * 1e3,
    );
    eprintln!(
        "RINGVISOR_ARENA {{\"bytes\":{},\"chunks\":{},\"chunk\":{},\"hugetlb\":{},\
         \"allocate_ms\":{:.3},\"register_ms\":{:.3}}}",
        arena.len(),
        arena.chunks(),
        arena.chunk_size(),
        arena.is_hugetlb(),
        setup.allocate.as_secs_f64() * 1e3,
        setup.register.as_secs_f64() * 1e3
    );
}

/// The command-line entry announcing the device, or "" without `--uring`.
pub fn attach(
    fd: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
    slots: &mut SlotAllocator,
    config: &VmConfig,
) -> Result<String, VmError> {
    let Some(uring) = &config.uring else {
        return Ok(String::new());
    };
    let ram_end = mem
        .iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .max()
        .unwrap_or(0);
    let area_gpa = ring_area_base(ram_end);
    let mut device = PvUring::new(&device_config(uring, area_gpa), kvm_hooks(fd)?)?;
    device.set_guest_ram(mem.iter().map(|r| r.len()).sum());
    let area = device.ring_area();
    map_ring_area(fd, mem.num_regions() as u32, &device.guest_mappings())?;
    if let Some(arena) = device.arena() {
        report_arena(&arena, config.timings);
    }
    let doorbell = device.doorbell_page();
    let what = "pv-uring";
    let slot = virtio_mmio::attach(fd, mmio, mem, slots, what, what, Box::new(device))?;
    let Slot { base, irq } = slot;
    mmio.insert(Arc::new(Mutex::new(doorbell)), DOORBELL_GPA, DOORBELL_LEN)
        .map_err(|source| VmError::Bus { what, source })?;
    log::info!(
        "pv-uring: registers at {base:#x} IRQ {irq}, completions IRQ {COMPLETION_IRQ}, \
         ring area {area_gpa:#x} ({} MiB), doorbell {DOORBELL_GPA:#x}",
        area.guest_len() >> 20
    );
    Ok(slot.cmdline_entry())
}

// The boot tests' skip helper: skips only when asked, and counts them.
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
mod skip;

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw KVM_IOEVENTFD / KVM_IRQFD calls assign and deassign. Without
    /// /dev/kvm this fails, unless RINGVISOR_SKIP_KVM_TESTS=1 (counted).
    #[test]
    fn kvm_hooks_route_and_unroute_a_ring() {
        if skip::skip_without_kvm("raw KVM ioctls on a VM") {
            return;
        }
        let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm opened above");
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        // SAFETY: dup of a valid fd, owned by the File.
        let dup = unsafe { File::from_raw_fd(libc::dup(vm.as_raw_fd())) };
        let hooks = KvmHooks {
            vm: dup,
            irq: COMPLETION_IRQ,
        };
        let (db, done) = (
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        );
        hooks.ring_created(5, &db, &done).unwrap();
        // The same eventfd twice on one GSI is refused: it is assigned.
        assert!(hooks.irqfd(&done, false).is_err());
        assert!(hooks.ioeventfd(5, &db, false).is_err());
        hooks.ring_destroyed(5, &db, &done);
        // Deassigned: assigning again works.
        hooks.ring_created(5, &db, &done).unwrap();
        hooks.ring_destroyed(5, &db, &done);
        assert!(hooks.ioeventfd(5, &db, true).is_err());
    }

    #[test]
    fn arena_follows_the_ring_area_aligned() {
        let area = ring_area_base(512 << 20);
        assert_eq!(arena_base(area, 24 << 20), 5 << 30);
        assert_eq!(arena_base(area, 1 << 30), 5 << 30);
        assert_eq!(arena_base(area, (1 << 30) + 1), 6 << 30);
    }

    #[test]
    fn ring_area_is_above_ram_and_the_gap_and_aligned() {
        assert_eq!(ring_area_base(512 << 20), 4 << 30);
        assert_eq!(ring_area_base(3 << 30), 4 << 30);
        assert_eq!(ring_area_base(4 << 30), 4 << 30);
        assert_eq!(ring_area_base((5 << 30) + 1), 6 << 30);
    }

    #[test]
    fn irqs_and_doorbell_avoid_everything_else() {
        assert!(!virtio_mmio::VIRTIO_IRQS.contains(&COMPLETION_IRQ));
        assert!(![0, 1, 2, 4, 8, 12, 13].contains(&COMPLETION_IRQ));
        // The doorbell lies in the MMIO gap, past every virtio window and
        // below the guest-signal device.
        let last = Slot::nth(crate::config::MAX_DISKS - 1).unwrap().base;
        assert!(DOORBELL_GPA >= last + 2 * devices::virtio::mmio::MMIO_WINDOW);
        const { assert!(DOORBELL_GPA + DOORBELL_LEN <= devices::legacy::GuestSignal::MMIO_BASE) };
    }
}
