//! The guest-signal device: how a guest tells the VMM that /init started and
//! what its workload's exit status was. The register layout is specified in
//! `docs/guest-interface.md`.

use crate::bus::BusDevice;
use crate::{VmEvent, VmEventSink};

/// Register offsets and values of the device.
pub mod regs {
    /// Read: [`MAGIC_VALUE`].
    pub const MAGIC: u64 = 0x00;
    /// Write: the low 8 bits are the workload's exit status.
    pub const EXIT: u64 = 0x04;
    /// Write: /init has started.
    pub const BOOT_MARKER: u64 = 0x08;
    /// "RVGS", little endian.
    pub const MAGIC_VALUE: u32 = 0x5256_4753;
}

/// The guest-signal device (MMIO, 4 KiB).
pub struct GuestSignal {
    events: Box<dyn VmEventSink>,
    boot_marked: bool,
}

impl GuestSignal {
    /// Guest-physical base address of the device.
    pub const MMIO_BASE: u64 = 0xd000_0000;
    /// Size of the device's MMIO range.
    pub const MMIO_LEN: u64 = 0x1000;

    /// A device reporting to `events`.
    pub fn new(events: Box<dyn VmEventSink>) -> Self {
        Self {
            events,
            boot_marked: false,
        }
    }
}

/// Reads a little-endian value of up to 4 bytes; other widths are refused.
fn le_u32(data: &[u8]) -> Option<u32> {
    if data.is_empty() || data.len() > 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    bytes[..data.len()].copy_from_slice(data);
    Some(u32::from_le_bytes(bytes))
}

impl BusDevice for GuestSignal {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            regs::MAGIC => regs::MAGIC_VALUE,
            _ => 0,
        };
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = value.to_le_bytes().get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(value) = le_u32(data) else {
            log::warn!(
                "guest-signal: ignored {}-byte write at {offset:#x}",
                data.len()
            );
            return;
        };
        match offset {
            regs::EXIT => self.events.report(VmEvent::GuestExit(value as u8)),
            regs::BOOT_MARKER if !self.boot_marked => {
                self.boot_marked = true;
                self.events.report(VmEvent::BootMarker);
            }
            regs::BOOT_MARKER => {}
            _ => log::warn!("guest-signal: ignored write of {value:#x} at {offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn device() -> (GuestSignal, mpsc::Receiver<VmEvent>) {
        let (tx, rx) = mpsc::channel();
        (GuestSignal::new(Box::new(tx)), rx)
    }

    #[test]
    fn magic_reads_back() {
        let (mut dev, _) = device();
        let mut data = [0u8; 4];
        dev.read(regs::MAGIC, &mut data);
        assert_eq!(u32::from_le_bytes(data), regs::MAGIC_VALUE);
        dev.read(0x10, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn exit_reports_the_low_byte_of_the_status() {
        let (mut dev, rx) = device();
        dev.write(regs::EXIT, &3u32.to_le_bytes());
        assert_eq!(rx.try_recv(), Ok(VmEvent::GuestExit(3)));
        dev.write(regs::EXIT, &0x1ffu32.to_le_bytes());
        assert_eq!(rx.try_recv(), Ok(VmEvent::GuestExit(0xff)));
    }

    #[test]
    fn boot_marker_is_reported_once() {
        let (mut dev, rx) = device();
        dev.write(regs::BOOT_MARKER, &1u32.to_le_bytes());
        dev.write(regs::BOOT_MARKER, &1u32.to_le_bytes());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![VmEvent::BootMarker]);
    }

    #[test]
    fn malformed_writes_are_ignored() {
        let (mut dev, rx) = device();
        dev.write(regs::EXIT, &[0u8; 8]);
        dev.write(regs::EXIT, &[]);
        dev.write(0x0c, &[1]);
        assert!(rx.try_recv().is_err());
    }
}
