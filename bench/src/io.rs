//! The io suite: 4 KiB random O_DIRECT reads and writes at QD1 and QD32 of
//! one host file (the suite's own temporary file, written by every path):
//! host-native io_uring in-process (a plain ring waiting in
//! `io_uring_enter`, and an SQPOLL ring busy-polled like a pv ring), a
//! guest over virtio-blk (`blk-io --bench-qd`) and a guest over pv-uring
//! rings (`pv-bench`: a doorbell ring and an SQPOLL ring).
//!
//! The host disk here changes speed from minute to minute (by 2x for
//! writes), so each pv run is compared with host runs of its own minute:
//! pv-bench pauses right before and right after each run, and in each
//! pause, with the guest asleep, the bench runs the plain and the SQPOLL
//! host reference for that operation and depth ([`Bracket`]). The separate
//! host runs, before and after all guests, remain the reference of the
//! virtio-blk guest and the host rows of the table.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use io_uring::{opcode, types, IoUring};
use serde_json::{json, Value};

use super::placement::{IrqCounts, Placement};
use super::{
    fig, run_guest, run_guest_paced, samples, sq_threads, BenchError, Ctx, GuestRun, Point,
    SuiteOutput,
};

const BLOCK: usize = 4096;
/// Bytes of the target file.
const FILE_BYTES: u64 = 256 << 20;
/// Queue depths measured.
const QDS: [u32; 2] = [1, 32];
/// Operations measured, in this order on every path.
const OPS: [Op; 2] = [Op::Read, Op::Write];
/// SQ thread idle time of the host SQPOLL reference: the pv-uring
/// device's (devices/src/virtio/uring/ring.rs).
const SQ_THREAD_IDLE_MS: u32 = 1000;
/// Length of the probe that finds the disk's interrupt CPU.
const PROBE_SECS: f64 = 0.3;
/// Longest wait in a guest's pause for the VMM's SQ threads to sleep: their
/// idle time, and some.
const SQ_SLEEP_LIMIT: Duration = Duration::from_millis(3 * SQ_THREAD_IDLE_MS as u64);

/// What the requests do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "randread",
            Op::Write => "randwrite",
        }
    }

    /// The op named `name` (as [`Op::name`] gives it).
    fn parse(name: &str) -> Option<Self> {
        OPS.into_iter().find(|op| op.name() == name)
    }

    fn opcode(self) -> &'static str {
        match self {
            Op::Read => "READ_FIXED",
            Op::Write => "WRITE_FIXED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path_ {
    /// Host io_uring, waiting in io_uring_enter: the reference.
    Host,
    /// Host io_uring with an SQPOLL thread, CQ busy-polled.
    HostSqpoll,
    VirtioBlk,
    /// pv ring, a doorbell write per submission.
    PvRing,
    /// pv ring with a host SQPOLL thread.
    PvRingSqpoll,
}

impl Path_ {
    fn name(self) -> &'static str {
        match self {
            Path_::Host => "host",
            Path_::HostSqpoll => "host-sqpoll",
            Path_::VirtioBlk => "guest-virtio-blk",
            Path_::PvRing => "guest-pv-ring",
            Path_::PvRingSqpoll => "guest-pv-ring-sqpoll",
        }
    }

    /// The label in the summary table.
    fn label(self) -> &'static str {
        match self {
            Path_::Host => "host io_uring",
            Path_::HostSqpoll => "host io_uring SQPOLL",
            Path_::VirtioBlk => "guest virtio-blk",
            Path_::PvRing => "guest pv ring (doorbell)",
            Path_::PvRingSqpoll => "guest pv ring (SQPOLL)",
        }
    }
}

fn secs(ctx: &Ctx) -> f64 {
    if ctx.quick {
        1.0
    } else {
        5.0
    }
}

pub fn plan(ctx: &Ctx) -> Vec<Point> {
    let s = secs(ctx);
    let runs = (QDS.len() * OPS.len()) as f64;
    vec![
        Point {
            label: "host io_uring read+write QD1+QD32".into(),
            est: Duration::from_secs_f64(1.0 + runs * s),
        },
        Point {
            label: "host io_uring SQPOLL read+write QD1+QD32".into(),
            est: Duration::from_secs_f64(1.0 + runs * s),
        },
        Point {
            label: "guest virtio-blk read+write QD1+QD32".into(),
            est: Duration::from_secs_f64(14.0 + runs * s),
        },
        Point {
            label:
                "guest pv rings (doorbell, SQPOLL) read+write QD1+QD32, host reference around each"
                    .into(),
            // Each pv run, and two host runs in each of its two pauses
            // (plus up to a second's wait for the SQ thread to sleep).
            est: Duration::from_secs_f64(16.0 + 2.0 * runs * (s + 4.0 * s + 1.0)),
        },
        Point {
            label: "host io_uring read+write QD1+QD32, again after the guests".into(),
            est: Duration::from_secs_f64(1.0 + runs * s),
        },
    ]
}

/// Folds the host reference's second run (after the guests) into its
/// point: `iops` becomes the mean of both runs, which are kept as
/// `iops_runs` with `drift` (after / before), and the samples of both are
/// kept. A shared host's load changes over the minutes the guests take;
/// the mean puts the reference in the middle of the guests' time, and the
/// drift says how far apart the two runs were.
fn fold_second_host_run(p: &mut Value, after: f64, after_slices: &[f64]) -> Result<(), BenchError> {
    let what = format!("{} {} qd {}", p["path"], p["op"], p["qd"]);
    let before = p["iops"]["value"]
        .as_f64()
        .ok_or_else(|| host_err(what.clone())(std::io::Error::other("no first run")))?;
    p["iops"] = fig(&what, (before + after) / 2.0, "IOPS")?;
    p["iops_runs"] = json!([fig(&what, before, "IOPS")?, fig(&what, after, "IOPS")?]);
    p["drift"] = fig(&format!("{what} drift"), after / before, "x")?;
    if let Some(v) = p["samples"]["values"].as_array_mut() {
        v.extend(after_slices.iter().map(|&x| json!(x)));
    }
    Ok(())
}

