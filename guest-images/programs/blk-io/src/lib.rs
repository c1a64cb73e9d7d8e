//! blk-io: checks a virtio-blk disk from inside the guest with io_uring.
//!
//! The disk layout it shares with the host test (tests/blk.rs):
//! - blocks of 4 KiB; word `j` (u64, little endian) of block `b` is
//!   [`host_word`]`(b, j)` in the first [`HOST_BLOCKS`] blocks, written by
//!   the host before the boot;
//! - ring `r` writes blocks `WRITE_START + r * WRITE_BLOCKS ..` with
//!   [`guest_word`], which the host checks after the guest exits.
//!
//! Steps: open the disk O_DIRECT; register a buffer table on ring 0 and
//! clone it to every other ring with IORING_REGISTER_CLONE_BUFFERS (opcode
//! 30; a failed clone is a failed check, never papered over by registering
//! again), and check that each clone left a table on its ring (registering
//! there again gives EBUSY); on every ring READ_FIXED the host pattern
//! (several reads in flight) and verify it in the shared pool, WRITE_FIXED
//! its own region, fsync, read it back and verify; check the serial (GET_ID)
//! in sysfs; check that the read-only disk refuses writes and reads the host
//! pattern. Prints `blk-io: PASS <check>` or `blk-io: FAIL <check>: <why>`
//! for each check (names stable: tests/blk.rs lists the ones it expects),
//! then `blk-io: N passed, M failed`, and exits 1 on any failure.
//!
//! Benchmark mode (`--bench-qd 1,32 [--bench-op randread,randwrite]
//! [--bench-secs S] [--dev /dev/vda]`): 4 KiB random READ_FIXED (and/or
//! WRITE_FIXED: the disk must be writable, and its contents are
//! overwritten) over the whole disk, O_DIRECT, for each op at each queue
//! depth for S seconds (default 2); one JSON line per run,
//! `{"kind":"blk-io-bench","op":"randread","qd":N,"ops":..,"secs":..,"iops":..}`.
//! Any failure prints `{"kind":"blk-io-bench-error",...}` and exits 1.
//!
//! File mode (`--write-file PATH --blocks N`, for a file on a mounted disk,
//! tests/disk_fs.rs): creates PATH (`O_CREAT|O_TRUNC|O_DIRECT`), writes N
//! blocks of [`file_word`] with WRITE_FIXED from one registered buffer,
//! fsyncs through the ring, reads them back with READ_FIXED into the zeroed
//! buffer and verifies them. Prints `blk-io: file PATH: N blocks written
//! and read back (O_DIRECT, registered buffer)` and exits 0, or
//! `blk-io: FAIL file PATH: <why>` and exits 1.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use guest_common::mem::{Mapping, Page};
use io_uring::{opcode, types, IoUring};

/// Bytes per block of the layout.
const BLOCK: usize = 4096;
/// Blocks written by the host (1 MiB).
const HOST_BLOCKS: u64 = 256;
/// First block written by the guest.
const WRITE_START: u64 = 256;
/// Blocks written by each ring.
const WRITE_BLOCKS: u64 = 16;
/// Bytes per registered buffer (64 KiB).
const BUF: usize = 16 * BLOCK;
/// Bytes per read or write operation.
const OP: usize = 4 * BLOCK;

/// Word `j` of host block `b`.
fn host_word(b: u64, j: u64) -> u64 {
    0x5256_4800_0000_0000 | (b << 16) | j
}

/// Word `j` of guest block `b`.
fn guest_word(b: u64, j: u64) -> u64 {
    0x4755_4553_0000_0000 | (b << 16) | j
}

/// Word `j` of block `b` of the file that `--write-file` writes.
pub fn file_word(b: u64, j: u64) -> u64 {
    0x4649_4c45_0000_0000 | (b << 16) | j
}

/// Submits one fixed-buffer read or write of block `b` of `fd` from the
/// start of registered buffer 0 (at `buf`) and waits for it.
fn file_op(ring: &mut IoUring, fd: i32, buf: *mut u8, b: u64, write: bool) -> Result<(), String> {
    let off = b * BLOCK as u64;
    let sqe = if write {
        opcode::WriteFixed::new(types::Fd(fd), buf, BLOCK as u32, 0)
            .offset(off)
            .build()
    } else {
        opcode::ReadFixed::new(types::Fd(fd), buf, BLOCK as u32, 0)
            .offset(off)
            .build()
    }
    .user_data(b);
    // SAFETY: the buffer is registered as index 0, spans BLOCK bytes and
    // lives until the completion below has been reaped.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| "SQ full".to_string())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter: {e}"))?;
    let res = ring
        .completion()
        .next()
        .map(|c| c.result())
        .ok_or("no completion")?;
    if res != BLOCK as i32 {
        return Err(format!(
            "{} of block {b}: result {res}",
            if write { "WRITE_FIXED" } else { "READ_FIXED" }
        ));
    }
    Ok(())
}

