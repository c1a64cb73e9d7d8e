//! The paravirtual io_uring device (pv-uring, device ID 0x7276), host side
//! of docs/pv-uring.md (ABI version 2, defined in the `uring-abi` crate).
//!
//! - [`arena`]: the buffer arena (shared-memory region 1), registered once
//!   on a host ring of its own; ARENA_REGISTER clones runs of it.
//! - [`control`]: parsing the control requests (pure, fuzzed).
//! - [`ring`]: the host io_uring instances (raw system calls), the ring
//!   area, buffer registration and cloning, the budget of registered bytes.
//! - [`submit`]: the submission path: guest SQEs copied, checked against
//!   the allow-list and written as host SQEs by the VMM (fuzzed policy).
//! - `poller`: the polled submitter threads.
//! - `executor`: the command executor ([`Executor`]: rings, buffers, the
//!   host buffer table, budgets).
//! - `doorbell`: the rings' doorbells and the doorbell page on the MMIO
//!   bus.
//! - `queue`: the control queue: chains read, commands run, responses
//!   written ([`process_chain`], [`process_queue`], [`answer_deferred`]).
//! - `worker`: the worker thread (an epoll loop over the control queue's
//!   eventfd, every doorbell ring's eventfd and a stop eventfd).
//! - this module: the device model (features, configuration space,
//!   shared-memory region 0) and what the VMM configures.
//!
//! The device knows nothing of KVM: the VMM routes each ring's doorbell
//! (a KVM ioeventfd) and completion eventfd (a KVM irqfd) through
//! [`RingHooks`], and maps region 0 with [`PvUring::guest_mappings`] (the
//! completion area read-only).
//!
//! Locking: each ring's host ring and submitter sit in one
//! `Mutex<RingCore>`. The worker (doorbells, control commands) and the
//! ring's poller take it; a control command that changes the ring's buffer
//! table holds it across the kernel call, so a submission pass never sees
//! a table the kernel does not have, and "idle" answers are exact.
//!
//! Retiring a ring. The host kernel tears an io_uring down asynchronously
//! and waits for requests it cannot cancel, so DESTROY_RING is answered
//! only once the kernel has freed the ring ([`ring::Teardown`]): until
//! then its requests may still write guest pages that the guest driver
//! would unpin on the answer. The worker does not block meanwhile: the
//! DESTROY chain stays unanswered (virtio lets a device use chains out of
//! order), the slot is quarantined (not reusable, nothing routed to it),
//! and the worker watches the ring's sentinel fd next to the doorbells. A
//! DESTROY still waiting after [`IDLE_TIMEOUT`] is answered `-ETIMEDOUT`
//! and the slot stays quarantined until the kernel lets go. A device reset
//! or the VM ending (dropping the [`Executor`]) retires every ring the same
//! way and waits for them, up to [`IDLE_TIMEOUT`] in all.

pub mod arena;
pub mod control;
mod doorbell;
mod executor;
pub mod poller;
mod queue;
pub mod ring;
pub mod submit;
#[cfg(test)]
mod tests;
mod worker;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::Queue;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use uring_abi::wire::{self, config as cfg};

use self::arena::{Arena, ArenaConfig, ArenaError};
use self::poller::POLL_IDLE;
use self::ring::RingArea;
use super::worker::Worker;
use super::{ActivateError, SnapshotBlocker, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};

pub use self::doorbell::{DoorbellPage, Doorbells};
pub use self::executor::{Answered, Executor, ExecutorPolicy, Reply, RingCore};
pub use self::queue::{answer_deferred, process_chain, process_queue};
pub use crate::virtio::Desc;
pub use uring_abi::wire::{
    arena_chunk_size, AreaLayout, DOORBELL_LEN, MAX_BUFFERS, MAX_ENTRIES, MAX_TABLE, PVU_F_ARENA,
    PVU_F_POLLED, PVU_F_TABLE, QUEUE_SIZE, VIRTIO_ID_PV_URING,
};

