//! The pv-uring device (ABI version 2) against the host kernel's io_uring,
//! without a guest: a guest memory map, the ring area, control chains
//! through [`process_chain`], SQEs written into the ring's submission slot
//! the way a guest does (the VMM copies, checks and rewrites them), the
//! doorbell, and completions read from the read-only completion slot.
//!
//! The `hostile_*` tests are issue 14's findings at this level: each
//! asserts the errno docs/pv-uring.md gives and that the device keeps
//! serving afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uring_abi::uring::{
    Sqe, IORING_FSYNC_DATASYNC, IORING_NOP_INJECT_RESULT, IORING_OP_FSYNC, IORING_OP_NOP,
    IORING_OP_READ, IORING_OP_READV, IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IOSQE_ASYNC,
    IOSQE_BUFFER_SELECT, IOSQE_CQE_SKIP_SUCCESS, IOSQE_FIXED_FILE, IOSQE_IO_DRAIN,
    IOSQE_IO_HARDLINK, IOSQE_IO_LINK, SQE_LEN,
};
use uring_abi::wire::{
    slot, AreaLayout, RingLayout, CQ_SLOT_SIZE, PVU_CQ_EVENTFD_DISABLED, PVU_SQ_NEED_WAKEUP,
    SENTINEL_FILE, SQ_SLOT_SIZE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::control::*;
use super::executor::{lock, Slot};
use super::ring::PRIVATE_SLOT_SIZE;
use super::*;
use crate::virtio::test_file::TempFile;
use crate::BusDevice;

/// The tests share the process's pinned-memory count: run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `IORING_OP_OPENAT` (not in the allow-list, so not in uring-abi).
const IORING_OP_OPENAT: u8 = 18;
/// `IOPRIO_CLASS_RT << IOPRIO_CLASS_SHIFT`: a real-time I/O priority.
const IOPRIO_RT: u16 = 1 << 13;

const MIB: u64 = 1 << 20;
/// Guest RAM: two regions of 32 MiB.
const REGION2: u64 = 32 * MIB;
const REQ: u64 = 0x1000;
const RESP: u64 = 0x2_0000;
const RESP_CAP: u32 = 0x4000;
/// Buffer 0: 64 KiB in region 1; buffer 1: 64 KiB in region 2; C and D:
/// two more in region 1 (a second registration).
const BUF_A: u64 = MIB;
const BUF_B: u64 = REGION2 + 0x1000;
const BUF_C: u64 = 2 * MIB;
const BUF_D: u64 = 3 * MIB;
const BUF_LEN: u64 = 0x1_0000;
const FILE_LEN: usize = 1 << 20;
const ALL_FEATURES: u64 = (1 << 32) | (1 << PVU_F_POLLED) | (1 << PVU_F_TABLE);
/// Bytes of a CREATE_RING answer: the response and the ring layout.
const CREATE_LEN: u32 = (RESP_LEN + RING_LAYOUT_LEN) as u32;

fn temp_file(bytes: &[u8]) -> TempFile {
    TempFile::new_in(&std::env::temp_dir(), "rv-pvu-test", bytes)
}
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    used: u32,
    status: i32,
    id: u32,
    value: u64,
    output: Vec<u8>,
}

/// How to build a [`Rig`].
#[derive(Clone, Copy)]
struct Opts {
    rings: u32,
    features: u64,
    sq_cpu: Option<u32>,
    max_polled: u32,
    max_registered: Option<u64>,
    /// The polled submitters' idle time (default: the device's, 1 s).
    poll_idle: Option<Duration>,
    /// The buffer arena.
    arena: Option<super::arena::ArenaConfig>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            rings: 4,
            features: ALL_FEATURES,
            sq_cpu: None,
            max_polled: 1,
            max_registered: None,
            poll_idle: None,
            arena: None,
        }
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    file: TempFile,
    _ro: TempFile,
    dev: PvUring,
    exec: Executor,
    /// Every response byte the device wrote (checked for host addresses).
    responses: Vec<Vec<u8>>,
}

fn config(opts: &Opts, file: &TempFile, ro: &TempFile) -> PvUringConfig {
    PvUringConfig {
        max_rings: opts.rings,
        backends: vec![
            BackendConfig {
                path: file.0.clone(),
                read_only: false,
                direct: false,
            },
            BackendConfig {
                path: ro.0.clone(),
                read_only: true,
                direct: false,
            },
        ],
        completion_irq: 10,
        doorbell_gpa: 0xcf00_0000,
        ring_area_gpa: 0x4000_0000,
        sq_cpu: opts.sq_cpu,
        max_polled: opts.max_polled,
        max_registered: opts.max_registered,
        arena: opts.arena,
    }
}

impl Rig {
    fn new(features: u64) -> Self {
        Self::with(Opts {
            features,
            ..Opts::default()
        })
    }

    fn with_rings(rings: u32, features: u64) -> Self {
        Self::with(Opts {
            rings,
            features,
            ..Opts::default()
        })
    }

    fn with(opts: Opts) -> Self {
        let file = temp_file(&pattern(FILE_LEN, 7));
        let ro = temp_file(&pattern(4096, 9));
        let dev = PvUring::new(&config(&opts, &file, &ro), Arc::new(NoHooks)).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), REGION2 as usize),
            (GuestAddress(REGION2), REGION2 as usize),
        ])
        .unwrap();
        let mut exec = dev.executor(mem.clone(), opts.features);
        if let Some(idle) = opts.poll_idle {
            exec.policy.poll_idle = idle;
        }
        Self {
            mem,
            file,
            _ro: ro,
            dev,
            exec,
            responses: Vec::new(),
        }
    }

    /// Sends a request through a two-descriptor chain.
    fn call(&mut self, req: &[u8]) -> Resp {
        self.call_descs(
            req,
            &[
                Desc {
                    addr: REQ,
                    len: req.len() as u32,
                    write_only: false,
                },
                Desc {
                    addr: RESP,
                    len: RESP_CAP,
                    write_only: true,
                },
            ],
        )
    }

    fn call_descs(&mut self, req: &[u8], descs: &[Desc]) -> Resp {
        self.mem.write_slice(req, GuestAddress(REQ)).unwrap();
        self.mem
            .write_slice(&[0xeeu8; RESP_CAP as usize], GuestAddress(RESP))
            .unwrap();
        let used = match process_chain(&mut self.exec, &self.mem, 0, descs) {
            Some(used) => used,
            None => self.wait_answer(0),
        };
        let mut b = vec![0u8; used as usize];
        self.mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
        self.responses.push(b.clone());
        if used < 16 {
            return Resp {
                used,
                status: 0,
                id: 0,
                value: 0,
                output: Vec::new(),
            };
        }
        Resp {
            used,
            status: i32::from_le_bytes(b[0..4].try_into().unwrap()),
            id: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            value: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            output: b[16..].to_vec(),
        }
    }

    /// Waits until the executor answers the deferred chain `head` (as the
    /// worker does on the sentinel's POLLERR); returns its used length.
    fn wait_answer(&mut self, head: u16) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(&(_, used)) = self.exec.reap().iter().find(|a| a.0 == head) {
                return used;
            }
            assert!(
                Instant::now() < deadline,
                "deferred chain {head} never answered"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn create_flags(&mut self, entries: u32, flags: u32) -> Resp {
        self.call(&encode_request(
            cmd::CREATE_RING,
            0,
            flags,
            entries,
            0,
            0,
            0,
            &[],
        ))
    }

    fn create(&mut self, entries: u32) -> (u32, GuestRingView) {
        let r = self.create_flags(entries, 0);
        assert_eq!(r.status, 0, "CREATE_RING failed: {r:?}");
        assert_eq!(r.used, CREATE_LEN);
        let view = self.view(r.id, &r.output);
        assert_eq!(view.l.flags, 0);
        (r.id, view)
    }

    fn create_polled(&mut self, entries: u32) -> (u32, GuestRingView) {
        let r = self.create_flags(entries, PVU_RING_POLLED);
        assert_eq!(r.status, 0, "CREATE_RING (polled) failed: {r:?}");
        assert_eq!(r.used, CREATE_LEN);
        let view = self.view(r.id, &r.output);
        assert_eq!(view.l.flags, PVU_RING_POLLED);
        (r.id, view)
    }

    /// The guest's view of ring `id` from CREATE_RING's output.
    fn view(&self, id: u32, output: &[u8]) -> GuestRingView {
        let l = RingLayout::from_bytes(output[..RING_LAYOUT_LEN].try_into().unwrap());
        let area = self.dev.ring_area();
        let layout = area.layout();
        assert_eq!(u64::from(l.sq_slot), layout.sq_slot(id).unwrap());
        assert_eq!(u64::from(l.cq_slot), layout.cq_slot(id).unwrap());
        assert!(l.sq_entries.is_power_of_two() && l.cq_entries.is_power_of_two());
        assert!(l.cq_entries >= l.sq_entries);
        assert!(l.cq_tail.is_multiple_of(4) && (l.cq_tail as usize) < CQ_SLOT_SIZE as usize);
        assert!(l.cqes as u64 + 16 * u64::from(l.cq_entries) <= u64::from(CQ_SLOT_SIZE));
        let s = area.slots(id).unwrap();
        GuestRingView {
            sq: s.sq,
            cq: s.cq,
            private: s.private,
            l,
            _area: area,
        }
    }

    fn register(&mut self, ring: u32, extents: &[Extent]) -> Resp {
        self.call(&encode_request(
            cmd::REGISTER_BUFFERS,
            ring,
            0,
            extents.len() as u32,
            0,
            0,
            0,
            extents,
        ))
    }

    fn register_at(&mut self, ring: u32, gpas: &[u64]) {
        let ext: Vec<Extent> = gpas
            .iter()
            .map(|&gpa| Extent { gpa, len: BUF_LEN })
            .collect();
        let r = self.register(ring, &ext);
        assert_eq!(r.status, 0, "{r:?}");
        assert_eq!((r.used, r.value), (16, gpas.len() as u64));
    }

    /// Buffers 0 and 1: A and B.
    fn two_buffers(&mut self, ring: u32) {
        self.register_at(ring, &[BUF_A, BUF_B]);
    }

    #[allow(clippy::too_many_arguments)]
    fn simple(
        &mut self,
        c: u32,
        ring: u32,
        flags: u32,
        nr: u32,
        src: u32,
        so: u32,
        d: u32,
    ) -> Resp {
        self.call(&encode_request(c, ring, flags, nr, src, so, d, &[]))
    }

    fn clone_from(&mut self, dst: u32, src: u32, flags: u32, so: u32, d: u32, nr: u32) -> Resp {
        self.simple(cmd::CLONE_BUFFERS, dst, flags, nr, src, so, d)
    }

    fn destroy(&mut self, id: u32) -> Resp {
        self.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0)
    }

    /// Submits `sqes` on doorbell ring `id` and waits for as many
    /// completions.
    fn run(&mut self, id: u32, view: &GuestRingView, sqes: &[Sqe]) -> Vec<(u64, i32)> {
        assert!(sqes.len() <= view.l.sq_entries as usize);
        for s in sqes {
            view.push(s);
        }
        self.exec.doorbell(id).expect("a live doorbell ring");
        view.wait(sqes.len())
    }

    /// Reads 512 bytes of the file through buffer `buf_index` of ring
    /// `id`; returns whether they landed at guest address `gpa`.
    fn lands_at(&mut self, id: u32, view: &GuestRingView, buf_index: u16, gpa: u64) -> bool {
        self.mem
            .write_slice(&[0u8; 512], GuestAddress(gpa))
            .unwrap();
        let cqes = self.run(
            id,
            view,
            &[fixed(IORING_OP_READ_FIXED, 0, 512, 1024, buf_index, 0x1a)],
        );
        assert_eq!(cqes, vec![(0x1a, 512)], "buffer {buf_index}");
        let mut got = vec![0u8; 512];
        self.mem.read_slice(&mut got, GuestAddress(gpa)).unwrap();
        got == pattern(FILE_LEN, 7)[1024..1536]
    }

    /// The host ring's CQ overflow state of ring `id`, from its
    /// completion slot: the kernel's `cq_overflow` counter (CQEs it
    /// dropped) and `IORING_SQ_CQ_OVERFLOW` in the SQ flags (CQEs it had
    /// to keep in kernel memory because the CQ was full).
    fn cq_overflow(&self, id: u32, view: &GuestRingView) -> (u32, bool) {
        const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
        let r = self.exec.live(id).expect("a live ring");
        let p = *lock(&r.core).ring.params();
        let dropped = view.cq_word(p.cq_off.overflow).load(Ordering::Acquire);
        let flags = view.cq_word(p.sq_off.flags).load(Ordering::Acquire);
        (dropped, flags & IORING_SQ_CQ_OVERFLOW != 0)
    }

    /// Host address ranges no response may mention: guest RAM as the VMM
    /// maps it, and the ring area (all three parts).
    fn host_ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for gpa in [0, REGION2] {
            let h = self.mem.get_host_address(GuestAddress(gpa)).unwrap() as u64;
            out.push((h, h + REGION2));
        }
        let area = self.dev.ring_area();
        let base = area.host_addr();
        let end =
            base + area.guest_len() + u64::from(area.layout().max_rings) * PRIVATE_SLOT_SIZE as u64;
        out.push((base, end));
        out
    }

    /// Asserts that no response so far holds a host address (any 8 bytes
    /// at any offset that read as an address inside [`Rig::host_ranges`]).
    fn assert_no_host_address(&self) {
        let ranges = self.host_ranges();
        assert!(!self.responses.is_empty());
        for (i, r) in self.responses.iter().enumerate() {
            for w in r.windows(8) {
                let v = u64::from_le_bytes(w.try_into().unwrap());
                for &(lo, hi) in &ranges {
                    assert!(
                        !(lo..hi).contains(&v),
                        "response {i} ({r:x?}) holds host address {v:#x}"
                    );
                }
            }
        }
    }
}

/// What a guest sees of its ring: its submission slot (read-write), its
/// completion slot (read-only to a guest; only read here) and the layout
/// CREATE_RING returned. `private` is the host's SQE slot, which a guest
/// never sees: the tests look at it to check what the VMM wrote.
struct GuestRingView {
    sq: *mut u8,
    cq: *mut u8,
    private: *mut u8,
    l: RingLayout,
    _area: Arc<ring::RingArea>,
}

fn sqe(opcode: u8, user_data: u64) -> Sqe {
    Sqe {
        opcode,
        flags: IOSQE_FIXED_FILE,
        user_data,
        ..Sqe::default()
    }
}

fn nop(user_data: u64) -> Sqe {
    sqe(IORING_OP_NOP, user_data)
}

/// A READ/WRITE_FIXED (or other) SQE on backend 0: `addr` is the byte
/// offset in buffer `buf_index`.
fn fixed(opcode: u8, addr: u64, len: u32, off: u64, buf_index: u16, user_data: u64) -> Sqe {
    Sqe {
        addr,
        len,
        off,
        buf_index,
        ..sqe(opcode, user_data)
    }
}

fn fsync(user_data: u64) -> Sqe {
    sqe(IORING_OP_FSYNC, user_data)
}

/// A READ_FIXED of the teardown sentinel: waits until the ring is
/// destroyed.
fn stuck_read(user_data: u64) -> Sqe {
    Sqe {
        fd: SENTINEL_FILE as i32,
        ..fixed(IORING_OP_READ_FIXED, 0, 4096, 0, 0, user_data)
    }
}