/// File mode: see the module documentation.
fn write_file(path: &str, blocks: u64) -> Result<(), String> {
    let fd = open(
        path,
        libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECT,
    )
    .map_err(|e| format!("open O_CREAT|O_DIRECT: errno {e}"))?;
    // SAFETY: fcntl F_GETFL on an open descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags & libc::O_DIRECT == 0 {
        return Err(format!(
            "O_DIRECT not set on the open file (flags {flags:#x})"
        ));
    }
    let mut ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let buf = map(BLOCK);
    let iov = [libc::iovec {
        iov_base: buf.cast(),
        iov_len: BLOCK,
    }];
    // SAFETY: the buffer is never unmapped.
    unsafe { ring.submitter().register_buffers(&iov) }.map_err(|e| format!("register: {e}"))?;
    let words = || {
        // SAFETY: buf is BLOCK bytes, page-aligned, and only used here
        // between ring operations.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u64>(), BLOCK / 8) }
    };
    for b in 0..blocks {
        for (j, w) in words().iter_mut().enumerate() {
            *w = file_word(b, j as u64);
        }
        file_op(&mut ring, fd, buf, b, true)?;
    }
    let sqe = opcode::Fsync::new(types::Fd(fd))
        .build()
        .user_data(u64::MAX);
    // SAFETY: an fsync SQE references no memory.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| "SQ full".to_string())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter: {e}"))?;
    match ring.completion().next().map(|c| c.result()) {
        Some(0) => {}
        other => return Err(format!("fsync: {other:?}")),
    }
    for b in 0..blocks {
        words().fill(0);
        file_op(&mut ring, fd, buf, b, false)?;
        if let Some((j, w)) = words()
            .iter()
            .enumerate()
            .find(|(j, w)| **w != file_word(b, *j as u64))
        {
            return Err(format!("block {b} word {j} reads {w:#x}"));
        }
    }
    // SAFETY: closing our descriptor.
    if unsafe { libc::close(fd) } != 0 {
        return Err(format!("close: errno {}", errno()));
    }
    Ok(())
}

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    /// One named check; `why` is printed when it fails.
    fn check_why(&mut self, ok: bool, name: &str, why: &str) {
        if ok {
            self.passed += 1;
            println!("blk-io: PASS {name}");
        } else {
            self.failed += 1;
            println!("blk-io: FAIL {name}: {why}");
        }
    }

    fn check(&mut self, ok: bool, name: &str) {
        self.check_why(ok, name, "see above");
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn open(path: &str, flags: i32) -> Result<i32, i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: a valid C string; plain flags.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// An anonymous, page-aligned mapping that lives as long as the program
/// (guest-common's; its pages are touched before any use).
fn map(len: usize) -> *mut u8 {
    let m = Mapping::reserve(len, Page::Small4K)
        .unwrap_or_else(|e| panic!("mmap of {len} bytes failed: {e}"));
    Box::leak(Box::new(m)).at(0)
}

/// Runs `ops` (offset in file, offset in buffer `buf`, write?) on `ring`,
/// all in flight at once; returns how many completed with the full length.
fn run_fixed(
    ring: &mut IoUring,
    fd: i32,
    pool: *mut u8,
    buf: u16,
    ops: &[(u64, usize, bool)],
) -> usize {
    for (i, &(file_off, buf_off, write)) in ops.iter().enumerate() {
        // SAFETY: buffer `buf` is registered on this ring and spans
        // [pool + buf * BUF, + BUF); buf_off + OP stays inside it.
        let ptr = unsafe { pool.add(usize::from(buf) * BUF + buf_off) };
        let sqe = if write {
            opcode::WriteFixed::new(types::Fd(fd), ptr, OP as u32, buf)
                .offset(file_off)
                .build()
        } else {
            opcode::ReadFixed::new(types::Fd(fd), ptr, OP as u32, buf)
                .offset(file_off)
                .build()
        };
        // SAFETY: the buffer outlives the operation (we wait below).
        unsafe { ring.submission().push(&sqe.user_data(i as u64)) }.expect("SQ full");
    }
    if let Err(e) = ring.submit_and_wait(ops.len()) {
        println!("blk-io: io_uring_enter: {e}");
        return 0;
    }
    let mut full = 0;
    for cqe in ring.completion() {
        if cqe.result() == OP as i32 {
            full += 1;
        } else {
            println!("blk-io: op {} returned {}", cqe.user_data(), cqe.result());
        }
    }
    full
}

fn words(pool: *mut u8, buf: usize) -> &'static mut [u64] {
    // SAFETY: the pool is a live mapping that is never unmapped; callers
    // use one buffer at a time while no I/O on it is in flight.
    unsafe { std::slice::from_raw_parts_mut(pool.add(buf * BUF).cast::<u64>(), BUF / 8) }
}

