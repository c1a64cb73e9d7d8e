//! One address-space dispatcher for both port I/O and MMIO.
//!
//! A [`Bus`] maps non-overlapping ranges `[base, base + len)` to devices. A
//! guest access is routed to the device whose range contains it, with the
//! offset relative to the range's base. Accesses that straddle a range's end
//! or hit no device are reported to the caller, which decides what the guest
//! sees (reads of nothing return all ones, as on real hardware).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// A device that answers guest reads and writes inside its own range.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// The device as `Any`, for the VMM to reach its concrete type (saving
    /// and restoring its state in a snapshot). `None` by default.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// Errors of bus set-up and dispatch.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// A device range of length zero.
    #[error("device range at {base:#x} has length zero")]
    EmptyRange {
        /// The range's first address.
        base: u64,
    },
    /// A device range that wraps past the end of the address space.
    #[error("device range at {base:#x} with length {len:#x} wraps around the address space")]
    RangeOverflow {
        /// The range's first address.
        base: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// A new device range overlaps one already inserted.
    #[error("device range {base:#x}+{len:#x} overlaps the range at {other_base:#x}")]
    Overlap {
        /// The new range's first address.
        base: u64,
        /// Its length in bytes.
        len: u64,
        /// The first address of the range it overlaps.
        other_base: u64,
    },
    /// No device covers the whole access.
    #[error("no device at {addr:#x} for an access of {len} bytes")]
    NoDevice {
        /// The access's address.
        addr: u64,
        /// Its length in bytes.
        len: usize,
    },
}

struct Range {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An address space (the port-I/O space or the MMIO space) of one VM.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Range>,
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// The device whose range starts at `base`.
    pub fn device_at(&self, base: u64) -> Option<Arc<Mutex<dyn BusDevice>>> {
        self.ranges.get(&base).map(|r| r.device.clone())
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::EmptyRange { base });
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::RangeOverflow { base, len })?;
        // The only ranges that can overlap are the last one starting below
        // `end` (ranges never overlap each other, so checking it suffices).
        if let Some((&other_base, other)) = self.ranges.range(..end).next_back() {
            if other_base + other.len > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other_base,
                });
            }
        }
        self.ranges.insert(base, Range { len, device });
        Ok(())
    }

    /// Finds the device and offset for an access of `len` bytes at `addr`.
    fn resolve(&self, addr: u64, len: usize) -> Result<(&Range, u64), BusError> {
        let no_device = BusError::NoDevice { addr, len };
        let (&base, range) = self.ranges.range(..=addr).next_back().ok_or(no_device)?;
        let offset = addr - base;
        let access_end = offset.checked_add(len as u64);
        match access_end {
            Some(end) if end <= range.len => Ok((range, offset)),
            _ => Err(BusError::NoDevice { addr, len }),
        }
    }

    /// Dispatches a guest read. Without a device the guest reads all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), BusError> {
        match self.resolve(addr, data.len()) {
            Ok((range, offset)) => {
                lock(&range.device).read(offset, data);
                Ok(())
            }
            Err(e) => {
                data.fill(0xff);
                Err(e)
            }
        }
    }

    /// Dispatches a guest write. Without a device the write is dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), BusError> {
        let (range, offset) = self.resolve(addr, data.len())?;
        lock(&range.device).write(offset, data);
        Ok(())
    }
}

/// Locks a device. A device whose lock was poisoned by a panic on another
/// vCPU thread is still used: device state is plain registers, and the VMM
/// is about to report that panic anyway.
fn lock(device: &Mutex<dyn BusDevice>) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the last access and answers reads with its offset.
    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn bus_with(base: u64, len: u64) -> (Bus, Arc<Mutex<Recorder>>) {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), base, len).unwrap();
        (bus, dev)
    }

    #[test]
    fn dispatches_with_offset_relative_to_base() {
        let (bus, dev) = bus_with(0x3f8, 8);
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data).unwrap();
        assert_eq!(data, [5]);
        bus.write(0x3f9, &[0xab]).unwrap();
        assert_eq!(dev.lock().unwrap().last_write, Some((1, vec![0xab])));
    }

    #[test]
    fn access_outside_any_device_reads_all_ones() {
        let (bus, _) = bus_with(0x1000, 0x10);
        let mut data = [0u8; 4];
        assert_eq!(
            bus.read(0x2000, &mut data),
            Err(BusError::NoDevice {
                addr: 0x2000,
                len: 4
            })
        );
        assert_eq!(data, [0xff; 4]);
        assert!(bus.write(0xfff, &[1]).is_err());
    }

    #[test]
    fn access_straddling_the_end_of_a_range_is_refused() {
        let (bus, dev) = bus_with(0x1000, 0x10);
        assert!(bus.write(0x100e, &[1, 2, 3, 4]).is_err());
        assert!(dev.lock().unwrap().last_write.is_none());
        // The last byte of the range is still reachable.
        bus.write(0x100f, &[9]).unwrap();
    }

    #[test]
    fn access_at_the_top_of_the_address_space_does_not_overflow() {
        let (bus, _) = bus_with(u64::MAX - 0x1f, 0x10);
        let mut data = [0u8; 8];
        assert!(bus.read(u64::MAX - 0x13, &mut data).is_err());
        assert!(bus.read(u64::MAX - 3, &mut data).is_err());
        bus.read(u64::MAX - 0x17, &mut data).unwrap();
    }

    #[test]
    fn overlapping_and_degenerate_ranges_are_refused() {
        let (mut bus, dev) = bus_with(0x1000, 0x100);
        assert_eq!(
            bus.insert(dev.clone(), 0x10ff, 1),
            Err(BusError::Overlap {
                base: 0x10ff,
                len: 1,
                other_base: 0x1000
            })
        );
        assert!(bus.insert(dev.clone(), 0xf00, 0x101).is_err());
        assert_eq!(
            bus.insert(dev.clone(), 0x5000, 0),
            Err(BusError::EmptyRange { base: 0x5000 })
        );
        assert!(bus.insert(dev.clone(), u64::MAX, 2).is_err());
        // Adjacent ranges are fine.
        bus.insert(dev.clone(), 0x1100, 0x10).unwrap();
        bus.insert(dev, 0xff0, 0x10).unwrap();
    }
}
