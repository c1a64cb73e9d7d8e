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
//! - this module: the command executor ([`Executor`]: rings, buffers, the
//!   host buffer table, budgets), the device model (features,
//!   configuration space, shared-memory region 0), its worker thread (an
//!   epoll loop over the control queue's eventfd, every doorbell ring's
//!   eventfd and a stop eventfd) and the doorbell page on the MMIO bus.
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
pub mod poller;
pub mod ring;
pub mod submit;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use uring_abi::wire::{self, config as cfg, RingLayout, PVU_RING_POLLED};

use self::arena::{Arena, ArenaConfig, ArenaError};
use self::control::{ArenaRun, CloneSource, Command, Limits, Response, RESP_LEN};
use self::poller::{Poller, POLL_IDLE};
use self::ring::{check_clone, errno_of, Budget, Buf, HostRing, RingArea, Teardown};
use self::submit::{Pass, SlotWatch, Submitter};
use super::{ActivateError, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::BusDevice;

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
/// Most request bytes read from a chain (header and the most extents).
const MAX_REQUEST: usize = control::REQ_LEN + control::EXTENT_LEN * MAX_BUFFERS as usize;
/// Most descriptors of a control chain.
const MAX_CHAIN: usize = wire::MAX_CHAIN as usize;

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

/// The live rings' doorbell eventfds, by ring id (shared with the MMIO
/// doorbell page).
#[derive(Default)]
pub struct Doorbells(RwLock<Vec<Option<Arc<EventFd>>>>);

impl Doorbells {
    fn set(&self, id: u32, evt: Option<Arc<EventFd>>) {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        let i = id as usize;
        if v.len() <= i {
            v.resize(i + 1, None);
        }
        v[i] = evt;
    }

    /// Rings ring `id`'s doorbell; an unknown id is ignored.
    pub fn ring(&self, id: u32) {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(evt)) = v.get(id as usize) {
            let _ = evt.write(1);
        } else {
            log::debug!("pv-uring: doorbell for unknown ring {id} ignored");
        }
    }
}

/// The doorbell page on the MMIO bus: a le32 ring id written at offset 0
/// rings that ring's doorbell (when no KVM ioeventfd caught it).
pub struct DoorbellPage(Arc<Doorbells>);

impl BusDevice for DoorbellPage {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, <[u8; 4]>::try_from(data)) {
            (0, Ok(b)) => self.0.ring(u32::from_le_bytes(b)),
            _ => log::debug!(
                "pv-uring: {}-byte doorbell write at {offset:#x} ignored",
                data.len()
            ),
        }
    }
}

/// How a guest ring is reached: its doorbell and completion eventfds, and
/// where they are routed. Dropping it stops routing them.
struct Routing {
    id: u32,
    doorbell: Arc<EventFd>,
    completion: EventFd,
    hooks: Arc<dyn RingHooks>,
    doorbells: Arc<Doorbells>,
}

impl Drop for Routing {
    fn drop(&mut self) {
        self.doorbells.set(self.id, None);
        self.hooks
            .ring_destroyed(self.id, &self.doorbell, &self.completion);
    }
}

/// A ring's host side that the worker and its poller share.
pub struct RingCore {
    ring: HostRing,
    sub: Submitter,
}

impl RingCore {
    /// One submission pass: the guest's SQEs become host SQEs, and the
    /// kernel gets them. A failed `io_uring_enter` (`EAGAIN`, `EBUSY`:
    /// the kernel is short of memory) leaves them in the host SQ for the
    /// next pass.
    fn pass(&mut self) -> Pass {
        let mut pass = self.sub.fill(self.ring.bufs());
        if pass.to_submit > 0 {
            match self.ring.enter(pass.to_submit) {
                Ok(n) => pass.entered = n,
                Err(e) => log::debug!("pv-uring: io_uring_enter({}): {e}", pass.to_submit),
            }
        }
        pass
    }
}

fn lock(core: &Mutex<RingCore>) -> MutexGuard<'_, RingCore> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// A guest ring: its routing, its host side and its poller.
struct GuestRing {
    // Dropped first: no submitter runs and the doorbell stops before the
    // ring closes.
    poller: Option<Poller>,
    routing: Routing,
    core: Arc<Mutex<RingCore>>,
}

