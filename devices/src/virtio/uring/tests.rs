//! The pv-uring device against the host kernel's io_uring, without a guest:
//! a guest memory map, the ring area, control chains through
//! [`process_chain`], SQEs written straight into the ring slots the way a
//! guest does, the doorbell, and completions read from the CQ.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::control::*;
use super::ring::sys::*;
use super::ring::SQES_OFFSET;
use super::*;

/// The tests share the process's pinned-memory count: run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: u64 = 1 << 20;
/// Guest RAM: two regions of 32 MiB.
const REGION2: u64 = 32 * MIB;
const REQ: u64 = 0x1000;
const RESP: u64 = 0x2_0000;
const RESP_CAP: u32 = 0x4000;
/// Buffer 0: 64 KiB in region 1; buffer 1: 64 KiB in region 2.
const BUF_A: u64 = MIB;
const BUF_B: u64 = REGION2 + 0x1000;
const BUF_LEN: u64 = 0x1_0000;
const FILE_LEN: usize = 1 << 20;
const ALL_FEATURES: u64 = (1 << 32) | (1 << PVU_F_SQPOLL) | (1 << PVU_F_TABLE);

struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> Self {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rv-pvu-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }
    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

impl Resp {
    fn addrs(&self) -> Vec<u64> {
        self.output
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    file: TempFile,
    _ro: TempFile,
    dev: PvUring,
    exec: Executor,
}

impl Rig {
    fn new(features: u64) -> Self {
        Self::with_rings(4, features)
    }

    fn with_rings(rings: u32, features: u64) -> Self {
        Self::with_sq_cpu(rings, features, None)
    }

