//! The guest-signal device: how a guest tells the VMM that /init started and
//! what its workload's exit status was, and, for snapshots, that /init is
//! ready for a workload, which the VMM then hands over in a mailbox. The
//! register layout is specified in `docs/guest-interface.md`.

use serde::{Deserialize, Serialize};

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
    /// Write: /init is ready for a workload and polls `COMMAND_READY`.
    pub const READY: u64 = 0x0c;
    /// Read: 1 once the VMM has put a workload command in the mailbox.
    pub const COMMAND_READY: u64 = 0x10;
    /// Read: the command's length in bytes (0: the default workload).
    pub const COMMAND_LEN: u64 = 0x14;
    /// Write: /init started the workload.
    pub const WORKLOAD_STARTED: u64 = 0x18;
    /// Read: the host's wall clock (`CLOCK_REALTIME`, nanoseconds since the
    /// epoch) as read now, low 32 bits; the read latches the high 32 bits
    /// for [`HOST_TIME_HI`], so that a guest reading LO then HI gets one
    /// consistent value.
    pub const HOST_TIME_LO: u64 = 0x20;
    /// Read: the high 32 bits latched by the last read of [`HOST_TIME_LO`].
    pub const HOST_TIME_HI: u64 = 0x24;
    /// Read: the command's bytes (argv words, each ended by a NUL).
    pub const COMMAND: u64 = 0x100;
    /// "RVGS", little endian.
    pub const MAGIC_VALUE: u32 = 0x5256_4753;
}

/// The largest workload command the mailbox holds.
pub const COMMAND_MAX: usize = (GuestSignal::MMIO_LEN - regs::COMMAND) as usize;

/// What a snapshot keeps of the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSignalState {
    /// The boot marker was reported.
    pub boot_marked: bool,
    /// /init said it was ready for a workload.
    pub ready: bool,
    /// The workload command in the mailbox, if any.
    pub command: Option<Vec<u8>>,
}

/// Why a workload command does not fit the mailbox.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// Longer than the mailbox.
    #[error("the workload command is {0} bytes; the guest-signal mailbox holds {COMMAND_MAX}")]
    TooLong(usize),
}