impl GuestRingView {
    /// A le32 word of the submission slot.
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off < slot::SQES);
        // SAFETY: a 4-aligned word inside the submission slot, which the
        // area (held by `_area`) keeps mapped.
        unsafe { &*(self.sq.add(off) as *const AtomicU32) }
    }

    /// A le32 word of the completion slot.
    fn cq_word(&self, off: u32) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off < CQ_SLOT_SIZE);
        // SAFETY: as word(), in the completion slot.
        unsafe { &*(self.cq.add(off as usize) as *const AtomicU32) }
    }

    fn sq_head(&self) -> u32 {
        self.word(slot::SQ_HEAD).load(Ordering::Acquire)
    }

    fn sq_tail(&self) -> u32 {
        self.word(slot::SQ_TAIL).load(Ordering::Relaxed)
    }

    fn sq_flags(&self) -> u32 {
        self.word(slot::SQ_FLAGS).load(Ordering::Acquire)
    }

    /// Free SQ entries (the guest may not overwrite unconsumed ones).
    fn room(&self) -> u32 {
        self.l
            .sq_entries
            .saturating_sub(self.sq_tail().wrapping_sub(self.sq_head()))
    }

    /// Writes 64 bytes at the next SQ position and publishes the tail.
    fn push_raw(&self, b: &[u8; SQE_LEN]) {
        assert!(self.room() > 0, "the guest SQ is full");
        self.push_unchecked(b);
    }

    /// [`GuestRingView::push_raw`] without looking at the device's
    /// `sq_head`.
    fn push_unchecked(&self, b: &[u8; SQE_LEN]) {
        let tail = self.sq_tail();
        let idx = tail & (self.l.sq_entries - 1);
        // SAFETY: entry idx < sq_entries lies in the submission slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                b.as_ptr(),
                self.sq.add(slot::SQES + SQE_LEN * idx as usize),
                SQE_LEN,
            );
        }
        self.word(slot::SQ_TAIL)
            .store(tail.wrapping_add(1), Ordering::Release);
    }

    fn push(&self, s: &Sqe) {
        self.push_raw(&s.to_bytes());
    }

    fn cq_head(&self) -> u32 {
        self.word(slot::CQ_HEAD).load(Ordering::Relaxed)
    }

    fn cq_tail(&self) -> u32 {
        self.cq_word(self.l.cq_tail).load(Ordering::Acquire)
    }

    /// CQEs posted and not consumed.
    fn ready(&self) -> u32 {
        self.cq_tail().wrapping_sub(self.cq_head())
    }

    fn is_empty(&self) -> bool {
        self.ready() == 0
    }

    /// Consumes `n` CQEs (waiting up to 10 s), storing the guest's
    /// `cq_head` in the submission slot after each.
    fn wait(&self, n: usize) -> Vec<(u64, i32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            let head = self.cq_head();
            if self.cq_tail() == head {
                assert!(Instant::now() < deadline, "timed out with {out:?}");
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let at = self.l.cqes as usize + 16 * (head & (self.l.cq_entries - 1)) as usize;
            // SAFETY: the CQE array lies inside the completion slot.
            let (ud, res) = unsafe {
                (
                    (self.cq.add(at) as *const u64).read_volatile(),
                    (self.cq.add(at + 8) as *const i32).read_volatile(),
                )
            };
            out.push((ud, res));
            self.word(slot::CQ_HEAD)
                .store(head.wrapping_add(1), Ordering::Release);
        }
        out
    }

    /// The host SQE the VMM wrote for guest SQ position `pos` (a fresh
    /// ring's host SQ advances with the guest's: one host SQE per guest
    /// SQE).
    fn host_sqe(&self, pos: u32) -> [u8; SQE_LEN] {
        let idx = pos & (self.l.sq_entries - 1);
        // SAFETY: entry idx < sq_entries of the private slot.
        unsafe {
            std::ptr::read_volatile(
                self.private
                    .add(SQE_LEN * idx as usize)
                    .cast::<[u8; SQE_LEN]>(),
            )
        }
    }
}

#[test]
fn io_both_ways_through_guest_written_sqes() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    assert_eq!((view.l.sq_entries, view.l.cq_entries), (8, 16));
    rig.two_buffers(id);
    let data = pattern(8192, 99);
    rig.mem.write_slice(&data, GuestAddress(BUF_B)).unwrap();
    let mut cqes = rig.run(
        id,
        &view,
        &[
            fixed(IORING_OP_READ_FIXED, 512, 8192, 4096, 0, 1),
            fixed(IORING_OP_WRITE_FIXED, 0, 8192, 65536, 1, 2),
        ],
    );
    cqes.sort();
    assert_eq!(cqes, vec![(1, 8192), (2, 8192)]);
    assert_eq!(view.sq_head(), 2);
    let mut got = vec![0u8; 8192];
    rig.mem
        .read_slice(&mut got, GuestAddress(BUF_A + 512))
        .unwrap();
    assert_eq!(got, pattern(FILE_LEN, 7)[4096..4096 + 8192]);
    assert_eq!(rig.file.contents()[65536..65536 + 8192], data[..]);
    // The VMM wrote the host SQE with the buffer's host address; the
    // guest only ever named (index, offset).
    let host = Sqe::from_bytes(&view.host_sqe(0));
    let a = rig.mem.get_host_address(GuestAddress(BUF_A)).unwrap() as u64;
    assert_eq!(
        (host.opcode, host.addr, host.buf_index, host.len),
        (IORING_OP_READ_FIXED, a + 512, 0, 8192)
    );
    // NOP and FSYNC (with FIXED_FILE), a linked pair; FSYNC DATASYNC over
    // a range.
    let mut n = nop(3);
    n.flags |= IOSQE_IO_LINK;
    let ds = Sqe {
        off: 4096,
        len: 4096,
        op_flags: IORING_FSYNC_DATASYNC,
        ..fsync(5)
    };
    let mut cqes = rig.run(id, &view, &[n, fsync(4), ds]);
    cqes.sort();
    assert_eq!(cqes, vec![(3, 0), (4, 0), (5, 0)]);
    // Completions signalled the ring's eventfd.
    assert!(rig.exec.completion_fd(id).unwrap().read().unwrap() >= 1);
    // The read-only backend (fixed file 1) refuses writes (the host
    // kernel's answer: the file is open O_RDONLY).
    let mut w = fixed(IORING_OP_WRITE_FIXED, 0, 512, 0, 0, 6);
    w.fd = 1;
    assert_eq!(rig.run(id, &view, &[w]), vec![(6, -libc::EBADF)]);
    // Reading it works.
    let mut r = fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 7);
    r.fd = 1;
    assert_eq!(rig.run(id, &view, &[r]), vec![(7, 512)]);
    // More SQEs than the SQ holds, over several passes: the slot's
    // positions wrap.
    for round in 0..5u64 {
        let batch: Vec<Sqe> = (0..8).map(|i| nop(100 + 8 * round + i)).collect();
        let got = rig.run(id, &view, &batch);
        assert_eq!(
            got,
            batch.iter().map(|s| (s.user_data, 0)).collect::<Vec<_>>()
        );
    }
}

/// The interrupt-off bit of the guest's `cq_flags` reaches the host ring:
/// no completion interrupt while it is set.
#[test]
fn cq_flags_eventfd_disabled_stops_completion_interrupts() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    let evt = rig.exec.completion_fd(id).unwrap().try_clone().unwrap();
    assert_eq!(rig.run(id, &view, &[nop(1)]), vec![(1, 0)]);
    assert!(evt.read().unwrap() >= 1);
    view.word(slot::CQ_FLAGS)
        .store(PVU_CQ_EVENTFD_DISABLED, Ordering::Release);
    assert_eq!(rig.run(id, &view, &[nop(2)]), vec![(2, 0)]);
    assert!(evt.read().is_err(), "a completion interrupt while disabled");
    view.word(slot::CQ_FLAGS).store(0, Ordering::Release);
    assert_eq!(rig.run(id, &view, &[nop(3)]), vec![(3, 0)]);
    assert!(evt.read().unwrap() >= 1);
}

/// Issue 14: the PI attribute pointer (Linux 6.14+ `attr_ptr`,
/// `attr_type_mask`) is a user pointer the host kernel would follow. An
/// SQE that sets either is answered -EINVAL, and the host SQE the VMM
/// wrote in its place has those bytes zero.
#[test]
fn hostile_pi_attribute_pointer_is_refused_and_never_reaches_the_host() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    rig.two_buffers(id);
    let host_buf = vec![0u8; 4096];
    let read = fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 1);
    let pi = [
        Sqe {
            attr_ptr: host_buf.as_ptr() as u64,
            attr_type_mask: 1,
            ..read
        },
        Sqe {
            attr_ptr: host_buf.as_ptr() as u64,
            user_data: 2,
            ..read
        },
        Sqe {
            attr_type_mask: 1,
            user_data: 3,
            ..read
        },
    ];
    let first = view.sq_tail();
    let cqes = rig.run(id, &view, &pi);
    assert_eq!(
        cqes,
        vec![(1, -libc::EINVAL), (2, -libc::EINVAL), (3, -libc::EINVAL)]
    );
    for i in 0..3 {
        let raw = view.host_sqe(first + i);
        let host = Sqe::from_bytes(&raw);
        assert_eq!(raw[48..64], [0u8; 16], "host SQE {i}: {host:?}");
        // An error NOP in its place, nothing else the guest wrote.
        assert_eq!(host.opcode, IORING_OP_NOP);
        assert_eq!(host.op_flags, IORING_NOP_INJECT_RESULT);
        assert_eq!((host.addr, host.off, host.buf_index), (0, 0, 0));
    }
    // Still serving: the same read without the attribute.
    assert_eq!(rig.run(id, &view, &[read]), vec![(1, 512)]);
}

/// Issue 14: every byte that no allowed opcode uses (and, per opcode,
/// every field it does not use) must be zero: each non-zero one is
/// answered -EINVAL, one at a time, and the device keeps serving.
#[test]
fn hostile_nonzero_unused_bytes_are_refused() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(64);
    rig.two_buffers(id);
    // A NOP uses opcode (0), flags (1) and user_data (32..40): every other
    // byte set to 1 alone is -EINVAL.
    let base = nop(0).to_bytes();
    let bytes: Vec<usize> = (2..32).chain(40..64).collect();
    for &i in &bytes {
        let mut b = base;
        b[i] = 1;
        b[32] = i as u8; // user_data = the byte's position
        view.push_raw(&b);
    }
    rig.exec.doorbell(id).unwrap();
    let cqes = view.wait(bytes.len());
    for (&i, &(ud, res)) in bytes.iter().zip(&cqes) {
        assert_eq!((ud, res), (i as u64, -libc::EINVAL), "NOP byte {i}");
    }
    // READ/WRITE_FIXED: ioprio, rw_flags, personality, file_index, attr.
    let read = fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 0);
    let write = fixed(IORING_OP_WRITE_FIXED, 0, 512, 0, 0, 0);
    for rw in [read, write] {
        let bad = [
            Sqe { ioprio: 1, ..rw },
            Sqe { op_flags: 1, ..rw },
            Sqe {
                personality: 1,
                ..rw
            },
            Sqe {
                file_index: 1,
                ..rw
            },
            Sqe { attr_ptr: 1, ..rw },
            Sqe {
                attr_type_mask: 1,
                ..rw
            },
        ];
        let bad: Vec<Sqe> = bad
            .iter()
            .enumerate()
            .map(|(i, s)| Sqe {
                user_data: 10 + i as u64,
                ..*s
            })
            .collect();
        let cqes = rig.run(id, &view, &bad);
        for (s, c) in bad.iter().zip(&cqes) {
            assert_eq!(*c, (s.user_data, -libc::EINVAL), "{s:?}");
        }
    }
    // FSYNC: addr, buf_index, fsync flags other than DATASYNC.
    let bad = [
        Sqe {
            addr: 1,
            ..fsync(20)
        },
        Sqe {
            buf_index: 1,
            ..fsync(21)
        },
        Sqe {
            op_flags: 2,
            ..fsync(22)
        },
        Sqe {
            ioprio: 1,
            ..fsync(23)
        },
    ];
    let cqes = rig.run(id, &view, &bad);
    for (s, c) in bad.iter().zip(&cqes) {
        assert_eq!(*c, (s.user_data, -libc::EINVAL), "{s:?}");
    }
    // Every refused SQE became an error NOP with nothing of the guest's
    // but user_data and link flags.
    for pos in 0..view.sq_tail() {
        let h = Sqe::from_bytes(&view.host_sqe(pos));
        if pos >= 64 {
            break;
        }
        assert_eq!(h.opcode, IORING_OP_NOP, "host SQE {pos}: {h:?}");
        assert_eq!(
            Sqe {
                user_data: 0,
                len: 0,
                ..h
            },
            Sqe {
                op_flags: IORING_NOP_INJECT_RESULT,
                ..nop(0)
            },
            "host SQE {pos}"
        );
    }
    assert!(rig.lands_at(id, &view, 0, BUF_A));
}

/// Issue 14: buffers are named by (index, offset): an index without a
/// buffer, an empty entry of a cloned table, or a range past the buffer's
/// end (or wrapping) is -EFAULT.
#[test]
fn hostile_bad_buffer_index_or_range_is_efault() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (a, _) = rig.create(8);
    let (id, view) = rig.create(16);
    rig.two_buffers(a);
    // id's table: [empty, B] (clone of a's entry 1 to index 1).
    assert_eq!(rig.clone_from(id, a, 0, 1, 1, 1).value, 2);
    let host_buf = vec![0u8; 4096];
    let read =
        |addr: u64, len: u32, idx: u16, ud: u64| fixed(IORING_OP_READ_FIXED, addr, len, 0, idx, ud);
    let b_host = rig.mem.get_host_address(GuestAddress(BUF_B)).unwrap() as u64;
    let bad = [
        read(0, 512, 0, 1),                      // the empty entry
        read(0, 512, 2, 2),                      // past the table
        read(0, 512, u16::MAX, 3),               // far past it
        read(BUF_LEN - 256, 512, 1, 4),          // past the buffer's end
        read(BUF_LEN, 1, 1, 5),                  // starts at its end
        read(u64::MAX - 100, 512, 1, 6),         // wraps
        read(host_buf.as_ptr() as u64, 1, 1, 7), // a host address
        read(b_host, 512, 1, 8),                 // the buffer's own host address
        Sqe {
            opcode: IORING_OP_WRITE_FIXED,
            ..read(BUF_LEN - 1, 2, 1, 9)
        },
    ];
    let cqes = rig.run(id, &view, &bad);
    for (s, c) in bad.iter().zip(&cqes) {
        assert_eq!(*c, (s.user_data, -libc::EFAULT), "{s:?}");
    }
    // The last byte of the buffer is fine; so is the whole buffer.
    let ok = [read(BUF_LEN - 1, 1, 1, 10), read(0, BUF_LEN as u32, 1, 11)];
    assert_eq!(rig.run(id, &view, &ok), vec![(10, 1), (11, BUF_LEN as i32)]);
    assert!(rig.lands_at(id, &view, 1, BUF_B));
}

/// Issue 14: `fd` is a backend index; anything else is -EBADF. Only a
/// READ_FIXED may name the teardown sentinel (16), and it waits.
#[test]
fn hostile_bad_fd_is_ebadf() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(32);
    rig.two_buffers(id);
    let mut bad = Vec::new();
    for (i, fd) in [2, 15, 17, -1, i32::MIN, i32::MAX, libc::AT_FDCWD]
        .into_iter()
        .enumerate()
    {
        let ud = 10 * i as u64;
        bad.push(Sqe {
            fd,
            ..fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, ud)
        });
        bad.push(Sqe {
            fd,
            ..fixed(IORING_OP_WRITE_FIXED, 0, 512, 0, 0, ud + 1)
        });
        bad.push(Sqe {
            fd,
            ..fsync(ud + 2)
        });
    }
    // The sentinel: not for writes or FSYNC.
    let fd = SENTINEL_FILE as i32;
    bad.push(Sqe {
        fd,
        ..fixed(IORING_OP_WRITE_FIXED, 0, 512, 0, 0, 100)
    });
    bad.push(Sqe { fd, ..fsync(101) });
    let cqes = rig.run(id, &view, &bad);
    for (s, c) in bad.iter().zip(&cqes) {
        assert_eq!(*c, (s.user_data, -libc::EBADF), "{s:?}");
    }
    // A NOP with an fd is -EINVAL (the spec's NOP rule).
    let n = Sqe { fd: 1, ..nop(102) };
    assert_eq!(rig.run(id, &view, &[n]), vec![(102, -libc::EINVAL)]);
    // A READ_FIXED of the sentinel is accepted and waits.
    view.push(&stuck_read(103));
    rig.exec.doorbell(id).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(view.is_empty(), "a read of the sentinel completed");
    assert!(rig.lands_at(id, &view, 0, BUF_A));
}

