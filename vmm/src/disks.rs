//! `--disk`: virtio-blk devices on virtio-mmio, wired to KVM.
//!
//! Disk `i` gets the 4 KiB register window at `VIRTIO_MMIO_START + i * 4 KiB`
//! and ISA IRQ `VIRTIO_IRQS[i]` (the MP table routes ISA IRQs 1:1 to the
//! IOAPIC); both are announced on the kernel command line as
//! `virtio_mmio.device=4K@ADDR:IRQ`. Queue notifications reach the device's
//! worker through a KVM ioeventfd on `QueueNotify` (datamatch: the queue
//! index), or through the MMIO exit path when the ioeventfd cannot be
//! registered; interrupts go out through a KVM irqfd.

use std::sync::{Arc, Mutex};

use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::mmio::{MmioTransport, MMIO_WINDOW, QUEUE_NOTIFY};
use devices::Bus;
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::error::VmError;

/// Base of the virtio-mmio windows (see docs/guest-interface.md).
pub const VIRTIO_MMIO_START: u64 = 0xc000_0000;
/// IRQ lines of disks 0, 1, ...: ISA lines the VMM leaves free (4 is the
/// serial port, 8 the RTC, 12 the i8042 mouse, 13 the FPU).
pub const VIRTIO_IRQS: [u32; 8] = [5, 6, 7, 9, 10, 11, 14, 15];

/// The window base and IRQ of disk `index`.
pub fn slot(index: usize) -> Option<(u64, u32)> {
    let irq = *VIRTIO_IRQS.get(index)?;
    Some((VIRTIO_MMIO_START + index as u64 * MMIO_WINDOW, irq))
}

/// The command-line entry that announces a virtio-mmio device.
pub fn cmdline_entry(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

/// Opens every `--disk`, puts it on `mmio` and wires it to KVM. Returns the
/// kernel command-line entries that announce the devices.
pub fn attach(
    fd: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
    config: &VmConfig,
) -> Result<String, VmError> {
    let mut entries = Vec::new();
    for (i, disk) in config.disks.iter().enumerate() {
        let (base, irq) = slot(i).ok_or(VmError::NoSlot {
            what: "virtio-blk",
            index: i,
        })?;
        let letter = char::from(b'a' + i as u8);
        let block = Block::new(&BlockConfig {
            path: disk.path.clone(),
            read_only: disk.readonly,
            direct: disk.direct,
            num_queues: u16::from(config.cpus),
            serial: format!("ringvisor-vd{letter}"),
        })?;
        let transport = MmioTransport::new(Box::new(block), mem.clone()).map_err(|source| {
            VmError::Transport {
                what: "virtio-blk",
                source,
            }
        })?;
        fd.register_irqfd(transport.interrupt_eventfd(), irq)
            .map_err(|source| VmError::Irqfd {
                what: "virtio-blk",
                irq,
                source,
            })?;
        for (q, evt) in transport.queue_events().iter().enumerate() {
            let addr = IoEventAddress::Mmio(base + QUEUE_NOTIFY);
            if let Err(e) = fd.register_ioevent(evt, &addr, q as u32) {
                log::warn!(
                    "virtio-blk vd{letter}: no ioeventfd for queue {q} ({e}); notifications take MMIO exits"
                );
            }
        }
        mmio.insert(Arc::new(Mutex::new(transport)), base, MMIO_WINDOW)
            .map_err(|source| VmError::Bus {
                what: "virtio-blk",
                source,
            })?;
        entries.push(cmdline_entry(base, irq));
    }
    Ok(entries.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_4k_apart_with_distinct_free_irqs() {
        assert_eq!(slot(0), Some((0xc000_0000, 5)));
        assert_eq!(slot(1), Some((0xc000_1000, 6)));
        assert_eq!(slot(7), Some((0xc000_7000, 15)));
        assert_eq!(slot(crate::config::MAX_DISKS), None);
        for i in 0..crate::config::MAX_DISKS {
            let (_, irq) = slot(i).unwrap();
            assert!(![0, 1, 2, 4, 8, 12, 13].contains(&irq));
            assert!(irq < 16);
        }
        assert_eq!(
            cmdline_entry(0xc000_0000, 5),
            "virtio_mmio.device=4K@0xc0000000:5"
        );
        // The windows stay below the guest-signal device.
        let (last, _) = slot(crate::config::MAX_DISKS - 1).unwrap();
        assert!(last + MMIO_WINDOW <= devices::legacy::GuestSignal::MMIO_BASE);
    }
}