/// Compares buffer `buf` with blocks from `first` of `word`.
fn verify(pool: *mut u8, buf: usize, first: u64, word: fn(u64, u64) -> u64) -> bool {
    let w = words(pool, buf);
    for (i, v) in w.iter().enumerate() {
        let b = first + (i * 8 / BLOCK) as u64;
        let j = (i % (BLOCK / 8)) as u64;
        if u64::from_le(*v) != word(b, j) {
            println!(
                "blk-io: block {b} word {j}: {:#x}, expected {:#x}",
                u64::from_le(*v),
                word(b, j)
            );
            return false;
        }
    }
    true
}

/// xorshift64*.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Parses `1,32` into queue depths (each 1 to 256).
fn parse_qds(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .map(|v| match v.trim().parse::<u32>() {
            Ok(q) if (1..=256).contains(&q) => Ok(q),
            _ => Err(format!("bad queue depth {v:?} (1 to 256)")),
        })
        .collect()
}

/// Parses `randread,randwrite` into ops (`true`: write).
fn parse_ops(s: &str) -> Result<Vec<bool>, String> {
    s.split(',')
        .map(|v| match v.trim() {
            "randread" | "read" => Ok(false),
            "randwrite" | "write" => Ok(true),
            _ => Err(format!("bad op {v:?} (randread or randwrite)")),
        })
        .collect()
}

/// The op's name in the JSON lines.
fn op_name(write: bool) -> &'static str {
    if write {
        "randwrite"
    } else {
        "randread"
    }
}

/// One random-read (or write) run at `qd`: (operations, seconds).
fn bench_qd(fd: i32, blocks: u64, qd: u32, write: bool, secs: f64) -> Result<(u64, f64), String> {
    let qdu = qd as usize;
    let mut ring =
        IoUring::new(qd.next_power_of_two().max(8)).map_err(|e| format!("io_uring_setup: {e}"))?;
    let pool = map(qdu * BLOCK);
    // What the writes send (reads overwrite it).
    // SAFETY: the pool is qdu * BLOCK bytes, mapped and not in use yet.
    unsafe { std::ptr::write_bytes(pool, 0xa5, qdu * BLOCK) };
    let iov = [libc::iovec {
        iov_base: pool.cast(),
        iov_len: qdu * BLOCK,
    }];
    // SAFETY: the pool is never unmapped.
    unsafe { ring.submitter().register_buffers(&iov) }.map_err(|e| format!("register: {e}"))?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(qd);
    let push = |ring: &mut IoUring, slot: usize, rng: &mut u64| {
        let off = (next_rand(rng) % blocks) * BLOCK as u64;
        // SAFETY: slot < qd, inside the registered pool.
        let ptr = unsafe { pool.add(slot * BLOCK) };
        let sqe = if write {
            opcode::WriteFixed::new(types::Fd(fd), ptr, BLOCK as u32, 0)
                .offset(off)
                .build()
        } else {
            opcode::ReadFixed::new(types::Fd(fd), ptr, BLOCK as u32, 0)
                .offset(off)
                .build()
        }
        .user_data(slot as u64);
        // SAFETY: each slot has one request in flight at most; the pool lives on.
        unsafe { ring.submission().push(&sqe) }.map_err(|_| "SQ full".to_string())
    };
    for slot in 0..qdu {
        push(&mut ring, slot, &mut rng)?;
    }
    let t0 = std::time::Instant::now();
    let end = t0 + std::time::Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    let mut inflight = qdu;
    while inflight > 0 {
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        let done: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        let stop = std::time::Instant::now() >= end;
        for (slot, res) in done {
            if res != BLOCK as i32 {
                return Err(format!("{} at qd {qd}: result {res}", op_name(write)));
            }
            ops += 1;
            inflight -= 1;
            if !stop {
                push(&mut ring, slot, &mut rng)?;
                inflight += 1;
            }
        }
    }
    Ok((ops, t0.elapsed().as_secs_f64()))
}