/// Issue 14: opcodes and SQE flags outside the allow-list are -EACCES:
/// READ with a raw address, READV, OPENAT; ASYNC, BUFFER_SELECT,
/// CQE_SKIP_SUCCESS, and a missing FIXED_FILE (the fd would be a host fd).
#[test]
fn hostile_opcodes_and_flags_outside_the_list_are_eacces() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(32);
    rig.two_buffers(id);
    let host_buf = vec![0u8; 4096];
    let path = c"/etc/passwd";
    let mut bad = vec![
        // IORING_OP_READ with a raw (host) address.
        Sqe {
            opcode: IORING_OP_READ,
            addr: host_buf.as_ptr() as u64,
            len: 4096,
            ..sqe(IORING_OP_READ, 1)
        },
        Sqe {
            opcode: IORING_OP_READV,
            addr: host_buf.as_ptr() as u64,
            len: 1,
            ..sqe(IORING_OP_READV, 2)
        },
        // OPENAT, with and without FIXED_FILE.
        Sqe {
            fd: libc::AT_FDCWD,
            addr: path.as_ptr() as u64,
            ..sqe(IORING_OP_OPENAT, 3)
        },
        Sqe {
            fd: libc::AT_FDCWD,
            flags: 0,
            addr: path.as_ptr() as u64,
            ..sqe(IORING_OP_OPENAT, 4)
        },
    ];
    for op in [6u8, 18, 19, 22, 23, 40, 46, 52, 200, 255] {
        bad.push(sqe(op, 1000 + u64::from(op)));
    }
    // READ_FIXED without FIXED_FILE: fd 0 would be the host's stdin.
    bad.push(Sqe {
        flags: 0,
        ..fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 5)
    });
    bad.push(Sqe { flags: 0, ..nop(6) });
    for (i, f) in [
        IOSQE_ASYNC,
        IOSQE_CQE_SKIP_SUCCESS,
        IOSQE_BUFFER_SELECT,
        1 << 7,
    ]
    .into_iter()
    .enumerate()
    {
        bad.push(Sqe {
            flags: IOSQE_FIXED_FILE | f,
            ..nop(7 + i as u64)
        });
        bad.push(Sqe {
            flags: IOSQE_FIXED_FILE | f,
            ..fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 17 + i as u64)
        });
    }
    let cqes = rig.run(id, &view, &bad);
    for (s, c) in bad.iter().zip(&cqes) {
        assert_eq!(*c, (s.user_data, -libc::EACCES), "{s:?}");
    }
    // CQE_SKIP_SUCCESS would have broken flow control (no CQE): every SQE
    // got its CQE above, and nothing else is pending.
    assert!(view.is_empty());
    // The allowed flags are allowed.
    let ok = [
        Sqe {
            flags: IOSQE_FIXED_FILE | IOSQE_IO_DRAIN,
            ..nop(30)
        },
        Sqe {
            flags: IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK,
            ..nop(31)
        },
        nop(32),
    ];
    assert_eq!(rig.run(id, &view, &ok), vec![(30, 0), (31, 0), (32, 0)]);
    assert!(rig.lands_at(id, &view, 0, BUF_A));
}

/// Issue 14: a real-time I/O priority (and any ioprio) is -EINVAL; the
/// host SQE has ioprio 0.
#[test]
fn hostile_rt_ioprio_is_einval() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    rig.two_buffers(id);
    let first = view.sq_tail();
    let bad = [
        Sqe {
            ioprio: IOPRIO_RT,
            ..fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 1)
        },
        Sqe {
            ioprio: IOPRIO_RT | 7,
            ..fixed(IORING_OP_WRITE_FIXED, 0, 512, 0, 0, 2)
        },
        Sqe {
            ioprio: IOPRIO_RT,
            ..fsync(3)
        },
    ];
    assert_eq!(
        rig.run(id, &view, &bad),
        vec![(1, -libc::EINVAL), (2, -libc::EINVAL), (3, -libc::EINVAL)]
    );
    for i in 0..3 {
        assert_eq!(Sqe::from_bytes(&view.host_sqe(first + i)).ioprio, 0);
    }
    assert!(rig.lands_at(id, &view, 0, BUF_A));
}

/// Issue 14: a refused member of a link chain keeps its link flag (its
/// error NOP does), so the rest of the chain fails -ECANCELED, as the
/// kernel would have done; SQEs after the chain run.
#[test]
fn hostile_refused_link_member_cancels_the_rest_of_the_chain() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    rig.two_buffers(id);
    let link = |s: Sqe| Sqe {
        flags: s.flags | IOSQE_IO_LINK,
        ..s
    };
    // Completions of different chains may come in any order: sorted.
    let mut cqes = rig.run(
        id,
        &view,
        &[
            link(fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 1)),
            link(fixed(IORING_OP_READ_FIXED, 0, 512, 0, 9, 2)), // no buffer 9
            link(nop(3)),
            fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 4),
            nop(5),
        ],
    );
    cqes.sort();
    assert_eq!(
        cqes,
        vec![
            (1, 512),
            (2, -libc::EFAULT),
            (3, -libc::ECANCELED),
            (4, -libc::ECANCELED),
            (5, 0)
        ]
    );
    // A refused head (an opcode outside the list) does the same; a
    // hardlink member too.
    let mut cqes = rig.run(
        id,
        &view,
        &[
            link(sqe(IORING_OP_OPENAT, 6)),
            nop(7),
            Sqe {
                flags: IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK,
                ioprio: IOPRIO_RT,
                ..nop(8)
            },
            nop(9),
        ],
    );
    cqes.sort();
    assert_eq!(
        cqes,
        vec![
            (6, -libc::EACCES),
            (7, -libc::ECANCELED),
            (8, -libc::EINVAL),
            (9, 0)
        ]
    );
    assert!(rig.lands_at(id, &view, 0, BUF_A));
}

/// Issue 14: a guest that never reaps its CQ cannot make the host kernel
/// overflow it (an overflowing CQ costs host kernel memory per CQE): the
/// device consumes at most `cq_entries` SQEs until CQEs are consumed,
/// `sq_head` in the slot stops there, the host ring's overflow counter
/// stays 0, and once the guest reaps, every CQE is there (none lost) and
/// the rest are consumed.
#[test]
fn hostile_cq_never_reaped_consumes_at_most_the_cq() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    let (sq, cq) = (view.l.sq_entries, view.l.cq_entries);
    assert_eq!((sq, cq), (8, 16));
    let mut pushed = 0u64;
    for _ in 0..1000 {
        while view.room() > 0 {
            view.push(&nop(pushed));
            pushed += 1;
        }
        let pass = rig.exec.doorbell(id).unwrap();
        assert!(view.sq_head() <= cq, "sq_head {}", view.sq_head());
        if pass.consumed == 0 {
            assert_eq!((view.sq_head(), pass.held_back), (cq, sq), "{pass:?}");
        }
    }
    assert_eq!(view.sq_head(), cq);
    assert_eq!(pushed, u64::from(cq + sq));
    assert_eq!(view.ready(), cq);
    assert_eq!(rig.cq_overflow(id, &view), (0, false));
    // Reap half: that many more are consumed at the next pass.
    let got = view.wait(cq as usize / 2);
    assert_eq!(
        got,
        (0..u64::from(cq / 2)).map(|u| (u, 0)).collect::<Vec<_>>()
    );
    let pass = rig.exec.doorbell(id).unwrap();
    assert_eq!(pass.consumed, cq / 2);
    assert_eq!(view.sq_head(), cq + cq / 2);
    // Reap everything, in order, nothing lost, nothing twice.
    let mut all = got;
    while all.len() < pushed as usize {
        let n = view.ready() as usize;
        all.extend(view.wait(n));
        while view.room() > 0 && pushed < 200 {
            view.push(&nop(pushed));
            pushed += 1;
        }
        rig.exec.doorbell(id).unwrap();
        if view.is_empty() && all.len() < pushed as usize {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(all, (0..pushed).map(|u| (u, 0)).collect::<Vec<_>>());
    assert_eq!(rig.cq_overflow(id, &view), (0, false));
}

/// SUnreclaim of /proc/meminfo, in KiB.
fn sunreclaim_kib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("SUnreclaim:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("SUnreclaim in /proc/meminfo")
}

/// Issue 14: the host's unreclaimable slab does not grow with a guest
/// that keeps its SQ full of NOPs past a full CQ: 200,000 doorbells, each
/// after filling every free SQ entry, grow SUnreclaim by less than
/// `BOUND_KIB` (4 MiB). Without flow control (v1, or submit.rs without
/// its `room` bound) every doorbell submits 8 NOPs whose CQEs the kernel
/// keeps in its overflow list: 1.6 million of them grew SUnreclaim by
/// about 62 MiB on Linux 6.18, and set `IORING_SQ_CQ_OVERFLOW`, while the
/// kernel's `cq_overflow` counter (CQEs dropped) stayed 0; here it grows by
/// tens of KiB at most and neither is set.
#[test]
fn hostile_full_cq_does_not_grow_host_kernel_memory() {
    const DOORBELLS: u32 = 200_000;
    const BOUND_KIB: u64 = 4 << 10;
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    let cq = view.l.cq_entries;
    let mut pushed = 0u64;
    // Fill the CQ first.
    while view.sq_head() < cq {
        while view.room() > 0 {
            view.push(&nop(pushed));
            pushed += 1;
        }
        rig.exec.doorbell(id).unwrap();
    }
    let before = sunreclaim_kib();
    for _ in 0..DOORBELLS {
        while view.room() > 0 {
            view.push(&nop(pushed));
            pushed += 1;
        }
        rig.exec.doorbell(id).unwrap();
    }
    let after = sunreclaim_kib();
    eprintln!("SUnreclaim {before} kB -> {after} kB over {DOORBELLS} doorbells past a full CQ");
    assert!(
        after.saturating_sub(before) < BOUND_KIB,
        "SUnreclaim grew by {} KiB",
        after - before
    );
    assert_eq!(rig.cq_overflow(id, &view), (0, false));
    assert_eq!(view.sq_head(), cq);
    assert_eq!(pushed, u64::from(cq + view.l.sq_entries));
    // Still serving once the guest reaps.
    assert_eq!(view.wait(cq as usize).len(), cq as usize);
    rig.exec.doorbell(id).unwrap();
    assert_eq!(view.wait(8).len(), 8);
}

#[test]
fn clone_to_a_second_ring_and_io_through_it() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (a, _va) = rig.create(8);
    let (b, vb) = rig.create(8);
    assert_ne!(a, b);
    rig.two_buffers(a);
    let r = rig.clone_from(b, a, 0, 0, 0, 0);
    assert_eq!((r.used, r.status, r.value), (16, 0, 2), "{r:?}");
    // The source goes away; the clone keeps working.
    assert_eq!(rig.destroy(a).status, 0);
    let cqes = rig.run(b, &vb, &[fixed(IORING_OP_READ_FIXED, 100, 1000, 3, 1, 1)]);
    assert_eq!(cqes, vec![(1, 1000)]);
    let mut got = vec![0u8; 1000];
    rig.mem
        .read_slice(&mut got, GuestAddress(BUF_B + 100))
        .unwrap();
    assert_eq!(got, pattern(FILE_LEN, 7)[3..1003]);
    assert!(rig.lands_at(b, &vb, 0, BUF_A));
}

#[test]
fn table_publish_clone_unpublish_and_replace() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (a, _) = rig.create(4);
    let (b, vb) = rig.create(4);
    let (c, vc) = rig.create(4);
    rig.two_buffers(a);
    let p = rig.simple(cmd::PUBLISH_BUFFERS, a, 0, 0, 0, 0, 0);
    assert_eq!(p.status, 0);
    let t = p.id;
    assert_eq!(rig.exec.table_count(), 1);
    // The publisher goes away; the table entry lives on.
    assert_eq!(rig.destroy(a).status, 0);
    // Clone one buffer from the table at offset 1 of b: [empty, B].
    let r = rig.clone_from(b, t, PVU_CLONE_SRC_TABLE, 1, 1, 1);
    assert_eq!((r.status, r.value), (0, 2), "{r:?}");
    // Unpublish: b's clone still works.
    let u = rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, t, 0, 0);
    assert_eq!(u.status, 0);
    assert_eq!(rig.exec.table_count(), 0);
    assert!(rig.lands_at(b, &vb, 1, BUF_B));
    let empty = fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 2);
    assert_eq!(rig.run(b, &vb, &[empty]), vec![(2, -libc::EFAULT)]);
    // Unpublished ids are gone.
    let r = rig.clone_from(c, t, PVU_CLONE_SRC_TABLE, 0, 0, 0);
    assert_eq!(r.status, -libc::ENOENT);
    // c = clone of b: [empty, B].
    let r = rig.clone_from(c, b, 0, 0, 0, 0);
    assert_eq!((r.status, r.value, r.id), (0, 2, 0));
    assert!(rig.lands_at(c, &vc, 1, BUF_B));
    // Without REPLACE, a non-empty destination is busy.
    assert_eq!(rig.clone_from(c, b, 0, 0, 0, 0).status, -libc::EBUSY);
    // b re-registers (C, D); c replaces its whole table: [C, D].
    let r = rig.simple(cmd::UNREGISTER_BUFFERS, b, 0, 0, 0, 0, 0);
    assert_eq!((r.status, r.id), (0, 1));
    rig.register_at(b, &[BUF_C, BUF_D]);
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 0, 2);
    assert_eq!((r.status, r.value), (0, 2), "{r:?}");
    assert_eq!(r.id, 1, "c was idle");
    assert!(rig.lands_at(c, &vc, 0, BUF_C));
    assert!(rig.lands_at(c, &vc, 1, BUF_D));
    // Replace covering the table to its end, from offset 1: [C, C].
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 1, 1);
    assert_eq!((r.status, r.value), (0, 2), "{r:?}");
    assert!(rig.lands_at(c, &vc, 1, BUF_C));
    // A replace that would leave entries after the range is refused.
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 0, 1);
    assert_eq!(r.status, -libc::EINVAL);
    // Clone from itself with replace.
    let r = rig.clone_from(c, c, PVU_CLONE_DST_REPLACE, 1, 0, 2);
    assert_eq!(r.status, -libc::EOVERFLOW);
    // With a request in flight, a replacing clone is not idle.
    vc.push(&stuck_read(9));
    rig.exec.doorbell(c).unwrap();
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 0, 2);
    assert_eq!((r.status, r.id), (0, 0), "{r:?}");
    assert_eq!(rig.destroy(c).status, 0);
}

/// UNREGISTER_BUFFERS answers `id` = 1 when no request of the ring was in
/// flight, 0 when one was (a READ_FIXED of the sentinel, which waits until
/// the ring is destroyed).
#[test]
fn unregister_says_whether_the_ring_was_idle() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    rig.two_buffers(id);
    assert!(rig.lands_at(id, &view, 0, BUF_A));
    let r = rig.simple(cmd::UNREGISTER_BUFFERS, id, 0, 0, 0, 0, 0);
    assert_eq!((r.used, r.status, r.id), (16, 0, 1));
    rig.two_buffers(id);
    view.push(&stuck_read(1));
    rig.exec.doorbell(id).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(view.is_empty());
    let r = rig.simple(cmd::UNREGISTER_BUFFERS, id, 0, 0, 0, 0, 0);
    assert_eq!((r.used, r.status, r.id), (16, 0, 0));
    // Completed requests waiting in the CQ are not in flight.
    let (id2, view2) = rig.create(8);
    rig.two_buffers(id2);
    view2.push(&fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 2));
    rig.exec.doorbell(id2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while view2.is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = rig.simple(cmd::UNREGISTER_BUFFERS, id2, 0, 0, 0, 0, 0);
    assert_eq!((r.status, r.id), (0, 1));
    assert_eq!(rig.destroy(id).status, 0);
}

