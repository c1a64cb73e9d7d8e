//! The guest console: a 16550A UART (vm-superio) on COM1, whose output goes
//! to the VMM's stdout and is watched for a guest kernel panic.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// The line a Linux guest prints when it panics.
const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";

/// Watches a byte stream for [`PANIC_MARKER`], across write boundaries.
#[derive(Debug, Default)]
pub struct PanicDetector {
    /// How many leading bytes of the marker the stream currently ends with.
    matched: usize,
    seen: Arc<AtomicBool>,
}

impl PanicDetector {
    /// Creates a detector; `seen` is set once the marker has been observed.
    pub fn new(seen: Arc<AtomicBool>) -> Self {
        Self { matched: 0, seen }
    }

    /// Feeds console output to the detector.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // The marker has no proper prefix that is also a suffix of a
            // partial match, so restarting the match is exact.
            if b == PANIC_MARKER[self.matched] {
                self.matched += 1;
            } else {
                self.matched = usize::from(b == PANIC_MARKER[0]);
            }
            if self.matched == PANIC_MARKER.len() {
                self.seen.store(true, Ordering::SeqCst);
                self.matched = 0;
            }
        }
    }

    /// Whether a panic was seen on the console.
    pub fn panicked(&self) -> bool {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Where the UART's output goes: a writer (stdout for a VM) plus the panic
/// detector.
pub struct ConsoleWriter {
    out: Box<dyn Write + Send>,
    detector: PanicDetector,
}

impl ConsoleWriter {
    /// Console output to `out`, watched by `detector`.
    pub fn new(out: Box<dyn Write + Send>, detector: PanicDetector) -> Self {
        Self { out, detector }
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.detector.feed(buf);
        self.out.write_all(buf)?;
        // A console is read as it happens: a guest that hangs right after a
        // line must still have shown it.
        if buf.contains(&b'\n') {
            self.out.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The UART's registers and receive FIFO, as a snapshot keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    /// Divisor latch, low and high byte.
    pub baud_divisor: [u8; 2],
    /// Interrupt enable register.
    pub interrupt_enable: u8,
    /// Interrupt identification register.
    pub interrupt_identification: u8,
    /// Line control register.
    pub line_control: u8,
    /// Line status register.
    pub line_status: u8,
    /// Modem control register.
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Bytes received and not yet read by the guest.
    pub in_buffer: Vec<u8>,
}

/// The COM1 UART as a bus device at ports 0x3f8..0x400.
pub struct SerialConsole {
    uart: Serial<EventFdTrigger, NoEvents, ConsoleWriter>,
}

impl SerialConsole {
    /// I/O port base of COM1.
    pub const PORT_BASE: u64 = 0x3f8;
    /// Number of ports of a 16550A.
    pub const PORT_LEN: u64 = 8;
    /// The ISA IRQ of COM1.
    pub const IRQ: u32 = 4;

    /// A UART raising `interrupt` and writing to `out`.
    pub fn new(interrupt: EventFdTrigger, out: ConsoleWriter) -> Self {
        Self {
            uart: Serial::new(interrupt, out),
        }
    }

    /// Queues host input (from stdin) for the guest to read. Returns how
    /// many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, input: &[u8]) -> io::Result<usize> {
        self.uart
            .enqueue_raw_bytes(input)
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// Flushes console output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.uart.writer_mut().flush()
    }

    /// The UART state a snapshot keeps.
    pub fn state(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            baud_divisor: [s.baud_divisor_low, s.baud_divisor_high],
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Takes the UART state of a snapshot, keeping this console's output
    /// and interrupt line.
    pub fn restore(&mut self, state: &SerialSnapshot) -> io::Result<()> {
        let trigger = EventFdTrigger(self.uart.interrupt_evt().0.try_clone()?);
        let placeholder = ConsoleWriter::new(Box::new(io::sink()), PanicDetector::default());
        let writer = std::mem::replace(self.uart.writer_mut(), placeholder);
        let s = SerialState {
            baud_divisor_low: state.baud_divisor[0],
            baud_divisor_high: state.baud_divisor[1],
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        match Serial::from_state(&s, trigger, NoEvents, writer) {
            Ok(uart) => {
                self.uart = uart;
                Ok(())
            }
            Err(e) => Err(io::Error::other(format!("serial state refused: {e:?}"))),
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has byte-wide registers; wider reads see the register
        // at `offset` in the first byte.
        data.fill(0);
        if let (Some(first), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(reg);
        }
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.uart.write(reg, value) {
            log::warn!("serial: write of {value:#x} at offset {offset} failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn detects_panic_marker_split_across_writes() {
        let mut d = PanicDetector::new(Arc::new(AtomicBool::new(false)));
        d.feed(b"[ 1.0] Kernel pan");
        assert!(!d.panicked());
        d.feed(b"ic - not syncing: sysrq triggered crash\n");
        assert!(d.panicked());
    }

    #[test]
    fn near_misses_are_not_panics() {
        let mut d = PanicDetector::new(Arc::new(AtomicBool::new(false)));
        d.feed(b"KKernel panic - not syncin\nKernel panic - not-syncing\n");
        assert!(!d.panicked());
        // A restart on the marker's first byte right after a mismatch.
        d.feed(b"KeKKernel panic - not syncing");
        assert!(d.panicked());
    }

    /// A writer whose contents the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_writes_to_thr_reach_the_console_and_input_reaches_rbr() {
        let out = Shared::default();
        let seen = Arc::new(AtomicBool::new(false));
        let writer = ConsoleWriter::new(Box::new(out.clone()), PanicDetector::new(seen.clone()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut uart = SerialConsole::new(EventFdTrigger(irq.try_clone().unwrap()), writer);
        for b in b"Kernel panic - not syncing\n" {
            uart.write(0, &[*b]);
        }
        assert_eq!(&out.0.lock().unwrap()[..], b"Kernel panic - not syncing\n");
        assert!(seen.load(Ordering::SeqCst));

        // Enable the received-data interrupt, then feed input.
        uart.write(1, &[0x01]);
        assert_eq!(uart.enqueue_input(b"ok").unwrap(), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut b = [0u8; 1];
        uart.read(0, &mut b);
        assert_eq!(b, [b'o']);

        // The state round-trips: the unread byte and the registers.
        uart.write(7, &[0x5a]); // scratch
        let state = uart.state();
        assert_eq!(state.in_buffer, b"k");
        assert_eq!(state.scratch, 0x5a);
        let writer = ConsoleWriter::new(Box::new(out.clone()), PanicDetector::default());
        let mut other = SerialConsole::new(EventFdTrigger(irq.try_clone().unwrap()), writer);
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        other.read(0, &mut b);
        assert_eq!(b, [b'k']);
        other.write(0, b"x");
        assert!(out.0.lock().unwrap().ends_with(b"x"));
    }
}