/// The host reference measured in one of pv-bench's pauses (`--pause on`):
/// right before or right after the guest's run of `op` at `qd` on its
/// `submit` ring, the plain host ring and then the host SQPOLL ring run the
/// same op at the same depth, each as long as the guest's run. A pv figure
/// is compared with the mean of its two brackets: the host disk's speed
/// here changes from minute to minute, and the separate host points,
/// minutes away from the guest's runs, drift by more than the 10% the
/// ratio must resolve.
#[derive(Debug, Clone, PartialEq)]
struct Bracket {
    /// "before" or "after".
    at: String,
    submit: String,
    op: Op,
    qd: u32,
    host: f64,
    host_sqpoll: f64,
    /// Whether the VMM's SQ threads slept when the host runs began.
    sq_threads_asleep: bool,
}

impl Bracket {
    /// Reads a `pv-bench-pause` line, waits for the VMM `vmm_pid`'s SQ
    /// threads to sleep and measures both host references.
    fn measure(
        pause: &Value,
        vmm_pid: u32,
        target: &Path,
        secs: f64,
        sqpoll_cpus: Option<(usize, usize)>,
    ) -> Result<Self, BenchError> {
        let (at, submit, op, qd) = Self::parse(pause)?;
        let sq_threads_asleep = sq_threads::wait_asleep(vmm_pid, SQ_SLEEP_LIMIT);
        if !sq_threads_asleep {
            log::warn!(
                "bench: the VMM's SQ thread still ran {SQ_SLEEP_LIMIT:?} into the guest's pause; \
                 the host reference for {} QD{qd} runs beside it",
                op.name()
            );
        }
        let host = host_io(target, op, qd, false, secs, None)?.2;
        let host_sqpoll = host_io(target, op, qd, true, secs, sqpoll_cpus)?.2;
        Ok(Bracket {
            at,
            submit,
            op,
            qd,
            host,
            host_sqpoll,
            sq_threads_asleep,
        })
    }

    /// (at, submit, op, qd) of a pause line.
    fn parse(pause: &Value) -> Result<(String, String, Op, u32), BenchError> {
        let field = |k: &str| pause[k].as_str().map(str::to_string);
        let at = field("at").filter(|a| a == "before" || a == "after");
        let op = pause["op"].as_str().and_then(Op::parse);
        let qd = pause["qd"].as_u64().and_then(|q| u32::try_from(q).ok());
        match (at, field("submit"), op, qd) {
            (Some(at), Some(submit), Some(op), Some(qd)) => Ok((at, submit, op, qd)),
            _ => Err(host_err("io: the guest's pause line")(
                std::io::Error::other(format!(
                    "{pause} lacks at (before/after), submit, a known op or qd"
                )),
            )),
        }
    }

    /// The progress bar's words for it.
    fn describe(&self) -> String {
        format!(
            "{} {} {} QD{}: {:.0} / {:.0} SQPOLL IOPS",
            self.at,
            self.submit,
            self.op.name(),
            self.qd,
            self.host,
            self.host_sqpoll
        )
    }

    /// The `host_reference` of the pv run (`submit`, `op`, `qd`): both
    /// references before and after it, and their means.
    fn reference(brackets: &[Bracket], submit: &str, op: Op, qd: u32) -> Result<Value, BenchError> {
        let find = |at: &str| {
            brackets
                .iter()
                .find(|b| b.at == at && b.submit == submit && b.op == op && b.qd == qd)
                .ok_or_else(|| BenchError::Missing {
                    what: "guest pv rings".into(),
                    kind: format!("pv-bench-pause {at} {submit} {} qd {qd}", op.name()),
                    stdout: String::new(),
                })
        };
        let (b, a) = (find("before")?, find("after")?);
        let what = format!("host reference around {submit} {} qd {qd}", op.name());
        let pair = |x: f64, y: f64| -> Result<Value, BenchError> {
            Ok(json!({
                "before": fig(&what, x, "IOPS")?,
                "after": fig(&what, y, "IOPS")?,
                "mean": fig(&what, (x + y) / 2.0, "IOPS")?,
            }))
        };
        Ok(json!({
            Path_::Host.name(): pair(b.host, a.host)?,
            Path_::HostSqpoll.name(): pair(b.host_sqpoll, a.host_sqpoll)?,
            "sq_threads_asleep": b.sq_threads_asleep && a.sq_threads_asleep,
        }))
    }
}

/// The host's 1-minute load average: other work on a small shared host
/// takes CPU from the guests' polling threads (and from an SQ thread), so
/// each path records what the host looked like when it ran.
fn host_load() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The target file, filled with data (reads of unwritten extents would
/// never reach the disk), removed on drop.
struct Target(PathBuf);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn host_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Host { what, source }
}

fn make_target(dir: &Path) -> Result<Target, BenchError> {
    let path = dir.join("io-target.img");
    let t = Target(path.clone());
    let mut f =
        std::fs::File::create(&path).map_err(host_err(format!("create {}", path.display())))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..FILE_BYTES >> 20 {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk)
            .map_err(host_err(format!("write {}", path.display())))?;
    }
    f.sync_all()
        .map_err(host_err(format!("fsync {}", path.display())))?;
    Ok(t)
}