fn bench_fail(detail: &str) -> ! {
    println!(
        "{{\"kind\":\"blk-io-bench-error\",\"detail\":\"{}\"}}",
        detail.replace(['"', '\\'], "'")
    );
    std::process::exit(1);
}

/// Benchmark mode: see the module documentation.
fn bench(dev: &str, qds: &str, ops: &str, secs: f64) -> ! {
    let qds = parse_qds(qds).unwrap_or_else(|e| bench_fail(&e));
    let ops = parse_ops(ops).unwrap_or_else(|e| bench_fail(&e));
    // Read-only unless asked to write: a read-only disk still serves reads.
    let mode = if ops.contains(&true) {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let fd = open(dev, mode | libc::O_DIRECT)
        .unwrap_or_else(|e| bench_fail(&format!("open {dev} O_DIRECT: errno {e}")));
    // SAFETY: lseek on an open descriptor.
    let size = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
    let blocks = if size > 0 {
        size as u64 / BLOCK as u64
    } else {
        0
    };
    if blocks == 0 {
        bench_fail(&format!("{dev}: size {size}"));
    }
    for write in ops {
        for &qd in &qds {
            let (n, s) = bench_qd(fd, blocks, qd, write, secs).unwrap_or_else(|e| bench_fail(&e));
            println!(
                "{{\"kind\":\"blk-io-bench\",\"op\":\"{}\",\"qd\":{qd},\"block\":{BLOCK},\"span_bytes\":{},\"ops\":{n},\"secs\":{s:.6},\"iops\":{:.0}}}",
                op_name(write),
                blocks * BLOCK as u64,
                n as f64 / s
            );
        }
    }
    std::process::exit(0);
}

/// The command line.
struct Args {
    /// The disk under test.
    dev: String,
    /// A read-only disk to check too.
    ro_dev: Option<String>,
    /// Rings sharing the buffer table.
    rings: usize,
}

/// Parses the command line; benchmark mode runs and exits from here.
fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let dev = arg("--dev").unwrap_or_else(|| "/dev/vda".into());
    if let Some(path) = arg("--write-file") {
        let blocks = arg("--blocks").and_then(|v| v.parse::<u64>().ok());
        let result = match blocks {
            Some(n @ 1..=65536) => write_file(&path, n).map(|()| n),
            _ => Err("--blocks N (1 to 65536) is needed".into()),
        };
        match result {
            Ok(n) => {
                println!("blk-io: file {path}: {n} blocks written and read back (O_DIRECT, registered buffer)");
                std::process::exit(0);
            }
            Err(e) => {
                println!("blk-io: FAIL file {path}: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(qds) = arg("--bench-qd") {
        let secs = arg("--bench-secs")
            .map(|s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| *v > 0.0 && *v <= 3600.0)
                    .unwrap_or_else(|| bench_fail(&format!("bad --bench-secs {s:?}")))
            })
            .unwrap_or(2.0);
        let ops = arg("--bench-op").unwrap_or_else(|| "randread".into());
        bench(&dev, &qds, &ops, secs);
    }
    Args {
        dev,
        ro_dev: arg("--ro-dev"),
        rings: arg("--rings").and_then(|v| v.parse().ok()).unwrap_or(3),
    }
}

/// Registers `iovecs` on the first ring and clones the table to every
/// other ring (checked: each clone, and that each ring then holds a table).
fn share_table(t: &mut Tally, ring_set: &[IoUring], iovecs: &[libc::iovec]) {
    // SAFETY: the pool lives for the whole program.
    let reg = unsafe { ring_set[0].submitter().register_buffers(iovecs) };
    t.check_why(
        reg.is_ok(),
        "IORING_REGISTER_BUFFERS on ring 0",
        &format!("{reg:?}"),
    );
    let src = ring_set[0].as_raw_fd();
    let mut cloned = 0;
    for (r, ring) in ring_set.iter().enumerate().skip(1) {
        // No fallback to registering again: the point of this program is
        // that rings share one table by cloning, and a fallback would make
        // a kernel without the clone look like one with it.
        let clone = ring.submitter().register_buffers_clone(src);
        cloned += usize::from(clone.is_ok());
        t.check_why(
            clone.is_ok(),
            &format!("ring {r}: IORING_REGISTER_CLONE_BUFFERS from ring 0"),
            &format!(
                "errno {}",
                clone.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
            ),
        );
        // This ring never registered a table: if it holds one, the clone
        // put it there. (6.1 refuses a second table with EBUSY.)
        // SAFETY: as above.
        let again = unsafe { ring.submitter().register_buffers(iovecs) };
        t.check_why(
            again
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY)),
            &format!("ring {r}: holds the cloned table (registering again: EBUSY)"),
            &format!("registering again gave {again:?}"),
        );
    }
    println!(
        "blk-io: {} rings, buffers cloned to {cloned} of {}",
        ring_set.len(),
        ring_set.len() - 1
    );
}