impl GuestRing {
    /// Stops the ring's poller, its doorbell and completions, then closes
    /// the host ring. Returns what tells when the kernel is done with it,
    /// and its buffer table (whose charges last until then).
    fn retire(self) -> (Option<Teardown>, Vec<Option<Buf>>) {
        let GuestRing {
            poller,
            routing,
            mut core,
        } = self;
        if let Some(p) = &poller {
            p.request_stop();
            // Waits out a pass in progress; the poller starts no other.
            drop(lock(&core));
        }
        drop(poller);
        drop(routing);
        // The poller may hold the core for a moment more (it upgraded its
        // weak reference and is about to see the stop flag).
        let mut ring = loop {
            match Arc::try_unwrap(core) {
                Ok(m) => break m.into_inner().unwrap_or_else(|e| e.into_inner()).ring,
                Err(shared) => {
                    core = shared;
                    std::thread::yield_now();
                }
            }
        };
        let bufs = ring.take_bufs();
        (ring.retire(), bufs)
    }

    fn is_polled(&self) -> bool {
        self.poller.is_some()
    }
}

/// Where the answer to a deferred command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Head index of the chain.
    pub head: u16,
    /// Its device-writable descriptors.
    pub descs: Vec<Desc>,
}

/// A DESTROY_RING waiting for the kernel to let go of the ring.
struct Waiter {
    reply: Reply,
    deadline: Instant,
}

/// A ring slot.
enum Slot {
    /// No ring; CREATE_RING may use it.
    Free,
    /// A guest ring.
    Live(GuestRing),
    /// A destroyed ring that the host kernel is still tearing down: its
    /// requests may still write guest memory. Quarantined: nothing is routed
    /// to it and CREATE_RING does not reuse it until the kernel let go.
    Retiring {
        teardown: Teardown,
        waiters: Vec<Waiter>,
        /// The ring's buffer table: its registrations stay charged until
        /// the kernel has let go of their pages.
        _bufs: Vec<Option<Buf>>,
    },
}

/// A DESTROY_RING answered by [`Executor::reap`]: the chain's head and the
/// used length.
pub type Answered = (u16, u32);

/// What an executor allows, and where its threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorPolicy {
    /// The features the driver accepted.
    pub features: u64,
    /// See [`PvUringConfig::sq_cpu`].
    pub sq_cpu: Option<u32>,
    /// Most polled rings at once.
    pub max_polled: u32,
    /// Most registered bytes at once.
    pub max_registered: u64,
    /// How long a polled submitter spins without work before it sleeps.
    pub poll_idle: Duration,
}

/// Executes control commands: owns every ring and table entry of one
/// activation of the device. Dropping it releases everything.
pub struct Executor {
    mem: GuestMemoryMmap,
    area: Arc<RingArea>,
    arena: Option<Arc<Arena>>,
    backends: Vec<RawFd>,
    _backend_files: Arc<Vec<File>>,
    limits: Limits,
    policy: ExecutorPolicy,
    budget: Arc<Budget>,
    rings: Vec<Slot>,
    table: Vec<Option<HostRing>>,
    hooks: Arc<dyn RingHooks>,
    doorbells: Arc<Doorbells>,
    created: Vec<u32>,
    retired: Vec<u32>,
    idle_timeout: Duration,
}