/// Host-native random `op`s at `qd` for `secs`: (IOPS per 100 ms slice,
/// latency samples in µs, total IOPS). A plain ring waits for completions
/// in `io_uring_enter` (submit_and_wait); an SQPOLL ring (`sqpoll`) is
/// driven the way a guest drives its pv ring: SQEs reach the kernel's
/// poller without a system call while it is awake, and the CQ is
/// busy-polled in user space. With `cpus` (submitting CPU, SQ thread CPU)
/// the calling thread runs on the first for the run, and an SQ thread on
/// the second: the placement the guests get (see `placement`).
fn host_io(
    path: &Path,
    op: Op,
    qd: u32,
    sqpoll: bool,
    secs: f64,
    cpus: Option<(usize, usize)>,
) -> Result<(Vec<f64>, Vec<f64>, f64), BenchError> {
    let what = format!(
        "host{} {} qd {qd}",
        if sqpoll { " sqpoll" } else { "" },
        op.name()
    );
    let _pinned = cpus
        .map(|(app, _)| PinnedThread::to(app))
        .transpose()
        .map_err(host_err(format!("{what}: pin to a CPU")))?;
    let f = open_direct(path, op, &what)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let qdu = qd as usize;
    let mut ring = host_ring(qd, sqpoll, cpus, &what)?;
    let mut pool = vec![0xa5u8; (qdu + 1) * BLOCK];
    // align < BLOCK: qd blocks fit after it.
    let align = pool.as_ptr().align_offset(BLOCK);
    let base = pool[align..].as_mut_ptr();
    let iov = [libc::iovec {
        iov_base: base.cast(),
        iov_len: qdu * BLOCK,
    }];
    // SAFETY: `pool` outlives the ring (dropped after it at the end).
    unsafe { ring.submitter().register_buffers(&iov) }
        .map_err(host_err(format!("{what}: register")))?;
    let mut requests = Requests {
        fd,
        base,
        op,
        sqpoll,
        rng: 0x2545_f491_4f6c_dd1d ^ u64::from(qd) ^ ((op as u64) << 32),
        started: vec![Instant::now(); qdu],
        what: &what,
    };
    for slot in 0..qdu {
        requests.push(&mut ring, slot)?;
    }
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let slice = Duration::from_millis(100);
    let (mut slice_start, mut slice_ops) = (t0, 0u64);
    let mut slices = Vec::new();
    let mut lat = Vec::new();
    let mut ops = 0u64;
    let mut inflight = qdu;
    let mut last_progress = t0;
    let mut done: Vec<(usize, i32)> = Vec::with_capacity(qdu);
    while inflight > 0 {
        reap(&mut ring, sqpoll, last_progress, &what, &mut done)?;
        let now = Instant::now();
        last_progress = now;
        for (slot, res) in done.drain(..) {
            if res != BLOCK as i32 {
                return Err(BenchError::Host {
                    what: format!("{what}: {} returned {res}", op.opcode()),
                    source: std::io::Error::from_raw_os_error(-res.min(0)),
                });
            }
            ops += 1;
            slice_ops += 1;
            lat.push((now - requests.started[slot]).as_nanos() as f64 / 1e3);
            inflight -= 1;
            if now < end {
                requests.push(&mut ring, slot)?;
                inflight += 1;
            }
        }
        if now - slice_start >= slice && now < end {
            slices.push(slice_ops as f64 / (now - slice_start).as_secs_f64());
            (slice_start, slice_ops) = (now, 0);
        }
    }
    let total = ops as f64 / t0.elapsed().as_secs_f64();
    drop(ring);
    drop(pool);
    Ok((slices, lat, total))
}

/// The target opened O_DIRECT for `op`.
fn open_direct(path: &Path, op: Op, what: &str) -> Result<std::fs::File, BenchError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(op == Op::Write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(host_err(format!(
            "{what}: open {} O_DIRECT",
            path.display()
        )))
}

/// The host reference's requests: a random block of the target each, one
/// buffer slot of the registered buffer each.
struct Requests<'a> {
    fd: i32,
    /// The registered buffer: `BLOCK` bytes a slot.
    base: *mut u8,
    op: Op,
    sqpoll: bool,
    /// xorshift64* state.
    rng: u64,
    /// When each slot's request was pushed.
    started: Vec<Instant>,
    what: &'a str,
}

impl Requests<'_> {
    /// Pushes a request for `slot` (none in flight) to `ring`'s SQ.
    fn push(&mut self, ring: &mut IoUring, slot: usize) -> Result<(), BenchError> {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let blocks = FILE_BYTES / BLOCK as u64;
        let off = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks) * BLOCK as u64;
        // slot < qd: inside the registered buffer.
        let ptr = self.base.wrapping_add(slot * BLOCK);
        let fd = types::Fd(self.fd);
        let sqe = match self.op {
            Op::Read => opcode::ReadFixed::new(fd, ptr, BLOCK as u32, 0)
                .offset(off)
                .build(),
            Op::Write => opcode::WriteFixed::new(fd, ptr, BLOCK as u32, 0)
                .offset(off)
                .build(),
        }
        .user_data(slot as u64);
        self.started[slot] = Instant::now();
        // A full SQ can only be the SQ thread's late head update (see the
        // ring size): wait for it, briefly.
        let deadline = Instant::now() + Duration::from_secs(1);
        // SAFETY: one request per slot in flight; the buffer outlives the
        // ring (host_io drops the ring first).
        while unsafe { ring.submission().push(&sqe) }.is_err() {
            if !self.sqpoll || Instant::now() > deadline {
                return Err(BenchError::Host {
                    what: format!("{}: SQ full", self.what),
                    source: std::io::Error::from_raw_os_error(libc::EBUSY),
                });
            }
            std::hint::spin_loop();
        }
        Ok(())
    }
}

