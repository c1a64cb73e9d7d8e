//! The i8042 keyboard controller, present so that the guest can reset the
//! machine the way `reboot=k` does: command 0xfe on port 0x64.

use vm_superio::I8042Device;

use crate::bus::BusDevice;
use crate::{VmEvent, VmEventSink};

/// Turns the controller's reset line into a [`VmEvent::Reset`].
pub struct ResetLine(Box<dyn VmEventSink>);

impl vm_superio::Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.report(VmEvent::Reset);
        Ok(())
    }
}

/// The controller at ports 0x60..=0x64.
pub struct I8042 {
    inner: I8042Device<ResetLine>,
}

impl I8042 {
    /// First I/O port of the controller (data port).
    pub const PORT_BASE: u64 = 0x60;
    /// Ports 0x60 (data) to 0x64 (command/status).
    pub const PORT_LEN: u64 = 5;

    /// A controller reporting resets to `events`.
    pub fn new(events: Box<dyn VmEventSink>) -> Self {
        Self {
            inner: I8042Device::new(ResetLine(events)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) {
            // The only error is from the reset trigger, which cannot fail.
            let _ = self.inner.write(reg, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn reset_command_reports_a_reset() {
        let (tx, rx) = mpsc::channel();
        let mut dev = I8042::new(Box::new(tx));
        dev.write(4, &[0xfe]);
        assert_eq!(rx.try_recv(), Ok(VmEvent::Reset));
        // Other commands do not reset.
        dev.write(4, &[0x20]);
        assert!(rx.try_recv().is_err());
    }
}