#[test]
fn every_error_code_of_the_spec() {
    let _s = serial();
    let mut rig = Rig::with_rings(2, ALL_FEATURES);
    let e = |r: Resp| {
        assert_eq!(r.used, 16, "{r:?}");
        r.status
    };
    // CREATE_RING: bad entries, flags, reserved; no slot.
    assert_eq!(e(rig.create_flags(0, 0)), -libc::EINVAL);
    assert_eq!(e(rig.create_flags(4097, 0)), -libc::EINVAL);
    assert_eq!(e(rig.create_flags(8, 2)), -libc::EINVAL);
    assert_eq!(e(rig.create_flags(8, 1 << 31)), -libc::EINVAL);
    let mut bad = encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]);
    bad[28] = 1;
    assert_eq!(e(rig.call(&bad)), -libc::EINVAL);
    let (a, _) = rig.create(8);
    let (b, _) = rig.create(8);
    assert_eq!(e(rig.create_flags(8, 0)), -libc::ENOSPC);
    // Unknown command; flags on a command without flags.
    assert_eq!(e(rig.simple(99, 0, 0, 0, 0, 0, 0)), -libc::EOPNOTSUPP);
    assert_eq!(e(rig.simple(0, 0, 0, 0, 0, 0, 0)), -libc::EOPNOTSUPP);
    for c in [
        cmd::DESTROY_RING,
        cmd::UNREGISTER_BUFFERS,
        cmd::PUBLISH_BUFFERS,
        cmd::UNPUBLISH_BUFFERS,
    ] {
        assert_eq!(e(rig.simple(c, a, 1, 0, 0, 0, 0)), -libc::EINVAL, "{c}");
    }
    // DESTROY_RING (-ETIMEDOUT and -EBUSY: see the quarantine test).
    assert_eq!(e(rig.destroy(7)), -libc::ENOENT);
    assert_eq!(e(rig.destroy(u32::MAX)), -libc::ENOENT);
    // REGISTER_BUFFERS.
    let ok = Extent {
        gpa: BUF_A,
        len: 4096,
    };
    assert_eq!(e(rig.register(9, &[ok])), -libc::ENOENT);
    assert_eq!(
        e(rig.register(a, &[Extent { gpa: 0, len: 0 }])),
        -libc::EINVAL
    );
    assert_eq!(
        e(rig.register(
            a,
            &[Extent {
                gpa: 0,
                len: (1 << 30) + 1
            }]
        )),
        -libc::EINVAL
    );
    assert_eq!(
        e(rig.simple(cmd::REGISTER_BUFFERS, a, 0, 0, 0, 0, 0)),
        -libc::EINVAL
    );
    assert_eq!(
        e(rig.simple(cmd::REGISTER_BUFFERS, a, 0, 1025, 0, 0, 0)),
        -libc::EINVAL
    );
    // Two extents that overlap (issue 14: each would pin the pages again).
    for (x, y) in [
        ((BUF_A, 8192), (BUF_A + 4096, 4096)),
        ((BUF_A, 4096), (BUF_A, 4096)),
        ((BUF_A + 4095, 2), (BUF_A, 4096)),
    ] {
        let ext = [Extent { gpa: x.0, len: x.1 }, Extent { gpa: y.0, len: y.1 }];
        assert_eq!(e(rig.register(a, &ext)), -libc::EINVAL, "{ext:?}");
    }
    let many = vec![ok; 1024];
    assert_eq!(e(rig.register(a, &many)), -libc::EINVAL);
    // Touching is not overlapping.
    let touching = [
        ok,
        Extent {
            gpa: BUF_A + 4096,
            len: 4096,
        },
    ];
    // Across the two regions, beyond RAM, wrapping.
    for gpa in [REGION2 - 4096, 2 * REGION2 - 4096, 1 << 40, u64::MAX - 4096] {
        let ext = Extent { gpa, len: 8192 };
        assert_eq!(e(rig.register(a, &[ok, ext])), -libc::EFAULT, "{gpa:#x}");
    }
    assert_eq!(rig.registered_ok(a, &touching), 2);
    assert_eq!(e(rig.register(a, &[ok])), -libc::EBUSY);
    // UNREGISTER_BUFFERS.
    assert_eq!(
        e(rig.simple(cmd::UNREGISTER_BUFFERS, 9, 0, 0, 0, 0, 0)),
        -libc::ENOENT
    );
    assert_eq!(
        e(rig.simple(cmd::UNREGISTER_BUFFERS, b, 0, 0, 0, 0, 0)),
        -libc::ENXIO
    );
    // CLONE_BUFFERS.
    assert_eq!(e(rig.clone_from(9, a, 0, 0, 0, 0)), -libc::ENOENT);
    assert_eq!(e(rig.clone_from(b, 9, 0, 0, 0, 0)), -libc::ENOENT);
    assert_eq!(
        e(rig.clone_from(b, 9, PVU_CLONE_SRC_TABLE, 0, 0, 0)),
        -libc::ENOENT
    );
    assert_eq!(e(rig.clone_from(b, a, 4, 0, 0, 0)), -libc::EINVAL);
    assert_eq!(e(rig.clone_from(b, a, 0, 1, 0, 0)), -libc::EINVAL);
    assert_eq!(e(rig.clone_from(b, a, 0, 0, 0, 3)), -libc::EINVAL);
    assert_eq!(e(rig.clone_from(b, a, 0, 0, 1023, 2)), -libc::EINVAL);
    assert_eq!(e(rig.clone_from(b, a, 0, 0, u32::MAX, 1)), -libc::EOVERFLOW);
    assert_eq!(e(rig.clone_from(b, a, 0, 2, 0, 1)), -libc::EOVERFLOW);
    assert_eq!(
        e(rig.clone_from(a, b, PVU_CLONE_DST_REPLACE, 0, 0, 0)),
        -libc::ENXIO
    );
    assert_eq!(rig.clone_from(b, a, 0, 0, 0, 0).status, 0);
    assert_eq!(e(rig.clone_from(b, a, 0, 0, 0, 0)), -libc::EBUSY);
    // PUBLISH / UNPUBLISH.
    assert_eq!(
        e(rig.simple(cmd::PUBLISH_BUFFERS, 9, 0, 0, 0, 0, 0)),
        -libc::ENOENT
    );
    assert_eq!(
        e(rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, 0, 0, 0)),
        -libc::ENOENT
    );
    assert_eq!(
        e(rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, u32::MAX, 0, 0)),
        -libc::ENOENT
    );
    assert_eq!(e(rig.simple(cmd::UNREGISTER_BUFFERS, b, 0, 0, 0, 0, 0)), 0);
    assert_eq!(
        e(rig.simple(cmd::PUBLISH_BUFFERS, b, 0, 0, 0, 0, 0)),
        -libc::ENXIO
    );
    for i in 0..MAX_TABLE {
        let r = rig.simple(cmd::PUBLISH_BUFFERS, a, 0, 0, 0, 0, 0);
        assert_eq!((r.status, r.id), (0, i));
    }
    assert_eq!(
        e(rig.simple(cmd::PUBLISH_BUFFERS, a, 0, 0, 0, 0, 0)),
        -libc::ENOSPC
    );
    rig.assert_no_host_address();
    drop(rig);

    // Features the driver did not accept.
    let mut rig = Rig::new(1 << 32);
    assert_eq!(e(rig.create_flags(8, PVU_RING_POLLED)), -libc::EOPNOTSUPP);
    let (a, _) = rig.create(8);
    rig.two_buffers(a);
    assert_eq!(
        e(rig.simple(cmd::PUBLISH_BUFFERS, a, 0, 0, 0, 0, 0)),
        -libc::EOPNOTSUPP
    );
    assert_eq!(
        e(rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, 0, 0, 0)),
        -libc::EOPNOTSUPP
    );
    assert_eq!(
        e(rig.clone_from(a, 0, PVU_CLONE_SRC_TABLE, 0, 0, 0)),
        -libc::EOPNOTSUPP
    );
    drop(rig);

    // -EBUSY: max_polled polled rings already live.
    let mut rig = Rig::new(ALL_FEATURES);
    rig.create_polled(8);
    assert_eq!(e(rig.create_flags(8, PVU_RING_POLLED)), -libc::EBUSY);
    // -ENOSPC: registered bytes past max_registered (see the budget test).
    let mut rig = Rig::with(Opts {
        max_registered: Some(4096),
        ..Opts::default()
    });
    let (a, _) = rig.create(8);
    assert_eq!(
        e(rig.register(
            a,
            &[Extent {
                gpa: BUF_A,
                len: 8192
            }]
        )),
        -libc::ENOSPC
    );
}

impl Rig {
    /// REGISTER_BUFFERS that must succeed; returns the buffer count.
    fn registered_ok(&mut self, ring: u32, ext: &[Extent]) -> u64 {
        let r = self.register(ring, ext);
        assert_eq!((r.used, r.status), (16, 0), "{r:?}");
        r.value
    }
}

/// Issue 14: REGISTER_BUFFERS is charged to the VM's budget of registered
/// bytes (`max_registered`): past it, -ENOSPC; clones and table entries
/// cost nothing; the bytes come back when no table holds the buffers any
/// more (UNREGISTER of the last holder, DESTROY answered).
#[test]
fn hostile_registered_bytes_past_the_budget_are_enospc() {
    let _s = serial();
    let mut rig = Rig::with(Opts {
        max_registered: Some(2 * BUF_LEN),
        ..Opts::default()
    });
    let (a, _) = rig.create(8);
    let (b, vb) = rig.create(8);
    let (c, _) = rig.create(8);
    assert_eq!(rig.exec.registered_bytes(), 0);
    let one = |gpa| Extent { gpa, len: BUF_LEN };
    // One registration past the budget is refused whole.
    let r = rig.register(a, &[one(BUF_A), one(BUF_B), one(BUF_C)]);
    assert_eq!((r.used, r.status), (16, -libc::ENOSPC));
    assert_eq!(rig.exec.registered_bytes(), 0);
    rig.two_buffers(a);
    assert_eq!(rig.exec.registered_bytes(), 2 * BUF_LEN);
    // Even a byte more is refused, on any ring.
    let r = rig.register(b, &[Extent { gpa: BUF_C, len: 1 }]);
    assert_eq!(r.status, -libc::ENOSPC);
    // Clones and table entries cost nothing.
    assert_eq!(rig.clone_from(b, a, 0, 0, 0, 0).status, 0);
    let p = rig.simple(cmd::PUBLISH_BUFFERS, a, 0, 0, 0, 0, 0);
    assert_eq!(p.status, 0);
    assert_eq!(rig.exec.registered_bytes(), 2 * BUF_LEN);
    // Still held by b's clone and the table entry after a lets go.
    assert_eq!(
        rig.simple(cmd::UNREGISTER_BUFFERS, a, 0, 0, 0, 0, 0).status,
        0
    );
    assert_eq!(rig.exec.registered_bytes(), 2 * BUF_LEN);
    assert_eq!(
        rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, p.id, 0, 0)
            .status,
        0
    );
    assert_eq!(rig.exec.registered_bytes(), 2 * BUF_LEN);
    assert!(rig.lands_at(b, &vb, 1, BUF_B));
    assert_eq!(rig.register(c, &[one(BUF_C)]).status, -libc::ENOSPC);
    // b's DESTROY releases them once answered.
    assert_eq!(rig.destroy(b).status, 0);
    assert_eq!(rig.exec.registered_bytes(), 0);
    // Then the whole budget is there again; UNREGISTER releases it.
    rig.register_at(c, &[BUF_C, BUF_D]);
    assert_eq!(rig.exec.registered_bytes(), 2 * BUF_LEN);
    assert_eq!(
        rig.simple(cmd::UNREGISTER_BUFFERS, c, 0, 0, 0, 0, 0).status,
        0
    );
    assert_eq!(rig.exec.registered_bytes(), 0);
    // DESTROY with buffers: released when answered.
    rig.register_at(c, &[BUF_C]);
    assert_eq!(rig.destroy(c).status, 0);
    assert_eq!(rig.exec.registered_bytes(), 0);
}

/// Issue 14: polled rings each cost a host thread: at most `max_polled`
/// at once (-EBUSY beyond), and the slot is given back by DESTROY.
#[test]
fn hostile_too_many_polled_rings_are_ebusy() {
    let _s = serial();
    let mut rig = Rig::with(Opts {
        max_polled: 2,
        ..Opts::default()
    });
    let (p1, _) = rig.create_polled(8);
    let (_p2, _) = rig.create_polled(8);
    assert_eq!(rig.exec.polled_count(), 2);
    for _ in 0..3 {
        let r = rig.create_flags(8, PVU_RING_POLLED);
        assert_eq!((r.used, r.status), (16, -libc::EBUSY));
    }
    // A new thread names itself once it runs: give them a moment.
    let pollers = wait_threads(|n| n.starts_with("pvu-poll"), |t| t.len() == 2);
    assert_eq!(pollers.len(), 2, "{pollers:?}");
    // Doorbell rings are still fine.
    let (d, vd) = rig.create(8);
    assert_eq!(rig.run(d, &vd, &[nop(1)]), vec![(1, 0)]);
    assert_eq!(rig.destroy(p1).status, 0);
    assert_eq!(rig.exec.polled_count(), 1);
    let (p3, _) = rig.create_polled(8);
    assert_eq!(p3, p1);
    drop(rig);
    assert!(
        gone(|n| n.starts_with("pvu-poll")),
        "a poller outlived its ring"
    );
}

/// Issue 14: `--uring polled=0` withdraws the feature: not offered, 0 in
/// the configuration space, and a POLLED create is -EOPNOTSUPP (and
/// -EBUSY even if a driver claimed the feature anyway).
#[test]
fn hostile_polled_rings_without_max_polled_are_refused() {
    let _s = serial();
    let mut rig = Rig::with(Opts {
        max_polled: 0,
        ..Opts::default()
    });
    let features = rig.dev.features();
    assert_eq!(features & (1 << PVU_F_POLLED), 0);
    assert_eq!(features, (1 << 32) | (1 << PVU_F_TABLE));
    let mut c = [0xffu8; 4];
    rig.dev.read_config(cfg::MAX_POLLED as u64, &mut c);
    assert_eq!(u32::from_le_bytes(c), 0);
    rig.exec = rig.dev.executor(rig.mem.clone(), features);
    let r = rig.create_flags(8, PVU_RING_POLLED);
    assert_eq!((r.used, r.status), (16, -libc::EOPNOTSUPP));
    rig.exec = rig.dev.executor(rig.mem.clone(), ALL_FEATURES);
    let r = rig.create_flags(8, PVU_RING_POLLED);
    assert_eq!((r.used, r.status), (16, -libc::EBUSY));
    assert_eq!(rig.exec.polled_count(), 0);
    let (id, view) = rig.create(8);
    assert_eq!(rig.run(id, &view, &[nop(1)]), vec![(1, 0)]);
}

#[test]
fn malformed_chains_get_no_response_and_the_device_keeps_serving() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let req = encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]);
    let rd = |len| Desc {
        addr: REQ,
        len,
        write_only: false,
    };
    let wr = |addr, len| Desc {
        addr,
        len,
        write_only: true,
    };
    for descs in [
        vec![rd(32)],
        vec![wr(RESP, 200)],
        vec![wr(RESP, 200), rd(32)],
        vec![rd(32), wr(RESP, 100), rd(32)],
        vec![rd(16), wr(RESP, 200)],
        vec![rd(32), wr(RESP, CREATE_LEN - 1)],
        vec![rd(32), wr(RESP, 8)],
        vec![rd(32), wr(1 << 40, 200)],
        vec![rd(32), wr(2 * REGION2 - 100, 200)],
        vec![
            Desc {
                addr: u64::MAX - 8,
                len: 32,
                write_only: false,
            },
            wr(RESP, 200),
        ],
        vec![rd(0), wr(RESP, 200)],
    ] {
        let r = rig.call_descs(&req, &descs);
        assert_eq!(r.used, 0, "{descs:?}");
        let mut b = [0u8; 16];
        rig.mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
        assert_eq!(b, [0xee; 16], "a response was written for {descs:?}");
    }
    assert_eq!(rig.exec.ring_count(), 0);
    let (id, _) = rig.create(8);
    let ext = [
        Extent {
            gpa: BUF_A,
            len: 4096,
        },
        Extent {
            gpa: BUF_C,
            len: 4096,
        },
        Extent {
            gpa: BUF_D,
            len: 4096,
        },
    ];
    // Extents announced but missing.
    let r = rig.call_descs(
        &encode_request(cmd::REGISTER_BUFFERS, id, 0, 3, 0, 0, 0, &ext),
        &[rd(64), wr(RESP, 100)],
    );
    assert_eq!(r.used, 0);
    // A response of less than 16 bytes.
    let r = rig.call_descs(
        &encode_request(cmd::REGISTER_BUFFERS, id, 0, 3, 0, 0, 0, &ext),
        &[rd(80), wr(RESP, 15)],
    );
    assert_eq!(r.used, 0);
    // A response split over several descriptors, request over several.
    let r = rig.call_descs(
        &encode_request(cmd::REGISTER_BUFFERS, id, 0, 3, 0, 0, 0, &ext),
        &[
            Desc {
                addr: REQ,
                len: 40,
                write_only: false,
            },
            Desc {
                addr: REQ + 40,
                len: 40,
                write_only: false,
            },
            wr(RESP, 10),
            wr(RESP + 10, 6),
        ],
    );
    assert_eq!((r.used, r.status, r.value), (16, 0, 3));
    // CREATE's 48 bytes over three descriptors.
    let r = rig.call_descs(
        &req,
        &[rd(32), wr(RESP, 16), wr(RESP + 16, 20), wr(RESP + 36, 12)],
    );
    assert_eq!((r.used, r.status), (CREATE_LEN, 0));
    // Still serving.
    assert_eq!(rig.exec.ring_count(), 2);
    let (_, _) = rig.create(8);
}