/// Default number of ring slots.
pub const DEFAULT_RINGS: u32 = 32;
/// Most ring slots.
pub const MAX_RINGS: u32 = 256;
/// Default number of polled rings a VM may have at once: one polling host
/// thread, enough for a benchmark, not enough to take a small host's CPUs.
pub const DEFAULT_POLLED: u32 = 1;
/// Most backends (fixed-file indices below the teardown sentinel's).
pub const MAX_BACKENDS: usize = wire::MAX_BACKENDS as usize;
/// How long a DESTROY_RING waits for the host kernel to let go of the ring
/// before it is answered `-ETIMEDOUT`; also the most a device reset waits
/// for all rings. Requests on regular files and block devices finish in
/// far less; the bound is for a host whose storage hangs.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the configuration space.
pub const CONFIG_LEN: usize = cfg::LEN;

/// One `--uring-backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The host file.
    pub path: PathBuf,
    /// Opened read-only.
    pub read_only: bool,
    /// Opened with O_DIRECT.
    pub direct: bool,
}

/// How to build the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvUringConfig {
    /// Ring slots (1 ..= 256).
    pub max_rings: u32,
    /// Fixed files 0.. of every ring.
    pub backends: Vec<BackendConfig>,
    /// The IRQ raised on completions (reported in the config space).
    pub completion_irq: u32,
    /// Guest-physical address of the doorbell page.
    pub doorbell_gpa: u64,
    /// Guest-physical address of the ring area (shared-memory region 0).
    pub ring_area_gpa: u64,
    /// The host CPU of the device's submitting threads: every polled
    /// ring's submitter and the worker that serves doorbells; `None` lets
    /// the scheduler place them. Keeping them on the CPU that takes the
    /// backends' interrupts, and polling vCPUs elsewhere, keeps interrupts
    /// and wakeups out of the guest.
    pub sq_cpu: Option<u32>,
    /// Most polled rings at once (0: the feature is not offered).
    pub max_polled: u32,
    /// Most bytes the VM's rings may have registered at once; `None`: the
    /// guest's RAM size.
    pub max_registered: Option<u64>,
    /// The buffer arena (`--uring arena=SIZE`), if any.
    pub arena: Option<ArenaConfig>,
}