    fn with_sq_cpu(rings: u32, features: u64, sq_cpu: Option<u32>) -> Self {
        let file = TempFile::new(&pattern(FILE_LEN, 7));
        let ro = TempFile::new(&pattern(4096, 9));
        let config = PvUringConfig {
            max_rings: rings,
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
            sq_cpu,
        };
        let dev = PvUring::new(&config, Arc::new(NoHooks)).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), REGION2 as usize),
            (GuestAddress(REGION2), REGION2 as usize),
        ])
        .unwrap();
        let exec = dev.executor(mem.clone(), features);
        Self {
            mem,
            file,
            _ro: ro,
            dev,
            exec,
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

    fn create(&mut self, entries: u32) -> (u32, GuestRingView) {
        let r = self.call(&encode_request(
            cmd::CREATE_RING,
            0,
            0,
            entries,
            0,
            0,
            0,
            &[],
        ));
        assert_eq!(r.status, 0, "CREATE_RING failed: {r:?}");
        assert_eq!(r.used, 136);
        assert_eq!(r.value, u64::from(r.id) * SLOT_SIZE as u64);
        (r.id, self.view(r.id, &r.output))
    }

    fn view(&self, id: u32, params: &[u8]) -> GuestRingView {
        assert_eq!(params.len(), 120);
        // SAFETY: 120 bytes into a repr(C) struct of integers.
        let p: IoUringParams = unsafe { std::ptr::read_unaligned(params.as_ptr().cast()) };
        assert_eq!(p.cq_off.user_addr, 0);
        assert_eq!(p.sq_off.user_addr, SQES_OFFSET as u64);
        GuestRingView {
            base: self.dev.ring_area().slot_addr(id).unwrap() as *mut u8,
            p,
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

    fn two_buffers(&mut self, ring: u32) -> Vec<u64> {
        let r = self.register(
            ring,
            &[
                Extent {
                    gpa: BUF_A,
                    len: BUF_LEN,
                },
                Extent {
                    gpa: BUF_B,
                    len: BUF_LEN,
                },
            ],
        );
        assert_eq!(r.status, 0, "{r:?}");
        assert_eq!(r.value, 2);
        assert_eq!(r.used, 32);
        r.addrs()
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

    /// Submits `sqes` on ring `id` and waits for as many completions.
    fn run(&mut self, id: u32, view: &GuestRingView, sqes: &[Sqe]) -> Vec<(u64, i32)> {
        for s in sqes {
            view.push(s);
        }
        self.exec.doorbell(id);
        view.wait(sqes.len())
    }
}

/// What a guest sees of its ring: the slot and the returned params.
struct GuestRingView {
    base: *mut u8,
    p: IoUringParams,
}

#[derive(Clone, Copy, Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    user_data: u64,
    buf_index: u16,
}

fn fixed(opcode: u8, addr: u64, len: u32, off: u64, buf_index: u16, user_data: u64) -> Sqe {
    Sqe {
        opcode,
        flags: IOSQE_FIXED_FILE,
        fd: 0,
        off,
        addr,
        len,
        user_data,
        buf_index,
    }
}

impl GuestRingView {
    fn u32_at(&self, off: u32) -> &AtomicU32 {
        // SAFETY: offsets from the kernel's params, inside the slot.
        unsafe { &*(self.base.add(off as usize) as *const AtomicU32) }
    }

    fn push(&self, s: &Sqe) {
        let tail = self.u32_at(self.p.sq_off.tail).load(Ordering::Acquire);
        let mask = self.u32_at(self.p.sq_off.ring_mask).load(Ordering::Relaxed);
        let idx = tail & mask;
        let mut b = [0u8; 64];
        b[0] = s.opcode;
        b[1] = s.flags;
        b[4..8].copy_from_slice(&s.fd.to_le_bytes());
        b[8..16].copy_from_slice(&s.off.to_le_bytes());
        b[16..24].copy_from_slice(&s.addr.to_le_bytes());
        b[24..28].copy_from_slice(&s.len.to_le_bytes());
        b[32..40].copy_from_slice(&s.user_data.to_le_bytes());
        b[40..42].copy_from_slice(&s.buf_index.to_le_bytes());
        // SAFETY: the SQE array and SQ array lie inside the slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                b.as_ptr(),
                self.base.add(SQES_OFFSET + 64 * idx as usize),
                64,
            );
            let array = self.base.add(self.p.sq_off.array as usize) as *mut u32;
            array.add(idx as usize).write_volatile(idx);
        }
        self.u32_at(self.p.sq_off.tail)
            .store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Whether the CQ is empty.
    fn is_empty(&self) -> bool {
        let head = self.u32_at(self.p.cq_off.head).load(Ordering::Relaxed);
        head == self.u32_at(self.p.cq_off.tail).load(Ordering::Acquire)
    }

    fn sq_flags(&self) -> u32 {
        self.u32_at(self.p.sq_off.flags).load(Ordering::Acquire)
    }

    fn wait(&self, n: usize) -> Vec<(u64, i32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            let head = self.u32_at(self.p.cq_off.head).load(Ordering::Relaxed);
            let tail = self.u32_at(self.p.cq_off.tail).load(Ordering::Acquire);
            if head == tail {
                assert!(Instant::now() < deadline, "timed out with {out:?}");
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let mask = self.u32_at(self.p.cq_off.ring_mask).load(Ordering::Relaxed);
            let at = self.p.cq_off.cqes as usize + 16 * (head & mask) as usize;
            // SAFETY: the CQE array lies inside the slot.
            let (ud, res) = unsafe {
                (
                    (self.base.add(at) as *const u64).read_volatile(),
                    (self.base.add(at + 8) as *const i32).read_volatile(),
                )
            };
            out.push((ud, res));
            self.u32_at(self.p.cq_off.head)
                .store(head.wrapping_add(1), Ordering::Release);
        }
        out
    }
}

#[test]
fn io_both_ways_through_guest_written_sqes() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(8);
    assert_eq!(view.p.sq_entries, 8);
    let addrs = rig.two_buffers(id);
    let data = pattern(8192, 99);
    rig.mem.write_slice(&data, GuestAddress(BUF_B)).unwrap();
    let cqes = rig.run(
        id,
        &view,
        &[
            fixed(IORING_OP_READ_FIXED, addrs[0] + 512, 8192, 4096, 0, 1),
            fixed(IORING_OP_WRITE_FIXED, addrs[1], 8192, 65536, 1, 2),
        ],
    );
    let mut cqes = cqes;
    cqes.sort();
    assert_eq!(cqes, vec![(1, 8192), (2, 8192)]);
    let mut got = vec![0u8; 8192];
    rig.mem
        .read_slice(&mut got, GuestAddress(BUF_A + 512))
        .unwrap();
    assert_eq!(got, pattern(FILE_LEN, 7)[4096..4096 + 8192]);
    assert_eq!(rig.file.contents()[65536..65536 + 8192], data[..]);
    // NOP and FSYNC (with FIXED_FILE), a linked pair.
    let mut nop = fixed(IORING_OP_NOP, 0, 0, 0, 0, 3);
    nop.flags |= IOSQE_IO_LINK;
    let cqes = rig.run(id, &view, &[nop, fixed(IORING_OP_FSYNC, 0, 0, 0, 0, 4)]);
    assert_eq!(cqes, vec![(3, 0), (4, 0)]);
    // Completions signalled the ring's eventfd.
    assert!(rig.exec.completion_fd(id).unwrap().read().unwrap() >= 1);
    // The read-only backend (fixed file 1) refuses writes.
    let mut w = fixed(IORING_OP_WRITE_FIXED, addrs[0], 512, 0, 0, 5);
    w.fd = 1;
    assert_eq!(rig.run(id, &view, &[w]), vec![(5, -libc::EBADF)]);
    // A fixed file that does not exist.
    let mut r = fixed(IORING_OP_READ_FIXED, addrs[0], 512, 0, 0, 6);
    r.fd = 2;
    assert_eq!(rig.run(id, &view, &[r]), vec![(6, -libc::EBADF)]);
}