impl Executor {
    /// An executor with no rings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mem: GuestMemoryMmap,
        area: Arc<RingArea>,
        arena: Option<Arc<Arena>>,
        backends: Arc<Vec<File>>,
        policy: ExecutorPolicy,
        hooks: Arc<dyn RingHooks>,
        doorbells: Arc<Doorbells>,
    ) -> Self {
        let slots = area.layout().max_rings;
        Self {
            mem,
            backends: backends.iter().map(|f| f.as_raw_fd()).collect(),
            _backend_files: backends,
            area,
            arena,
            limits: Limits {
                max_entries: MAX_ENTRIES,
                max_buffers: MAX_BUFFERS,
            },
            budget: Budget::new(policy.max_registered),
            policy,
            rings: (0..slots).map(|_| Slot::Free).collect(),
            table: (0..MAX_TABLE).map(|_| None).collect(),
            hooks,
            doorbells,
            created: Vec::new(),
            retired: Vec::new(),
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// Bytes the VM's rings have registered (and not yet released).
    pub fn registered_bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Number of live polled rings.
    pub fn polled_count(&self) -> usize {
        self.rings
            .iter()
            .filter(|s| matches!(s, Slot::Live(r) if r.is_polled()))
            .count()
    }

    /// Sets how long a DESTROY_RING (and dropping the executor) waits for
    /// the host kernel ([`IDLE_TIMEOUT`] by default; tests shorten it).
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout;
    }

    /// The request limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of live rings.
    pub fn ring_count(&self) -> usize {
        self.rings
            .iter()
            .filter(|s| matches!(s, Slot::Live(_)))
            .count()
    }

    /// Number of destroyed rings the host kernel has not let go of yet
    /// (quarantined slots).
    pub fn retiring_count(&self) -> usize {
        self.rings
            .iter()
            .filter(|s| matches!(s, Slot::Retiring { .. }))
            .count()
    }

    fn live(&self, id: u32) -> Option<&GuestRing> {
        match self.rings.get(id as usize)? {
            Slot::Live(r) => Some(r),
            _ => None,
        }
    }

    /// Number of table entries.
    pub fn table_count(&self) -> usize {
        self.table.iter().flatten().count()
    }

    /// The doorbell: a submission pass over ring `id`'s submission slot.
    /// Unknown ids are ignored; a polled ring's doorbell wakes its poller
    /// instead (the worker never waits on it).
    pub fn doorbell(&self, id: u32) -> Option<Pass> {
        let Some(r) = self.live(id) else {
            log::debug!("pv-uring: doorbell for unknown ring {id}");
            return None;
        };
        if r.is_polled() {
            return None;
        }
        let _ = r.routing.doorbell.read();
        Some(lock(&r.core).pass())
    }

    /// The doorbell eventfd of ring `id`, if the worker serves it (polled
    /// rings' doorbells wake their poller).
    pub fn doorbell_fd(&self, id: u32) -> Option<RawFd> {
        self.live(id)
            .filter(|r| !r.is_polled())
            .map(|r| r.routing.doorbell.as_raw_fd())
    }

    /// The host io_uring fd of ring `id` (tests).
    #[cfg(test)]
    fn host_fd(&self, id: u32) -> Option<RawFd> {
        self.live(id).map(|r| lock(&r.core).ring.fd())
    }

    /// The completion eventfd of ring `id` (tests).
    pub fn completion_fd(&self, id: u32) -> Option<&EventFd> {
        self.live(id).map(|r| &r.routing.completion)
    }

    /// Rings created since the last call.
    pub fn take_created(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.created)
    }

    /// Rings retired since the last call, with the fd that reports
    /// `POLLERR` when the kernel has let go of each ([`Executor::reap`]
    /// then answers its DESTROYs).
    pub fn take_retired(&mut self) -> Vec<(u32, RawFd)> {
        let ids = std::mem::take(&mut self.retired);
        ids.into_iter()
            .filter_map(|id| match self.rings.get(id as usize)? {
                Slot::Retiring { teardown, .. } => Some((id, teardown.fd())),
                _ => None,
            })
            .collect()
    }

    /// The earliest time a waiting DESTROY times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rings
            .iter()
            .filter_map(|s| match s {
                Slot::Retiring { waiters, .. } => waiters.iter().map(|w| w.deadline).min(),
                _ => None,
            })
            .min()
    }

    /// Answers the DESTROYs whose ring the kernel has let go of (status 0)
    /// or whose wait timed out (`-ETIMEDOUT`), and frees the slots of rings
    /// that are gone. Returns the chains answered.
    pub fn reap(&mut self) -> Vec<Answered> {
        let now = Instant::now();
        let mut answered = Vec::new();
        for (id, slot) in self.rings.iter_mut().enumerate() {
            let Slot::Retiring {
                teardown, waiters, ..
            } = slot
            else {
                continue;
            };
            if teardown.is_done() {
                for w in waiters.drain(..) {
                    let used = write_response(&self.mem, &w.reply.descs, &Response::ok());
                    answered.push((w.reply.head, used));
                }
                *slot = Slot::Free;
                continue;
            }
            waiters.retain(|w| {
                if w.deadline > now {
                    return true;
                }
                log::warn!(
                    "pv-uring: ring {id}: the host kernel still runs its requests after {:?}; \
                     DESTROY answered -ETIMEDOUT, the slot stays quarantined",
                    self.idle_timeout
                );
                let used =
                    write_response(&self.mem, &w.reply.descs, &Response::error(libc::ETIMEDOUT));
                answered.push((w.reply.head, used));
                false
            });
        }
        answered
    }

    fn has(&self, feature: u32) -> bool {
        self.policy.features & (1 << feature) != 0
    }

    /// DESTROY_RING: stops the ring's submitter and routing, closes it
    /// and quarantines its slot; `reply` is answered by [`Executor::reap`].
    /// A ring whose earlier DESTROY timed out is waited for again.
    fn destroy(&mut self, id: u32, reply: Reply) -> Result<Option<Response>, i32> {
        let deadline = Instant::now() + self.idle_timeout;
        let slot = self.rings.get_mut(id as usize).ok_or(libc::ENOENT)?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Free => Err(libc::ENOENT),
            Slot::Live(r) => match r.retire() {
                (Some(teardown), bufs) => {
                    *slot = Slot::Retiring {
                        teardown,
                        waiters: vec![Waiter { reply, deadline }],
                        _bufs: bufs,
                    };
                    self.retired.push(id);
                    Ok(None)
                }
                // Guest rings always have a sentinel; without one there
                // is nothing to wait for.
                (None, _) => Ok(Some(Response::ok())),
            },
            Slot::Retiring {
                teardown,
                mut waiters,
                _bufs,
            } => {
                // A guest that re-offers chains cannot grow this forever.
                let full = waiters.len() >= usize::from(QUEUE_SIZE);
                if !full {
                    waiters.push(Waiter { reply, deadline });
                }
                *slot = Slot::Retiring {
                    teardown,
                    waiters,
                    _bufs,
                };
                if full {
                    return Err(libc::EBUSY);
                }
                Ok(None)
            }
        }
    }

    /// Runs one command. `None`: the answer is deferred ([`Executor::reap`]
    /// writes it to `reply` later).
    pub fn execute(&mut self, cmd: &Command, reply: Reply) -> Option<Response> {
        let result = match cmd {
            Command::CreateRing { entries, polled } => self.create(*entries, *polled),
            Command::DestroyRing { ring } => match self.destroy(*ring, reply) {
                Ok(None) => return None,
                Ok(Some(r)) => Ok(r),
                Err(e) => Err(e),
            },
            Command::RegisterBuffers { ring, extents } => self.register(*ring, extents),
            Command::UnregisterBuffers { ring } => self.unregister(*ring),
            Command::CloneBuffers {
                dst,
                src,
                replace,
                src_off,
                dst_off,
                nr,
            } => self.clone_buffers(*dst, *src, *replace, *src_off, *dst_off, *nr),
            Command::PublishBuffers { ring } => self.publish(*ring),
            Command::ArenaRegister { ring, runs } => self.arena_register(*ring, runs),
            Command::UnpublishBuffers { table } => {
                if !self.has(PVU_F_TABLE) {
                    Err(libc::EOPNOTSUPP)
                } else {
                    match self.table.get_mut(*table as usize) {
                        Some(slot @ Some(_)) => {
                            *slot = None;
                            Ok(Response::ok())
                        }
                        _ => Err(libc::ENOENT),
                    }
                }
            }
        };
        Some(result.unwrap_or_else(Response::error))
    }

    fn create(&mut self, entries: u32, polled: bool) -> Result<Response, i32> {
        if polled && !self.has(PVU_F_POLLED) {
            return Err(libc::EOPNOTSUPP);
        }
        if polled && self.polled_count() >= self.policy.max_polled as usize {
            return Err(libc::EBUSY);
        }
        let id = self
            .rings
            .iter()
            .position(|s| matches!(s, Slot::Free))
            .ok_or(libc::ENOSPC)? as u32;
        let eventfd = || EventFd::new(libc::EFD_NONBLOCK).map_err(|e| errno_of(&e));
        let (doorbell, completion) = (Arc::new(eventfd()?), eventfd()?);
        let (ring, slots) = HostRing::create_guest(
            &self.area,
            id,
            entries,
            &self.backends,
            completion.as_raw_fd(),
        )
        .map_err(|e| {
            log::warn!("pv-uring: creating ring {id}: {e}");
            errno_of(&e)
        })?;
        let sub =
            Submitter::new(ring.params(), slots, self.backends.len() as u32).map_err(|e| {
                log::error!("pv-uring: ring {id}: {e}");
                libc::EINVAL
            })?;
        let layout = self.ring_layout(id, &ring, polled);
        self.hooks
            .ring_created(id, &doorbell, &completion)
            .map_err(|e| {
                log::warn!("pv-uring: routing ring {id}: {e}");
                errno_of(&e)
            })?;
        let routing = Routing {
            id,
            doorbell: doorbell.clone(),
            completion,
            hooks: self.hooks.clone(),
            doorbells: self.doorbells.clone(),
        };
        self.doorbells.set(id, Some(doorbell.clone()));
        let watched = if polled {
            let watch = SlotWatch::new(self.area.clone(), id, &sub).ok_or(libc::ENOSPC)?;
            let fd = ring.dup_fd().map_err(|e| errno_of(&e))?;
            Some((watch, fd))
        } else {
            None
        };
        let core = Arc::new(Mutex::new(RingCore { ring, sub }));
        let poller = if let Some((watch, fd)) = watched {
            let p = Poller::spawn(
                id,
                Arc::downgrade(&core),
                fd,
                watch,
                doorbell,
                self.policy.sq_cpu,
                self.policy.poll_idle,
            )
            .map_err(|e| {
                log::warn!("pv-uring: ring {id}: starting its poller: {e}");
                errno_of(&e)
            })?;
            Some(p)
        } else {
            None
        };
        self.rings[id as usize] = Slot::Live(GuestRing {
            poller,
            routing,
            core,
        });
        self.created.push(id);
        Ok(Response {
            status: 0,
            id,
            value: 0,
            output: layout.to_bytes().to_vec(),
        })
    }

    /// What CREATE_RING tells the guest: sizes and offsets, no address.
    fn ring_layout(&self, id: u32, ring: &HostRing, polled: bool) -> RingLayout {
        let p = ring.params();
        let area = self.area.layout();
        // Both slots exist: create_guest used them.
        let sq_slot = area.sq_slot(id).unwrap_or_default() as u32;
        let cq_slot = area.cq_slot(id).unwrap_or_default() as u32;
        RingLayout {
            sq_entries: p.sq_entries,
            cq_entries: p.cq_entries,
            flags: if polled { PVU_RING_POLLED } else { 0 },
            cq_tail: p.cq_off.tail,
            cqes: p.cq_off.cqes,
            cq_head: p.cq_off.head,
            sq_slot,
            cq_slot,
        }
    }

    fn core(&self, id: u32) -> Result<Arc<Mutex<RingCore>>, i32> {
        self.live(id).map(|r| r.core.clone()).ok_or(libc::ENOENT)
    }

    fn register(&mut self, id: u32, extents: &[control::Extent]) -> Result<Response, i32> {
        if extents.is_empty() || extents.len() > self.limits.max_buffers as usize {
            return Err(libc::EINVAL);
        }
        let core = self.core(id)?;
        let mut c = lock(&core);
        if !c.ring.bufs().is_empty() {
            return Err(libc::EBUSY);
        }
        let mut bufs = Vec::with_capacity(extents.len());
        for e in extents {
            if e.len == 0 || e.len > control::MAX_EXTENT_LEN {
                return Err(libc::EINVAL);
            }
            // get_slice fails unless the whole range is in one region.
            let slice = self
                .mem
                .get_slice(GuestAddress(e.gpa), e.len as usize)
                .map_err(|_| libc::EFAULT)?;
            bufs.push((slice.ptr_guard().as_ptr() as u64, e.len));
        }
        let total: u64 = bufs.iter().map(|b| b.1).sum();
        let charge = self.budget.charge(total).ok_or_else(|| {
            log::debug!(
                "pv-uring: ring {id}: registering {total} bytes would pass the budget \
                 ({} of {} in use)",
                self.budget.used(),
                self.budget.limit()
            );
            libc::ENOSPC
        })?;
        let bufs: Vec<Buf> = bufs
            .into_iter()
            .map(|(addr, len)| Buf {
                addr,
                len,
                charge: Some(charge.clone()),
            })
            .collect();
        c.ring.register_buffers(&bufs).map_err(|e| errno_of(&e))?;
        Ok(Response::value(bufs.len() as u64))
    }

    fn unregister(&mut self, id: u32) -> Result<Response, i32> {
        let core = self.core(id)?;
        let mut c = lock(&core);
        if c.ring.bufs().is_empty() {
            return Err(libc::ENXIO);
        }
        // Exact while we hold the lock: no SQE is written meanwhile.
        let idle = c.sub.is_idle();
        c.ring.unregister_buffers().map_err(|e| errno_of(&e))?;
        Ok(Response {
            id: u32::from(idle),
            ..Response::ok()
        })
    }

    fn clone_buffers(
        &mut self,
        dst: u32,
        src: CloneSource,
        replace: bool,
        src_off: u32,
        dst_off: u32,
        nr: u32,
    ) -> Result<Response, i32> {
        let dst_core = self.core(dst)?;
        let (src_fd, src_bufs) = match src {
            CloneSource::Ring(id) => {
                let c = self.core(id)?;
                let c = lock(&c);
                (c.ring.fd(), c.ring.bufs().to_vec())
            }
            CloneSource::Table(id) => {
                if !self.has(PVU_F_TABLE) {
                    return Err(libc::EOPNOTSUPP);
                }
                let t = self
                    .table
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .ok_or(libc::ENOENT)?;
                (t.fd(), t.bufs().to_vec())
            }
        };
        let max = self.limits.max_buffers;
        let mut c = lock(&dst_core);
        check_clone(
            c.ring.bufs().len(),
            src_bufs.len(),
            replace,
            src_off,
            dst_off,
            nr,
            max,
        )?;
        let idle = c.sub.is_idle();
        c.ring
            .clone_buffers(src_fd, &src_bufs, replace, src_off, dst_off, nr)
            .map_err(|e| errno_of(&e))?;
        Ok(Response {
            id: u32::from(replace && idle),
            ..Response::value(c.ring.bufs().len() as u64)
        })
    }

    /// ARENA_REGISTER: clones the runs of the arena's host table into the
    /// ring's (empty) table, one host clone per run, in order: the first
    /// into the empty table, each later one with `DST_REPLACE`, which keeps
    /// the entries below its `dst_off` (all of them: the runs ascend). The
    /// parser checked the runs' order and `max_buffers`; the chunks are
    /// checked here against this VM's arena. A failure takes back what the
    /// earlier runs cloned: no request can have used it (the ring's lock is
    /// held throughout, so no submission pass ran).
    fn arena_register(&mut self, id: u32, runs: &[ArenaRun]) -> Result<Response, i32> {
        if !self.has(PVU_F_ARENA) {
            return Err(libc::EOPNOTSUPP);
        }
        let arena = self.arena.clone().ok_or(libc::EOPNOTSUPP)?;
        let core = self.core(id)?;
        let mut c = lock(&core);
        if !c.ring.bufs().is_empty() {
            return Err(libc::EBUSY);
        }
        for r in runs {
            let end = r.chunk.checked_add(r.nr);
            if end.is_none_or(|end| end > arena.chunks()) {
                log::debug!(
                    "pv-uring: ring {id}: arena run of chunks {}+{} is outside the {} chunks",
                    r.chunk,
                    r.nr,
                    arena.chunks()
                );
                return Err(libc::EFAULT);
            }
        }
        for (i, r) in runs.iter().enumerate() {
            if let Err(e) =
                c.ring
                    .clone_buffers(arena.fd(), arena.bufs(), i > 0, r.chunk, r.dst_off, r.nr)
            {
                log::warn!("pv-uring: ring {id}: cloning arena run {i}: {e}");
                if i > 0 {
                    if let Err(e) = c.ring.unregister_buffers() {
                        log::error!("pv-uring: ring {id}: taking back arena runs: {e}");
                    }
                }
                return Err(errno_of(&e));
            }
        }
        Ok(Response::value(c.ring.bufs().len() as u64))
    }

    fn publish(&mut self, id: u32) -> Result<Response, i32> {
        if !self.has(PVU_F_TABLE) {
            return Err(libc::EOPNOTSUPP);
        }
        let core = self.core(id)?;
        let (src_fd, src_bufs) = {
            let c = lock(&core);
            if c.ring.bufs().is_empty() {
                return Err(libc::ENXIO);
            }
            (c.ring.fd(), c.ring.bufs().to_vec())
        };
        let slot = self
            .table
            .iter()
            .position(Option::is_none)
            .ok_or(libc::ENOSPC)?;
        let mut hidden = HostRing::create_hidden().map_err(|e| errno_of(&e))?;
        hidden
            .clone_buffers(src_fd, &src_bufs, false, 0, 0, 0)
            .map_err(|e| errno_of(&e))?;
        self.table[slot] = Some(hidden);
        Ok(Response {
            id: slot as u32,
            ..Response::ok()
        })
    }
}