/// Issue 14: a control chain of more than `max_chain` (16) descriptors is
/// completed with used length 0 and no response, whatever it asks; 16 is
/// fine; the device keeps serving. Also through the virtqueue, with a
/// chain as long as the queue.
#[test]
fn hostile_long_control_chains_get_no_response() {
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let req = encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]);
    let chain = |readable: u32, writable: u32| -> Vec<Desc> {
        let mut d: Vec<Desc> = (0..readable)
            .map(|i| Desc {
                addr: REQ + u64::from(i) * 32 / u64::from(readable),
                len: 32 / readable,
                write_only: false,
            })
            .collect();
        d.extend((0..writable).map(|i| Desc {
            addr: RESP + 48 * u64::from(i),
            len: 48,
            write_only: true,
        }));
        d
    };
    for (r, w) in [(1, 16), (16, 1), (8, 9), (2, 40)] {
        let r = rig.call_descs(&req, &chain(r, w));
        assert_eq!(r.used, 0);
        assert_eq!(rig.exec.ring_count(), 0);
    }
    let r = rig.call_descs(&req, &chain(1, 15));
    assert_eq!((r.used, r.status), (CREATE_LEN, 0));
    let r = rig.call_descs(&req, &chain(8, 8));
    assert_eq!((r.used, r.status), (CREATE_LEN, 0));
    assert_eq!(rig.exec.ring_count(), 2);
    // Through the queue: a 64-descriptor chain, then a good one.
    let mock = MockSplitQueue::create(&rig.mem, GuestAddress(0x10_0000 - 0x1_0000), QUEUE_SIZE);
    let mut queue = mock.create_queue().unwrap();
    rig.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    let n = QUEUE_SIZE;
    let long: Vec<RawDescriptor> = (0..n)
        .map(|i| {
            let (addr, len, mut flags) = if i == 0 {
                (REQ, 32, 0)
            } else {
                (RESP + 16 * u64::from(i), 16, VRING_DESC_F_WRITE as u16)
            };
            if i + 1 < n {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, i + 1))
        })
        .collect();
    mock.add_desc_chains(&long, 0).unwrap();
    process_queue(&mut queue, &mut rig.exec, &rig.mem);
    let used = mock.used_addr().0;
    let used_idx: u16 = rig.mem.read_obj(GuestAddress(used + 2)).unwrap();
    assert_eq!(used_idx, 1);
    let len: u32 = rig.mem.read_obj(GuestAddress(used + 8)).unwrap();
    assert_eq!(len, 0);
    assert_eq!(rig.exec.ring_count(), 2);
    let good = [
        RawDescriptor::from(SplitDescriptor::new(REQ, 32, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDescriptor::new(
            RESP,
            RESP_CAP,
            VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    mock.add_desc_chains(&good, 0).unwrap();
    process_queue(&mut queue, &mut rig.exec, &rig.mem);
    let len: u32 = rig.mem.read_obj(GuestAddress(used + 4 + 8 + 4)).unwrap();
    assert_eq!(len, CREATE_LEN);
    assert_eq!(rig.exec.ring_count(), 3);
}

/// Issue 14: a waiting DESTROY keeps only the chain head and the leading
/// response descriptors that hold its 16 bytes, however many the chain
/// had; the answer is written there and nowhere else.
#[test]
fn hostile_destroy_waiter_keeps_only_16_response_bytes() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    for (lens, kept) in [
        (vec![16u32, 100, 100], 1usize),
        (vec![4, 4, 4, 4, 4, 4, 4], 4),
        (vec![10, 10, 10], 2),
        (vec![1000; 15], 1),
    ] {
        let (id, view) = rig.create(8);
        rig.two_buffers(id);
        view.push(&stuck_read(1));
        rig.exec.doorbell(id).unwrap();
        let req = encode_request(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0, &[]);
        rig.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        rig.mem
            .write_slice(&[0xeeu8; RESP_CAP as usize], GuestAddress(RESP))
            .unwrap();
        let mut descs = vec![Desc {
            addr: REQ,
            len: 32,
            write_only: false,
        }];
        let mut at = RESP;
        for &len in &lens {
            descs.push(Desc {
                addr: at,
                len,
                write_only: true,
            });
            at += u64::from(len) + 64;
        }
        assert_eq!(process_chain(&mut rig.exec, &rig.mem, 7, &descs), None);
        match &rig.exec.rings[id as usize] {
            Slot::Retiring { waiters, .. } => {
                assert_eq!(waiters.len(), 1);
                assert_eq!(waiters[0].reply.head, 7);
                assert_eq!(waiters[0].reply.descs, descs[1..1 + kept], "{lens:?}");
            }
            _ => panic!("ring {id} is not retiring"),
        }
        assert_eq!(rig.wait_answer(7), 16);
        // 16 bytes of answer (status 0) over the kept descriptors; the
        // rest untouched.
        let mut answer = Vec::new();
        for d in &descs[1..] {
            let mut b = vec![0u8; d.len as usize];
            rig.mem.read_slice(&mut b, GuestAddress(d.addr)).unwrap();
            answer.extend(b);
        }
        assert_eq!(answer[..16], [0u8; 16], "{lens:?}");
        assert!(answer[16..].iter().all(|&x| x == 0xee), "{lens:?}");
    }
    assert_eq!(rig.exec.ring_count(), 0);
}

/// Issue 14: no response carries a host address: every response of a
/// session that creates, registers, clones, publishes, unregisters and
/// destroys (and of refused commands) is searched for any 8 bytes that
/// read as an address of guest RAM as the VMM maps it or of the ring area.
#[test]
fn hostile_responses_never_contain_a_host_address() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (a, _) = rig.create(8);
    let (b, vb) = rig.create(4096);
    rig.two_buffers(a);
    let r = rig.register(
        b,
        &[Extent {
            gpa: BUF_C,
            len: BUF_LEN,
        }],
    );
    assert_eq!(r.status, 0);
    rig.clone_from(b, a, PVU_CLONE_DST_REPLACE, 0, 0, 2);
    let t = rig.simple(cmd::PUBLISH_BUFFERS, b, 0, 0, 0, 0, 0).id;
    let (c, _) = rig.create(8);
    rig.clone_from(c, t, PVU_CLONE_SRC_TABLE, 0, 0, 0);
    rig.clone_from(c, t, PVU_CLONE_SRC_TABLE | PVU_CLONE_DST_REPLACE, 1, 1, 1);
    rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, t, 0, 0);
    rig.simple(cmd::UNREGISTER_BUFFERS, a, 0, 0, 0, 0, 0);
    rig.register(
        a,
        &[Extent {
            gpa: 1 << 40,
            len: 1,
        }],
    );
    rig.register(a, &[Extent { gpa: BUF_A, len: 0 }]);
    rig.clone_from(a, b, 0, 5, 5, 1000);
    vb.push(&stuck_read(1));
    rig.exec.doorbell(b).unwrap();
    rig.simple(cmd::UNREGISTER_BUFFERS, b, 0, 0, 0, 0, 0);
    for id in [a, b, c] {
        assert_eq!(rig.destroy(id).status, 0);
    }
    rig.simple(cmd::DESTROY_RING, a, 0, 0, 0, 0, 0);
    assert!(rig.responses.len() >= 15);
    rig.assert_no_host_address();
    // The ranges are real: a response would have shown them (v1's
    // REGISTER answered with the buffers' host addresses).
    let h = rig.mem.get_host_address(GuestAddress(BUF_A)).unwrap() as u64;
    assert!(rig
        .host_ranges()
        .iter()
        .any(|&(lo, hi)| (lo..hi).contains(&h)));
}

/// The capability sets of the threads of this process whose name
/// satisfies `pred`: (tid, comm, CapEff, Cpus_allowed_list).
fn threads_named(pred: impl Fn(&str) -> bool) -> Vec<(String, String, u64, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim_end().to_string();
        if !pred(&comm) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(u64::MAX);
        out.push((
            task.file_name().to_string_lossy().into_owned(),
            comm,
            cap_eff,
            field("Cpus_allowed_list:"),
        ));
    }
    out
}

