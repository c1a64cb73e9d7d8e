//! The virtio-mmio transport, version 2 (virtio 1.x, "modern" only).
//!
//! One [`MmioTransport`] sits on the MMIO bus for each virtio device. It
//! implements the register file of virtio 1.2, section 4.2.2: identification,
//! feature negotiation through selectors, queue configuration, notification,
//! interrupt status and acknowledgement, device status with reset
//! semantics, and the device's configuration space at offset 0x100.
//!
//! Everything the guest writes is checked here: feature bits the device did
//! not offer are dropped, a driver that does not accept `VIRTIO_F_VERSION_1`
//! never gets `FEATURES_OK`, queue registers are frozen once a queue is ready
//! or the device is running, and a queue whose rings do not lie in guest RAM
//! or are misaligned keeps the device from starting (`DEVICE_NEEDS_RESET`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{status, VirtioDevice, VirtioInterrupt, INTERRUPT_CONFIG, VIRTIO_F_VERSION_1};
use crate::BusDevice;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The transport version this implements (modern).
pub const MMIO_VERSION: u32 = 2;
/// The vendor ID reported to the guest ("RV").
pub const VENDOR_ID: u32 = 0x5256;
/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;
/// Offset of the `QueueNotify` register (where the VMM puts an ioeventfd).
pub const QUEUE_NOTIFY: u64 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
/// Offset of the device configuration space.
pub const CONFIG_SPACE: u64 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_CONFIG as u64;

/// Register offsets, from virtio-bindings (virtio 1.2, 4.2.2).
mod reg {
    use virtio_bindings::virtio_mmio;

    pub const MAGIC: u64 = virtio_mmio::VIRTIO_MMIO_MAGIC_VALUE as u64;
    pub const VERSION: u64 = virtio_mmio::VIRTIO_MMIO_VERSION as u64;
    pub const DEVICE_ID: u64 = virtio_mmio::VIRTIO_MMIO_DEVICE_ID as u64;
    pub const VENDOR_ID: u64 = virtio_mmio::VIRTIO_MMIO_VENDOR_ID as u64;
    pub const DEVICE_FEATURES: u64 = virtio_mmio::VIRTIO_MMIO_DEVICE_FEATURES as u64;
    pub const DEVICE_FEATURES_SEL: u64 = virtio_mmio::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
    pub const DRIVER_FEATURES: u64 = virtio_mmio::VIRTIO_MMIO_DRIVER_FEATURES as u64;
    pub const DRIVER_FEATURES_SEL: u64 = virtio_mmio::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
    pub const QUEUE_SEL: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_SEL as u64;
    pub const QUEUE_NUM_MAX: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
    pub const QUEUE_NUM: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_NUM as u64;
    pub const QUEUE_READY: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_READY as u64;
    pub const INTERRUPT_STATUS: u64 = virtio_mmio::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
    pub const INTERRUPT_ACK: u64 = virtio_mmio::VIRTIO_MMIO_INTERRUPT_ACK as u64;
    pub const STATUS: u64 = virtio_mmio::VIRTIO_MMIO_STATUS as u64;
    pub const QUEUE_DESC_LOW: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
    pub const QUEUE_DESC_HIGH: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
    pub const QUEUE_DRIVER_LOW: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
    pub const QUEUE_DRIVER_HIGH: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
    pub const QUEUE_DEVICE_LOW: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
    pub const QUEUE_DEVICE_HIGH: u64 = virtio_mmio::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
    pub const SHM_SEL: u64 = virtio_mmio::VIRTIO_MMIO_SHM_SEL as u64;
    pub const SHM_LEN_LOW: u64 = virtio_mmio::VIRTIO_MMIO_SHM_LEN_LOW as u64;
    pub const SHM_LEN_HIGH: u64 = virtio_mmio::VIRTIO_MMIO_SHM_LEN_HIGH as u64;
    pub const SHM_BASE_LOW: u64 = virtio_mmio::VIRTIO_MMIO_SHM_BASE_LOW as u64;
    pub const SHM_BASE_HIGH: u64 = virtio_mmio::VIRTIO_MMIO_SHM_BASE_HIGH as u64;
    pub const CONFIG_GENERATION: u64 = virtio_mmio::VIRTIO_MMIO_CONFIG_GENERATION as u64;
}