impl Drop for Executor {
    /// A device reset or the VM ending: retires every ring, then waits until
    /// the host kernel has let go of all of them (up to the idle timeout in
    /// all), so that no request writes guest memory after the reset.
    /// Unanswered DESTROYs are dropped with the queue.
    fn drop(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        let mut teardowns = Vec::new();
        for (id, slot) in self.rings.iter_mut().enumerate() {
            let teardown = match std::mem::replace(slot, Slot::Free) {
                Slot::Free => None,
                Slot::Live(r) => r.retire().0,
                Slot::Retiring { teardown, .. } => Some(teardown),
            };
            teardowns.extend(teardown.map(|t| (id, t)));
        }
        for (id, t) in teardowns {
            if !t.wait_until(deadline) {
                log::error!(
                    "pv-uring: ring {id}: the host kernel still runs its requests {:?} after \
                     the reset; they may write guest memory",
                    self.idle_timeout
                );
            }
        }
    }
}

/// A descriptor of a control chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub write_only: bool,
}

/// Writes `response` over the device-writable `descs`; returns the used
/// length (0 when a descriptor cannot be written).
fn write_response(mem: &GuestMemoryMmap, descs: &[Desc], response: &Response) -> u32 {
    let bytes = response.to_bytes();
    let mut written = 0usize;
    for d in descs {
        if written == bytes.len() {
            break;
        }
        let n = (d.len as usize).min(bytes.len() - written);
        if mem
            .write_slice(&bytes[written..written + n], GuestAddress(d.addr))
            .is_err()
        {
            return 0;
        }
        written += n;
    }
    written as u32
}