/// Waits up to 2 s for `threads_named(pred)` to satisfy `done`.
fn wait_threads(
    pred: impl Fn(&str) -> bool + Copy,
    done: impl Fn(&[(String, String, u64, String)]) -> bool,
) -> Vec<(String, String, u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let t = threads_named(pred);
        if done(&t) || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the threads named by `pred` are gone within 2 s. Pollers are
/// not joined (a thread that submitted io_uring requests waits in its exit
/// for them, and a hung backend must not stall the worker): they leave by
/// themselves once they see their ring stopped.
fn gone(pred: impl Fn(&str) -> bool + Copy) -> bool {
    wait_threads(pred, |t| t.is_empty()).is_empty()
}

/// A polled ring's SQEs complete without any doorbell; after the idle
/// time without work its poller sets `PVU_SQ_NEED_WAKEUP` and sleeps, an
/// SQE pushed then waits, and a doorbell (the MMIO page) wakes it, which
/// clears the flag. A read that never completes does not keep DESTROY
/// from being answered.
#[test]
fn polled_ring_completes_without_doorbells_and_sleeps_when_idle() {
    let _s = serial();
    const IDLE: Duration = Duration::from_millis(200);
    let mut rig = Rig::with(Opts {
        poll_idle: Some(IDLE),
        ..Opts::default()
    });
    let (id, view) = rig.create_polled(8);
    assert_eq!(rig.exec.polled_count(), 1);
    assert_eq!(
        rig.exec.doorbell_fd(id),
        None,
        "the worker serves no poller"
    );
    rig.two_buffers(id);
    for i in 0..20u64 {
        view.push(&fixed(IORING_OP_READ_FIXED, 0, 4096, 4096 * i, 0, i));
        assert_eq!(view.wait(1), vec![(i, 4096)]);
    }
    // More than the CQ holds without reaping: the poller waits for
    // cq_head to move, then carries on by itself.
    let mut pushed = 100u64;
    let full = 20 + view.l.cq_entries;
    let deadline = Instant::now() + Duration::from_secs(5);
    while view.sq_head() != full {
        assert!(view.sq_head() < full && Instant::now() < deadline);
        while view.room() > 0 {
            view.push(&nop(pushed));
            pushed += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    while view.room() > 0 {
        view.push(&nop(pushed));
        pushed += 1;
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(view.sq_head(), full, "the poller passed a full CQ");
    let got = view.wait(view.l.cq_entries as usize);
    assert_eq!(got[0], (100, 0));
    let rest = view.wait((pushed - 100) as usize - view.l.cq_entries as usize);
    assert_eq!(rest.last(), Some(&(pushed - 1, 0)));
    // Idle: the flag goes up.
    let deadline = Instant::now() + IDLE * 10;
    while view.sq_flags() & PVU_SQ_NEED_WAKEUP == 0 {
        assert!(Instant::now() < deadline, "the poller never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    view.push(&nop(500));
    std::thread::sleep(Duration::from_millis(50));
    assert!(view.is_empty(), "a sleeping poller took an SQE");
    // exec.doorbell() is the worker's path; a polled ring's doorbell is
    // its eventfd, which the guest's MMIO write signals.
    assert_eq!(rig.exec.doorbell(id), None);
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    assert_eq!(view.wait(1), vec![(500, 0)]);
    assert_eq!(view.sq_flags() & PVU_SQ_NEED_WAKEUP, 0);
    // A read that never completes; DESTROY is still answered, and the
    // poller thread is gone.
    view.push(&stuck_read(9));
    std::thread::sleep(Duration::from_millis(20));
    assert!(view.is_empty());
    let name = format!("pvu-poll{id}");
    assert_eq!(wait_threads(|n| n == name, |t| t.len() == 1).len(), 1);
    let head = view.sq_head();
    assert_eq!(rig.destroy(id).status, 0);
    // Nothing is submitted for a destroyed ring, by its poller or a
    // doorbell.
    view.push(&nop(10));
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(view.sq_head(), head);
    assert!(gone(|n| n == name), "the poller outlived its ring");
    assert_eq!(rig.exec.polled_count(), 0);
}

/// The real idle time (1 s, like SQPOLL's default `sq_thread_idle`).
#[test]
fn polled_ring_sleeps_after_the_default_idle_time() {
    let _s = serial();
    assert_eq!(poller::POLL_IDLE, Duration::from_secs(1));
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create_polled(8);
    view.push(&nop(1));
    assert_eq!(view.wait(1), vec![(1, 0)]);
    let t0 = Instant::now();
    while view.sq_flags() & PVU_SQ_NEED_WAKEUP == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    view.push(&nop(2));
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    assert_eq!(view.wait(1), vec![(2, 0)]);
}

/// `sq_cpu` binds every submitting thread: a polled ring's poller
/// (`pvu-poll<id>`) and the worker.
#[test]
fn sq_cpu_binds_the_poller_thread() {
    let _s = serial();
    let cpu = crate::affinity::current_thread_cpus().unwrap()[0] as u32;
    let mut rig = Rig::with(Opts {
        sq_cpu: Some(cpu),
        ..Opts::default()
    });
    let (id, view) = rig.create_polled(8);
    let name = format!("pvu-poll{id}");
    let pollers = wait_threads(
        |n| n.starts_with("pvu-poll"),
        |t| !t.is_empty() && t.iter().all(|x| x.3 == cpu.to_string()),
    );
    assert_eq!(pollers.len(), 1, "{pollers:?}");
    assert_eq!(pollers[0].1, name);
    assert_eq!(pollers[0].3, cpu.to_string(), "{pollers:?}");
    view.push(&nop(1));
    assert_eq!(view.wait(1), vec![(1, 0)]);
    // A doorbell ring gets no thread.
    let (plain, pv) = rig.create(8);
    assert_eq!(rig.run(plain, &pv, &[nop(2)]), vec![(2, 0)]);
    assert_eq!(threads_named(|n| n.starts_with("pvu-poll")).len(), 1);
    for id in [id, plain] {
        assert_eq!(rig.destroy(id).status, 0);
    }
}

/// Poller threads are named `pvu-poll<id>`; Linux keeps 15 bytes of a
/// thread name, which must hold every ring id (`max_rings` goes to 256).
#[test]
fn poller_thread_names_carry_the_whole_ring_id() {
    let _s = serial();
    let mut rig = Rig::with(Opts {
        rings: 128,
        ..Opts::default()
    });
    for i in 0..100 {
        assert_eq!(rig.create(1).0, i);
    }
    let (id, _view) = rig.create_polled(8);
    assert_eq!(id, 100);
    let t = wait_threads(|n| n.starts_with("pvu-poll"), |t| !t.is_empty());
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].1, "pvu-poll100", "{t:?}");
}

fn activate(rig: &mut Rig) {
    use virtio_queue::mock::MockSplitQueue;
    let mock = MockSplitQueue::create(&rig.mem, GuestAddress(0x10_0000 - 0x1_0000), QUEUE_SIZE);
    let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let interrupt = VirtioInterrupt::new(Arc::new(AtomicU32::new(0)), irq);
    let mem = rig.mem.clone();
    rig.dev
        .activate(
            mem,
            ALL_FEATURES,
            vec![mock.create_queue().unwrap()],
            vec![EventFd::new(libc::EFD_NONBLOCK).unwrap()],
            interrupt,
        )
        .unwrap();
}

/// With `sq_cpu`, the worker that serves doorbells runs there too.
#[test]
fn sq_cpu_binds_the_worker() {
    let _s = serial();
    let cpu = crate::affinity::current_thread_cpus().unwrap()[0];
    let mut rig = Rig::with(Opts {
        sq_cpu: Some(cpu as u32),
        ..Opts::default()
    });
    activate(&mut rig);
    // The worker pins itself first thing: give it a moment.
    let workers = wait_threads(
        |n| n == "pv-uring",
        |w| !w.is_empty() && w.iter().all(|x| x.3 == cpu.to_string()),
    );
    assert_eq!(workers.len(), 1, "workers: {workers:?}");
    assert_eq!(workers[0].3, cpu.to_string(), "worker {workers:?}");
    rig.dev.reset();
    assert!(
        threads_named(|n| n == "pv-uring").is_empty(),
        "reset joins the worker"
    );
}

/// Issue 14: the worker and every poller drop `CAP_SYS_NICE` (io_uring
/// requests take the submitting thread's credentials), read from each
/// thread's /proc/self/task/<tid>/status; the test thread keeps what it
/// had.
#[test]
fn hostile_submitting_threads_have_no_cap_sys_nice() {
    use crate::privileges::{thread_has_capability, CAP_SYS_NICE};
    let _s = serial();
    let bit = 1u64 << CAP_SYS_NICE;
    let mine = thread_has_capability(CAP_SYS_NICE).unwrap();
    if !mine {
        eprintln!("this test runs without CAP_SYS_NICE: the check below is vacuous");
    }
    let mut rig = Rig::new(ALL_FEATURES);
    activate(&mut rig);
    let (id, view) = rig.create_polled(8);
    view.push(&nop(1));
    assert_eq!(view.wait(1), vec![(1, 0)]);
    let poller = format!("pvu-poll{id}");
    let threads = wait_threads(
        |n| n == "pv-uring" || n.starts_with("pvu-poll"),
        |t| t.len() == 2 && t.iter().all(|x| x.2 & bit == 0),
    );
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert!(threads.iter().any(|t| t.1 == "pv-uring"));
    assert!(threads.iter().any(|t| t.1 == poller));
    for t in &threads {
        assert_eq!(t.2 & bit, 0, "{} has CAP_SYS_NICE: {threads:?}", t.1);
    }
    assert_eq!(thread_has_capability(CAP_SYS_NICE).unwrap(), mine);
    rig.dev.reset();
}

/// Linux lets a request have a real-time I/O class with `CAP_SYS_NICE`
/// *or* `CAP_SYS_ADMIN` (`ioprio_check_cap`, block/ioprio.c): the
/// submitting threads drop both (the worker keeps `CAP_SYS_ADMIN` only
/// where `kernel.io_uring_disabled` makes ring creation need it).
#[test]
fn submitting_threads_cannot_use_a_real_time_io_class() {
    const CAP_SYS_ADMIN: u32 = 21;
    use crate::privileges::CAP_SYS_NICE;
    let _s = serial();
    let mask = (1u64 << CAP_SYS_NICE) | (1u64 << CAP_SYS_ADMIN);
    let mut rig = Rig::new(ALL_FEATURES);
    activate(&mut rig);
    let (_id, view) = rig.create_polled(8);
    view.push(&nop(1));
    assert_eq!(view.wait(1), vec![(1, 0)]);
    let threads = wait_threads(
        |n| n == "pv-uring" || n.starts_with("pvu-poll"),
        |t| t.len() == 2 && t.iter().all(|x| x.2 & mask == 0),
    );
    assert_eq!(threads.len(), 2, "{threads:?}");
    for t in &threads {
        assert_eq!(
            t.2 & mask,
            0,
            "{} may use an RT I/O class: {threads:?}",
            t.1
        );
    }
    rig.dev.reset();
}

#[test]
fn doorbells_for_dead_or_unknown_rings_are_ignored() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    view.push(&nop(1));
    assert_eq!(rig.destroy(id).status, 0);
    assert_eq!(rig.exec.doorbell(id), None);
    assert_eq!(rig.exec.doorbell(u32::MAX), None);
    assert_eq!(rig.exec.doorbell(1000), None);
    let mut page = rig.dev.doorbell_page();
    page.write(0, &id.to_le_bytes());
    page.write(0, &u32::MAX.to_le_bytes());
    page.write(4, &0u32.to_le_bytes());
    page.write(0, &[1, 2]);
    let mut b = [0xffu8; 4];
    page.read(0, &mut b);
    assert_eq!(b, [0; 4]);
    // Slots are reused after destroy; the slot starts clean (the last
    // ring's tail and SQE are gone).
    let (again, view) = rig.create(8);
    assert_eq!(again, id);
    assert_eq!((view.sq_tail(), view.sq_head(), view.cq_tail()), (0, 0, 0));
    assert_eq!(view.host_sqe(0), [0u8; SQE_LEN]);
    rig.two_buffers(again);
    let cqes = rig.run(
        again,
        &view,
        &[fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 42)],
    );
    assert_eq!(cqes, vec![(42, 512)]);
}

/// A guest `sq_tail` more than `sq_entries` ahead is ignored for the pass;
/// a `cq_head` outside the host's range is ignored; a sane one serves.
#[test]
fn hostile_slot_words_are_not_trusted() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    view.word(slot::SQ_TAIL).store(9, Ordering::Release);
    let pass = rig.exec.doorbell(id).unwrap();
    assert_eq!(pass.consumed, 0);
    view.word(slot::SQ_TAIL).store(u32::MAX, Ordering::Release);
    assert_eq!(rig.exec.doorbell(id).unwrap().consumed, 0);
    assert_eq!(view.sq_head(), 0);
    view.word(slot::SQ_TAIL).store(0, Ordering::Release);
    // A cq_head past the CQ tail is not carried to the host ring (it
    // would open room the CQ does not have).
    view.word(slot::CQ_HEAD).store(1000, Ordering::Release);
    view.push(&nop(1));
    assert_eq!(rig.exec.doorbell(id).unwrap().consumed, 1);
    assert_eq!(view.cq_word(view.l.cq_head).load(Ordering::Acquire), 0);
    view.word(slot::CQ_HEAD).store(0, Ordering::Release);
    assert_eq!(view.wait(1), vec![(1, 0)]);
    rig.exec.doorbell(id).unwrap();
    assert_eq!(view.cq_word(view.l.cq_head).load(Ordering::Acquire), 1);
    // The device's words: the guest writing them changes nothing.
    view.word(slot::SQ_HEAD).store(5, Ordering::Release);
    view.push_unchecked(&nop(2).to_bytes());
    let pass = rig.exec.doorbell(id).unwrap();
    assert_eq!(pass.consumed, 1);
    assert_eq!(view.wait(1), vec![(2, 0)]);
    assert_eq!(view.sq_head(), 2);
}

fn vm_pin_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// VmPin once the teardowns that earlier tests in this process left to the
/// host kernel (hidden table rings are closed without waiting) have
/// finished, or VmPin has stopped moving.
fn settled_vm_pin() -> u64 {
    let settle = Instant::now() + Duration::from_secs(10);
    let mut start = vm_pin_kib();
    let mut stable_since = Instant::now();
    while start != 0 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(20));
        let now = vm_pin_kib();
        if now != start {
            start = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    start
}

impl Rig {
    /// Sends DESTROY_RING for `id` as chain `head` (answer at
    /// `RESP + 16 * head`), which the device answers later.
    fn destroy_deferred(&mut self, id: u32, head: u16) {
        let req = encode_request(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0, &[]);
        let resp = RESP + 16 * u64::from(head);
        assert!(resp + 16 <= RESP + u64::from(RESP_CAP));
        self.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        self.mem
            .write_slice(&[0xffu8; 16], GuestAddress(resp))
            .unwrap();
        let descs = [
            Desc {
                addr: REQ,
                len: req.len() as u32,
                write_only: false,
            },
            Desc {
                addr: resp,
                len: 16,
                write_only: true,
            },
        ];
        assert_eq!(process_chain(&mut self.exec, &self.mem, head, &descs), None);
    }

    /// Collects the answers of [`Rig::destroy_deferred`] chains, each of
    /// which must be a success; returns how many.
    fn reap_destroys(&mut self) -> usize {
        let answered = self.exec.reap();
        for &(head, used) in &answered {
            assert_eq!(used, 16);
            let status: u32 = self
                .mem
                .read_obj(GuestAddress(RESP + 16 * u64::from(head)))
                .unwrap();
            assert_eq!(status, 0, "DESTROY {head} failed");
        }
        answered.len()
    }
}

/// Create/register/clone/publish/destroy cycles release everything: VmPin
/// and the registered-bytes budget return to their starting values.
/// DESTROYs are answered once the host kernel has freed the ring, tens of
/// milliseconds later, so the cycles keep up to 64 of them in flight, as a
/// guest with many rings may. `RV_PVU_CYCLES` sets the count (default
/// 10,000).
#[test]
fn create_destroy_cycles_release_pinned_memory() {
    let _s = serial();
    let cycles: u32 = std::env::var("RV_PVU_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    const SLOTS: u32 = 64;
    let mut rig = Rig::with_rings(SLOTS, ALL_FEATURES);
    let start = settled_vm_pin();
    let t0 = Instant::now();
    let mut peak = start;
    let (mut pending, mut head) = (0usize, 0u16);
    let mut next_head = || {
        head = (head + 1) % 1024;
        head
    };
    for i in 0..cycles {
        // Two free slots for this cycle; the others may still be in the
        // kernel's hands.
        pending -= rig.reap_destroys();
        while SLOTS as usize - rig.exec.ring_count() - rig.exec.retiring_count() < 2 {
            std::thread::sleep(Duration::from_micros(500));
            pending -= rig.reap_destroys();
        }
        let (a, _) = rig.create(8);
        rig.two_buffers(a);
        if i % 2 == 0 {
            let (b, _) = rig.create(4);
            assert_eq!(rig.clone_from(b, a, 0, 0, 0, 0).status, 0);
            let p = rig.simple(cmd::PUBLISH_BUFFERS, b, 0, 0, 0, 0, 0);
            assert_eq!(p.status, 0);
            assert_eq!(
                rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, p.id, 0, 0)
                    .status,
                0
            );
            rig.destroy_deferred(b, next_head());
            pending += 1;
        }
        if i == 0 {
            peak = vm_pin_kib();
        }
        rig.destroy_deferred(a, next_head());
        pending += 1;
        // Keep the response log small.
        rig.responses.clear();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending > 0 {
        assert!(Instant::now() < deadline, "{pending} DESTROYs unanswered");
        std::thread::sleep(Duration::from_millis(1));
        pending -= rig.reap_destroys();
    }
    let took = t0.elapsed();
    assert_eq!(rig.exec.ring_count(), 0);
    assert_eq!(rig.exec.retiring_count(), 0);
    assert_eq!(rig.exec.table_count(), 0);
    assert_eq!(rig.exec.registered_bytes(), 0);
    // Every guest ring is gone; hidden table rings are closed without
    // waiting, so their clones may take a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = vm_pin_kib();
    while now != start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = vm_pin_kib();
    }
    eprintln!(
        "{cycles} cycles in {took:?}; VmPin {start} kB at start, {peak} kB with a ring, {now} kB after"
    );
    assert!(peak > start, "registration did not show in VmPin");
    assert_eq!(now, start, "pinned memory not released");
}

/// DESTROY is answered only once the host kernel has freed the ring: a
/// request that would never complete (a read of the sentinel pipe, which
/// nobody writes) is cancelled by the kernel's teardown, and the ring's
/// pinned buffers are already released when the answer comes.
#[test]
fn destroy_answers_once_the_kernel_freed_the_ring() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let start = settled_vm_pin();
    let (id, view) = rig.create(8);
    rig.two_buffers(id);
    let before = pattern(BUF_LEN as usize, 3);
    rig.mem.write_slice(&before, GuestAddress(BUF_A)).unwrap();
    view.push(&stuck_read(1));
    let cqes = rig.run(id, &view, &[fixed(IORING_OP_READ_FIXED, 0, 4096, 0, 1, 2)]);
    assert_eq!(cqes, vec![(2, 4096)]);
    assert!(view.is_empty(), "the sentinel read completed");
    assert_eq!(vm_pin_kib(), start + 2 * BUF_LEN / 1024);
    let t0 = Instant::now();
    let r = rig.destroy(id);
    assert_eq!((r.used, r.status), (16, 0));
    assert_eq!(
        vm_pin_kib(),
        start,
        "the ring's buffers were still pinned when DESTROY answered"
    );
    assert_eq!(rig.exec.retiring_count(), 0);
    assert_eq!(rig.exec.registered_bytes(), 0);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let mut after = vec![0u8; BUF_LEN as usize];
    rig.mem.read_slice(&mut after, GuestAddress(BUF_A)).unwrap();
    assert!(after == before, "the cancelled read wrote its buffer");
    // Commands on the destroyed ring, a second DESTROY included.
    assert_eq!(rig.destroy(id).status, -libc::ENOENT);
    let (again, view) = rig.create(8);
    assert_eq!(again, id);
    assert!(view.is_empty());
}

/// Keeps the calling thread for `ms` in a kernel wait that only a fatal
/// signal ends: the parent side of a vfork (CLONE_VM | CLONE_VFORK) whose
/// child sleeps. io_uring's task-work notifications do not wake it, so a
/// ring this thread submitted to cannot finish its teardown meanwhile: the
/// kernel waits for every submitter to run its exit task work. This stands
/// for a request that the kernel cannot cancel (a read at the disk).
fn hold_teardowns_for(ms: u64) {
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        let ms = arg as usize as u64;
        let ts = libc::timespec {
            tv_sec: (ms / 1000) as libc::time_t,
            tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
        };
        // SAFETY: a plain sleep; the child touches no other memory.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        0
    }
    let mut stack = vec![0u8; 64 << 10];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs `child` on its own stack, which outlives it
    // (CLONE_VFORK: clone returns once the child has exited), and touches
    // nothing of ours.
    let pid = unsafe {
        libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            ms as usize as *mut libc::c_void,
        )
    };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: reaps our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    drop(stack);
}

/// While the host kernel holds on to a destroyed ring, DESTROY is answered
/// `-ETIMEDOUT` after the idle timeout and the slot stays quarantined (no
/// commands, no doorbell, not reused); DESTROYs sent again wait again (at
/// most 64: the 65th is `-EBUSY`) and succeed once the kernel has let go,
/// after which the slot is reused.
#[test]
fn destroy_times_out_and_quarantines_while_the_kernel_holds_the_ring() {
    const HOLD_MS: u64 = 2000;
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    rig.exec.set_idle_timeout(Duration::from_millis(300));
    let (id, view) = rig.create(8);
    rig.two_buffers(id);
    let fd = rig.exec.host_fd(id).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        // SAFETY: io_uring_enter on a live ring with nothing queued: submits
        // nothing, but makes this thread one of the ring's submitters.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                1u32,
                0u32,
                0u32,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        tx.send(rc).unwrap();
        hold_teardowns_for(HOLD_MS);
    });
    assert_eq!(rx.recv().unwrap(), 0);
    let t0 = Instant::now();
    let r = rig.destroy(id);
    let waited = t0.elapsed();
    assert_eq!(r.status, -libc::ETIMEDOUT);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(HOLD_MS),
        "{waited:?}"
    );
    // Quarantined: gone for commands and doorbells, not reused; its
    // registered bytes stay charged.
    assert_eq!((rig.exec.ring_count(), rig.exec.retiring_count()), (0, 1));
    assert_eq!(rig.exec.registered_bytes(), 2 * BUF_LEN);
    let ext = [Extent {
        gpa: BUF_A,
        len: 4096,
    }];
    assert_eq!(rig.register(id, &ext).status, -libc::ENOENT);
    view.push(&fixed(IORING_OP_READ_FIXED, 0, 4096, 0, 0, 9));
    assert_eq!(rig.exec.doorbell(id), None);
    let others: Vec<u32> = (0..3).map(|_| rig.create(8).0).collect();
    assert!(!others.contains(&id), "{others:?}");
    assert_eq!(rig.create_flags(8, 0).status, -libc::ENOSPC);
    // Again, with time enough: 64 DESTROYs wait, the 65th is -EBUSY, and
    // all 64 are answered once the kernel let go.
    rig.exec.set_idle_timeout(Duration::from_secs(20));
    for head in 1..=64 {
        rig.destroy_deferred(id, head);
    }
    let r = rig.destroy(id);
    assert_eq!((r.used, r.status), (16, -libc::EBUSY));
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered < 64 {
        assert!(Instant::now() < deadline, "{answered} of 64 answered");
        std::thread::sleep(Duration::from_millis(1));
        answered += rig.reap_destroys();
    }
    assert!(t0.elapsed() >= Duration::from_millis(HOLD_MS - 100));
    assert_eq!(rig.exec.retiring_count(), 0);
    assert_eq!(rig.exec.registered_bytes(), 0);
    holder.join().unwrap();
    // The doorbell rung while quarantined submitted nothing.
    assert!(view.is_empty());
    assert_eq!(view.sq_head(), 0);
    assert_eq!(rig.destroy(others[0]).status, 0);
    let (again, _) = rig.create(8);
    assert!(again == id || again == others[0]);
}