/// The virtio-mmio register file in front of one [`VirtioDevice`].
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    bad_size: Vec<bool>,
    interrupt_status: Arc<AtomicU32>,
    irq: Arc<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    shm_sel: u32,
    status: u32,
    active: bool,
    config_generation: u32,
}

/// One queue's registers, as a snapshot keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegs {
    /// `QueueNum`.
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Driver (available) ring address.
    pub avail: u64,
    /// Device (used) ring address.
    pub used: u64,
}

/// The transport's registers, as a snapshot keeps them. The queues'
/// positions are not kept: a snapshot is taken only with every queue idle
/// (each available entry used), so on restore both positions are the used
/// ring's index, read from guest memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    /// The virtio device ID, checked on restore.
    pub device_type: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `SHMSel`.
    pub shm_sel: u32,
    /// Device status.
    pub status: u32,
    /// Whether the device runs (DRIVER_OK accepted).
    pub active: bool,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// Each queue's registers.
    pub queues: Vec<QueueRegs>,
}

/// Why a transport could not start its device.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A ready queue's size, alignment or rings are invalid.
    #[error("queue {0} is invalid (size, alignment or rings outside guest RAM)")]
    InvalidQueue(usize),
    /// A ready queue's state cannot be turned into a queue.
    #[error("queue {queue}: {source}")]
    Queue {
        /// The queue.
        queue: usize,
        /// Why.
        source: virtio_queue::Error,
    },
    /// A queue's notification eventfd cannot be duplicated.
    #[error("duplicating the notification eventfd of queue {queue}: {source}")]
    Eventfd {
        /// The queue.
        queue: usize,
        /// Why.
        source: std::io::Error,
    },
    /// The device refused to start.
    #[error(transparent)]
    Device(#[from] super::ActivateError),
}

/// Why a transport's state cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum MmioStateError {
    /// The device cannot be snapshotted in its current state.
    #[error("{0}")]
    Device(super::SnapshotBlocker),
    /// A queue still has requests the device has not completed.
    #[error("queue {queue} has requests in flight (available index {avail}, used index {used})")]
    InFlight {
        /// The queue.
        queue: usize,
        /// The driver's available index.
        avail: u16,
        /// The device's used index.
        used: u16,
    },
    /// The rings of a ready queue cannot be read.
    #[error("queue {0}: its rings are not in guest memory")]
    Rings(usize),
    /// The state is for another device.
    #[error("state of device type {saved} for a device of type {actual}")]
    DeviceType {
        /// In the state.
        saved: u32,
        /// This device's.
        actual: u32,
    },
    /// The state has another number of queues.
    #[error("state with {saved} queues for a device with {actual}")]
    QueueCount {
        /// In the state.
        saved: usize,
        /// This device's.
        actual: usize,
    },
    /// A queue's size is not a power of two up to the maximum.
    #[error("queue {queue}: invalid size {size}")]
    QueueSize {
        /// The queue.
        queue: usize,
        /// The size in the state.
        size: u16,
    },
    /// A ready queue's rings are not usable.
    #[error("queue {0}: rings outside guest RAM or misaligned")]
    QueueRings(usize),
    /// The device refused to start again.
    #[error("the device refused to start: {0}")]
    Activate(#[source] StartError),
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// An eventfd could not be created.
    #[error("creating an eventfd: {0}")]
    EventFd(std::io::Error),
    /// The device's queue sizes are not valid virtio queue sizes.
    #[error("invalid queue size {0}: must be a power of two from 1 to 32768")]
    QueueSize(u16),
}