/// The leading descriptors of `writable` that hold the first `len` bytes:
/// all a deferred answer needs to keep (a DESTROY's 16 bytes).
fn response_descs(writable: &[Desc], len: usize) -> Vec<Desc> {
    let mut covered = 0usize;
    let mut out = Vec::new();
    for d in writable {
        if covered >= len {
            break;
        }
        out.push(*d);
        covered += d.len as usize;
    }
    out
}

/// Serves one control chain (head index `head`): checks its shape, reads
/// the request, runs it, writes the response. Returns the used length
/// (0: malformed chain, no response), or `None` when the answer is
/// deferred: [`Executor::reap`] gives it later.
pub fn process_chain(
    exec: &mut Executor,
    mem: &GuestMemoryMmap,
    head: u16,
    descs: &[Desc],
) -> Option<u32> {
    let split = descs
        .iter()
        .position(|d| d.write_only)
        .unwrap_or(descs.len());
    let (readable, writable) = descs.split_at(split);
    if descs.len() > MAX_CHAIN {
        log::debug!("pv-uring: control chain of more than {MAX_CHAIN} descriptors");
        return Some(0);
    }
    if readable.is_empty() || writable.is_empty() || writable.iter().any(|d| !d.write_only) {
        log::debug!("pv-uring: control chain of the wrong shape");
        return Some(0);
    }
    for d in descs {
        if d.len == 0 || !mem.check_range(GuestAddress(d.addr), d.len as usize) {
            log::debug!("pv-uring: control descriptor outside guest RAM");
            return Some(0);
        }
    }
    let mut request = Vec::new();
    for d in readable {
        let take = (d.len as usize).min(MAX_REQUEST - request.len());
        if take == 0 {
            break;
        }
        let at = request.len();
        request.resize(at + take, 0);
        if mem
            .read_slice(&mut request[at..], GuestAddress(d.addr))
            .is_err()
        {
            return Some(0);
        }
    }
    let capacity: usize = writable.iter().map(|d| d.len as usize).sum();
    let response = match control::parse(&request, exec.limits()) {
        Ok(cmd) => {
            if capacity < cmd.response_len() {
                log::debug!("pv-uring: response buffer too small for {cmd:?}");
                return Some(0);
            }
            let reply = Reply {
                head,
                descs: response_descs(writable, RESP_LEN),
            };
            // None: deferred.
            exec.execute(&cmd, reply)?
        }
        Err(e) => match e.errno() {
            Some(errno) if capacity >= RESP_LEN => {
                log::debug!("pv-uring: refused request: {e}");
                Response::error(errno)
            }
            _ => {
                log::debug!("pv-uring: malformed control chain: {e}");
                return Some(0);
            }
        },
    };
    Some(write_response(mem, writable, &response))
}