/// `(file offset, buffer offset, write)` of the operations covering one
/// buffer's worth of the file from `base`.
fn buffer_ops(base: u64, write: bool) -> Vec<(u64, usize, bool)> {
    (0..BUF / OP)
        .map(|k| (base + (k * OP) as u64, k * OP, write))
        .collect()
}

/// Ring `r` reads the whole host region through its read buffer, several
/// operations in flight, starting at a place of its own.
fn check_host_reads(t: &mut Tally, r: usize, ring: &mut IoUring, fd: i32, pool: *mut u8) {
    let rb = (2 * r) as u16;
    let chunks = HOST_BLOCKS as usize * BLOCK / BUF;
    let mut ok = true;
    for c in 0..chunks {
        let chunk = (c + r * 5) % chunks;
        let ops = buffer_ops((chunk * BUF) as u64, false);
        words(pool, rb.into()).fill(0);
        let done = run_fixed(ring, fd, pool, rb, &ops);
        ok &= done == ops.len();
        ok &= verify(pool, rb.into(), (chunk * BUF / BLOCK) as u64, host_word);
    }
    t.check(ok, &format!("ring {r}: READ_FIXED of the host pattern"));
}

/// Ring `r` writes its own region, fsyncs and reads it back.
fn check_write_back(t: &mut Tally, r: usize, ring: &mut IoUring, fd: i32, pool: *mut u8) {
    let rb = (2 * r) as u16;
    let wb = rb + 1;
    let first = WRITE_START + r as u64 * WRITE_BLOCKS;
    for (i, w) in words(pool, wb.into()).iter_mut().enumerate() {
        let b = first + (i * 8 / BLOCK) as u64;
        *w = guest_word(b, (i % (BLOCK / 8)) as u64).to_le();
    }
    let base = first * BLOCK as u64;
    let ops = buffer_ops(base, true);
    let done = run_fixed(ring, fd, pool, wb, &ops);
    t.check(done == ops.len(), &format!("ring {r}: WRITE_FIXED"));
    let fsync = opcode::Fsync::new(types::Fd(fd)).build();
    // SAFETY: no buffers involved.
    unsafe { ring.submission().push(&fsync) }.expect("SQ full");
    let synced = ring.submit_and_wait(1).is_ok()
        && ring.completion().next().is_some_and(|c| c.result() == 0);
    t.check(synced, &format!("ring {r}: fsync"));
    words(pool, rb.into()).fill(0);
    let ops = buffer_ops(base, false);
    let done = run_fixed(ring, fd, pool, rb, &ops);
    t.check(
        done == ops.len() && verify(pool, rb.into(), first, guest_word),
        &format!("ring {r}: read back what it wrote"),
    );
}

/// GET_ID: the serial the VMM gave the disk, as the guest kernel shows it.
fn check_serial(t: &mut Tally, dev: &str) {
    let name = dev.trim_start_matches("/dev/");
    match std::fs::read_to_string(format!("/sys/block/{name}/serial")) {
        Ok(s) => t.check_why(
            s.trim() == format!("ringvisor-{name}"),
            &format!("GET_ID serial of {name}"),
            &format!("{:?}", s.trim()),
        ),
        // The guest kernel exposes it (virtio_blk's serial attribute): a
        // missing file means GET_ID was not answered, which is a failure.
        Err(e) => t.check_why(
            false,
            &format!("GET_ID serial of {name}"),
            &format!("/sys/block/{name}/serial: {e}"),
        ),
    }
}