#[test]
fn hostile_sqes_get_error_completions() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, view) = rig.create(16);
    let addrs = rig.two_buffers(id);
    let host_buf = vec![0u8; 4096];
    // IORING_OP_READ with a raw (host) address: not allowed.
    let mut read = fixed(IORING_OP_READ, host_buf.as_ptr() as u64, 4096, 0, 0, 1);
    read.opcode = IORING_OP_READ;
    assert_eq!(rig.run(id, &view, &[read]), vec![(1, -libc::EACCES)]);
    // OPENAT.
    let path = c"/etc/passwd";
    let mut open = fixed(IORING_OP_OPENAT, path.as_ptr() as u64, 0, 0, 0, 2);
    open.fd = libc::AT_FDCWD;
    assert_eq!(rig.run(id, &view, &[open]), vec![(2, -libc::EACCES)]);
    open.flags = 0;
    assert_eq!(rig.run(id, &view, &[open]), vec![(2, -libc::EACCES)]);
    // READ_FIXED without IOSQE_FIXED_FILE: the fd would be a host fd.
    let mut plain = fixed(IORING_OP_READ_FIXED, addrs[0], 512, 0, 0, 3);
    plain.flags = 0;
    plain.fd = 0;
    assert_eq!(rig.run(id, &view, &[plain]), vec![(3, -libc::EACCES)]);
    // An SQE flag outside the allow list (IOSQE_ASYNC).
    let mut asy = fixed(IORING_OP_NOP, 0, 0, 0, 0, 4);
    asy.flags |= 1 << 4;
    assert_eq!(rig.run(id, &view, &[asy]), vec![(4, -libc::EACCES)]);
    // Addresses outside the registered buffer.
    for (ud, addr, len) in [
        (5, addrs[0] + BUF_LEN - 256, 512u32),
        (6, addrs[0] - 4096, 512),
        (7, host_buf.as_ptr() as u64, 512),
    ] {
        let sqe = fixed(IORING_OP_READ_FIXED, addr, len, 0, 0, ud);
        assert_eq!(rig.run(id, &view, &[sqe]), vec![(ud, -libc::EFAULT)]);
    }
    // A buffer index that does not exist.
    let sqe = fixed(IORING_OP_READ_FIXED, addrs[0], 512, 0, 9, 8);
    assert_eq!(rig.run(id, &view, &[sqe]), vec![(8, -libc::EFAULT)]);
    // The teardown sentinel (fixed file 16) gives the guest nothing: the
    // read end of an empty pipe that nobody writes (a read waits until the
    // ring is destroyed, which cancels it). Indices between the backends
    // and it are empty.
    let mut s = fixed(IORING_OP_READ_FIXED, addrs[0], 512, 0, 0, 10);
    s.fd = ring::SENTINEL_FILE as i32;
    view.push(&s);
    rig.exec.doorbell(id);
    std::thread::sleep(Duration::from_millis(20));
    assert!(view.is_empty(), "a read of the sentinel completed");
    s.opcode = IORING_OP_WRITE_FIXED;
    assert_eq!(rig.run(id, &view, &[s]), vec![(10, -libc::EBADF)]);
    let mut f = fixed(IORING_OP_FSYNC, 0, 0, 0, 0, 11);
    f.fd = ring::SENTINEL_FILE as i32;
    assert_eq!(rig.run(id, &view, &[f]), vec![(11, -libc::EINVAL)]);
    for fd in [2, 15, 17] {
        let mut r = fixed(IORING_OP_READ_FIXED, addrs[0], 512, 0, 0, 12);
        r.fd = fd;
        assert_eq!(rig.run(id, &view, &[r]), vec![(12, -libc::EBADF)], "{fd}");
    }
    // The ring still works.
    let sqe = fixed(IORING_OP_READ_FIXED, addrs[1], 512, 0, 1, 9);
    assert_eq!(rig.run(id, &view, &[sqe]), vec![(9, 512)]);
}

