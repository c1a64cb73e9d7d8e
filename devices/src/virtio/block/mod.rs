//! virtio-blk (device ID 2) over a host file, with a host io_uring backend.
//!
//! - [`request`]: parsing and validating one request (pure, fuzzed).
//! - [`engine`]: queues to io_uring and back, guest buffers in place.
//! - this module: the device model (features, configuration space, the
//!   worker thread with its event loop over the queue eventfds, the ring's
//!   completion eventfd and a stop eventfd).
//!
//! Features: `VERSION_1`, `FLUSH`, `SEG_MAX`, `BLK_SIZE`, `MQ` (one queue per
//! vCPU), `RO` for read-only disks, and `DISCARD` / `WRITE_ZEROES` when the
//! host file takes `fallocate(PUNCH_HOLE)` / `fallocate(ZERO_RANGE)`.
//! Capacity is the file size in 512-byte sectors (a partial last sector is
//! not visible).

pub mod engine;
pub mod request;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use io_uring::IoUring;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use self::engine::{DiskInfo, Engine};
use self::request::{DeviceLimits, ID_BYTES, SECTOR_SHIFT, SECTOR_SIZE};
use super::worker::{EventLoop, Wake, Worker};
use super::{ActivateError, VirtioDevice, VirtioInterrupt};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{ByteValued, Le16, Le32, Le64};

/// virtio device ID of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Size of each request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most data descriptors in one request (header and status take two).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest discard / write-zeroes in sectors (1 GiB).
pub const MAX_ZERO_SECTORS: u32 = 1 << 21;

/// `struct virtio_blk_config` (virtio 1.2, 5.2.4): the device's
/// configuration space, 60 bytes, little endian. Fields the device offers
/// no feature for stay zero.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VirtioBlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: Le64,
    /// Largest segment (`VIRTIO_BLK_F_SIZE_MAX`, not offered).
    pub size_max: Le32,
    /// Most data segments in one request (`VIRTIO_BLK_F_SEG_MAX`).
    pub seg_max: Le32,
    /// Geometry: cylinders (`VIRTIO_BLK_F_GEOMETRY`, not offered).
    pub cylinders: Le16,
    /// Geometry: heads.
    pub heads: u8,
    /// Geometry: sectors per track.
    pub sectors: u8,
    /// Logical block size in bytes (`VIRTIO_BLK_F_BLK_SIZE`).
    pub blk_size: Le32,
    /// Topology (`VIRTIO_BLK_F_TOPOLOGY`, not offered): log2 of logical
    /// blocks per physical block.
    pub physical_block_exp: u8,
    /// Topology: offset of the first aligned logical block.
    pub alignment_offset: u8,
    /// Topology: suggested minimum I/O size in blocks.
    pub min_io_size: Le16,
    /// Topology: optimal I/O size in blocks.
    pub opt_io_size: Le32,
    /// Writeback cache mode (`VIRTIO_BLK_F_CONFIG_WCE`, not offered).
    pub writeback: u8,
    /// Reserved.
    pub unused0: u8,
    /// Number of request queues (`VIRTIO_BLK_F_MQ`).
    pub num_queues: Le16,
    /// Largest discard in sectors (`VIRTIO_BLK_F_DISCARD`).
    pub max_discard_sectors: Le32,
    /// Most segments in one discard.
    pub max_discard_seg: Le32,
    /// Discard alignment in sectors.
    pub discard_sector_alignment: Le32,
    /// Largest write-zeroes in sectors (`VIRTIO_BLK_F_WRITE_ZEROES`).
    pub max_write_zeroes_sectors: Le32,
    /// Most segments in one write-zeroes.
    pub max_write_zeroes_seg: Le32,
    /// Whether write-zeroes may deallocate (unmap) the sectors.
    pub write_zeroes_may_unmap: u8,
    /// Reserved.
    pub unused1: [u8; 3],
}

const _: () = assert!(std::mem::size_of::<VirtioBlkConfig>() == 60);

// SAFETY: a packed repr(C) struct of little-endian integers and bytes: no
// padding, and every bit pattern is a valid value.
unsafe impl ByteValued for VirtioBlkConfig {}