impl MmioTransport {
    /// Puts `device` behind a new transport that reaches guest RAM through
    /// `mem`. One notification eventfd is created per queue, and one
    /// interrupt eventfd: the VMM wires them to KVM (ioeventfd, irqfd).
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap) -> Result<Self, MmioError> {
        let mut queues = Vec::new();
        let mut queue_events = Vec::new();
        for &max in device.queue_max_sizes() {
            queues.push(Queue::new(max).map_err(|_| MmioError::QueueSize(max))?);
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        }
        let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        Ok(Self {
            device,
            mem,
            bad_size: vec![false; queues.len()],
            queues,
            queue_events,
            interrupt_status: Arc::new(AtomicU32::new(0)),
            irq,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            status: 0,
            active: false,
            config_generation: 0,
        })
    }

    /// The eventfd signalled when the driver notifies queue `i` (for a KVM
    /// ioeventfd on [`QUEUE_NOTIFY`] with datamatch `i`).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The interrupt eventfd (for a KVM irqfd).
    pub fn interrupt_eventfd(&self) -> &EventFd {
        &self.irq
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device has been started.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The used and available indexes of a ready queue, from guest memory.
    fn ring_indexes(&self, i: usize, q: &Queue) -> Result<(u16, u16), MmioStateError> {
        let avail: u16 = self
            .mem
            .read_obj(GuestAddress(q.avail_ring().wrapping_add(2)))
            .map_err(|_| MmioStateError::Rings(i))?;
        let used: u16 = self
            .mem
            .read_obj(GuestAddress(q.used_ring().wrapping_add(2)))
            .map_err(|_| MmioStateError::Rings(i))?;
        Ok((u16::from_le(avail), u16::from_le(used)))
    }

    /// The state a snapshot keeps. Refused while the device cannot be
    /// snapshotted or while a running queue has requests in flight; call it
    /// with the vCPUs stopped.
    pub fn state(&self) -> Result<MmioState, MmioStateError> {
        if let Some(why) = self.device.snapshot_blocker() {
            return Err(MmioStateError::Device(why));
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if self.active && q.ready() {
                let (avail, used) = self.ring_indexes(i, q)?;
                if avail != used {
                    return Err(MmioStateError::InFlight {
                        queue: i,
                        avail,
                        used,
                    });
                }
            }
            queues.push(QueueRegs {
                size: q.size(),
                ready: q.ready(),
                desc: q.desc_table(),
                avail: q.avail_ring(),
                used: q.used_ring(),
            });
        }
        Ok(MmioState {
            device_type: self.device.device_type(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            shm_sel: self.shm_sel,
            status: self.status,
            active: self.active,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt_status.load(Ordering::SeqCst),
            queues,
        })
    }

    /// Takes the state of a snapshot (guest memory must already hold the
    /// snapshot's contents) and, when the device was running, starts it
    /// again. Every value is checked as if the guest had written it.
    pub fn restore(&mut self, state: &MmioState) -> Result<(), MmioStateError> {
        if state.device_type != self.device.device_type() {
            return Err(MmioStateError::DeviceType {
                saved: state.device_type,
                actual: self.device.device_type(),
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(MmioStateError::QueueCount {
                saved: state.queues.len(),
                actual: self.queues.len(),
            });
        }
        self.reset();
        let offered = self.device.features();
        for (i, regs) in state.queues.iter().enumerate() {
            let q = &mut self.queues[i];
            q.try_set_size(regs.size)
                .map_err(|_| MmioStateError::QueueSize {
                    queue: i,
                    size: regs.size,
                })?;
            q.set_desc_table_address(Some(regs.desc as u32), Some((regs.desc >> 32) as u32));
            q.set_avail_ring_address(Some(regs.avail as u32), Some((regs.avail >> 32) as u32));
            q.set_used_ring_address(Some(regs.used as u32), Some((regs.used >> 32) as u32));
            q.set_ready(regs.ready);
        }
        for i in 0..self.queues.len() {
            let q = &self.queues[i];
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&self.mem) {
                return Err(MmioStateError::QueueRings(i));
            }
            let (_, used) = self.ring_indexes(i, q)?;
            let q = &mut self.queues[i];
            q.set_next_avail(used);
            q.set_next_used(used);
        }
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.acked_features = state.acked_features & offered;
        self.queue_sel = state.queue_sel;
        self.shm_sel = state.shm_sel;
        self.config_generation = state.config_generation;
        self.interrupt_status
            .store(state.interrupt_status, Ordering::SeqCst);
        self.status = state.status;
        if state.active {
            self.activate().map_err(MmioStateError::Activate)?;
            // Requests the driver queued but never notified, or notified
            // while the snapshot was taken: let the device look.
            for evt in &self.queue_events {
                let _ = evt.write(1);
            }
        }
        Ok(())
    }

    fn interrupt(&self) -> VirtioInterrupt {
        VirtioInterrupt::new(self.interrupt_status.clone(), self.irq.clone())
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only before the device runs and while the
    /// selected queue is not ready.
    fn queue_writable(&mut self) -> Option<&mut Queue> {
        if self.active {
            return None;
        }
        self.selected_queue().filter(|q| !q.ready())
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            reg::STATUS => self.status,
            // Shared-memory regions; a region that does not exist has a
            // length of all ones (what Linux's vm_get_shm_region expects).
            reg::SHM_SEL => self.shm_sel,
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                let (base, len) = self
                    .device
                    .shm_regions()
                    .get(self.shm_sel as usize)
                    .copied()
                    .unwrap_or((u64::MAX, u64::MAX));
                match offset {
                    reg::SHM_LEN_LOW => len as u32,
                    reg::SHM_LEN_HIGH => (len >> 32) as u32,
                    reg::SHM_BASE_LOW => base as u32,
                    _ => (base >> 32) as u32,
                }
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => self.ack_features(v),
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::SHM_SEL => self.shm_sel = v,
            reg::QUEUE_NUM => {
                let sel = self.queue_sel as usize;
                // A size the queue refuses (zero, above the maximum, not a
                // power of two) is remembered and keeps the device from
                // starting.
                let ok = self
                    .queue_writable()
                    .map(|q| u16::try_from(v).is_ok_and(|size| q.try_set_size(size).is_ok()));
                if let Some(ok) = ok {
                    self.bad_size[sel] = !ok;
                }
            }
            reg::QUEUE_READY => {
                if !self.active {
                    if let Some(q) = self.selected_queue() {
                        q.set_ready(v == 1);
                    }
                }
            }
            reg::QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            reg::QUEUE_DESC_HIGH => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            reg::QUEUE_DRIVER_LOW => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            reg::QUEUE_DRIVER_HIGH => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            reg::QUEUE_DEVICE_LOW => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            reg::QUEUE_DEVICE_HIGH => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            QUEUE_NOTIFY => self.notify(v),
            reg::INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!v, Ordering::SeqCst);
            }
            reg::STATUS => self.set_status(v),
            _ => log::debug!("virtio-mmio: write {v:#x} to unknown register {offset:#x}"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.queue_writable() {
            f(q);
        }
    }

    /// The MMIO-exit path of a queue notification (when no ioeventfd
    /// catches the write in the kernel).
    fn notify(&self, index: u32) {
        match self.queue_events.get(index as usize) {
            Some(evt) if self.active => {
                if let Err(e) = evt.write(1) {
                    log::warn!("virtio-mmio: queue {index} notification lost: {e}");
                }
            }
            Some(_) => log::debug!("virtio-mmio: notify of queue {index} before DRIVER_OK"),
            None => log::debug!("virtio-mmio: notify of nonexistent queue {index}"),
        }
    }

    fn ack_features(&mut self, v: u32) {
        let negotiating = self.status & status::DRIVER != 0
            && self.status & (status::FEATURES_OK | status::FAILED) == 0;
        if !negotiating {
            log::debug!("virtio-mmio: feature write outside negotiation ignored");
            return;
        }
        let (shift, mask) = match self.driver_features_sel {
            0 => (0, 0xffff_ffffu64),
            1 => (32, 0xffff_ffff_0000_0000u64),
            _ => return,
        };
        let offered = self.device.features();
        let wanted = (u64::from(v) << shift) & offered;
        self.acked_features = (self.acked_features & !mask) | wanted;
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // The driver only ever adds bits (virtio 1.2, 3.1.1).
        if v & self.status != self.status {
            log::debug!(
                "virtio-mmio: status {v:#x} clears bits of {:#x}; ignored",
                self.status
            );
            return;
        }
        let mut v = v;
        let new = v & !self.status;
        if new & status::FEATURES_OK != 0 && self.acked_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            log::warn!("virtio-mmio: driver refused VIRTIO_F_VERSION_1; FEATURES_OK withheld");
            v &= !status::FEATURES_OK;
        }
        if new & status::DRIVER_OK != 0 && !self.active {
            if v & status::FEATURES_OK == 0 {
                log::warn!("virtio-mmio: DRIVER_OK without FEATURES_OK");
                v &= !status::DRIVER_OK;
            } else if let Err(e) = self.activate() {
                log::warn!("virtio-mmio: device failed to start: {e}");
                v |= status::DEVICE_NEEDS_RESET;
                self.interrupt_status
                    .fetch_or(INTERRUPT_CONFIG, Ordering::SeqCst);
                let _ = self.irq.write(1);
            }
        }
        self.status = v;
    }

    fn activate(&mut self) -> Result<(), StartError> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && (self.bad_size[i] || !q.is_valid(&self.mem)) {
                return Err(StartError::InvalidQueue(i));
            }
            queues.push(
                Queue::try_from(q.state())
                    .map_err(|source| StartError::Queue { queue: i, source })?,
            );
        }
        let mut events = Vec::with_capacity(self.queue_events.len());
        for (queue, evt) in self.queue_events.iter().enumerate() {
            events.push(
                evt.try_clone()
                    .map_err(|source| StartError::Eventfd { queue, source })?,
            );
        }
        self.device.activate(
            self.mem.clone(),
            self.acked_features,
            queues,
            events,
            self.interrupt(),
        )?;
        self.active = true;
        Ok(())
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_size.fill(false);
        // Drain notifications that arrived for the old queues.
        for evt in &self.queue_events {
            let _ = evt.read();
        }
        self.status = 0;
        self.acked_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.shm_sel = 0;
        self.interrupt_status.store(0, Ordering::SeqCst);
    }
}