#[test]
fn clone_to_a_second_ring_and_io_through_it() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (a, _va) = rig.create(8);
    let (b, vb) = rig.create(8);
    assert_ne!(a, b);
    let addrs = rig.two_buffers(a);
    let r = rig.clone_from(b, a, 0, 0, 0, 0);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.value, 2);
    assert_eq!(r.addrs(), addrs);
    // The source goes away; the clone keeps working.
    let r = rig.simple(cmd::DESTROY_RING, a, 0, 0, 0, 0, 0);
    assert_eq!(r.status, 0);
    let cqes = rig.run(
        b,
        &vb,
        &[fixed(IORING_OP_READ_FIXED, addrs[1] + 100, 1000, 3, 1, 1)],
    );
    assert_eq!(cqes, vec![(1, 1000)]);
    let mut got = vec![0u8; 1000];
    rig.mem
        .read_slice(&mut got, GuestAddress(BUF_B + 100))
        .unwrap();
    assert_eq!(got, pattern(FILE_LEN, 7)[3..1003]);
}

#[test]
fn table_publish_clone_unpublish_and_replace() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (a, _) = rig.create(4);
    let (b, vb) = rig.create(4);
    let (c, _) = rig.create(4);
    let addrs = rig.two_buffers(a);
    let p = rig.simple(cmd::PUBLISH_BUFFERS, a, 0, 0, 0, 0, 0);
    assert_eq!(p.status, 0);
    let t = p.id;
    assert_eq!(rig.exec.table_count(), 1);
    // The publisher goes away; the table entry lives on.
    assert_eq!(rig.simple(cmd::DESTROY_RING, a, 0, 0, 0, 0, 0).status, 0);
    // Clone one buffer from the table at offset 1 of b.
    let r = rig.clone_from(b, t, PVU_CLONE_SRC_TABLE, 1, 1, 1);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.addrs(), vec![0, addrs[1]]);
    // Unpublish: b's clone still works.
    let u = rig.simple(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, t, 0, 0);
    assert_eq!(u.status, 0);
    assert_eq!(rig.exec.table_count(), 0);
    let cqes = rig.run(
        b,
        &vb,
        &[fixed(IORING_OP_READ_FIXED, addrs[1], 4096, 0, 1, 1)],
    );
    assert_eq!(cqes, vec![(1, 4096)]);
    // Unpublished ids are gone.
    let r = rig.clone_from(c, t, PVU_CLONE_SRC_TABLE, 0, 0, 0);
    assert_eq!(r.status, -libc::ENOENT);
    // DST_REPLACE: c gets a's two buffers via b? b has [empty, B]; clone
    // b into c, then replace c's whole table with a fresh register on b.
    let r = rig.clone_from(c, b, 0, 0, 0, 0);
    assert_eq!(r.addrs(), vec![0, addrs[1]]);
    // Without REPLACE, a non-empty destination is busy.
    assert_eq!(rig.clone_from(c, b, 0, 0, 0, 0).status, -libc::EBUSY);
    // b re-registers (two buffers again); c replaces entry 0 only.
    assert_eq!(
        rig.simple(cmd::UNREGISTER_BUFFERS, b, 0, 0, 0, 0, 0).status,
        0
    );
    let fresh = rig.two_buffers(b);
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 0, 2);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.addrs(), fresh);
    // Replace covering the table to its end, from offset 1.
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 1, 1);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.addrs(), vec![fresh[0], fresh[0]]);
    // A replace that would leave entries after the range is refused.
    let r = rig.clone_from(c, b, PVU_CLONE_DST_REPLACE, 0, 0, 1);
    assert_eq!(r.status, -libc::EINVAL);
    // Clone from itself with replace.
    let r = rig.clone_from(c, c, PVU_CLONE_DST_REPLACE, 1, 0, 2);
    assert_eq!(r.status, -libc::EOVERFLOW);
}