/// The host reference's ring for `qd` requests in flight: plain, or with
/// an SQ thread (`sqpoll`) of the pv-uring device's idle time, on CPU
/// `cpus.1` when given.
fn host_ring(
    qd: u32,
    sqpoll: bool,
    cpus: Option<(usize, usize)>,
    what: &str,
) -> Result<IoUring, BenchError> {
    let mut builder = IoUring::builder();
    if sqpoll {
        // The pv-uring device's SQ thread idle time.
        builder.setup_sqpoll(SQ_THREAD_IDLE_MS);
        if let Some((_, sq)) = cpus {
            builder.setup_sqpoll_cpu(sq as u32);
        }
    }
    builder
        // An SQ thread may post a batch's CQEs before it publishes the SQ
        // head that consumed it: room for a second batch keeps the refill
        // from finding the SQ full.
        .build((qd * if sqpoll { 2 } else { 1 }).next_power_of_two().max(8))
        .map_err(host_err(format!("{what}: io_uring_setup")))
}

/// Submits what was pushed and waits for at least one completion, adding
/// `(slot, result)` of each to `done`: a plain ring waits in
/// io_uring_enter; an SQPOLL ring busy-polls its CQ (failing after 30 s
/// without progress since `last_progress`).
fn reap(
    ring: &mut IoUring,
    sqpoll: bool,
    last_progress: Instant,
    what: &str,
    done: &mut Vec<(usize, i32)>,
) -> Result<(), BenchError> {
    if !sqpoll {
        ring.submit_and_wait(1)
            .map_err(host_err(format!("{what}: io_uring_enter")))?;
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        return Ok(());
    }
    // No system call while the poller is awake (it wakes it when
    // IORING_SQ_NEED_WAKEUP is set).
    ring.submit()
        .map_err(host_err(format!("{what}: io_uring_enter")))?;
    loop {
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        if !done.is_empty() {
            return Ok(());
        }
        std::hint::spin_loop();
        if last_progress.elapsed() > Duration::from_secs(30) {
            return Err(BenchError::Host {
                what: format!("{what}: no completion for 30 s"),
                source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            });
        }
    }
}

/// The calling thread kept on one CPU until dropped, then given back the
/// CPUs it had.
struct PinnedThread(Vec<usize>);

impl PinnedThread {
    fn to(cpu: usize) -> std::io::Result<Self> {
        let had = devices::affinity::current_thread_cpus()?;
        devices::affinity::pin_current_thread(&[cpu])?;
        Ok(PinnedThread(had))
    }
}

impl Drop for PinnedThread {
    fn drop(&mut self) {
        if let Err(e) = devices::affinity::pin_current_thread(&self.0) {
            log::warn!("bench: giving the thread its CPUs back: {e}");
        }
    }
}

/// Finds where the polling threads go (see `placement`): a short plain
/// QD32 read run on the target, with the device interrupts it raises
/// counted per CPU.
fn place(target: &Path) -> Result<Placement, BenchError> {
    let allowed = devices::affinity::current_thread_cpus()
        .map_err(host_err("io placement: sched_getaffinity"))?;
    let irqs = || IrqCounts::read().map_err(host_err("io placement: read /proc/interrupts"));
    let before = irqs()?;
    host_io(target, Op::Read, 32, false, PROBE_SECS, None)?;
    Ok(Placement::decide(&allowed, &before, &irqs()?))
}

/// One measured point: path, op, qd, IOPS as a figure, the raw samples,
/// the host's load when it ran, and `extra` fields.
/// `{"min", "median", "p99"}` latency figures in µs of the point `what`.
fn latency(what: &str, min: f64, median: f64, p99: f64) -> Result<Value, BenchError> {
    Ok(json!({
        "min": fig(what, min, "us")?,
        "median": fig(what, median, "us")?,
        "p99": fig(what, p99, "us")?,
    }))
}

fn point(
    path: Path_,
    op: Op,
    qd: u32,
    iops: f64,
    raw: Value,
    load: Option<f64>,
    extra: Value,
) -> Result<Value, BenchError> {
    let what = format!("{} {} qd {qd}", path.name(), op.name());
    let mut v = json!({
        "path": path.name(),
        "op": op.name(),
        "qd": qd,
        "block_bytes": BLOCK,
        "span_bytes": FILE_BYTES,
        "iops": fig(&what, iops, "IOPS")?,
        "samples": raw,
        "host_load_1min": load,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            o.insert(k.clone(), val.clone());
        }
    }
    Ok(v)
}

/// Whether `v` is the point of `path` for `op` at `qd`.
fn is_point(v: &Value, path: Path_, op: Op, qd: u32) -> bool {
    v["path"] == path.name() && v["op"] == op.name() && v["qd"] == qd
}

/// The guest line of `kind` for `op` at `qd` (and `submit`, for pv-bench).
fn guest_line<'a>(
    run: &GuestRun,
    lines: &'a [Value],
    kind: &str,
    op: Op,
    qd: u32,
    submit: Option<&str>,
) -> Result<&'a Value, BenchError> {
    lines
        .iter()
        .find(|l| l["qd"] == qd && l["op"] == op.name() && submit.is_none_or(|s| l["submit"] == s))
        .ok_or_else(|| BenchError::Missing {
            what: run.what.clone(),
            kind: format!("{kind} {} qd {qd}{}", op.name(), submit.unwrap_or("")),
            stdout: String::new(),
        })
}