impl BusDevice for MmioTransport {
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!(
                "virtio-mmio: {}-byte read at {offset:#x} is not a register access",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{ActivateError, SnapshotBlocker};
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Probe {
        activated: Option<(u64, usize)>,
        resets: u32,
        fail: bool,
        /// Each queue's next available index at activation.
        next_avail: Vec<u16>,
        /// What `snapshot_blocker` answers.
        blocker: Option<SnapshotBlocker>,
    }

    struct Dummy(Arc<Mutex<Probe>>, Vec<u16>);

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            2
        }
        fn features(&self) -> u64 {
            (1 << VIRTIO_F_VERSION_1) | (1 << 9) | (1 << 2)
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &self.1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::virtio::read_config_bytes(&[0xaa, 0xbb, 0xcc, 0xdd], offset, data);
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            acked: u64,
            queues: Vec<Queue>,
            _events: Vec<EventFd>,
            _interrupt: VirtioInterrupt,
        ) -> Result<(), ActivateError> {
            let mut p = self.0.lock().unwrap();
            if p.fail {
                return Err(ActivateError::QueueCount {
                    expected: 0,
                    got: queues.len(),
                });
            }
            p.activated = Some((acked, queues.len()));
            p.next_avail = queues.iter().map(|q| q.next_avail()).collect();
            Ok(())
        }
        fn reset(&mut self) {
            self.0.lock().unwrap().resets += 1;
        }
        fn snapshot_blocker(&self) -> Option<SnapshotBlocker> {
            self.0.lock().unwrap().blocker.clone()
        }
    }

    /// Writes queue `i`'s available and used indexes (see `setup_queue`).
    fn set_indexes(mem: &GuestMemoryMmap, i: u64, avail: u16, used: u16) {
        let base = 0x1_0000 * (i + 1);
        mem.write_obj(avail.to_le(), GuestAddress(base + 0x1002))
            .unwrap();
        mem.write_obj(used.to_le(), GuestAddress(base + 0x2002))
            .unwrap();
    }

    #[test]
    fn a_running_transport_saves_and_restores_its_state() {
        let (mut t, _) = transport();
        setup_queue(&mut t, 0);
        setup_queue(&mut t, 1);
        negotiate(&mut t, 1 << 9, 1);
        w(&mut t, reg::STATUS, ALL);
        assert!(t.is_active());
        let mem = t.mem.clone();
        set_indexes(&mem, 0, 7, 7);
        set_indexes(&mem, 1, 0, 0);
        let state = t.state().unwrap();
        assert_eq!(state.status, ALL);
        assert_eq!(state.acked_features, (1 << 9) | (1 << VIRTIO_F_VERSION_1));
        assert_eq!(state.queues[0].desc, 0x1_0000);
        assert!(state.queues[1].ready);

        // A request the device has not used: refused.
        set_indexes(&mem, 1, 2, 1);
        assert!(matches!(
            t.state().unwrap_err(),
            MmioStateError::InFlight {
                queue: 1,
                avail: 2,
                used: 1
            }
        ));
        set_indexes(&mem, 1, 1, 1);

        // A fresh transport over the same memory takes the state, starts
        // the device again at the used ring's position.
        let probe = Arc::new(Mutex::new(Probe::default()));
        let mut other =
            MmioTransport::new(Box::new(Dummy(probe.clone(), vec![16, 16])), mem).unwrap();
        other.restore(&state).unwrap();
        assert!(other.is_active());
        assert_eq!(r(&mut other, reg::STATUS), ALL);
        let p = probe.lock().unwrap();
        assert_eq!(p.activated, Some((state.acked_features, 2)));
        assert_eq!(p.next_avail, vec![7, 1]);
        drop(p);
        // ... and is frozen as a running device is.
        w(&mut other, reg::QUEUE_SEL, 0);
        w(&mut other, reg::QUEUE_NUM, 8);
        assert_eq!(other.state().unwrap().queues[0].size, 16);
    }

    #[test]
    fn bad_states_and_blocked_devices_are_refused() {
        let (mut t, probe) = transport();
        probe.lock().unwrap().blocker = Some(SnapshotBlocker::LiveRings(2));
        let refused = t.state().unwrap_err();
        assert!(matches!(
            refused,
            MmioStateError::Device(SnapshotBlocker::LiveRings(2))
        ));
        assert!(refused.to_string().contains("2 live rings"), "{refused}");
        probe.lock().unwrap().blocker = None;
        let good = t.state().unwrap();
        let wrong_type = MmioState {
            device_type: 9,
            ..good.clone()
        };
        assert!(matches!(
            t.restore(&wrong_type),
            Err(MmioStateError::DeviceType { saved: 9, .. })
        ));
        let mut one_queue = good.clone();
        one_queue.queues.pop();
        assert!(matches!(
            t.restore(&one_queue),
            Err(MmioStateError::QueueCount {
                saved: 1,
                actual: 2
            })
        ));
        let mut bad_size = good.clone();
        bad_size.queues[0].size = 3;
        assert!(matches!(
            t.restore(&bad_size),
            Err(MmioStateError::QueueSize { queue: 0, size: 3 })
        ));
        let mut outside = good;
        outside.queues[0] = QueueRegs {
            size: 16,
            ready: true,
            desc: 0x1_0000_0000,
            avail: 0x1000,
            used: 0x2000,
        };
        assert!(matches!(
            t.restore(&outside),
            Err(MmioStateError::QueueRings(0))
        ));
        t.state().unwrap();
    }

    fn transport() -> (MmioTransport, Arc<Mutex<Probe>>) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let probe = Arc::new(Mutex::new(Probe::default()));
        let t = MmioTransport::new(Box::new(Dummy(probe.clone(), vec![16, 16])), mem).unwrap();
        (t, probe)
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// Sets up queue `i` at a valid place in guest RAM and marks it ready.
    fn setup_queue(t: &mut MmioTransport, i: u32) {
        let base = 0x1_0000 * (u64::from(i) + 1);
        w(t, reg::QUEUE_SEL, i);
        w(t, reg::QUEUE_NUM, 16);
        w(t, reg::QUEUE_DESC_LOW, base as u32);
        w(t, reg::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
        w(t, reg::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
        w(t, reg::QUEUE_READY, 1);
    }

    fn negotiate(t: &mut MmioTransport, low: u32, high: u32) {
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, low);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, high);
        w(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    const ALL: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport();
        assert_eq!(r(&mut t, reg::MAGIC), MMIO_MAGIC);
        assert_eq!(r(&mut t, reg::VERSION), 2);
        assert_eq!(r(&mut t, reg::DEVICE_ID), 2);
        assert_eq!(r(&mut t, reg::VENDOR_ID), VENDOR_ID);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), (1 << 9) | (1 << 2));
        w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0);
        w(&mut t, reg::QUEUE_SEL, 1);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 16);
        w(&mut t, reg::QUEUE_SEL, 2);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
        assert_eq!(r(&mut t, reg::SHM_LEN_LOW), u32::MAX);
        assert_eq!(r(&mut t, reg::SHM_LEN_HIGH), u32::MAX);
        // Config space, byte-wise and beyond its end.
        let mut b = [0u8; 2];
        t.read(CONFIG_SPACE + 1, &mut b);
        assert_eq!(b, [0xbb, 0xcc]);
        t.read(CONFIG_SPACE + 3, &mut b);
        assert_eq!(b, [0xdd, 0]);
        // Misaligned or narrow register reads give zero.
        let mut one = [0xffu8; 1];
        t.read(reg::MAGIC, &mut one);
        assert_eq!(one, [0]);
    }

    #[test]
    fn full_negotiation_activates_with_only_offered_features() {
        let (mut t, probe) = transport();
        setup_queue(&mut t, 0);
        setup_queue(&mut t, 1);
        // The driver asks for an unoffered bit (3) too: it is dropped.
        negotiate(&mut t, (1 << 9) | (1 << 3), 1);
        assert_eq!(
            r(&mut t, reg::STATUS) & status::FEATURES_OK,
            status::FEATURES_OK
        );
        w(&mut t, reg::STATUS, ALL);
        assert_eq!(r(&mut t, reg::STATUS), ALL);
        assert!(t.is_active());
        let (acked, n) = probe.lock().unwrap().activated.unwrap();
        assert_eq!(acked, (1 << 32) | (1 << 9));
        assert_eq!(n, 2);
        // Queue registers are frozen while running.
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_READY, 0);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 1);
        // Notifications reach the queue's eventfd; bad indexes are ignored.
        w(&mut t, QUEUE_NOTIFY, 1);
        w(&mut t, QUEUE_NOTIFY, 9);
        assert_eq!(t.queue_events()[1].read().unwrap(), 1);
        assert!(t.queue_events()[0].read().is_err());
    }

    #[test]
    fn version_1_is_mandatory() {
        let (mut t, probe) = transport();
        setup_queue(&mut t, 0);
        negotiate(&mut t, 1 << 9, 0);
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        w(&mut t, reg::STATUS, ALL & !status::FEATURES_OK);
        assert!(!t.is_active());
        assert!(probe.lock().unwrap().activated.is_none());
    }

    #[test]
    fn status_reset_clears_everything_and_resets_the_device() {
        let (mut t, probe) = transport();
        setup_queue(&mut t, 0);
        negotiate(&mut t, 0, 1);
        w(&mut t, reg::STATUS, ALL);
        t.interrupt().signal_used_queue();
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 1);
        w(&mut t, reg::STATUS, 0);
        assert_eq!(probe.lock().unwrap().resets, 1);
        assert!(!t.is_active());
        assert_eq!(r(&mut t, reg::STATUS), 0);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        w(&mut t, reg::QUEUE_SEL, 0);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
        // A second cycle works.
        setup_queue(&mut t, 0);
        negotiate(&mut t, 0, 1);
        w(&mut t, reg::STATUS, ALL);
        assert!(t.is_active());
    }

    #[test]
    fn interrupt_ack_clears_only_acked_bits() {
        let (mut t, _) = transport();
        t.interrupt_status.store(3, Ordering::SeqCst);
        w(&mut t, reg::INTERRUPT_ACK, 1);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 2);
    }

    #[test]
    fn hostile_queue_setups_keep_the_device_stopped() {
        // Rings outside guest RAM.
        let (mut t, probe) = transport();
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_NUM, 16);
        w(&mut t, reg::QUEUE_DESC_LOW, 0xffff_f000);
        w(&mut t, reg::QUEUE_DESC_HIGH, 0xffff_ffff);
        w(&mut t, reg::QUEUE_READY, 1);
        negotiate(&mut t, 0, 1);
        w(&mut t, reg::STATUS, ALL);
        assert!(!t.is_active());
        assert_ne!(r(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), INTERRUPT_CONFIG);
        assert!(probe.lock().unwrap().activated.is_none());

        // A size above the maximum, or not a power of two.
        for size in [32u32, 3, 0x1_0010] {
            let (mut t, _) = transport();
            setup_queue(&mut t, 0);
            w(&mut t, reg::QUEUE_READY, 0);
            w(&mut t, reg::QUEUE_NUM, size);
            w(&mut t, reg::QUEUE_READY, 1);
            negotiate(&mut t, 0, 1);
            w(&mut t, reg::STATUS, ALL);
            assert!(!t.is_active(), "size {size} accepted");
        }

        // Status bits cannot be cleared one by one; DRIVER_OK needs FEATURES_OK.
        let (mut t, _) = transport();
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE);
        assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert!(!t.is_active());

        // A device that refuses to start.
        let (mut t, probe) = transport();
        probe.lock().unwrap().fail = true;
        setup_queue(&mut t, 0);
        negotiate(&mut t, 0, 1);
        w(&mut t, reg::STATUS, ALL);
        assert!(!t.is_active());
        assert_ne!(r(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    struct ShmDummy;

    impl VirtioDevice for ShmDummy {
        fn device_type(&self) -> u32 {
            0x7276
        }
        fn features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[64]
        }
        fn read_config(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn shm_regions(&self) -> Vec<(u64, u64)> {
            vec![
                (0x1_4000_0000, 0x400_0000),
                (0x8000_0000_0000, 0x2_0000_0000),
            ]
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _acked: u64,
            _queues: Vec<Queue>,
            _events: Vec<EventFd>,
            _interrupt: VirtioInterrupt,
        ) -> Result<(), ActivateError> {
            Ok(())
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn shared_memory_regions_are_selected() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mut t = MmioTransport::new(Box::new(ShmDummy), mem).unwrap();
        let region = |t: &mut MmioTransport, sel: u32| {
            w(t, reg::SHM_SEL, sel);
            assert_eq!(r(t, reg::SHM_SEL), sel);
            let len =
                u64::from(r(t, reg::SHM_LEN_LOW)) | (u64::from(r(t, reg::SHM_LEN_HIGH)) << 32);
            let base =
                u64::from(r(t, reg::SHM_BASE_LOW)) | (u64::from(r(t, reg::SHM_BASE_HIGH)) << 32);
            (base, len)
        };
        assert_eq!(region(&mut t, 0), (0x1_4000_0000, 0x400_0000));
        assert_eq!(region(&mut t, 1), (0x8000_0000_0000, 0x2_0000_0000));
        assert_eq!(region(&mut t, 2).1, u64::MAX);
        assert_eq!(region(&mut t, u32::MAX).1, u64::MAX);
        // A reset selects region 0 again.
        w(&mut t, reg::STATUS, 0);
        assert_eq!(r(&mut t, reg::SHM_SEL), 0);
    }

    #[test]
    fn features_written_outside_negotiation_are_ignored() {
        let (mut t, _) = transport();
        w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        assert_eq!(t.acked_features, 0);
        negotiate(&mut t, 0, 1);
        w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, reg::DRIVER_FEATURES, 1 << 9);
        assert_eq!(t.acked_features, 1 << 32);
    }
}