#[test]
fn every_error_code_of_the_spec() {
    let _s = serial();
    let mut rig = Rig::with_rings(2, ALL_FEATURES);
    let e = |r: Resp| {
        assert_eq!(r.used, 16, "{r:?}");
        r.status
    };
    // CREATE_RING: bad entries, flags, reserved; no slot; SQPOLL unoffered.
    assert_eq!(
        e(rig.simple(cmd::CREATE_RING, 0, 0, 0, 0, 0, 0)),
        -libc::EINVAL
    );
    assert_eq!(
        e(rig.simple(cmd::CREATE_RING, 0, 0, 4097, 0, 0, 0)),
        -libc::EINVAL
    );
    assert_eq!(
        e(rig.simple(cmd::CREATE_RING, 0, 2, 8, 0, 0, 0)),
        -libc::EINVAL
    );
    let mut bad = encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]);
    bad[28] = 1;
    assert_eq!(e(rig.call(&bad)), -libc::EINVAL);
    let (a, _) = rig.create(8);
    let (b, _) = rig.create(8);
    assert_eq!(
        e(rig.simple(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0)),
        -libc::ENOSPC
    );
    // Unknown command.
    assert_eq!(e(rig.simple(99, 0, 0, 0, 0, 0, 0)), -libc::EOPNOTSUPP);
    // DESTROY_RING.
    assert_eq!(
        e(rig.simple(cmd::DESTROY_RING, 7, 0, 0, 0, 0, 0)),
        -libc::ENOENT
    );
    assert_eq!(
        e(rig.simple(cmd::DESTROY_RING, u32::MAX, 0, 0, 0, 0, 0)),
        -libc::ENOENT
    );
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
        e(rig.simple(cmd::REGISTER_BUFFERS, a, 0, 1025, 0, 0, 0)),
        -libc::EINVAL
    );
    // Across the two regions, beyond RAM, wrapping.
    for gpa in [REGION2 - 4096, 2 * REGION2 - 4096, 1 << 40, u64::MAX - 4096] {
        let ext = Extent { gpa, len: 8192 };
        assert_eq!(e(rig.register(a, &[ok, ext])), -libc::EFAULT, "{gpa:#x}");
    }
    assert_eq!(rig.register(a, &[ok]).status, 0);
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
    assert_eq!(e(rig.clone_from(b, a, 0, 0, 0, 2)), -libc::EINVAL);
    assert_eq!(e(rig.clone_from(b, a, 0, 0, u32::MAX, 1)), -libc::EOVERFLOW);
    assert_eq!(e(rig.clone_from(b, a, 0, 1, 0, 1)), -libc::EOVERFLOW);
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
    drop(rig);

    // Features the driver did not accept.
    let mut rig = Rig::new(1 << 32);
    assert_eq!(
        e(rig.simple(cmd::CREATE_RING, 0, PVU_RING_SQPOLL, 8, 0, 0, 0)),
        -libc::EOPNOTSUPP
    );
    let (a, _) = rig.create(8);
    assert_eq!(rig.two_buffers(a).len(), 2);
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
        vec![rd(32), wr(RESP, 135)],
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
        assert_eq!(rig.call_descs(&req, &descs).used, 0, "{descs:?}");
    }
    assert_eq!(rig.exec.ring_count(), 0);
    // Registering more extents than the response can list.
    let (id, _) = rig.create(8);
    let ext = [Extent {
        gpa: BUF_A,
        len: 4096,
    }; 3];
    let r = rig.call_descs(
        &encode_request(cmd::REGISTER_BUFFERS, id, 0, 3, 0, 0, 0, &ext),
        &[rd(80), wr(RESP, 39)],
    );
    assert_eq!(r.used, 0);
    // Extents announced but missing.
    let r = rig.call_descs(
        &encode_request(cmd::REGISTER_BUFFERS, id, 0, 3, 0, 0, 0, &ext),
        &[rd(64), wr(RESP, 100)],
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
            wr(RESP, 20),
            wr(RESP + 20, 20),
        ],
    );
    assert_eq!((r.used, r.status, r.value), (40, 0, 3));
    // A clone's output is cut to the space there is.
    let (id2, _) = rig.create(8);
    let r = rig.call_descs(
        &encode_request(cmd::CLONE_BUFFERS, id2, 0, 0, id, 0, 0, &[]),
        &[rd(32), wr(RESP, 24)],
    );
    assert_eq!((r.used, r.status, r.value), (24, 0, 3));
    // Still serving.
    assert_eq!(rig.exec.ring_count(), 2);
    let (_, _) = rig.create(8);
}