/// Why a VMM CPU figure is `null`: the kernel counts a thread's CPU time in
/// clock ticks, and the threads used less than one.
const VMM_CPU_NOT_MEASURED: &str =
    "not measured: the VMM's threads used less than one clock tick of CPU";

/// The child VMM's CPU time outside its vCPU threads (device workers and
/// event loops) per guest request, in microseconds. Under one clock tick
/// of CPU there is no measurement: the value is `null`, with the reason in
/// `not_measured`. (One tick divided by the requests was published before;
/// it is a bound, not a measurement, and read as one.)
fn vmm_cpu_per_request(run: &GuestRun, lines: &[Value]) -> Result<Value, BenchError> {
    let ops: f64 = lines.iter().filter_map(|l| l["ops"].as_f64()).sum();
    let cpu = run
        .timings
        .as_ref()
        .and_then(|t| t["vmm_threads_cpu_s"].as_f64())
        .ok_or_else(|| BenchError::Missing {
            what: run.what.clone(),
            kind: "RINGVISOR_TIMINGS vmm_threads_cpu_s".into(),
            stdout: String::new(),
        })?;
    let what = format!("{}: VMM CPU per request", run.what);
    if cpu > 0.0 {
        return Ok(json!({"value": fig(&what, cpu / ops * 1e6, "us")?, "ops": ops}));
    }
    Ok(json!({"value": null, "not_measured": VMM_CPU_NOT_MEASURED, "ops": ops}))
}

/// What every phase of the suite shares.
struct Suite<'a> {
    ctx: &'a Ctx,
    plan: &'a [Point],
    pb: &'a ProgressBar,
    /// The target file.
    target: &'a Path,
    /// Seconds per run.
    secs: f64,
    placement: Placement,
    /// Where the SQPOLL reference runs: the pv SQPOLL ring's placement.
    /// The plain reference, one thread that sleeps in io_uring_enter, is
    /// left where the scheduler puts it (next to the interrupts it waits
    /// for: faster here than pinned away from them).
    sqpoll_cpus: Option<(usize, usize)>,
}

impl Suite<'_> {
    /// `--qd` and `--op` values of the guests' benchmark programs.
    fn qds_and_ops() -> (String, String) {
        (
            QDS.map(|q| q.to_string()).join(","),
            OPS.map(Op::name).join(","),
        )
    }

    /// The host references, plain and SQPOLL, before the guests.
    fn host_points(&self, pts: &mut Vec<Value>) -> Result<(), BenchError> {
        for (i, (path, sqpoll)) in [(Path_::Host, false), (Path_::HostSqpoll, true)]
            .into_iter()
            .enumerate()
        {
            self.pb.set_message(self.plan[i].label.clone());
            for op in OPS {
                for qd in QDS {
                    let load = host_load();
                    let cpus = if sqpoll { self.sqpoll_cpus } else { None };
                    let (slices, lat, iops) =
                        host_io(self.target, op, qd, sqpoll, self.secs, cpus)?;
                    let (min, med, p99) = super::stats(&lat).unwrap_or((0.0, 0.0, 0.0));
                    let what = format!("{} {} qd {qd} latency", path.name(), op.name());
                    pts.push(point(
                        path,
                        op,
                        qd,
                        iops,
                        samples(&slices, "IOPS per 100 ms slice"),
                        load,
                        json!({
                            "latency": latency(&what, min, med, p99)?,
                            "ops": lat.len(),
                        }),
                    )?);
                }
            }
            self.pb.inc(1);
        }
        Ok(())
    }

    /// The virtio-blk guest (`blk-io --bench-qd`); returns its VMM CPU entry.
    fn virtio_blk_points(&self, pts: &mut Vec<Value>) -> Result<Value, BenchError> {
        // The guests get the file writable: the write runs overwrite it (it
        // is the suite's own temporary file, removed at the end).
        let label = &self.plan[2].label;
        self.pb.set_message(label.clone());
        let (qds, ops) = Self::qds_and_ops();
        let load = host_load();
        let run = run_guest(
            self.ctx,
            label,
            &[
                self.placement.vcpu_args(),
                vec![
                    "--disk".into(),
                    format!("path={},direct=on", self.target.display()),
                    "--cmdline".into(),
                    format!(
                        "-- /bin/blk-io --bench-qd {qds} --bench-op {ops} --bench-secs {}",
                        self.secs
                    ),
                ],
            ]
            .concat(),
        )?;
        let lines = run.require("blk-io-bench")?;
        let vmm_cpu = json!({
            "path": Path_::VirtioBlk.name(),
            "vmm_cpu_per_request": vmm_cpu_per_request(&run, &lines)?,
        });
        for op in OPS {
            for qd in QDS {
                let l = guest_line(&run, &lines, "blk-io-bench", op, qd, None)?;
                let iops = run.num(l, "iops")?;
                pts.push(point(
                    Path_::VirtioBlk,
                    op,
                    qd,
                    iops,
                    samples(&[iops], "IOPS"),
                    load,
                    json!({"ops": l["ops"], "secs": l["secs"]}),
                )?);
            }
        }
        self.pb.inc(1);
        Ok(vmm_cpu)
    }

    /// The pv-uring guest (`pv-bench`, a doorbell ring and a polled ring),
    /// each run bracketed by host references; returns its VMM CPU entry.
    fn pv_points(&self, pts: &mut Vec<Value>) -> Result<Value, BenchError> {
        let label = &self.plan[3].label;
        self.pb.set_message(label.clone());
        let (qds, ops) = Self::qds_and_ops();
        let load = host_load();
        // The guest pauses before and after each run; in each pause the host
        // measures its own reference for the same op and depth (see
        // `Bracket`), while the guest sleeps.
        let mut brackets = Vec::new();
        let run = run_guest_paced(
            self.ctx,
            label,
            &[
                self.placement.vcpu_args(),
                vec![
                    "--uring".into(),
                    self.placement.uring_arg(8),
                    "--uring-backend".into(),
                    format!("path={},direct=on", self.target.display()),
                    "--cmdline".into(),
                    format!(
                        "hugepages=8 -- /bin/pv-bench --only io --qd {qds} --op {ops} --submit doorbell,polled --span {FILE_BYTES} --io-ms {} --pause on",
                        (self.secs * 1000.0) as u64
                    ),
                ],
            ]
            .concat(),
            "pv-bench-pause",
            |pause, vmm_pid| {
                let b = Bracket::measure(pause, vmm_pid, self.target, self.secs, self.sqpoll_cpus)?;
                self.pb
                    .set_message(format!("{label}: host reference {}", b.describe()));
                brackets.push(b);
                Ok(())
            },
        )?;
        let lines = run.require("pv-bench-io")?;
        // One guest runs both rings: the VMM's CPU covers both, and the SQ
        // thread's (it ends with its ring, but stays in the process's time).
        let vmm_cpu = json!({
            "path": "guest-pv-ring+guest-pv-ring-sqpoll",
            "vmm_cpu_per_request": vmm_cpu_per_request(&run, &lines)?,
        });
        for (path, submit) in [(Path_::PvRing, "doorbell"), (Path_::PvRingSqpoll, "polled")] {
            for op in OPS {
                for qd in QDS {
                    let l = guest_line(&run, &lines, "pv-bench-io", op, qd, Some(submit))?;
                    let reference = Bracket::reference(&brackets, submit, op, qd)?;
                    pts.push(pv_point(&run, l, path, op, qd, load, reference)?);
                }
            }
        }
        self.pb.inc(1);
        Ok(vmm_cpu)
    }

    /// The plain host reference again, after the guests, folded into its
    /// first run (see fold_second_host_run).
    fn host_points_again(&self, pts: &mut [Value]) -> Result<(), BenchError> {
        self.pb.set_message(self.plan[4].label.clone());
        for op in OPS {
            for qd in QDS {
                let (slices, _, iops) = host_io(self.target, op, qd, false, self.secs, None)?;
                let p = pts
                    .iter_mut()
                    .find(|v| is_point(v, Path_::Host, op, qd))
                    .ok_or_else(|| {
                        host_err(format!("host {} qd {qd}", op.name()))(std::io::Error::other(
                            "no first run",
                        ))
                    })?;
                fold_second_host_run(p, iops, &slices)?;
            }
        }
        self.pb.inc(1);
        Ok(())
    }
}