/// The host's wall clock in nanoseconds since the epoch (0 if the host
/// clock is before it).
fn host_realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The guest-signal device (MMIO, 4 KiB).
pub struct GuestSignal {
    events: Box<dyn VmEventSink>,
    boot_marked: bool,
    ready: bool,
    command: Option<Vec<u8>>,
    /// Where [`regs::HOST_TIME_LO`] reads the host's wall clock.
    clock: fn() -> u64,
    /// The high half latched by the last read of [`regs::HOST_TIME_LO`].
    time_hi: u32,
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
            ready: false,
            command: None,
            clock: host_realtime_ns,
            time_hi: 0,
        }
    }

    /// The state a snapshot keeps.
    pub fn state(&self) -> GuestSignalState {
        GuestSignalState {
            boot_marked: self.boot_marked,
            ready: self.ready,
            command: self.command.clone(),
        }
    }

    /// Takes the state of a snapshot.
    pub fn restore(&mut self, state: &GuestSignalState) -> Result<(), CommandError> {
        if let Some(c) = &state.command {
            if c.len() > COMMAND_MAX {
                return Err(CommandError::TooLong(c.len()));
            }
        }
        self.boot_marked = state.boot_marked;
        self.ready = state.ready;
        self.command = state.command.clone();
        Ok(())
    }

    /// Puts a workload command (argv words, each ended by a NUL; empty for
    /// the guest's default workload) in the mailbox.
    pub fn set_command(&mut self, command: Vec<u8>) -> Result<(), CommandError> {
        if command.len() > COMMAND_MAX {
            return Err(CommandError::TooLong(command.len()));
        }
        self.command = Some(command);
        Ok(())
    }

    /// A register read (4-byte aligned words and the mailbox bytes).
    fn read_value(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= regs::COMMAND {
            let at = (offset - regs::COMMAND) as usize;
            if let Some(cmd) = &self.command {
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = cmd.get(at + i).copied().unwrap_or(0);
                }
            }
            return;
        }
        let value = match offset {
            regs::MAGIC => regs::MAGIC_VALUE,
            regs::COMMAND_READY => u32::from(self.command.is_some()),
            regs::COMMAND_LEN => self.command.as_ref().map_or(0, |c| c.len() as u32),
            regs::HOST_TIME_LO => {
                let now = (self.clock)();
                self.time_hi = (now >> 32) as u32;
                now as u32
            }
            regs::HOST_TIME_HI => self.time_hi,
            _ => 0,
        };
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = value.to_le_bytes().get(i).copied().unwrap_or(0);
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
        self.read_value(offset, data);
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
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
            regs::READY if !self.ready => {
                self.ready = true;
                self.events.report(VmEvent::ReadyForWorkload);
            }
            regs::READY => {}
            regs::WORKLOAD_STARTED => self.events.report(VmEvent::WorkloadStarted),
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
    fn ready_is_reported_once_and_the_mailbox_holds_the_command() {
        let (mut dev, rx) = device();
        let mut word = [0u8; 4];
        dev.read(regs::COMMAND_READY, &mut word);
        assert_eq!(word, [0; 4]);
        dev.write(regs::READY, &1u32.to_le_bytes());
        dev.write(regs::READY, &1u32.to_le_bytes());
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![VmEvent::ReadyForWorkload]
        );
        dev.set_command(b"/bin/sh\0-c\0exit 3\0".to_vec()).unwrap();
        dev.read(regs::COMMAND_READY, &mut word);
        assert_eq!(u32::from_le_bytes(word), 1);
        dev.read(regs::COMMAND_LEN, &mut word);
        assert_eq!(u32::from_le_bytes(word), 18);
        let mut bytes = [0u8; 8];
        dev.read(regs::COMMAND + 8, &mut bytes);
        assert_eq!(&bytes, b"-c\0exit ");
        // The last byte, then zeros past the command.
        dev.read(regs::COMMAND + 16, &mut word);
        assert_eq!(word, [b'3', 0, 0, 0]);
        assert_eq!(
            dev.set_command(vec![1; COMMAND_MAX + 1]),
            Err(CommandError::TooLong(COMMAND_MAX + 1))
        );
        dev.write(regs::WORKLOAD_STARTED, &1u32.to_le_bytes());
        assert_eq!(rx.try_recv(), Ok(VmEvent::WorkloadStarted));
    }

    #[test]
    fn host_time_reads_as_one_latched_value() {
        let (mut dev, _rx) = device();
        dev.clock = || 0x1234_5678_9abc_def0;
        let mut word = [0u8; 4];
        dev.read(regs::HOST_TIME_HI, &mut word);
        assert_eq!(word, [0; 4], "nothing latched before a LO read");
        dev.read(regs::HOST_TIME_LO, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0x9abc_def0);
        // The clock moves on (past a carry into the high half); HI still
        // reads the half that belongs with the LO just read.
        dev.clock = || 0x1234_5679_0000_0001;
        dev.read(regs::HOST_TIME_HI, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0x1234_5678);

        let (mut real, _rx) = device();
        real.read(regs::HOST_TIME_LO, &mut word);
        let lo = u64::from(u32::from_le_bytes(word));
        real.read(regs::HOST_TIME_HI, &mut word);
        let ns = u64::from(u32::from_le_bytes(word)) << 32 | lo;
        let host = host_realtime_ns();
        assert!(
            host >= ns && host - ns < 5_000_000_000,
            "the device's clock {ns} must be the host's {host}"
        );
    }

    #[test]
    fn state_round_trips() {
        let (mut dev, _rx) = device();
        dev.write(regs::BOOT_MARKER, &1u32.to_le_bytes());
        dev.write(regs::READY, &1u32.to_le_bytes());
        let state = dev.state();
        assert!(state.boot_marked && state.ready && state.command.is_none());
        let (mut other, rx) = device();
        other.restore(&state).unwrap();
        // Restored as marked: no second boot marker or ready event.
        other.write(regs::BOOT_MARKER, &1u32.to_le_bytes());
        other.write(regs::READY, &1u32.to_le_bytes());
        assert!(rx.try_recv().is_err());
        let bad = GuestSignalState {
            command: Some(vec![0; COMMAND_MAX + 1]),
            ..state
        };
        assert!(other.restore(&bad).is_err());
    }

    #[test]
    fn malformed_writes_are_ignored() {
        let (mut dev, rx) = device();
        dev.write(regs::EXIT, &[0u8; 8]);
        dev.write(regs::EXIT, &[]);
        dev.write(0x1c, &[1]);
        assert!(rx.try_recv().is_err());
    }
}