/// The read-only disk `ro`: marked read-only, refuses writes, holds the
/// host pattern.
fn check_read_only(t: &mut Tally, ro: &str, pool: *mut u8) {
    // Linux 6.1 lets O_RDWR open a read-only disk; writes must fail.
    let ro_name = ro.trim_start_matches("/dev/");
    let flag = std::fs::read_to_string(format!("/sys/block/{ro_name}/ro")).unwrap_or_default();
    t.check_why(
        flag.trim() == "1",
        &format!("/sys/block/{ro_name}/ro is 1"),
        &format!("{:?}", flag.trim()),
    );
    match open(ro, libc::O_RDWR) {
        Ok(wfd) => {
            words(pool, 1).fill(0xee);
            // SAFETY: BUF bytes of buffer 1 inside the pool.
            let n = unsafe { libc::pwrite(wfd, pool.add(BUF).cast(), BLOCK, 0) };
            let e = errno();
            t.check_why(
                n < 0 && (e == libc::EPERM || e == libc::EROFS || e == libc::EIO),
                "read-only disk refuses writes",
                &format!("pwrite returned {n}, errno {e}"),
            );
        }
        Err(e) => t.check_why(
            e == libc::EROFS || e == libc::EACCES || e == libc::EPERM,
            "read-only disk refuses writes",
            &format!("open O_RDWR: errno {e}"),
        ),
    }
    match open(ro, libc::O_RDONLY | libc::O_DIRECT) {
        Ok(rfd) => {
            let rb = 0usize;
            words(pool, rb).fill(0);
            // SAFETY: the buffer is BUF bytes inside the pool.
            let n = unsafe { libc::pread(rfd, pool.cast(), BUF, 0) };
            t.check(
                n == BUF as isize && verify(pool, rb, 0, host_word),
                "read-only disk holds the host pattern",
            );
        }
        Err(e) => t.check_why(
            false,
            "read-only disk holds the host pattern",
            &format!("open O_RDONLY|O_DIRECT: errno {e}"),
        ),
    }
}

pub fn main() {
    let args = parse_args();
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    let fd = match open(&args.dev, libc::O_RDWR | libc::O_DIRECT) {
        Ok(fd) => fd,
        Err(e) => {
            println!("blk-io: cannot open {} O_DIRECT: errno {e}", args.dev);
            println!("blk-io: 0 passed, 1 failed");
            std::process::exit(1);
        }
    };

    // Two 64 KiB buffers per ring: [2r] for reads, [2r + 1] for writes.
    let nbufs = 2 * args.rings;
    let pool = map(nbufs * BUF);
    let iovecs: Vec<libc::iovec> = (0..nbufs)
        .map(|i| libc::iovec {
            // SAFETY: inside the pool.
            iov_base: unsafe { pool.add(i * BUF) }.cast(),
            iov_len: BUF,
        })
        .collect();
    let mut ring_set: Vec<IoUring> = (0..args.rings)
        .map(|_| IoUring::new(32).expect("io_uring_setup"))
        .collect();
    share_table(&mut t, &ring_set, &iovecs);
    for (r, ring) in ring_set.iter_mut().enumerate() {
        check_host_reads(&mut t, r, ring, fd, pool);
        check_write_back(&mut t, r, ring, fd, pool);
    }
    check_serial(&mut t, &args.dev);
    if let Some(ro) = &args.ro_dev {
        check_read_only(&mut t, ro, pool);
    }
    println!("blk-io: {} passed, {} failed", t.passed, t.failed);
    std::process::exit(i32::from(t.failed > 0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depths_parse_and_are_bounded() {
        assert_eq!(parse_qds("1,32"), Ok(vec![1, 32]));
        assert!(parse_qds("0").is_err());
        assert!(parse_qds("1,x").is_err());
        assert!(parse_qds("257").is_err());
    }

    #[test]
    fn ops_parse() {
        assert_eq!(parse_ops("randread,randwrite"), Ok(vec![false, true]));
        assert_eq!(parse_ops("write"), Ok(vec![true]));
        assert!(parse_ops("randread,trim").is_err());
        assert_eq!(op_name(true), "randwrite");
    }
}