#[test]
fn sqpoll_ring_and_doorbell_wakeup() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let r = rig.simple(cmd::CREATE_RING, 0, PVU_RING_SQPOLL, 8, 0, 0, 0);
    assert_eq!(r.status, 0, "{r:?}");
    let view = rig.view(r.id, &r.output);
    assert_ne!(view.p.flags & IORING_SETUP_SQPOLL, 0);
    let addrs = rig.two_buffers(r.id);
    for i in 0..3u64 {
        view.push(&fixed(IORING_OP_READ_FIXED, addrs[0], 4096, 0, 0, i));
        if view.sq_flags() & IORING_SQ_NEED_WAKEUP != 0 || i == 0 {
            rig.exec.doorbell(r.id);
        }
        assert_eq!(view.wait(1), vec![(i, 4096)]);
    }
    // The SQ thread takes a read that never completes; DESTROY still
    // returns (closing the ring stops the SQ thread from taking more).
    let mut stuck = fixed(IORING_OP_READ_FIXED, addrs[0], 4096, 0, 0, 9);
    stuck.fd = ring::SENTINEL_FILE as i32;
    view.push(&stuck);
    rig.exec.doorbell(r.id);
    std::thread::sleep(Duration::from_millis(20));
    assert!(view.is_empty());
    let d = rig.simple(cmd::DESTROY_RING, r.id, 0, 0, 0, 0, 0);
    assert_eq!(d.status, 0);
    assert_eq!(rig.exec.retiring_count(), 0);
}

/// The `iou-sqp-*` threads of this process: (tid, Cpus_allowed_list).
fn sq_threads() -> Vec<(String, String)> {
    threads_named("iou-sqp-")
}

/// The threads of this process whose name starts with `prefix`: (tid,
/// Cpus_allowed_list).
fn threads_named(prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.push((task.file_name().to_string_lossy().into_owned(), allowed));
    }
    out
}

#[test]
fn sq_cpu_binds_the_sqpoll_thread() {
    let _s = serial();
    // The first CPU this process may run on (the kernel refuses an SQ_AFF
    // CPU outside the creator's cpuset).
    let cpu = crate::affinity::current_thread_cpus().unwrap()[0] as u32;
    let before: Vec<String> = sq_threads().into_iter().map(|(tid, _)| tid).collect();
    let mut rig = Rig::with_sq_cpu(4, ALL_FEATURES, Some(cpu));
    let r = rig.simple(cmd::CREATE_RING, 0, PVU_RING_SQPOLL, 8, 0, 0, 0);
    assert_eq!(r.status, 0, "{r:?}");
    let view = rig.view(r.id, &r.output);
    assert_ne!(view.p.flags & IORING_SETUP_SQPOLL, 0);
    assert_ne!(view.p.flags & IORING_SETUP_SQ_AFF, 0);
    assert_eq!(view.p.sq_thread_cpu, cpu);
    // The SQ thread binds itself once it first runs: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let new = loop {
        let new: Vec<_> = sq_threads()
            .into_iter()
            .filter(|(tid, _)| !before.contains(tid))
            .collect();
        let bound = !new.is_empty() && new.iter().all(|(_, a)| *a == cpu.to_string());
        if bound || Instant::now() > deadline {
            break new;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(new.len(), 1, "new SQ threads: {new:?}");
    assert_eq!(new[0].1, cpu.to_string(), "SQ thread {new:?}");
    // A ring without SQPOLL ignores sq_cpu.
    let plain = rig.simple(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0);
    assert_eq!(plain.status, 0, "{plain:?}");
    let pv = rig.view(plain.id, &plain.output);
    assert_eq!(pv.p.flags & (IORING_SETUP_SQPOLL | IORING_SETUP_SQ_AFF), 0);
    for id in [r.id, plain.id] {
        assert_eq!(rig.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0).status, 0);
    }
}