/// Errors building the device.
#[derive(Debug, thiserror::Error)]
pub enum PvUringError {
    /// A ring count of 0 or above 256.
    #[error("invalid number of rings {0}: 1 to {MAX_RINGS}")]
    Rings(u32),
    /// More polled rings than rings.
    #[error("invalid number of polled rings {polled}: at most the {rings} rings")]
    Polled {
        /// Asked for.
        polled: u32,
        /// Rings.
        rings: u32,
    },
    /// More than 16 backends.
    #[error("too many backends ({0}): at most {MAX_BACKENDS}")]
    Backends(usize),
    /// A backend cannot be opened.
    #[error("cannot open backend {path}: {source}")]
    Open {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The ring area cannot be created.
    #[error("creating the ring area: {0}")]
    Area(io::Error),
    /// The buffer arena cannot be set up.
    #[error(transparent)]
    Arena(#[from] ArenaError),
}

/// Where the VMM routes a ring's doorbell and completions.
pub trait RingHooks: Send + Sync {
    /// Ring `id` was created: guest doorbell writes of `id` may signal
    /// `doorbell` (a KVM ioeventfd with datamatch `id`), and `completion`
    /// raises the completion IRQ (a KVM irqfd). An error fails the CREATE.
    fn ring_created(&self, id: u32, doorbell: &EventFd, completion: &EventFd) -> io::Result<()>;
    /// Ring `id` is going away: undo [`RingHooks::ring_created`].
    fn ring_destroyed(&self, id: u32, doorbell: &EventFd, completion: &EventFd);
}

/// Hooks that route nothing (tests; the MMIO doorbell still works).
pub struct NoHooks;

impl RingHooks for NoHooks {
    fn ring_created(&self, _: u32, _: &EventFd, _: &EventFd) -> io::Result<()> {
        Ok(())
    }
    fn ring_destroyed(&self, _: u32, _: &EventFd, _: &EventFd) {}
}

/// The pv-uring device.
pub struct PvUring {
    config: [u8; CONFIG_LEN],
    ring_area_gpa: u64,
    area: Arc<RingArea>,
    arena: Option<Arc<Arena>>,
    backends: Arc<Vec<File>>,
    hooks: Arc<dyn RingHooks>,
    doorbells: Arc<Doorbells>,
    queue_sizes: [u16; 1],
    worker: Option<Worker>,
    sq_cpu: Option<u32>,
    max_polled: u32,
    max_registered: Option<u64>,
}

/// One guest mapping of region 0 that the VMM sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestMapping {
    /// Guest-physical address.
    pub gpa: u64,
    /// Host address.
    pub host_addr: u64,
    /// Bytes.
    pub len: u64,
    /// Whether the guest may only read it (`KVM_MEM_READONLY`).
    pub read_only: bool,
}

impl PvUring {
    /// Opens the backends and creates the ring area.
    pub fn new(config: &PvUringConfig, hooks: Arc<dyn RingHooks>) -> Result<Self, PvUringError> {
        if config.max_rings == 0 || config.max_rings > MAX_RINGS {
            return Err(PvUringError::Rings(config.max_rings));
        }
        if config.max_polled > config.max_rings {
            return Err(PvUringError::Polled {
                polled: config.max_polled,
                rings: config.max_rings,
            });
        }
        if config.backends.len() > MAX_BACKENDS {
            return Err(PvUringError::Backends(config.backends.len()));
        }
        let mut files = Vec::new();
        for b in &config.backends {
            let mut options = OpenOptions::new();
            options.read(true).write(!b.read_only);
            if b.direct {
                options.custom_flags(libc::O_DIRECT);
            }
            files.push(options.open(&b.path).map_err(|source| PvUringError::Open {
                path: b.path.clone(),
                source,
            })?);
        }
        let area = RingArea::new(config.max_rings).map_err(PvUringError::Area)?;
        let arena = config.arena.as_ref().map(Arena::new).transpose()?;
        let layout = area.layout();
        let mut c = [0u8; CONFIG_LEN];
        let mut put32 = |at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(cfg::MAX_RINGS, config.max_rings);
        put32(cfg::MAX_ENTRIES, MAX_ENTRIES);
        put32(cfg::MAX_BUFFERS, MAX_BUFFERS);
        put32(cfg::NR_BACKENDS, files.len() as u32);
        put32(cfg::COMPLETION_IRQ, config.completion_irq);
        put32(cfg::SQ_SLOT_SIZE, wire::SQ_SLOT_SIZE);
        put32(cfg::MAX_TABLE, MAX_TABLE);
        put32(cfg::ABI_VERSION, wire::ABI_VERSION);
        put32(cfg::CQ_AREA_OFFSET, layout.cq_area_offset() as u32);
        put32(cfg::CQ_SLOT_SIZE, wire::CQ_SLOT_SIZE);
        put32(cfg::MAX_POLLED, config.max_polled);
        put32(cfg::MAX_CHAIN, wire::MAX_CHAIN);
        c[cfg::DOORBELL_GPA..cfg::DOORBELL_GPA + 8]
            .copy_from_slice(&config.doorbell_gpa.to_le_bytes());
        if let Some(a) = &arena {
            c[cfg::ARENA_CHUNK_SIZE..cfg::ARENA_CHUNK_SIZE + 8]
                .copy_from_slice(&a.chunk_size().to_le_bytes());
            c[cfg::ARENA_CHUNKS..cfg::ARENA_CHUNKS + 4].copy_from_slice(&a.chunks().to_le_bytes());
        }
        // MAX_REGISTERED is known once guest RAM is (activate).
        log::info!(
            "pv-uring: {} rings ({} ring area), {} polled at most, {} backends",
            config.max_rings,
            if area.is_hugetlb() {
                "hugetlb"
            } else {
                "shared-memory"
            },
            config.max_polled,
            files.len()
        );
        Ok(Self {
            config: c,
            ring_area_gpa: config.ring_area_gpa,
            area: Arc::new(area),
            arena: arena.map(Arc::new),
            backends: Arc::new(files),
            hooks,
            doorbells: Arc::new(Doorbells::default()),
            queue_sizes: [QUEUE_SIZE],
            worker: None,
            sq_cpu: config.sq_cpu,
            max_polled: config.max_polled,
            max_registered: config.max_registered,
        })
    }

