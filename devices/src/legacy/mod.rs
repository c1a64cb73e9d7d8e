//! Legacy platform devices: the 8250 UART console, the i8042 controller
//! (for guest resets) and the guest-signal device (exit status and boot
//! marker, see `docs/guest-interface.md`).

pub mod guest_signal;
pub mod i8042;
pub mod serial;

pub use guest_signal::GuestSignal;
pub use i8042::I8042;
pub use serial::{ConsoleWriter, PanicDetector, SerialConsole};

use vmm_sys_util::eventfd::EventFd;

/// An interrupt line backed by an eventfd (a KVM irqfd on a real VM).
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