/// With `sq_cpu`, the worker that serves doorbells runs there too.
#[test]
fn sq_cpu_binds_the_worker() {
    use virtio_queue::mock::MockSplitQueue;
    let _s = serial();
    let cpu = crate::affinity::current_thread_cpus().unwrap()[0];
    let mut rig = Rig::with_sq_cpu(4, ALL_FEATURES, Some(cpu as u32));
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
    // The worker pins itself first thing: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let workers = loop {
        let w = threads_named("pv-uring");
        if w.iter().all(|(_, a)| *a == cpu.to_string()) && !w.is_empty()
            || Instant::now() > deadline
        {
            break w;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(workers.len(), 1, "workers: {workers:?}");
    assert_eq!(workers[0].1, cpu.to_string(), "worker {workers:?}");
    rig.dev.reset();
    assert!(
        threads_named("pv-uring").is_empty(),
        "reset joins the worker"
    );
}

#[test]
fn doorbells_for_dead_or_unknown_rings_are_ignored() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let (id, _) = rig.create(8);
    assert_eq!(rig.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0).status, 0);
    rig.exec.doorbell(id);
    rig.exec.doorbell(u32::MAX);
    let mut page = rig.dev.doorbell_page();
    page.write(0, &id.to_le_bytes());
    page.write(0, &u32::MAX.to_le_bytes());
    page.write(4, &0u32.to_le_bytes());
    page.write(0, &[1, 2]);
    let mut b = [0xffu8; 4];
    page.read(0, &mut b);
    assert_eq!(b, [0; 4]);
    // Slots are reused after destroy; the slot starts clean.
    let (again, view) = rig.create(8);
    assert_eq!(again, id);
    let addrs = rig.two_buffers(again);
    let cqes = rig.run(
        again,
        &view,
        &[fixed(IORING_OP_READ_FIXED, addrs[0], 512, 0, 0, 42)],
    );
    assert_eq!(cqes, vec![(42, 512)]);
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
/// returns to its starting value. DESTROYs are answered once the host
/// kernel has freed the ring, tens of milliseconds later, so the cycles
/// keep up to 64 of them in flight, as a guest with many rings may.
/// `RV_PVU_CYCLES` sets the count (default 10,000).
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
    let addrs = rig.two_buffers(id);
    let before = pattern(BUF_LEN as usize, 3);
    rig.mem.write_slice(&before, GuestAddress(BUF_A)).unwrap();
    let mut stuck = fixed(IORING_OP_READ_FIXED, addrs[0], 4096, 0, 0, 1);
    stuck.fd = ring::SENTINEL_FILE as i32;
    view.push(&stuck);
    let cqes = rig.run(
        id,
        &view,
        &[fixed(IORING_OP_READ_FIXED, addrs[1], 4096, 0, 1, 2)],
    );
    assert_eq!(cqes, vec![(2, 4096)]);
    assert!(view.is_empty(), "the sentinel read completed");
    assert_eq!(vm_pin_kib(), start + 2 * BUF_LEN / 1024);
    let t0 = Instant::now();
    let r = rig.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0);
    assert_eq!((r.used, r.status), (16, 0));
    assert_eq!(
        vm_pin_kib(),
        start,
        "the ring's buffers were still pinned when DESTROY answered"
    );
    assert_eq!(rig.exec.retiring_count(), 0);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let mut after = vec![0u8; BUF_LEN as usize];
    rig.mem.read_slice(&mut after, GuestAddress(BUF_A)).unwrap();
    assert!(after == before, "the cancelled read wrote its buffer");
    // Commands on the destroyed ring, a second DESTROY included.
    assert_eq!(
        rig.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0).status,
        -libc::ENOENT
    );
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
/// commands, no doorbell, not reused); a DESTROY sent again waits again and
/// succeeds once the kernel has let go, after which the slot is reused.
#[test]
fn destroy_times_out_and_quarantines_while_the_kernel_holds_the_ring() {
    const HOLD_MS: u64 = 2000;
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    rig.exec.set_idle_timeout(Duration::from_millis(300));
    let (id, view) = rig.create(8);
    let addrs = rig.two_buffers(id);
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
    let r = rig.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0);
    let waited = t0.elapsed();
    assert_eq!(r.status, -libc::ETIMEDOUT);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(HOLD_MS),
        "{waited:?}"
    );
    // Quarantined: gone for commands and doorbells, not reused.
    assert_eq!((rig.exec.ring_count(), rig.exec.retiring_count()), (0, 1));
    let ext = [Extent {
        gpa: BUF_A,
        len: 4096,
    }];
    assert_eq!(rig.register(id, &ext).status, -libc::ENOENT);
    view.push(&fixed(IORING_OP_READ_FIXED, addrs[0], 4096, 0, 0, 9));
    rig.exec.doorbell(id);
    let others: Vec<u32> = (0..3).map(|_| rig.create(8).0).collect();
    assert!(!others.contains(&id), "{others:?}");
    assert_eq!(
        rig.simple(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0).status,
        -libc::ENOSPC
    );
    // Again, with time enough: answered once the kernel let go.
    rig.exec.set_idle_timeout(Duration::from_secs(20));
    let r = rig.simple(cmd::DESTROY_RING, id, 0, 0, 0, 0, 0);
    assert_eq!(r.status, 0);
    assert!(t0.elapsed() >= Duration::from_millis(HOLD_MS - 100));
    assert_eq!(rig.exec.retiring_count(), 0);
    holder.join().unwrap();
    // The doorbell rung while quarantined submitted nothing.
    assert!(view.is_empty());
    let (again, _) = rig.create(8);
    assert_eq!(again, id);
}