/// The point of a pv-bench `pv-bench-io` line `l`.
fn pv_point(
    run: &GuestRun,
    l: &Value,
    path: Path_,
    op: Op,
    qd: u32,
    load: Option<f64>,
    reference: Value,
) -> Result<Value, BenchError> {
    let iops = run.num(l, "iops")?;
    let what = format!("{} {} qd {qd} latency", path.name(), op.name());
    point(
        path,
        op,
        qd,
        iops,
        samples(&[iops], "IOPS"),
        load,
        json!({
            "latency": latency(
                &what,
                run.num(l, "min_us")?,
                run.num(l, "median_us")?,
                run.num(l, "p99_us")?,
            )?,
            "ops": l["ops"], "secs": l["secs"],
            "host_reference": reference,
            // Where the guest's time went (pv-bench's own
            // measurements; plain numbers, null when none).
            "diag": {
                "doorbells": l["doorbells"],
                "doorbell_median_us": l["doorbell_median_us"],
                "pickup_median_us": l["pickup_median_us"],
                "pickup_p99_us": l["pickup_p99_us"],
                "stalls": l["stalls"],
                "stalled_ms": l["stalled_ms"],
                // [[upper bound µs or null, count, ms], ...]
                "stall_hist": l["stall_hist"],
            },
        }),
    )
}

