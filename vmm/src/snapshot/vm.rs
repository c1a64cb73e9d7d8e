//! VM-wide KVM state: the in-kernel irqchip (PIC master and slave, IOAPIC),
//! the PIT and kvmclock.

use kvm_bindings::{
    kvm_irqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;

use super::state::VmState;
use super::SnapshotError;

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm {
        what,
        cpu: None,
        source,
    }
}

/// Saves the VM's state; the vCPUs must be paused.
pub fn save(fd: &VmFd) -> Result<VmState, SnapshotError> {
    let mut irqchips = Vec::new();
    for chip_id in [
        KVM_IRQCHIP_PIC_MASTER,
        KVM_IRQCHIP_PIC_SLAVE,
        KVM_IRQCHIP_IOAPIC,
    ] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        fd.get_irqchip(&mut chip).map_err(kvm("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    Ok(VmState {
        irqchips,
        pit: fd.get_pit2().map_err(kvm("KVM_GET_PIT2"))?,
        clock: fd.get_clock().map_err(kvm("KVM_GET_CLOCK"))?,
    })
}

/// Loads a saved state into a VM with its irqchip and PIT created, before
/// any vCPU state. kvmclock goes on from the saved value: the guest's clock
/// does not jump over the time the snapshot spent on disk.
pub fn restore(fd: &VmFd, state: &VmState) -> Result<(), SnapshotError> {
    fd.set_pit2(&state.pit).map_err(kvm("KVM_SET_PIT2"))?;
    let mut clock = state.clock;
    // Only the value: no KVM_CLOCK_REALTIME adjustment, no TSC stamp.
    clock.flags = 0;
    fd.set_clock(&clock).map_err(kvm("KVM_SET_CLOCK"))?;
    for chip in &state.irqchips {
        fd.set_irqchip(chip).map_err(kvm("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}
