//! Device state in a snapshot: the UART, the guest-signal device and each
//! virtio-mmio transport (disks in order, then pv-uring), found on the VM's
//! buses at the addresses of their virtio-mmio slots. The VM hands them
//! over as [`DeviceHandles`] (this module knows nothing else of it).

use std::sync::{Arc, Mutex};

use devices::legacy::{GuestSignal, SerialConsole};
use devices::virtio::mmio::MmioTransport;
use devices::{Bus, BusDevice};

use super::state::DeviceStates;
use super::SnapshotError;

/// The devices of a VM whose state a snapshot keeps.
#[derive(Clone, Copy)]
pub struct DeviceHandles<'a> {
    /// The MMIO bus, where the virtio transports sit.
    pub mmio: &'a Bus,
    /// How many virtio-mmio devices sit in the slots from 0 on.
    pub virtio_devices: usize,
    /// The console UART.
    pub serial: &'a Mutex<SerialConsole>,
    /// The guest-signal device.
    pub guest_signal: &'a Mutex<GuestSignal>,
}

/// The virtio transports of `vm`, in slot order.
fn transports(vm: DeviceHandles) -> Result<Vec<Arc<Mutex<dyn BusDevice>>>, SnapshotError> {
    (0..vm.virtio_devices)
        .map(|i| {
            let base = crate::virtio_mmio::Slot::nth(i).map(|s| s.base);
            base.and_then(|b| vm.mmio.device_at(b))
                .ok_or(SnapshotError::NoVirtioDevice(i))
        })
        .collect()
}

fn with_transport<T>(
    device: &Arc<Mutex<dyn BusDevice>>,
    slot: usize,
    f: impl FnOnce(&mut MmioTransport) -> T,
) -> Result<T, SnapshotError> {
    let mut guard = device.lock().unwrap_or_else(|e| e.into_inner());
    let transport = guard
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<MmioTransport>())
        .ok_or(SnapshotError::NotVirtio(slot))?;
    Ok(f(transport))
}

/// Saves every device's state; the vCPUs must be paused.
pub fn save(vm: DeviceHandles) -> Result<DeviceStates, SnapshotError> {
    let mut virtio = Vec::new();
    for (i, t) in transports(vm)?.iter().enumerate() {
        let state = with_transport(t, i, |t| t.state())?
            .map_err(|source| SnapshotError::Device { slot: i, source })?;
        virtio.push(state);
    }
    Ok(DeviceStates {
        serial: vm.serial.lock().unwrap_or_else(|e| e.into_inner()).state(),
        guest_signal: vm
            .guest_signal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state(),
        virtio,
    })
}

/// Loads saved device states into the devices of a VM built for the same
/// machine, guest RAM already mapped; running virtio devices start again.
pub fn restore(vm: DeviceHandles, states: &DeviceStates) -> Result<(), SnapshotError> {
    vm.serial
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .restore(&states.serial)
        .map_err(SnapshotError::Serial)?;
    vm.guest_signal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .restore(&states.guest_signal)
        .map_err(SnapshotError::GuestSignal)?;
    let transports = transports(vm)?;
    if transports.len() != states.virtio.len() {
        return Err(SnapshotError::VirtioCount {
            states: states.virtio.len(),
            devices: transports.len(),
        });
    }
    for (i, (t, state)) in transports.iter().zip(&states.virtio).enumerate() {
        with_transport(t, i, |t| t.restore(state))?
            .map_err(|source| SnapshotError::Device { slot: i, source })?;
    }
    Ok(())
}
