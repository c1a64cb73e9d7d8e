//! `--disk`: virtio-blk devices on virtio-mmio, wired to KVM, in the
//! virtio-mmio slots from 0 on (see [`crate::virtio_mmio`]).

use devices::virtio::block::{Block, BlockConfig};
use devices::Bus;
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::error::VmError;
use crate::virtio_mmio::{self, SlotAllocator};

/// Opens every `--disk` and puts it on `mmio` in the next slots of `slots`,
/// wired to KVM. Returns the kernel command-line entries that announce the
/// devices.
pub fn attach(
    fd: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
    slots: &mut SlotAllocator,
    config: &VmConfig,
) -> Result<String, VmError> {
    let mut entries = Vec::new();
    for (i, disk) in config.disks.iter().enumerate() {
        let letter = char::from(b'a' + i as u8);
        let block = Block::new(&BlockConfig {
            path: disk.path.clone(),
            read_only: disk.readonly,
            direct: disk.direct,
            num_queues: u16::from(config.cpus),
            serial: format!("ringvisor-vd{letter}"),
        })?;
        let name = format!("virtio-blk vd{letter}");
        let slot = virtio_mmio::attach(fd, mmio, mem, slots, "virtio-blk", &name, Box::new(block))?;
        entries.push(slot.cmdline_entry());
    }
    Ok(entries.join(" "))
}