    /// Sets the budget of registered bytes shown in the configuration
    /// space, when it defaults to the guest's RAM (the VMM knows it).
    pub fn set_guest_ram(&mut self, bytes: u64) {
        let limit = self.max_registered.unwrap_or(bytes);
        self.max_registered = Some(limit);
        self.config[cfg::MAX_REGISTERED..cfg::MAX_REGISTERED + 8]
            .copy_from_slice(&limit.to_le_bytes());
    }

    /// The ring area (the VMM maps it into the guest).
    pub fn ring_area(&self) -> Arc<RingArea> {
        self.area.clone()
    }

    /// The buffer arena, if the device has one.
    pub fn arena(&self) -> Option<Arc<Arena>> {
        self.arena.clone()
    }

    /// How the VMM maps the shared-memory regions: region 0's submission
    /// area read-write, its completion area read-only (the private area is
    /// never mapped), then the arena (region 1) read-write.
    pub fn guest_mappings(&self) -> Vec<GuestMapping> {
        let layout = self.area.layout();
        let base = self.area.host_addr();
        let arena = self.arena.iter().map(|a| GuestMapping {
            gpa: a.gpa(),
            host_addr: a.host_addr(),
            len: a.len(),
            read_only: false,
        });
        [
            GuestMapping {
                gpa: self.ring_area_gpa,
                host_addr: base,
                len: layout.sq_area_len(),
                read_only: false,
            },
            GuestMapping {
                gpa: self.ring_area_gpa + layout.cq_area_offset(),
                host_addr: base + layout.cq_area_offset(),
                len: layout.cq_area_len(),
                read_only: true,
            },
        ]
        .into_iter()
        .chain(arena)
        .collect()
    }

    /// The doorbell page for the MMIO bus.
    pub fn doorbell_page(&self) -> DoorbellPage {
        DoorbellPage(self.doorbells.clone())
    }

    /// An executor over this device's rings (tests drive it directly).
    /// The budget of registered bytes is the guest RAM in `mem` unless
    /// the configuration set one.
    pub fn executor(&self, mem: GuestMemoryMmap, features: u64) -> Executor {
        let ram: u64 = mem.iter().map(|r| r.len()).sum();
        Executor::new(
            mem,
            self.area.clone(),
            self.arena.clone(),
            self.backends.clone(),
            ExecutorPolicy {
                features,
                sq_cpu: self.sq_cpu,
                max_polled: self.max_polled,
                max_registered: self.max_registered.unwrap_or(ram),
                poll_idle: POLL_IDLE,
            },
            self.hooks.clone(),
            self.doorbells.clone(),
        )
    }
}

impl VirtioDevice for PvUring {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_PV_URING
    }

    fn features(&self) -> u64 {
        let polled = if self.max_polled > 0 {
            1 << PVU_F_POLLED
        } else {
            0
        };
        let arena = if self.arena.is_some() {
            1 << PVU_F_ARENA
        } else {
            0
        };
        (1u64 << VIRTIO_F_VERSION_1) | polled | (1 << PVU_F_TABLE) | arena
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn shm_regions(&self) -> Vec<(u64, u64)> {
        let mut regions = vec![(self.ring_area_gpa, self.area.guest_len())];
        regions.extend(self.arena.iter().map(|a| (a.gpa(), a.len())));
        regions
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        acked_features: u64,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        if queues.len() != 1 || queue_events.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: queues.len(),
            });
        }
        self.reset();
        let exec = self.executor(mem.clone(), acked_features);
        let queue = queues.into_iter().next().expect("one queue");
        let queue_event = queue_events.into_iter().next().expect("one event");
        self.worker = Some(worker::spawn(
            exec,
            mem,
            queue,
            queue_event,
            interrupt,
            self.sq_cpu,
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops it and waits for it (and its executor's
        // rings).
        self.worker = None;
    }

    fn snapshot_blocker(&self) -> Option<SnapshotBlocker> {
        // Snapshots hold no rings yet: a live ring has its doorbell set.
        let live = self.doorbells.0.read().unwrap_or_else(|e| e.into_inner());
        let rings = live.iter().filter(|d| d.is_some()).count();
        (rings > 0).then_some(SnapshotBlocker::LiveRings(rings))
    }
}