/// The ratios of every guest path to its references, and the summary
/// table's rows (`vmm_cpu`: the guests' VMM CPU entries).
fn summarize(
    pts: &[Value],
    placement: &Placement,
    vmm_cpu: &[Value],
) -> Result<(Vec<Value>, Vec<[String; 3]>), BenchError> {
    let iops_of = |p: Path_, op: Op, qd: u32| {
        pts.iter()
            .find(|v| is_point(v, p, op, qd))
            .and_then(|v| v["iops"]["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let mut ratios = Vec::new();
    let mut table = Vec::new();
    // A pv path is compared with the host reference of its own pauses
    // (`Bracket`); virtio-blk with the separate host runs.
    let same_minute = |p: Path_, op: Op, qd: u32, over: Path_| {
        pts.iter()
            .find(|v| is_point(v, p, op, qd))
            .and_then(|v| v["host_reference"][over.name()]["mean"]["value"].as_f64())
    };
    let mut ratio = |p: Path_, op: Op, qd: u32, over: Path_| -> Result<f64, BenchError> {
        let (reference, measured) = match same_minute(p, op, qd, over) {
            Some(r) => (r, "runs right before and after the guest's run"),
            None => (iops_of(over, op, qd), "runs before and after the guests"),
        };
        let r = iops_of(p, op, qd) / reference;
        ratios.push(json!({
            "path": p.name(),
            "op": op.name(),
            "qd": qd,
            "ratio": format!("guest/{}", over.name()),
            "reference_measured": measured,
            "value": fig(&format!("{} {} qd {qd} / {}", p.name(), op.name(), over.name()), r, "x")?,
        }));
        Ok(r)
    };
    for op in OPS {
        for qd in QDS {
            for p in [Path_::Host, Path_::HostSqpoll] {
                let drift = pts
                    .iter()
                    .find(|v| is_point(v, p, op, qd))
                    .and_then(|v| v["drift"]["value"].as_f64())
                    .map(|d| format!("mean of runs before and after the guests ({d:.2}x apart)"))
                    .unwrap_or_default();
                table.push([
                    format!("{} {} QD{qd}", p.label(), op.name()),
                    format!("{:.0} IOPS", iops_of(p, op, qd)),
                    drift,
                ]);
            }
            let blk = ratio(Path_::VirtioBlk, op, qd, Path_::Host)?;
            table.push([
                format!("{} {} QD{qd}", Path_::VirtioBlk.label(), op.name()),
                format!("{:.0} IOPS", iops_of(Path_::VirtioBlk, op, qd)),
                format!("{blk:.3}x host"),
            ]);
            for p in [Path_::PvRing, Path_::PvRingSqpoll] {
                let host = ratio(p, op, qd, Path_::Host)?;
                let host_sq = ratio(p, op, qd, Path_::HostSqpoll)?;
                let over_blk = ratio(p, op, qd, Path_::VirtioBlk)?;
                let around = same_minute(p, op, qd, Path_::Host).unwrap_or(f64::NAN);
                table.push([
                    format!("{} {} QD{qd}", p.label(), op.name()),
                    format!("{:.0} IOPS", iops_of(p, op, qd)),
                    format!(
                        "{host:.2}x host ({around:.0} IOPS around it), {host_sq:.2}x host SQPOLL, \
                         {over_blk:.0}x virtio-blk"
                    ),
                ]);
            }
        }
    }
    table.push(["placement".into(), String::new(), placement.describe()]);
    for c in vmm_cpu {
        let v = &c["vmm_cpu_per_request"]["value"];
        let figure = match v["value"].as_f64() {
            Some(x) => format!("{x:.2} {}", v["unit"].as_str().unwrap_or("")),
            None => VMM_CPU_NOT_MEASURED.into(),
        };
        table.push([
            format!("{} VMM CPU per request", c["path"].as_str().unwrap_or("?")),
            figure,
            String::new(),
        ]);
    }
    Ok((ratios, table))
}

pub fn run(ctx: &Ctx, plan: &[Point], pb: &ProgressBar) -> Result<SuiteOutput, BenchError> {
    let target = make_target(&ctx.out)?;
    let placement = if ctx.pin {
        place(&target.0)?
    } else {
        Placement::Unpinned("--no-pin".into())
    };
    let suite = Suite {
        ctx,
        plan,
        pb,
        target: &target.0,
        secs: secs(ctx),
        sqpoll_cpus: placement.host_cpus(),
        placement,
    };
    let mut pts = Vec::new();
    suite.host_points(&mut pts)?;
    let vmm_cpu = vec![
        suite.virtio_blk_points(&mut pts)?,
        suite.pv_points(&mut pts)?,
    ];
    suite.host_points_again(&mut pts)?;
    let Suite {
        secs, placement, ..
    } = suite;
    drop(target);
    let (ratios, table) = summarize(&pts, &placement, &vmm_cpu)?;
    Ok(SuiteOutput {
        json: json!({
            "file_bytes": FILE_BYTES,
            "secs_per_run": secs,
            "placement": placement.json(),
            "points": pts,
            "ratios": ratios,
            "vmm_cpu": vmm_cpu,
        }),
        table,
        failed: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A sparse file of the suite's size (O_DIRECT needs a real file
    /// system: the target directory, not a tmpfs /tmp).
    fn sparse_target(name: &str) -> Target {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}.img", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(FILE_BYTES).unwrap();
        Target(path)
    }

    #[test]
    fn host_writes_land_in_the_file_and_reads_complete() {
        let t = sparse_target("rv-io-host");
        for sqpoll in [false, true] {
            let (_, lat, iops) = host_io(&t.0, Op::Write, 4, sqpoll, 0.05, None).unwrap();
            assert!(iops > 0.0 && !lat.is_empty(), "sqpoll {sqpoll}: {iops}");
            assert!(lat.iter().all(|&l| l > 0.0));
        }
        let f = std::fs::File::open(&t.0).unwrap();
        assert_eq!(f.metadata().unwrap().len(), FILE_BYTES, "size unchanged");
        // The first block a write allocated holds the write buffer's bytes.
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), 0, libc::SEEK_DATA) };
        assert!(data >= 0, "no block was written");
        let mut block = vec![0u8; BLOCK];
        f.read_exact_at(&mut block, data as u64 & !(BLOCK as u64 - 1))
            .unwrap();
        assert!(block.iter().all(|&b| b == 0xa5), "written block at {data}");
        // Pinned (both threads on one allowed CPU: any machine has one),
        // the thread gets its CPUs back afterwards.
        let had = devices::affinity::current_thread_cpus().unwrap();
        for (sqpoll, cpus) in [(false, None), (true, None), (true, Some((had[0], had[0])))] {
            let (_, lat, iops) = host_io(&t.0, Op::Read, 8, sqpoll, 0.05, cpus).unwrap();
            assert!(iops > 0.0 && lat.len() >= 8, "sqpoll {sqpoll}: {iops}");
            assert_eq!(devices::affinity::current_thread_cpus().unwrap(), had);
        }
        assert_eq!(f.metadata().unwrap().len(), FILE_BYTES, "size unchanged");
    }

    #[test]
    fn vmm_cpu_under_one_tick_is_not_measured_not_a_figure() {
        let run = |cpu: f64| GuestRun {
            what: "t".into(),
            stdout: String::new(),
            timings: Some(json!({"vmm_threads_cpu_s": cpu})),
        };
        let lines = [json!({"ops": 1000.0}), json!({"ops": 3000.0})];
        let v = vmm_cpu_per_request(&run(0.02), &lines).unwrap();
        assert_eq!(v["ops"], 4000.0);
        assert_eq!(v["value"]["unit"], "us");
        assert!(
            (v["value"]["value"].as_f64().unwrap() - 5.0).abs() < 1e-9,
            "{v}"
        );
        // Zero ticks: null, with the reason; no bound dressed as a value.
        let v = vmm_cpu_per_request(&run(0.0), &lines).unwrap();
        assert!(v["value"].is_null(), "{v}");
        assert_eq!(v["not_measured"], VMM_CPU_NOT_MEASURED);
        // No timings at all is an error, not a figure.
        let none = GuestRun {
            timings: None,
            ..run(0.0)
        };
        assert!(vmm_cpu_per_request(&none, &lines).is_err());
    }

    #[test]
    fn guest_lines_are_told_apart_by_op_qd_and_submit() {
        let run = GuestRun {
            what: "t".into(),
            stdout: String::new(),
            timings: None,
        };
        let lines: Vec<Value> = [
            ("randread", "doorbell", 1),
            ("randwrite", "doorbell", 1),
            ("randwrite", "polled", 1),
            ("randwrite", "polled", 32),
        ]
        .iter()
        .enumerate()
        .map(|(i, (op, s, qd))| json!({"op": op, "submit": s, "qd": qd, "i": i}))
        .collect();
        let i = |op, qd, s| {
            guest_line(&run, &lines, "pv-bench-io", op, qd, s)
                .map(|l| l["i"].as_u64().unwrap())
                .ok()
        };
        assert_eq!(i(Op::Read, 1, Some("doorbell")), Some(0));
        assert_eq!(i(Op::Write, 1, Some("polled")), Some(2));
        assert_eq!(i(Op::Write, 32, Some("polled")), Some(3));
        assert_eq!(i(Op::Write, 1, None), Some(1), "first of the op and qd");
        assert_eq!(i(Op::Read, 32, None), None);
        assert!(matches!(
            guest_line(&run, &lines, "pv-bench-io", Op::Read, 1, Some("polled")),
            Err(BenchError::Missing { .. })
        ));
    }

    fn bracket(at: &str, submit: &str, op: Op, qd: u32, host: f64) -> Bracket {
        Bracket {
            at: at.into(),
            submit: submit.into(),
            op,
            qd,
            host,
            host_sqpoll: host * 2.0,
            sq_threads_asleep: true,
        }
    }

    #[test]
    fn pause_lines_are_read_strictly() {
        let ok = json!({"kind":"pv-bench-pause","at":"after","op":"randwrite","submit":"polled","qd":32});
        assert_eq!(
            Bracket::parse(&ok).unwrap(),
            ("after".into(), "polled".into(), Op::Write, 32)
        );
        for (k, bad) in [
            ("at", json!("during")),
            ("op", json!("trim")),
            ("qd", json!(-1)),
            ("qd", json!(1u64 << 40)),
            ("submit", json!(3)),
        ] {
            let mut v = ok.clone();
            v[k] = bad;
            assert!(Bracket::parse(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn a_pv_run_is_compared_with_the_mean_of_its_own_brackets() {
        let b = [
            bracket("before", "doorbell", Op::Read, 32, 50.0),
            bracket("before", "polled", Op::Read, 32, 100.0),
            bracket("before", "polled", Op::Read, 1, 7.0),
            bracket("after", "polled", Op::Read, 32, 120.0),
            bracket("after", "doorbell", Op::Read, 32, 60.0),
        ];
        let r = Bracket::reference(&b, "polled", Op::Read, 32).unwrap();
        assert_eq!(r["host"]["before"]["value"], 100.0);
        assert_eq!(r["host"]["after"]["value"], 120.0);
        assert_eq!(r["host"]["mean"]["value"], 110.0);
        assert_eq!(r["host-sqpoll"]["mean"]["value"], 220.0);
        assert_eq!(r["sq_threads_asleep"], true);
        let r = Bracket::reference(&b, "doorbell", Op::Read, 32).unwrap();
        assert_eq!(r["host"]["mean"]["value"], 55.0);
        // No "after" bracket: no reference, rather than a one-sided one.
        let e = Bracket::reference(&b, "polled", Op::Read, 1).unwrap_err();
        assert!(e.to_string().contains("after polled randread qd 1"), "{e}");
    }

    #[test]
    fn second_host_run_is_folded_into_the_mean_with_its_drift() {
        let mut p = point(
            Path_::Host,
            Op::Read,
            32,
            100_000.0,
            samples(&[90_000.0, 110_000.0], "IOPS per 100 ms slice"),
            None,
            json!({}),
        )
        .unwrap();
        fold_second_host_run(&mut p, 80_000.0, &[80_000.0]).unwrap();
        assert_eq!(p["iops"]["value"], 90_000.0);
        assert_eq!(p["iops_runs"][0]["value"], 100_000.0);
        assert_eq!(p["iops_runs"][1]["value"], 80_000.0);
        assert_eq!(p["drift"]["value"], 0.8);
        assert_eq!(p["drift"]["unit"], "x");
        assert_eq!(p["samples"]["values"].as_array().unwrap().len(), 3);
        // A second run that measured nothing is refused, not averaged.
        assert!(fold_second_host_run(&mut p, 0.0, &[]).is_err());
    }
}