/// How to attach one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// The host file (or block device).
    pub path: PathBuf,
    /// Announce VIRTIO_BLK_F_RO and open the file read-only.
    pub read_only: bool,
    /// Open with O_DIRECT (no host page cache).
    pub direct: bool,
    /// Number of request queues (one per vCPU).
    pub num_queues: u16,
    /// The GET_ID answer (truncated to 20 bytes).
    pub serial: String,
}

/// Errors setting up a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file cannot be opened.
    #[error("cannot open disk {path}: {source}")]
    Open {
        /// The disk file.
        path: PathBuf,
        /// Why it cannot be opened.
        source: std::io::Error,
    },
    /// Its size cannot be found.
    #[error("cannot find the size of disk {path}: {source}")]
    Size {
        /// The disk file.
        path: PathBuf,
        /// Why its size is unknown.
        source: std::io::Error,
    },
    /// A queue count of zero or above 256.
    #[error("invalid number of queues {0}: 1 to 256")]
    Queues(u16),
}

/// A virtio-blk device.
pub struct Block {
    file: File,
    disk: DiskInfo,
    features: u64,
    queue_sizes: Vec<u16>,
    config: VirtioBlkConfig,
    name: String,
    worker: Option<Worker>,
}

/// Whether `fallocate(mode)` works on `file` (probed past its end, where it
/// changes nothing visible).
fn fallocate_works(file: &File, size: u64, mode: i32) -> bool {
    let offset = size.next_multiple_of(4096);
    // SAFETY: fallocate on an owned fd with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            4096,
        )
    };
    rc == 0
}

impl Block {
    /// Opens the disk described by `config`.
    pub fn new(config: &BlockConfig) -> Result<Self, BlockError> {
        if config.num_queues == 0 || config.num_queues > 256 {
            return Err(BlockError::Queues(config.num_queues));
        }
        let mut options = OpenOptions::new();
        options.read(true).write(!config.read_only);
        if config.direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let mut file = options
            .open(&config.path)
            .map_err(|source| BlockError::Open {
                path: config.path.clone(),
                source,
            })?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: config.path.clone(),
                source,
            })?;
        let capacity = size >> SECTOR_SHIFT;
        let is_file = file.metadata().is_ok_and(|m| m.is_file());
        let punch = !config.read_only
            && is_file
            && fallocate_works(&file, size, libc::FALLOC_FL_PUNCH_HOLE);
        let zero_range = !config.read_only
            && is_file
            && fallocate_works(&file, size, libc::FALLOC_FL_ZERO_RANGE);
        if zero_range && punch {
            // Give back what the ZERO_RANGE probe allocated past the end.
            fallocate_works(&file, size, libc::FALLOC_FL_PUNCH_HOLE);
        }
        let discard = punch;
        let write_zeroes = punch || zero_range;

        let mut serial = [0u8; ID_BYTES];
        let id = config.serial.as_bytes();
        let n = id.len().min(ID_BYTES);
        serial[..n].copy_from_slice(&id[..n]);

        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_MQ);
        if config.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        if discard {
            features |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        if write_zeroes {
            features |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let disk = DiskInfo {
            limits: DeviceLimits {
                capacity,
                read_only: config.read_only,
                discard,
                write_zeroes,
                max_segments: SEG_MAX as usize,
            },
            direct: config.direct,
            zero_range,
            max_zero_sectors: MAX_ZERO_SECTORS,
            serial,
        };
        log::info!(
            "virtio-blk {}: {} sectors{}{}{}{}",
            config.path.display(),
            capacity,
            if config.read_only { ", read-only" } else { "" },
            if config.direct { ", O_DIRECT" } else { "" },
            if discard { ", discard" } else { "" },
            if write_zeroes { ", write-zeroes" } else { "" },
        );
        Ok(Self {
            file,
            config: config_space(&disk, config.num_queues),
            disk,
            features,
            queue_sizes: vec![QUEUE_SIZE; usize::from(config.num_queues)],
            name: config.serial.clone(),
            worker: None,
        })
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.limits.capacity
    }

    /// An engine over this disk, driven by the caller (tests).
    #[cfg(test)]
    fn engine(
        &self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: VirtioInterrupt,
    ) -> Engine {
        let ring = IoUring::new(64).expect("io_uring_setup");
        Engine::new(
            mem,
            queues,
            self.file.try_clone().unwrap(),
            ring,
            self.disk.clone(),
            interrupt,
        )
    }
}

