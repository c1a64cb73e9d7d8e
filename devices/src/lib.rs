//! Device models of ringvisor.
//!
//! Devices here know nothing about KVM: they see reads and writes at an offset
//! inside their own range (see [`bus`]) and signal interrupts and VM-wide
//! events through small traits, so that their logic is testable without a VM.

#![deny(missing_docs)]

pub mod affinity;
pub mod bus;
pub mod legacy;
pub mod privileges;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};

/// Something that happened in a device that ends or changes the life of the
/// whole VM. Devices report these to the VMM through a [`VmEventSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest wrote its workload's exit status to the guest-signal device.
    GuestExit(u8),
    /// The guest's /init started (the boot marker was written).
    BootMarker,
    /// The guest asked for a reset through the i8042 controller.
    Reset,
    /// The guest's /init is ready for a workload and waits for it in the
    /// guest-signal device's mailbox (the point a snapshot is taken).
    ReadyForWorkload,
    /// The guest's /init started the workload.
    WorkloadStarted,
}

/// Where devices send [`VmEvent`]s. Implemented by the VMM's event channel.
pub trait VmEventSink: Send + Sync {
    /// Reports `event` to the VMM. Must not block for long: it is called on
    /// vCPU threads.
    fn report(&self, event: VmEvent);
}

impl VmEventSink for std::sync::mpsc::Sender<VmEvent> {
    fn report(&self, event: VmEvent) {
        // The receiver lives as long as the VMM's main loop; once that has
        // gone the process is exiting and the event no longer matters.
        let _ = self.send(event);
    }
}