/// A device reset (dropping the executor) retires every ring and returns
/// only once the kernel has freed them: their buffers are unpinned, requests
/// stuck in flight included, and the pollers are joined.
#[test]
fn reset_returns_once_the_kernel_freed_every_ring() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let start = settled_vm_pin();
    for _ in 0..3 {
        let (id, view) = rig.create(8);
        rig.two_buffers(id);
        view.push(&stuck_read(1));
        rig.exec.doorbell(id);
    }
    let (p, pv) = rig.create_polled(8);
    rig.register_at(p, &[BUF_C]);
    pv.push(&stuck_read(2));
    assert_eq!(vm_pin_kib(), start + 7 * BUF_LEN / 1024);
    drop(rig);
    assert_eq!(vm_pin_kib(), start);
    assert!(
        gone(|n| n.starts_with("pvu-poll")),
        "a poller outlived its ring"
    );
}

#[test]
fn device_model_config_features_and_shm() {
    let _s = serial();
    let mut rig = Rig::with(Opts {
        rings: 3,
        max_polled: 2,
        ..Opts::default()
    });
    let d = &mut rig.dev;
    assert_eq!(d.device_type(), 0x7276);
    assert_eq!(d.features(), ALL_FEATURES);
    assert_eq!(d.queue_max_sizes(), &[64]);
    d.set_guest_ram(2 * REGION2);
    let mut c = [0u8; CONFIG_LEN];
    assert_eq!(CONFIG_LEN, 0x50);
    d.read_config(0, &mut c);
    let w = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
    let q = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap());
    assert_eq!(
        (w(0), w(4), w(8), w(0xc), w(0x10), w(0x14), w(0x18), w(0x1c)),
        (3, 4096, 1024, 2, 10, SQ_SLOT_SIZE, 64, 2)
    );
    assert_eq!(SQ_SLOT_SIZE, 0x8_0000);
    assert_eq!(q(0x20), 0xcf00_0000);
    let layout = AreaLayout { max_rings: 3 };
    // 3 x 512 KiB rounded up to 2 MiB.
    assert_eq!(w(0x28), 0x20_0000);
    assert_eq!(u64::from(w(0x28)), layout.cq_area_offset());
    assert_eq!((w(0x2c), w(0x30), w(0x34)), (CQ_SLOT_SIZE, 2, 16));
    assert_eq!(CQ_SLOT_SIZE, 0x4_0000);
    assert_eq!(q(0x38), 2 * REGION2);
    // Reads past the end and unaligned reads.
    let mut tail = [0xffu8; 8];
    d.read_config(0x4c, &mut tail);
    assert_eq!(tail[..4], c[0x4c..0x50]);
    // No arena: its fields are zero.
    assert_eq!((q(0x40), w(0x48)), (0, 0));
    assert_eq!(d.shm_regions(), vec![(0x4000_0000, layout.len())]);
    assert_eq!(layout.len(), 4 * MIB);
    let base = d.ring_area().host_addr();
    assert_eq!(
        d.guest_mappings(),
        [
            GuestMapping {
                gpa: 0x4000_0000,
                host_addr: base,
                len: 2 * MIB,
                read_only: false,
            },
            GuestMapping {
                gpa: 0x4000_0000 + 2 * MIB,
                host_addr: base + 2 * MIB,
                len: 2 * MIB,
                read_only: true,
            },
        ]
    );
    // A configured budget is shown as configured.
    let file = temp_file(b"x");
    let opts = Opts {
        max_registered: Some(5 * MIB),
        ..Opts::default()
    };
    let mut d2 = PvUring::new(&config(&opts, &file, &file), Arc::new(NoHooks)).unwrap();
    d2.set_guest_ram(64 * MIB);
    let mut m = [0u8; 8];
    d2.read_config(cfg::MAX_REGISTERED as u64, &mut m);
    assert_eq!(u64::from_le_bytes(m), 5 * MIB);
    // Invalid configurations.
    for bad in [
        Opts {
            rings: 0,
            ..Opts::default()
        },
        Opts {
            rings: MAX_RINGS + 1,
            ..Opts::default()
        },
        Opts {
            rings: 2,
            max_polled: 3,
            ..Opts::default()
        },
    ] {
        assert!(PvUring::new(&config(&bad, &file, &file), Arc::new(NoHooks)).is_err());
    }
    let mut many = config(&opts, &file, &file);
    many.backends = vec![many.backends[0].clone(); MAX_BACKENDS + 1];
    assert!(matches!(
        PvUring::new(&many, Arc::new(NoHooks)),
        Err(PvUringError::Backends(17))
    ));
}

/// The whole device: activation through the transport's interface, a
/// control chain on the virtqueue served by the worker thread, a doorbell
/// through the MMIO page, completions on the CQ; reset releases the rings.
#[test]
fn worker_serves_the_control_queue_and_doorbells() {
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::mock::MockSplitQueue;
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let mock = MockSplitQueue::create(&rig.mem, GuestAddress(0x10_0000 - 0x1_0000), QUEUE_SIZE);
    let queue = mock.create_queue().unwrap();
    let (avail, used) = (mock.avail_addr().0, mock.used_addr().0);
    let desc_table = mock.desc_table_addr().0;
    let queue_event = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let status = Arc::new(AtomicU32::new(0));
    let interrupt = VirtioInterrupt::new(status.clone(), irq.clone());
    let mem = rig.mem.clone();
    rig.dev
        .activate(
            mem.clone(),
            ALL_FEATURES,
            vec![queue],
            vec![queue_event.try_clone().unwrap()],
            interrupt,
        )
        .unwrap();
    let mut used_seen = 0u16;
    let mut send = |req: &[u8], n: u16| -> (u32, Vec<u8>) {
        mem.write_slice(req, GuestAddress(REQ)).unwrap();
        let descs = [
            (REQ, req.len() as u32, VRING_DESC_F_NEXT as u16, 2 * n + 1),
            (RESP, RESP_CAP, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let at = GuestAddress(desc_table + 16 * (2 * u64::from(n) + i as u64));
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&b, at).unwrap();
        }
        let idx: u16 = mem.read_obj(GuestAddress(avail + 2)).unwrap();
        mem.write_obj(
            2 * n,
            GuestAddress(avail + 4 + 2 * u64::from(idx % QUEUE_SIZE)),
        )
        .unwrap();
        mem.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
            .unwrap();
        queue_event.write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let uidx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
            if uidx != used_seen {
                break;
            }
            assert!(Instant::now() < deadline, "no used entry");
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = used + 4 + 8 * u64::from(used_seen % QUEUE_SIZE);
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
        used_seen = used_seen.wrapping_add(1);
        let mut b = vec![0u8; len as usize];
        mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
        (len, b)
    };
    let (len, resp) = send(&encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]), 0);
    assert_eq!(len, CREATE_LEN);
    assert_eq!(&resp[0..4], &[0; 4]);
    let id = u32::from_le_bytes(resp[4..8].try_into().unwrap());
    let view = rig.view(id, &resp[16..]);
    assert!(irq.read().unwrap() >= 1);
    assert_eq!(status.load(Ordering::SeqCst) & 1, 1);
    let ext = [Extent {
        gpa: BUF_A,
        len: BUF_LEN,
    }];
    let (len, resp) = send(
        &encode_request(cmd::REGISTER_BUFFERS, id, 0, 1, 0, 0, 0, &ext),
        1,
    );
    assert_eq!(len, 16);
    assert_eq!(u64::from_le_bytes(resp[8..16].try_into().unwrap()), 1);
    // A garbage chain, then the doorbell through the MMIO page.
    let (len, _) = send(&[0u8; 8], 2);
    assert_eq!(len, 0);
    view.push(&fixed(IORING_OP_READ_FIXED, 0, 4096, 8192, 0, 77));
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    assert_eq!(view.wait(1), vec![(77, 4096)]);
    let mut got = vec![0u8; 4096];
    mem.read_slice(&mut got, GuestAddress(BUF_A)).unwrap();
    assert_eq!(got, pattern(FILE_LEN, 7)[8192..8192 + 4096]);
    // A second ring, destroyed with a read in flight that never completes:
    // the worker answers once the kernel has freed the ring (it watches the
    // sentinel) and interrupts the guest.
    let (len, resp) = send(&encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]), 3);
    assert_eq!(len, CREATE_LEN);
    let id2 = u32::from_le_bytes(resp[4..8].try_into().unwrap());
    let view2 = rig.view(id2, &resp[16..]);
    let (len, _) = send(
        &encode_request(cmd::REGISTER_BUFFERS, id2, 0, 1, 0, 0, 0, &ext),
        4,
    );
    assert_eq!(len, 16);
    view2.push(&stuck_read(1));
    rig.dev.doorbell_page().write(0, &id2.to_le_bytes());
    std::thread::sleep(Duration::from_millis(20));
    assert!(view2.is_empty());
    assert_eq!(view2.sq_head(), 1, "the worker did not take the SQE");
    let _ = irq.read();
    let (len, resp) = send(
        &encode_request(cmd::DESTROY_RING, id2, 0, 0, 0, 0, 0, &[]),
        5,
    );
    assert_eq!((len, &resp[0..4]), (16, &[0u8; 4][..]));
    assert!(irq.read().unwrap() >= 1);
    // A polled ring created through the queue serves itself.
    let (len, resp) = send(
        &encode_request(cmd::CREATE_RING, 0, PVU_RING_POLLED, 8, 0, 0, 0, &[]),
        6,
    );
    assert_eq!(len, CREATE_LEN);
    let id3 = u32::from_le_bytes(resp[4..8].try_into().unwrap());
    let view3 = rig.view(id3, &resp[16..]);
    assert_eq!(view3.l.flags, PVU_RING_POLLED);
    view3.push(&nop(79));
    assert_eq!(view3.wait(1), vec![(79, 0)]);
    // Reset stops the worker and destroys the rings: their doorbells are
    // gone, their pollers too.
    rig.dev.reset();
    assert!(
        gone(|n| n.starts_with("pv-uring")),
        "threads outlived the reset"
    );
    view.push(&nop(78));
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    view3.push(&nop(80));
    std::thread::sleep(Duration::from_millis(50));
    assert!(view.is_empty());
    assert!(view3.is_empty());
    assert_eq!(view.sq_head(), 1);
}

/// The guest driver polls the control queue with
/// `VRING_AVAIL_F_NO_INTERRUPT` set: served chains then raise no
/// interrupt; with the flag clear they do.
#[test]
fn no_interrupt_flag_suppresses_the_control_interrupt() {
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let mock = MockSplitQueue::create(&rig.mem, GuestAddress(0x10_0000 - 0x1_0000), QUEUE_SIZE);
    let mut queue = mock.create_queue().unwrap();
    let avail = mock.avail_addr();
    let mut serve = |no_interrupt: bool| {
        // One malformed chain (served with used length 0) is enough.
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQ, 8, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(SplitDescriptor::new(
                RESP,
                RESP_CAP,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
        ];
        mock.add_desc_chains(&descs, 0).unwrap();
        rig.mem
            .write_obj(u16::from(no_interrupt).to_le(), avail)
            .unwrap();
        process_queue(&mut queue, &mut rig.exec, &rig.mem)
    };
    assert!(serve(false));
    assert!(!serve(true));
    assert!(serve(false));
}

// ---------------------------------------------------------------- arena

/// An arena of 16 MiB: 8 chunks of 2 MiB (ordinary memory, with a
/// warning, where the host has no free 2 MiB pages).
const ARENA_LEN: u64 = 16 * MIB;
const CHUNK: u64 = 2 * MIB;
const ARENA_FEATURES: u64 = ALL_FEATURES | (1 << PVU_F_ARENA);

fn arena_opts() -> Opts {
    Opts {
        features: ARENA_FEATURES,
        arena: Some(super::arena::ArenaConfig {
            len: ARENA_LEN,
            page: 2 * MIB,
            required: false,
            gpa: 0x1_0000_0000,
        }),
        ..Opts::default()
    }
}

impl Rig {
    fn arena_register(&mut self, ring: u32, runs: &[(u32, u32, u32)]) -> Resp {
        let runs: Vec<ArenaRun> = runs
            .iter()
            .map(|&(chunk, nr, dst_off)| ArenaRun { chunk, nr, dst_off })
            .collect();
        self.call(&encode_arena_register(ring, &runs))
    }

    /// Arena bytes `[off, off + len)`, as the guest reads them through its
    /// mapping of region 1.
    fn arena_bytes(&self, off: u64, len: usize) -> Vec<u8> {
        let a = self.dev.arena().unwrap();
        assert!(off + len as u64 <= a.len());
        // SAFETY: inside the arena's mapping, which `a` keeps alive.
        unsafe { std::slice::from_raw_parts((a.host_addr() + off) as *const u8, len).to_vec() }
    }

    fn write_arena(&self, off: u64, bytes: &[u8]) {
        let a = self.dev.arena().unwrap();
        assert!(off + bytes.len() as u64 <= a.len());
        // SAFETY: as arena_bytes; nothing else writes there meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (a.host_addr() + off) as *mut u8,
                bytes.len(),
            )
        }
    }
}

/// The device advertises the arena: feature, configuration and region 1.
#[test]
fn arena_is_region_1_with_its_chunks_in_the_config_space() {
    let _s = serial();
    let rig = Rig::with(arena_opts());
    assert_ne!(rig.dev.features() & (1 << PVU_F_ARENA), 0);
    let mut b = [0u8; 12];
    rig.dev.read_config(cfg::ARENA_CHUNK_SIZE as u64, &mut b);
    assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), CHUNK);
    assert_eq!(u32::from_le_bytes(b[8..].try_into().unwrap()), 8);
    let regions = rig.dev.shm_regions();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1], (0x1_0000_0000, ARENA_LEN));
    let maps = rig.dev.guest_mappings();
    assert_eq!(maps.len(), 3);
    assert_eq!(
        (maps[2].gpa, maps[2].len, maps[2].read_only),
        (0x1_0000_0000, ARENA_LEN, false)
    );
    // Without an arena: no feature, no region 1, zero fields.
    let plain = Rig::new(ALL_FEATURES);
    assert_eq!(plain.dev.features() & (1 << PVU_F_ARENA), 0);
    assert_eq!(plain.dev.shm_regions().len(), 1);
    plain.dev.read_config(cfg::ARENA_CHUNK_SIZE as u64, &mut b);
    assert_eq!(b, [0u8; 12]);
}