/// The configuration space of `disk` with `num_queues` queues.
fn config_space(disk: &DiskInfo, num_queues: u16) -> VirtioBlkConfig {
    let mut c = VirtioBlkConfig {
        capacity: disk.limits.capacity.into(),
        seg_max: SEG_MAX.into(),
        blk_size: (SECTOR_SIZE as u32).into(),
        num_queues: num_queues.into(),
        ..VirtioBlkConfig::default()
    };
    if disk.limits.discard {
        c.max_discard_sectors = disk.max_zero_sectors.into();
        c.max_discard_seg = 1.into();
        c.discard_sector_alignment = 1.into();
    }
    if disk.limits.write_zeroes {
        c.max_write_zeroes_sectors = disk.max_zero_sectors.into();
        c.max_write_zeroes_seg = 1.into();
        c.write_zeroes_may_unmap = u8::from(disk.limits.discard);
    }
    c
}

/// The token of the ring's completion eventfd (queue events use their
/// queue index).
const TOKEN_RING: u64 = u64::MAX - 1;

/// The worker thread: serves queue notifications (ioeventfds) and the host
/// ring's completions until `stop`, then drains the ring.
fn worker_loop(mut engine: Engine, queue_events: Vec<EventFd>, ring_event: EventFd, stop: EventFd) {
    if let Err(e) = serve(&mut engine, &queue_events, &ring_event, &stop) {
        log::error!("virtio-blk: worker stopped: {e}");
    }
    engine.drain();
    log::debug!("virtio-blk: worker done: {:?}", engine.stats);
}

fn serve(
    engine: &mut Engine,
    queue_events: &[EventFd],
    ring_event: &EventFd,
    stop: &EventFd,
) -> std::io::Result<()> {
    let mut events = EventLoop::new(stop)?;
    for (qi, evt) in queue_events.iter().enumerate() {
        events.add(evt.as_raw_fd(), qi as u64, EventSet::IN)?;
    }
    events.add(ring_event.as_raw_fd(), TOKEN_RING, EventSet::IN)?;
    // Requests queued before the worker started.
    for qi in 0..queue_events.len() {
        engine.process_queue(qi);
    }
    let mut ready = Vec::new();
    while events.wait(None, &mut ready)? == Wake::Ready {
        for &token in &ready {
            if token == TOKEN_RING {
                let _ = ring_event.read();
                engine.reap();
            } else if let Some(evt) = queue_events.get(token as usize) {
                let _ = evt.read();
                engine.process_queue(token as usize);
            }
        }
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(self.config.as_slice(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        _acked_features: u64,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        if queues.len() != self.queue_sizes.len() || queue_events.len() != queues.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                got: queues.len(),
            });
        }
        let host = |what, source| ActivateError::Io { what, source };
        // Enough entries for every descriptor of every queue.
        let entries = (u32::from(QUEUE_SIZE) * queues.len() as u32)
            .next_power_of_two()
            .min(4096);
        let ring = IoUring::new(entries).map_err(|e| host("io_uring_setup", e))?;
        let ring_event = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host("eventfd", e))?;
        ring.submitter()
            .register_eventfd(ring_event.as_raw_fd())
            .map_err(|e| host("IORING_REGISTER_EVENTFD", e))?;
        let file = self.file.try_clone().map_err(|e| host("dup", e))?;
        let disk = self.disk.clone();
        self.worker = Some(Worker::spawn(
            format!("virtio-blk-{}", self.name),
            move |stop| {
                let engine = Engine::new(mem, queues, file, ring, disk, interrupt);
                worker_loop(engine, queue_events, ring_event, stop);
            },
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops it and waits for it.
        self.worker = None;
    }
}