/// Serves every available chain of the control queue; returns whether the
/// guest should be interrupted.
pub fn process_queue(queue: &mut Queue, exec: &mut Executor, mem: &GuestMemoryMmap) -> bool {
    let mut used = false;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            log::warn!("pv-uring: control queue: {e}");
            return used;
        }
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // One more than allowed, so that process_chain sees the excess.
            let descs: Vec<Desc> = chain
                .take(MAX_CHAIN + 1)
                .map(|d| Desc {
                    addr: d.addr().0,
                    len: d.len(),
                    write_only: d.is_write_only(),
                })
                .collect();
            // A deferred answer is added to the used ring by the worker
            // when the executor gives it (answer_deferred).
            if let Some(len) = process_chain(exec, mem, head, &descs) {
                if let Err(e) = queue.add_used(mem, head, len) {
                    log::warn!("pv-uring: control queue: add_used: {e}");
                }
                used = true;
            }
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                log::warn!("pv-uring: control queue: {e}");
                break;
            }
        }
    }
    // needs_notification() also resets the queue's count of used entries.
    used && queue.needs_notification(mem).unwrap_or(true) && !interrupt_suppressed(queue, mem)
}

/// `VRING_AVAIL_F_NO_INTERRUPT` in the avail ring's flags, which
/// virtio-queue does not look at. The guest driver polls the control queue
/// and sets it: an interrupt nobody waits for costs the guest an emulated
/// interrupt entry and two register accesses on nested PVM, and unhandled
/// ones would make its kernel disable the line. A driver that clears the
/// flag checks the used ring afterwards (the virtio 1.x handshake), and
/// needs_notification() has fenced our used-index store before this load.
fn interrupt_suppressed(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
    mem.read_obj::<u16>(GuestAddress(queue.avail_ring()))
        .is_ok_and(|flags| u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT != 0)
}