/// Runs of chunks become the ring's buffers at the indices asked; bytes
/// move both ways through them, the gap between runs is an empty entry,
/// and nothing is charged to the registered-bytes budget.
#[test]
fn arena_register_clones_runs_and_moves_bytes_both_ways() {
    let _s = serial();
    let mut rig = Rig::with(arena_opts());
    let (id, view) = rig.create(8);
    let r = rig.arena_register(id, &[(2, 2, 0), (5, 1, 3)]);
    assert_eq!((r.used, r.status, r.value), (16, 0, 4), "{r:?}");
    assert_eq!(rig.exec.registered_bytes(), 0);
    // WRITE_FIXED from chunk 5 (buffer 3) at offset 4096.
    let data = pattern(8192, 42);
    rig.write_arena(5 * CHUNK + 4096, &data);
    let cqes = rig.run(
        id,
        &view,
        &[fixed(IORING_OP_WRITE_FIXED, 4096, 8192, 65536, 3, 1)],
    );
    assert_eq!(cqes, vec![(1, 8192)]);
    assert_eq!(&rig.file.contents()[65536..65536 + 8192], &data[..]);
    // READ_FIXED into chunk 3 (buffer 1) at offset 100, up to its end.
    let cqes = rig.run(
        id,
        &view,
        &[fixed(IORING_OP_READ_FIXED, CHUNK - 1000, 1000, 7, 1, 2)],
    );
    assert_eq!(cqes, vec![(2, 1000)]);
    assert_eq!(
        rig.arena_bytes(3 * CHUNK + CHUNK - 1000, 1000),
        pattern(FILE_LEN, 7)[7..1007]
    );
    // Past the chunk's end, the gap (index 2) and past the table: refused.
    let cqes = rig.run(
        id,
        &view,
        &[
            fixed(IORING_OP_READ_FIXED, CHUNK - 1000, 1001, 0, 1, 3),
            fixed(IORING_OP_READ_FIXED, 0, 512, 0, 2, 4),
            fixed(IORING_OP_READ_FIXED, 0, 512, 0, 4, 5),
        ],
    );
    assert_eq!(
        cqes,
        vec![(3, -libc::EFAULT), (4, -libc::EFAULT), (5, -libc::EFAULT)]
    );
    // A whole-table clone of the arena ring to a second ring works too.
    let (id2, view2) = rig.create(8);
    let r = rig.clone_from(id2, id, 0, 0, 0, 0);
    assert_eq!((r.status, r.value), (0, 4));
    let cqes = rig.run(
        id2,
        &view2,
        &[fixed(IORING_OP_READ_FIXED, 0, 512, 2048, 0, 6)],
    );
    assert_eq!(cqes, vec![(6, 512)]);
    assert_eq!(
        rig.arena_bytes(2 * CHUNK, 512),
        pattern(FILE_LEN, 7)[2048..2560]
    );
    rig.assert_no_host_address();
}

/// Every refusal of ARENA_REGISTER, each followed by a good one: the host
/// never trusts a chunk index, a count or an order.
#[test]
fn hostile_arena_runs_are_refused_and_the_device_keeps_serving() {
    let _s = serial();
    let mut rig = Rig::with(arena_opts());
    let (id, view) = rig.create(8);
    let max = MAX_BUFFERS;
    type Case = (&'static str, Vec<(u32, u32, u32)>, i32);
    let cases: &[Case] = &[
        ("a chunk past the arena", vec![(8, 1, 0)], libc::EFAULT),
        (
            "a run that ends past the arena",
            vec![(6, 3, 0)],
            libc::EFAULT,
        ),
        (
            "a chunk index that wraps",
            vec![(u32::MAX, 2, 0)],
            libc::EFAULT,
        ),
        ("an empty run", vec![(0, 0, 0)], libc::EINVAL),
        (
            "runs out of order",
            vec![(0, 1, 5), (1, 1, 2)],
            libc::EINVAL,
        ),
        ("overlapping runs", vec![(0, 2, 0), (4, 1, 1)], libc::EINVAL),
        (
            "a run past max_buffers",
            vec![(0, 2, max - 1)],
            libc::EINVAL,
        ),
        (
            "a destination that wraps",
            vec![(0, 2, u32::MAX)],
            libc::EINVAL,
        ),
    ];
    for (what, runs, errno) in cases {
        let r = rig.arena_register(id, runs);
        assert_eq!((r.used, r.status), (16, -errno), "{what}: {r:?}");
        // Nothing was cloned: the ring has no buffers.
        let cqes = rig.run(id, &view, &[fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 1)]);
        assert_eq!(cqes, vec![(1, -libc::EFAULT)], "{what}");
    }
    // A reserved word, 0 runs, 65 runs; an unknown ring.
    let mut req = encode_arena_register(
        id,
        &[ArenaRun {
            chunk: 0,
            nr: 1,
            dst_off: 0,
        }],
    );
    req[REQ_LEN + 12] = 1;
    assert_eq!(rig.call(&req).status, -libc::EINVAL);
    assert_eq!(rig.arena_register(id, &[]).status, -libc::EINVAL);
    let many: Vec<(u32, u32, u32)> = (0..65).map(|i| (0, 1, i)).collect();
    assert_eq!(rig.arena_register(id, &many).status, -libc::EINVAL);
    assert_eq!(rig.arena_register(77, &[(0, 1, 0)]).status, -libc::ENOENT);
    // A chain too short for its runs gets no response.
    let req = encode_arena_register(
        id,
        &[ArenaRun {
            chunk: 0,
            nr: 1,
            dst_off: 0,
        }],
    );
    assert_eq!(rig.call(&req[..REQ_LEN + 8]).used, 0);
    // A later run the host kernel refuses takes back the earlier ones: a
    // ring that already has buffers is EBUSY and keeps them.
    let r = rig.arena_register(id, &[(0, 8, 0)]);
    assert_eq!((r.status, r.value), (0, 8), "{r:?}");
    assert_eq!(rig.arena_register(id, &[(0, 1, 0)]).status, -libc::EBUSY);
    let cqes = rig.run(id, &view, &[fixed(IORING_OP_READ_FIXED, 0, 512, 0, 7, 2)]);
    assert_eq!(cqes, vec![(2, 512)]);
    assert_eq!(rig.arena_bytes(7 * CHUNK, 512), pattern(FILE_LEN, 7)[..512]);
    // A driver that did not accept the feature, and a device without an
    // arena: EOPNOTSUPP.
    let mut rig = Rig::with(Opts {
        features: ALL_FEATURES,
        ..arena_opts()
    });
    let (id, _) = rig.create(8);
    assert_eq!(
        rig.arena_register(id, &[(0, 1, 0)]).status,
        -libc::EOPNOTSUPP
    );
    let mut rig = Rig::new(ARENA_FEATURES);
    let (id, _) = rig.create(8);
    assert_eq!(
        rig.arena_register(id, &[(0, 1, 0)]).status,
        -libc::EOPNOTSUPP
    );
}

impl Rig {
    fn arena_register_rings(&mut self, rings: &[u32], runs: &[(u32, u32, u32)]) -> Resp {
        let runs: Vec<ArenaRun> = runs
            .iter()
            .map(|&(chunk, nr, dst_off)| ArenaRun { chunk, nr, dst_off })
            .collect();
        self.call(&encode_arena_register_rings(rings, &runs))
    }

    /// Whether ring `id` has no buffer 0 (a READ_FIXED of it is refused).
    fn has_no_buffers(&mut self, id: u32, view: &GuestRingView) -> bool {
        let cqes = self.run(id, view, &[fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 0x2a)]);
        cqes == vec![(0x2a, -libc::EFAULT)]
    }
}

/// One ARENA_REGISTER_RINGS gives every ring it names the same runs (in
/// any order of ids); data moves through each, and the rings are
/// independent afterwards (one unregistering leaves the others).
#[test]
fn arena_register_rings_gives_every_ring_the_runs_in_one_command() {
    let _s = serial();
    let mut rig = Rig::with(arena_opts());
    let rings: Vec<(u32, GuestRingView)> = (0..3).map(|_| rig.create(8)).collect();
    let ids = [rings[2].0, rings[0].0, rings[1].0];
    let r = rig.arena_register_rings(&ids, &[(1, 2, 0), (6, 1, 4)]);
    assert_eq!((r.used, r.status, r.value, r.id), (16, 0, 5, 3), "{r:?}");
    assert_eq!(rig.exec.registered_bytes(), 0);
    for (k, (id, view)) in rings.iter().enumerate() {
        // Ring k reads into buffer 1 (chunk 2) at its own offset, and
        // into buffer 4 (chunk 6).
        let off = k as u64 * 4096;
        rig.write_arena(2 * CHUNK + off, &[0u8; 512]);
        let cqes = rig.run(
            *id,
            view,
            &[
                fixed(IORING_OP_READ_FIXED, off, 512, 4096, 1, 1),
                fixed(IORING_OP_READ_FIXED, CHUNK - 512, 512, 0, 4, 2),
                fixed(IORING_OP_READ_FIXED, 0, 512, 0, 2, 3),
            ],
        );
        assert_eq!(
            cqes,
            vec![(1, 512), (2, 512), (3, -libc::EFAULT)],
            "ring {k}"
        );
        assert_eq!(
            rig.arena_bytes(2 * CHUNK + off, 512),
            pattern(FILE_LEN, 7)[4096..4608],
            "ring {k}"
        );
        assert_eq!(
            rig.arena_bytes(7 * CHUNK - 512, 512),
            pattern(FILE_LEN, 7)[..512]
        );
    }
    let r = rig.simple(cmd::UNREGISTER_BUFFERS, rings[1].0, 0, 0, 0, 0, 0);
    assert_eq!(r.status, 0);
    assert!(rig.has_no_buffers(rings[1].0, &rings[1].1));
    let cqes = rig.run(
        rings[0].0,
        &rings[0].1,
        &[fixed(IORING_OP_READ_FIXED, 0, 512, 0, 0, 4)],
    );
    assert_eq!(cqes, vec![(4, 512)]);
    rig.assert_no_host_address();
}

/// Enough rings that the host clones on several threads (each with a
/// source of its own): every ring gets the runs and moves data at them.
#[test]
fn arena_register_rings_on_many_rings_fills_every_table() {
    let _s = serial();
    let mut rig = Rig::with(Opts {
        rings: 24,
        ..arena_opts()
    });
    let rings: Vec<(u32, GuestRingView)> = (0..24).map(|_| rig.create(4)).collect();
    let ids: Vec<u32> = rings.iter().rev().map(|r| r.0).collect();
    let r = rig.arena_register_rings(&ids, &[(3, 1, 0), (5, 3, 2)]);
    assert_eq!((r.status, r.value, r.id), (0, 5, 24), "{r:?}");
    for (id, view) in &rings {
        assert!(rig.lands_at_arena(*id, view, 3), "ring {id}");
        let cqes = rig.run(
            *id,
            view,
            &[
                fixed(IORING_OP_READ_FIXED, 0, 512, 0, 1, 1),
                fixed(IORING_OP_READ_FIXED, CHUNK - 512, 512, 0, 4, 2),
            ],
        );
        assert_eq!(cqes, vec![(1, -libc::EFAULT), (2, 512)], "ring {id}");
    }
}

/// Every refusal of ARENA_REGISTER_RINGS leaves every ring it names
/// without buffers (all or none), and the device keeps serving: an unknown
/// ring among good ones, a ring named twice, 0 or 257 rings, a chunk
/// outside the arena, a ring that has buffers, a chain too short.
#[test]
fn hostile_arena_register_rings_is_all_or_none() {
    let _s = serial();
    let mut rig = Rig::with(arena_opts());
    let rings: Vec<(u32, GuestRingView)> = (0..3).map(|_| rig.create(8)).collect();
    let (a, b, c) = (rings[0].0, rings[1].0, rings[2].0);
    let ok = [(0u32, 2u32, 0u32)];
    let too_many: Vec<u32> = (0..=MAX_ARENA_RINGS).collect();
    type Case<'a> = (&'static str, Vec<u32>, &'a [(u32, u32, u32)], i32);
    let cases: Vec<Case> = vec![
        (
            "an unknown ring after good ones",
            vec![a, b, 77],
            &ok,
            libc::ENOENT,
        ),
        (
            "a ring id past max_rings",
            vec![a, u32::MAX],
            &ok,
            libc::ENOENT,
        ),
        ("a ring named twice", vec![a, b, a], &ok, libc::EINVAL),
        ("no ring", vec![], &ok, libc::EINVAL),
        ("257 rings", too_many, &ok, libc::EINVAL),
        (
            "a chunk past the arena",
            vec![a, b],
            &[(8, 1, 0)],
            libc::EFAULT,
        ),
        (
            "a run past the arena",
            vec![a, b],
            &[(0, 1, 0), (7, 2, 1)],
            libc::EFAULT,
        ),
        (
            "runs out of order",
            vec![a, b],
            &[(0, 1, 4), (1, 1, 2)],
            libc::EINVAL,
        ),
        ("0 runs", vec![a, b], &[], libc::EINVAL),
    ];
    for (what, ids, runs, errno) in &cases {
        let r = rig.arena_register_rings(ids, runs);
        assert_eq!((r.used, r.status), (16, -errno), "{what}: {r:?}");
        for (id, view) in &rings {
            assert!(
                rig.has_no_buffers(*id, view),
                "{what}: ring {id} got buffers"
            );
        }
    }
    // A chain too short for its ring ids gets no response.
    let req = encode_arena_register_rings(
        &[a, b],
        &[ArenaRun {
            chunk: 0,
            nr: 1,
            dst_off: 0,
        }],
    );
    assert_eq!(rig.call(&req[..req.len() - 2]).used, 0);
    // A ring that has buffers among them: EBUSY; it keeps its own, the
    // others get none.
    let r = rig.arena_register(c, &[(7, 1, 0)]);
    assert_eq!(r.status, 0);
    let r = rig.arena_register_rings(&[a, c, b], &ok);
    assert_eq!(r.status, -libc::EBUSY, "{r:?}");
    assert!(rig.has_no_buffers(a, &rings[0].1));
    assert!(rig.has_no_buffers(b, &rings[1].1));
    assert!(rig.lands_at_arena(c, &rings[2].1, 7));
    // The device still serves: a good call on the empty rings.
    let r = rig.arena_register_rings(&[b, a], &ok);
    assert_eq!((r.status, r.value, r.id), (0, 2, 2), "{r:?}");
    assert!(rig.lands_at_arena(a, &rings[0].1, 0));
    assert!(rig.lands_at_arena(b, &rings[1].1, 0));
    // Without the feature, or without an arena: EOPNOTSUPP.
    let mut rig = Rig::with(Opts {
        features: ALL_FEATURES,
        ..arena_opts()
    });
    let (id, _) = rig.create(8);
    assert_eq!(
        rig.arena_register_rings(&[id], &ok).status,
        -libc::EOPNOTSUPP
    );
    let mut rig = Rig::new(ARENA_FEATURES);
    let (id, _) = rig.create(8);
    assert_eq!(
        rig.arena_register_rings(&[id], &ok).status,
        -libc::EOPNOTSUPP
    );
}

/// Register/unregister/destroy cycles on the arena pin nothing beyond the
/// arena's own registration, and the device's end releases that too.
#[test]
fn arena_cycles_pin_nothing_more_and_the_end_releases_the_arena() {
    let _s = serial();
    let start = settled_vm_pin();
    let mut rig = Rig::with(arena_opts());
    let with_arena = vm_pin_kib();
    assert!(
        with_arena >= start + (ARENA_LEN >> 10),
        "the arena's registration does not show in VmPin ({start} -> {with_arena} kB)"
    );
    for cycle in 0..200u32 {
        let (id, view) = rig.create(4);
        let chunk = cycle % 8;
        let r = rig.arena_register(id, &[(chunk, 8 - chunk, 0)]);
        assert_eq!(
            (r.status, r.value),
            (0, u64::from(8 - chunk)),
            "cycle {cycle}"
        );
        if cycle % 10 == 0 {
            assert!(rig.lands_at_arena(id, &view, chunk));
        }
        let r = rig.simple(cmd::UNREGISTER_BUFFERS, id, 0, 0, 0, 0, 0);
        assert_eq!((r.status, r.id), (0, 1));
        let r = rig.arena_register(id, &[(0, 1, 0)]);
        assert_eq!(r.status, 0);
        assert_eq!(rig.destroy(id).status, 0);
    }
    assert_eq!(rig.exec.registered_bytes(), 0);
    assert_eq!(vm_pin_kib(), with_arena, "cycles left pages pinned");
    drop(rig);
    assert_eq!(
        settled_vm_pin(),
        start,
        "the arena stays pinned after the device"
    );
}

impl Rig {
    /// Reads 512 bytes of the file through buffer 0 of ring `id`, which
    /// holds arena chunk `chunk`; returns whether they landed there.
    fn lands_at_arena(&mut self, id: u32, view: &GuestRingView, chunk: u32) -> bool {
        let off = u64::from(chunk) * CHUNK;
        self.write_arena(off, &[0u8; 512]);
        let cqes = self.run(
            id,
            view,
            &[fixed(IORING_OP_READ_FIXED, 0, 512, 1024, 0, 0x1b)],
        );
        assert_eq!(cqes, vec![(0x1b, 512)]);
        self.arena_bytes(off, 512) == pattern(FILE_LEN, 7)[1024..1536]
    }
}
