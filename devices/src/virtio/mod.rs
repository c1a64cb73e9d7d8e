//! Virtio devices: the virtio-mmio transport ([`mmio`]) and the device
//! models behind it ([`block`], [`uring`]).
//!
//! A device model implements [`VirtioDevice`]; the transport owns the
//! register file, feature negotiation and queue configuration, and hands the
//! configured queues to the device when the driver sets `DRIVER_OK`. Devices
//! signal the guest through a [`VirtioInterrupt`] (interrupt status bits
//! plus an eventfd that the VMM wires to a KVM irqfd), so nothing here knows
//! KVM. Both devices run a [`worker::Worker`] thread over a
//! [`worker::EventLoop`].

pub mod block;
pub mod mmio;
#[cfg(test)]
mod test_file;
pub mod uring;
pub mod worker;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use mmio::MmioTransport;
pub use worker::{chain_descs, Desc};

/// `VIRTIO_F_VERSION_1`: the device is a virtio 1.x (non-legacy) device.
pub use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Device status bits (virtio 1.2, 2.1), from virtio-bindings.
pub mod status {
    /// The guest OS noticed the device.
    pub use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE;
    /// The guest OS knows how to drive the device.
    pub use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER as DRIVER;
    /// The driver is set up and ready to drive the device.
    pub use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK;
    /// The driver gave up on the device.
    pub use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FAILED as FAILED;
    /// Feature negotiation is complete.
    pub use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK;
    /// The device hit an error it cannot recover from without a reset.
    pub use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as DEVICE_NEEDS_RESET;
}

/// The device's configuration changed.
pub use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG as INTERRUPT_CONFIG;
/// Interrupt status bits of the virtio-mmio `InterruptStatus` register:
/// the device used buffers.
pub use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING as INTERRUPT_USED_RING;

/// How a device tells the guest that it used buffers: the interrupt status
/// bit that the driver reads (and acknowledges) through the transport, and
/// an eventfd the VMM routes to the guest's interrupt line (a KVM irqfd).
#[derive(Clone)]
pub struct VirtioInterrupt {
    status: Arc<AtomicU32>,
    irq: Arc<EventFd>,
}

impl VirtioInterrupt {
    /// An interrupt that raises `irq` (an eventfd) with its status in `status`.
    pub fn new(status: Arc<AtomicU32>, irq: Arc<EventFd>) -> Self {
        Self { status, irq }
    }

    /// Signals that the device added entries to a used ring.
    pub fn signal_used_queue(&self) {
        self.status.fetch_or(INTERRUPT_USED_RING, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1) {
            log::warn!("virtio: cannot raise the interrupt: {e}");
        }
    }

    /// The current interrupt status bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver configured a different number of queues than expected.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// The device's queue count.
        expected: usize,
        /// The driver's.
        got: usize,
    },
    /// A host call (io_uring set-up, eventfd, thread) failed.
    #[error("{what}: {source}")]
    Io {
        /// The call.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a device cannot be snapshotted now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotBlocker {
    /// pv-uring rings exist: a snapshot holds no rings (their host io_uring
    /// instances and registrations live outside guest memory).
    #[error("pv-uring has {0} live rings; snapshots are taken before any ring exists")]
    LiveRings(usize),
}

/// A virtio device model behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2: block).
    fn device_type(&self) -> u32;
    /// Every feature bit the device offers (`VIRTIO_F_VERSION_1` included).
    fn features(&self) -> u64;
    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space at `offset`. Bytes
    /// beyond the space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (ignored by default).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio: ignored config write of {} bytes at {offset:#x}",
            data.len()
        );
    }
    /// Shared-memory regions (virtio 1.2, 2.10) as (guest-physical base,
    /// length), by region id. None by default.
    fn shm_regions(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }
    /// Starts the device with the driver's accepted features and configured
    /// queues; `queue_events[i]` is signalled when the driver notifies
    /// queue `i`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        acked_features: u64,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError>;
    /// Stops the device: after this returns no guest memory is accessed and
    /// no in-flight I/O remains.
    fn reset(&mut self);
    /// Why the device cannot be snapshotted now (its state lives beyond its
    /// queues and configuration), or `None` when it can. `None` by default.
    fn snapshot_blocker(&self) -> Option<SnapshotBlocker> {
        None
    }
}

/// Copies `src` (a device's configuration space) at `offset` into `data`,
/// zero-filling what lies beyond it.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - start);
    data[..n].copy_from_slice(&src[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut out = [9u8; 4];
        read_config_bytes(&cfg, 2, &mut out);
        assert_eq!(out, [3, 4, 0, 0]);
        read_config_bytes(&cfg, 100, &mut out);
        assert_eq!(out, [0; 4]);
        read_config_bytes(&cfg, u64::MAX, &mut out);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn interrupt_sets_status_and_fires_eventfd() {
        let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let status = Arc::new(AtomicU32::new(0));
        let int = VirtioInterrupt::new(status.clone(), irq.clone());
        int.signal_used_queue();
        assert_eq!(status.load(Ordering::SeqCst), INTERRUPT_USED_RING);
        assert_eq!(irq.read().unwrap(), 1);
    }
}