/// A device reset (dropping the executor) retires every ring and returns
/// only once the kernel has freed them: their buffers are unpinned, requests
/// stuck in flight included.
#[test]
fn reset_returns_once_the_kernel_freed_every_ring() {
    let _s = serial();
    let mut rig = Rig::new(ALL_FEATURES);
    let start = settled_vm_pin();
    for _ in 0..3 {
        let (id, view) = rig.create(8);
        let addrs = rig.two_buffers(id);
        let mut stuck = fixed(IORING_OP_READ_FIXED, addrs[0], 4096, 0, 0, 1);
        stuck.fd = ring::SENTINEL_FILE as i32;
        view.push(&stuck);
        rig.exec.doorbell(id);
    }
    assert_eq!(vm_pin_kib(), start + 3 * 2 * BUF_LEN / 1024);
    drop(rig);
    assert_eq!(vm_pin_kib(), start);
}

#[test]
fn device_model_config_features_and_shm() {
    let _s = serial();
    let rig = Rig::with_rings(3, ALL_FEATURES);
    let d = &rig.dev;
    assert_eq!(d.device_type(), 0x7276);
    assert_eq!(d.features(), ALL_FEATURES);
    assert_eq!(d.queue_max_sizes(), &[64]);
    let mut c = [0u8; 0x28];
    d.read_config(0, &mut c);
    let w = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
    assert_eq!(
        (w(0), w(4), w(8), w(0xc), w(0x10), w(0x14), w(0x18), w(0x1c)),
        (3, 4096, 1024, 2, 10, 0x20_0000, 64, 0)
    );
    assert_eq!(
        u64::from_le_bytes(c[0x20..0x28].try_into().unwrap()),
        0xcf00_0000
    );
    assert_eq!(d.shm_regions(), vec![(0x4000_0000, 3 * SLOT_SIZE as u64)]);
    assert!(PvUring::new(
        &PvUringConfig {
            max_rings: 0,
            backends: vec![],
            completion_irq: 10,
            doorbell_gpa: 0,
            ring_area_gpa: 0,
            sq_cpu: None,
        },
        Arc::new(NoHooks)
    )
    .is_err());
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
    assert_eq!(len, 136);
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
    assert_eq!(len, 24);
    let addr = u64::from_le_bytes(resp[16..24].try_into().unwrap());
    // A garbage chain, then the doorbell through the MMIO page.
    let (len, _) = send(&[0u8; 8], 2);
    assert_eq!(len, 0);
    view.push(&fixed(IORING_OP_READ_FIXED, addr, 4096, 8192, 0, 77));
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    assert_eq!(view.wait(1), vec![(77, 4096)]);
    let mut got = vec![0u8; 4096];
    mem.read_slice(&mut got, GuestAddress(BUF_A)).unwrap();
    assert_eq!(got, pattern(FILE_LEN, 7)[8192..8192 + 4096]);
    // A second ring, destroyed with a read in flight that never completes:
    // the worker answers once the kernel has freed the ring (it watches the
    // sentinel) and interrupts the guest.
    let (len, resp) = send(&encode_request(cmd::CREATE_RING, 0, 0, 8, 0, 0, 0, &[]), 3);
    assert_eq!(len, 136);
    let id2 = u32::from_le_bytes(resp[4..8].try_into().unwrap());
    let view2 = rig.view(id2, &resp[16..]);
    let (len, resp) = send(
        &encode_request(cmd::REGISTER_BUFFERS, id2, 0, 1, 0, 0, 0, &ext),
        4,
    );
    assert_eq!(len, 24);
    let addr2 = u64::from_le_bytes(resp[16..24].try_into().unwrap());
    let mut stuck = fixed(IORING_OP_READ_FIXED, addr2, 4096, 0, 0, 1);
    stuck.fd = ring::SENTINEL_FILE as i32;
    view2.push(&stuck);
    rig.dev.doorbell_page().write(0, &id2.to_le_bytes());
    std::thread::sleep(Duration::from_millis(20));
    assert!(view2.is_empty());
    let _ = irq.read();
    let (len, resp) = send(
        &encode_request(cmd::DESTROY_RING, id2, 0, 0, 0, 0, 0, &[]),
        5,
    );
    assert_eq!((len, &resp[0..4]), (16, &[0u8; 4][..]));
    assert!(irq.read().unwrap() >= 1);
    // Reset stops the worker and destroys the ring: its doorbell is gone.
    rig.dev.reset();
    view.push(&fixed(IORING_OP_NOP, 0, 0, 0, 0, 78));
    rig.dev.doorbell_page().write(0, &id.to_le_bytes());
    std::thread::sleep(Duration::from_millis(50));
    let head = view.u32_at(view.p.cq_off.head).load(Ordering::Acquire);
    let tail = view.u32_at(view.p.cq_off.tail).load(Ordering::Acquire);
    assert_eq!(head, tail);
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
