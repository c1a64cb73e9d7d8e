//! The command executor: every ring and table entry of one activation of
//! the device (their routing, host rings, submitters and pollers), the
//! budget of registered bytes, and the control commands that change them.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use uring_abi::wire::{RingLayout, PVU_RING_POLLED};

use super::arena::Arena;
use super::control::{self, ArenaRun, CloneSource, Command, Limits, Response};
use super::doorbell::Doorbells;
use super::poller::Poller;
use super::queue::write_response;
use super::ring::{check_clone, errno_of, Budget, Buf, HostRing, RingArea, Teardown};
use super::submit::{Pass, SlotWatch, Submitter};
use super::Desc;
use super::{
    RingHooks, IDLE_TIMEOUT, MAX_BUFFERS, MAX_ENTRIES, MAX_TABLE, PVU_F_ARENA, PVU_F_POLLED,
    PVU_F_TABLE, QUEUE_SIZE,
};

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
    pub(super) ring: HostRing,
    pub(super) sub: Submitter,
}

impl RingCore {
    /// One submission pass: the guest's SQEs become host SQEs, and the
    /// kernel gets them. A failed `io_uring_enter` (`EAGAIN`, `EBUSY`:
    /// the kernel is short of memory) leaves them in the host SQ for the
    /// next pass.
    pub(super) fn pass(&mut self) -> Pass {
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

pub(super) fn lock(core: &Mutex<RingCore>) -> MutexGuard<'_, RingCore> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// A guest ring: its routing, its host side and its poller.
pub(super) struct GuestRing {
    // Dropped first: no submitter runs and the doorbell stops before the
    // ring closes.
    poller: Option<Poller>,
    routing: Routing,
    pub(super) core: Arc<Mutex<RingCore>>,
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
pub(super) struct Waiter {
    pub(super) reply: Reply,
    deadline: Instant,
}

/// A ring slot.
pub(super) enum Slot {
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
    pub(super) policy: ExecutorPolicy,
    budget: Arc<Budget>,
    pub(super) rings: Vec<Slot>,
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

    pub(super) fn live(&self, id: u32) -> Option<&GuestRing> {
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
    pub(super) fn host_fd(&self, id: u32) -> Option<RawFd> {
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
            Command::ArenaRegister { ring, runs } => self
                .arena_register(&[*ring], runs)
                .map(|r| Response { id: 0, ..r }),
            Command::ArenaRegisterRings { rings, runs } => self.arena_register(rings, runs),
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

    /// ARENA_REGISTER (one ring) and ARENA_REGISTER_RINGS: clones `runs`
    /// of the arena's host table into each ring's empty table
    /// ([`Arena::clone_runs_into`]), with every ring's lock held
    /// throughout (taken in id order), so that it is all of them or none:
    /// a failure takes back the rings done, which no request can have
    /// used.
    /// The parser checked the runs' order, `max_buffers` and that no ring
    /// is named twice; the chunks are checked against this VM's arena.
    fn arena_register(&mut self, ids: &[u32], runs: &[ArenaRun]) -> Result<Response, i32> {
        if !self.has(PVU_F_ARENA) {
            return Err(libc::EOPNOTSUPP);
        }
        let arena = self.arena.clone().ok_or(libc::EOPNOTSUPP)?;
        if ids.is_empty() {
            return Err(libc::EINVAL);
        }
        let mut cores = ids
            .iter()
            .map(|&id| Ok((id, self.core(id)?)))
            .collect::<Result<Vec<_>, i32>>()?;
        cores.sort_unstable_by_key(|c| c.0);
        if cores.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(libc::EINVAL);
        }
        let mut held: Vec<_> = cores.iter().map(|(_, c)| lock(c)).collect();
        if held.iter().any(|c| !c.ring.bufs().is_empty()) {
            return Err(libc::EBUSY);
        }
        arena.check_runs(runs)?;
        let mut rings: Vec<&mut HostRing> = held.iter_mut().map(|c| &mut c.ring).collect();
        if let Err(e) = arena.clone_runs_into(&mut rings, runs) {
            log::warn!("pv-uring: rings {ids:?}: arena registration: {e}");
            return Err(errno_of(&e));
        }
        Ok(Response {
            id: ids.len() as u32,
            ..Response::value(held[0].ring.bufs().len() as u64)
        })
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