/// Puts the chains the executor answered late ([`Executor::reap`]) on the
/// used ring; returns whether the guest should be interrupted.
pub fn answer_deferred(queue: &mut Queue, exec: &mut Executor, mem: &GuestMemoryMmap) -> bool {
    let answered = exec.reap();
    if answered.is_empty() {
        return false;
    }
    for (head, len) in answered {
        if let Err(e) = queue.add_used(mem, head, len) {
            log::warn!("pv-uring: control queue: add_used: {e}");
        }
    }
    queue.needs_notification(mem).unwrap_or(true)
}

struct Worker {
    stop: EventFd,
    handle: JoinHandle<()>,
}

const TOKEN_CONTROL: u64 = u64::MAX;
const TOKEN_STOP: u64 = u64::MAX - 1;
/// Ring ids below 2^32 are doorbell tokens; this bit marks a retired
/// ring's teardown sentinel.
const TOKEN_TEARDOWN: u64 = 1 << 32;

fn worker_loop(
    mut exec: Executor,
    mem: GuestMemoryMmap,
    mut queue: Queue,
    queue_event: EventFd,
    interrupt: VirtioInterrupt,
    stop: EventFd,
) {
    let result = (|| -> io::Result<()> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            queue_event.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_CONTROL),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        let mut events = vec![EpollEvent::default(); 64];
        let serve = |exec: &mut Executor, queue: &mut Queue| -> io::Result<()> {
            if process_queue(queue, exec, &mem) {
                interrupt.signal_used_queue();
            }
            // New rings' doorbells join the loop (a closed eventfd leaves
            // it by itself when its ring is destroyed), and so do retired
            // rings' sentinels (POLLERR needs no event bit; the fd leaves
            // when reap frees the slot).
            for id in exec.take_created() {
                if let Some(fd) = exec.doorbell_fd(id) {
                    epoll.ctl(
                        ControlOperation::Add,
                        fd,
                        EpollEvent::new(EventSet::IN, u64::from(id)),
                    )?;
                }
            }
            for (id, fd) in exec.take_retired() {
                epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::empty(), TOKEN_TEARDOWN | u64::from(id)),
                )?;
            }
            Ok(())
        };
        serve(&mut exec, &mut queue)?;
        loop {
            // Wake up for the earliest DESTROY timeout, if any.
            let timeout = exec.next_deadline().map_or(-1, |d| {
                let left = d.saturating_duration_since(Instant::now());
                // Rounded up: waking early would spin.
                (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A DESTROY timed out (even if doorbells keep the loop busy).
            let mut reap = n == 0 || exec.next_deadline().is_some_and(|d| d <= Instant::now());
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return Ok(()),
                    TOKEN_CONTROL => {
                        let _ = queue_event.read();
                        serve(&mut exec, &mut queue)?;
                    }
                    t if t & TOKEN_TEARDOWN != 0 => reap = true,
                    id => {
                        exec.doorbell(id as u32);
                    }
                }
            }
            // Teardowns that finished, DESTROYs that timed out.
            if reap && answer_deferred(&mut queue, &mut exec, &mem) {
                interrupt.signal_used_queue();
            }
        }
    })();
    if let Err(e) = result {
        log::error!("pv-uring: worker stopped: {e}");
    }
    // Dropping the executor destroys every ring and table entry, and waits
    // for the host kernel to let go of the rings. This thread submitted
    // their requests: it must stay alive and able to run io_uring task work
    // while it waits (it does: the wait is an interruptible poll).
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
        let host = |what: &str, e: io::Error| ActivateError::Host(format!("{what}: {e}"));
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host("eventfd", e))?;
        let stop_worker = stop.try_clone().map_err(|e| host("eventfd", e))?;
        let exec = self.executor(mem.clone(), acked_features);
        let queue = queues.into_iter().next().expect("one queue");
        let queue_event = queue_events.into_iter().next().expect("one event");
        // The worker submits for doorbell rings: it belongs with the SQ
        // threads (see `PvUringConfig::sq_cpu`).
        let worker_cpu = self.sq_cpu;
        let handle = std::thread::Builder::new()
            .name("pv-uring".into())
            .spawn(move || {
                crate::privileges::restrict_submitting_thread("pv-uring worker", true);
                if let Some(cpu) = worker_cpu {
                    if let Err(e) = crate::affinity::pin_current_thread(&[cpu as usize]) {
                        log::warn!("pv-uring: worker stays unpinned: {e}");
                    }
                }
                worker_loop(exec, mem, queue, queue_event, interrupt, stop_worker)
            })
            .map_err(|e| host("spawning the worker", e))?;
        self.worker = Some(Worker { stop, handle });
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            let _ = worker.stop.write(1);
            if worker.handle.join().is_err() {
                log::error!("pv-uring: worker panicked");
            }
        }
    }

    fn snapshot_blocker(&self) -> Option<String> {
        // Snapshots hold no rings yet: a live ring has its doorbell set.
        let live = self.doorbells.0.read().unwrap_or_else(|e| e.into_inner());
        let rings = live.iter().filter(|d| d.is_some()).count();
        (rings > 0).then(|| {
            format!("pv-uring has {rings} live rings; snapshots are taken before any ring exists")
        })
    }
}

impl Drop for PvUring {
    fn drop(&mut self) {
        self.reset();
    }
}
