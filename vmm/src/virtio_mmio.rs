//! virtio-mmio devices on the MMIO bus: the slots (a 4 KiB register window
//! and an IRQ line) handed out in order, and attaching a device behind a
//! transport in its slot, wired to KVM.
//!
//! Slot `i` is the window at `VIRTIO_MMIO_START + i * 4 KiB` with ISA IRQ
//! `VIRTIO_IRQS[i]` (the MP table routes ISA IRQs 1:1 to the IOAPIC); both
//! are announced on the kernel command line as
//! `virtio_mmio.device=4K@ADDR:IRQ`. The VM hands slots out disks first,
//! then pv-uring: the guest's device names and a snapshot's device states
//! (saved in slot order) depend on that order. Queue notifications reach
//! the device's worker through a KVM ioeventfd on `QueueNotify` (datamatch:
//! the queue index), or through the MMIO exit path when the ioeventfd cannot
//! be registered; interrupts go out through a KVM irqfd.

use std::sync::{Arc, Mutex};

use devices::virtio::mmio::{MmioTransport, MMIO_WINDOW, QUEUE_NOTIFY};
use devices::virtio::VirtioDevice;
use devices::Bus;
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

/// Why a device cannot be attached in a virtio-mmio slot.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No slot (window and IRQ line) is left.
    #[error("setting up device {what}: no IRQ line left for virtio-mmio device {index}")]
    NoSlot {
        /// The device.
        what: &'static str,
        /// Its place among the virtio-mmio devices.
        index: usize,
    },
    /// The virtio-mmio transport cannot be created.
    #[error("setting up device {what}: {source}")]
    Transport {
        /// The device.
        what: &'static str,
        /// Why.
        source: devices::virtio::mmio::MmioError,
    },
    /// The device's interrupt cannot be routed through a KVM irqfd.
    #[error("setting up device {what}: KVM_IRQFD for IRQ {irq}: {source}")]
    Irqfd {
        /// The device.
        what: &'static str,
        /// The IRQ line.
        irq: u32,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// The slot's window on the MMIO bus is taken.
    #[error("setting up device {what}: {source}")]
    Bus {
        /// The device.
        what: &'static str,
        /// Why.
        source: devices::BusError,
    },
}

/// Base of the virtio-mmio windows (see docs/guest-interface.md).
pub const VIRTIO_MMIO_START: u64 = 0xc000_0000;
/// IRQ lines of slots 0, 1, ...: ISA lines the VMM leaves free (3 is
/// pv-uring's completion IRQ, 4 the serial port, 8 the RTC, 12 the i8042
/// mouse, 13 the FPU).
pub const VIRTIO_IRQS: [u32; 8] = [5, 6, 7, 9, 10, 11, 14, 15];

/// Where a virtio-mmio device sits: its register window and IRQ line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Guest-physical base of the 4 KiB register window.
    pub base: u64,
    /// The ISA IRQ line of its interrupt.
    pub irq: u32,
}

impl Slot {
    /// Slot `index`, or `None` past the last IRQ line.
    pub fn nth(index: usize) -> Option<Slot> {
        let irq = *VIRTIO_IRQS.get(index)?;
        Some(Slot {
            base: VIRTIO_MMIO_START + index as u64 * MMIO_WINDOW,
            irq,
        })
    }

    /// The command-line entry that announces a device in this slot.
    pub fn cmdline_entry(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.base, self.irq)
    }
}

/// Hands out slots in order, from slot 0.
#[derive(Debug, Default)]
pub struct SlotAllocator {
    next: usize,
}

impl SlotAllocator {
    /// An allocator with every slot free.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next free slot, for the device `what`.
    pub fn allocate(&mut self, what: &'static str) -> Result<Slot, AttachError> {
        let slot = Slot::nth(self.next).ok_or(AttachError::NoSlot {
            what,
            index: self.next,
        })?;
        self.next += 1;
        Ok(slot)
    }

    /// How many slots were handed out (they are slots 0 to that, less one).
    pub fn allocated(&self) -> usize {
        self.next
    }
}

/// Puts `device` behind a virtio-mmio transport in the next slot of
/// `slots`, on `mmio`, with its interrupt on a KVM irqfd and its queue
/// notifications on KVM ioeventfds. `what` names the device kind in errors,
/// `name` the device in log lines. Returns the slot.
pub fn attach(
    fd: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
    slots: &mut SlotAllocator,
    what: &'static str,
    name: &str,
    device: Box<dyn VirtioDevice>,
) -> Result<Slot, AttachError> {
    let slot = slots.allocate(what)?;
    let Slot { base, irq } = slot;
    let transport = MmioTransport::new(device, mem.clone())
        .map_err(|source| AttachError::Transport { what, source })?;
    fd.register_irqfd(transport.interrupt_eventfd(), irq)
        .map_err(|source| AttachError::Irqfd { what, irq, source })?;
    for (q, evt) in transport.queue_events().iter().enumerate() {
        let addr = IoEventAddress::Mmio(base + QUEUE_NOTIFY);
        if let Err(e) = fd.register_ioevent(evt, &addr, q as u32) {
            log::warn!("{name}: no ioeventfd for queue {q} ({e}); notifications take MMIO exits");
        }
    }
    mmio.insert(Arc::new(Mutex::new(transport)), base, MMIO_WINDOW)
        .map_err(|source| AttachError::Bus { what, source })?;
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_4k_apart_with_distinct_free_irqs() {
        let slot = |i| Slot::nth(i).map(|s| (s.base, s.irq));
        assert_eq!(slot(0), Some((0xc000_0000, 5)));
        assert_eq!(slot(1), Some((0xc000_1000, 6)));
        assert_eq!(slot(7), Some((0xc000_7000, 15)));
        assert_eq!(slot(VIRTIO_IRQS.len()), None);
        for i in 0..VIRTIO_IRQS.len() {
            let irq = Slot::nth(i).unwrap().irq;
            assert!(![0, 1, 2, 3, 4, 8, 12, 13].contains(&irq));
            assert!(irq < 16);
        }
        assert_eq!(
            Slot::nth(0).unwrap().cmdline_entry(),
            "virtio_mmio.device=4K@0xc0000000:5"
        );
        // The windows stay below the guest-signal device.
        let last = Slot::nth(VIRTIO_IRQS.len() - 1).unwrap();
        assert!(last.base + MMIO_WINDOW <= devices::legacy::GuestSignal::MMIO_BASE);
    }

    #[test]
    fn the_allocator_hands_out_slots_in_order_until_none_is_left() {
        let mut slots = SlotAllocator::new();
        for i in 0..VIRTIO_IRQS.len() {
            assert_eq!(slots.allocate("virtio-blk").unwrap(), Slot::nth(i).unwrap());
            assert_eq!(slots.allocated(), i + 1);
        }
        let err = slots.allocate("pv-uring").unwrap_err();
        assert!(
            matches!(
                err,
                AttachError::NoSlot {
                    what: "pv-uring",
                    index: 8
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("pv-uring") && err.to_string().contains('8'));
        // A refused request takes nothing.
        assert_eq!(slots.allocated(), VIRTIO_IRQS.len());
    }

    #[test]
    fn every_disk_the_config_accepts_has_a_slot() {
        // config.rs refuses more disks, and --uring with all of them.
        assert_eq!(crate::config::MAX_DISKS, VIRTIO_IRQS.len());
    }
}
