//! The paravirtual io_uring device end to end: one boot with two backends
//! (a pattern-filled O_DIRECT file and a read-only one) runs the guest suite
//! `pv-suite` (data integrity, clone semantics, the host buffer table,
//! hostile requests, ring create/destroy cycles) through /dev/vuring, then
//! the host checks what the guest wrote, that the read-only backend is
//! unchanged and that the VMM pinned nothing at exit. The data layout is
//! guest-images/programs/pv-uring/src/pattern.rs.
//!
//! Every case of the suite must have run and passed: the test holds the
//! list ([`CASES`]) and compares it with the `PASS` lines, both summaries
//! included (a case missing, added or skipped fails).
//!
//! Around the hostile phase (`pv-suite --pause` stops before the first and
//! after the last `hostile-` case and waits for a line on the console) the
//! test samples the VMM's `VmPin` and `VmRSS` (/proc/PID/status) and the
//! host's `SUnreclaim` (/proc/meminfo), and requires them back within
//! these bounds of the sample before (docs/pv-uring.md, "Tests"):
//! - `VmPin` exactly as before: no ring lives at either point, so a pinned
//!   page left over is a leak (finding 3 pinned 32 GiB);
//! - `VmRSS` within +16 MiB: the hostile cases create and close about 40
//!   rings, one polled submitter thread (its stack and a malloc arena) and
//!   control-queue bookkeeping; a per-request or per-ring leak of the
//!   cases' volume (tens of thousands of SQEs, 2000+ control commands)
//!   passes that;
//! - `SUnreclaim` within +32 MiB: it is the whole host's, and other work
//!   on a shared machine moves it by a few MiB; the CQ-overflow
//!   attack cost 63.7 MB, and ring teardown that kept io_uring contexts
//!   (a few KiB each, tens of rings) or overflow entries would show.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;

use common::{
    pv_blocks as blocks, run_command, skip_without_kvm, Run, PV_BLOCK as BLOCK, PV_SEED as SEED,
};

const READ_BLOCKS: u64 = 256;
const WRITE_BLOCK: u64 = 256;
const WRITE_BLOCKS: u64 = 16;
const CYCLES: u32 = 1000;
/// The registered-bytes budget of the suite's VM: small, so that
/// `hostile-registered-beyond-max` reaches it with pool-sized (256 KiB)
/// registrations on 16 rings; the suite never holds more than 1 MiB.
const MAX_REGISTERED: &str = "4M";

/// Every case of pv-suite, in its order (`pv-suite --list`).
const CASES: [&str; 56] = [
    "create-layout",
    "nop",
    "read-host-pattern",
    "write-guest-pattern",
    "fsync",
    "concurrent-rings",
    "destroy-with-reads-in-flight",
    "commands-beside-destroy",
    "create-errors",
    "slot-reuse-fresh-state",
    "register-errors",
    "clone-all-to-empty",
    "ebusy-dst-has-buffers",
    "enxio-src-empty",
    "einval-unknown-flags",
    "einval-nonzero-resv",
    "einval-offsets-without-nr",
    "einval-nr-exceeds-src",
    "einval-dst-beyond-max",
    "eoverflow-src-wrap",
    "eoverflow-dst-wrap",
    "eoverflow-src-range",
    "ebadf-src-not-a-ring",
    "enoent-unknown-table-token",
    "clone-into-self",
    "replace-keeps-outside-range",
    "einval-replace-short-of-end",
    "partial-range-maps",
    "after-src-unregister",
    "after-src-close",
    "polled-dst",
    "pool-of-64-rings",
    "table-publish-clone",
    "table-unpublish-while-clones-live",
    "table-unpublished-with-publisher",
    "table-publish-errors",
    "hostile-forbidden-opcodes",
    "hostile-missing-fixed-file",
    "hostile-forbidden-sqe-flags",
    "hostile-backend-out-of-range",
    "hostile-range-outside-buffer",
    "hostile-buf-index-out-of-range",
    "hostile-pi-attr",
    "hostile-reserved-bytes",
    "hostile-rt-ioprio",
    "hostile-doorbell-unknown-ring",
    "hostile-bogus-ring-indices",
    "hostile-link-after-refused",
    "hostile-cq-never-reaped",
    "hostile-overlapping-extents",
    "hostile-registered-beyond-max",
    "hostile-too-many-polled",
    "hostile-clone-guessed-token",
    "hostile-unpublish-by-another",
    "hostile-cq-slot-read-only",
    "create-until-enospc",
];

/// Bounds of the host-side samples after the hostile phase (see the
/// module comment).
const VMPIN_SLACK_KIB: u64 = 0;
const RSS_SLACK_KIB: u64 = 16 << 10;
const SUNRECLAIM_SLACK_KIB: u64 = 32 << 10;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Host memory at one point of the run, in KiB.
#[derive(Debug, Clone, Copy)]
struct Sample {
    vm_pin: u64,
    vm_rss: u64,
    s_unreclaim: u64,
}

/// The `kB` value of `key:` in a /proc file's text.
fn kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

fn sample(pid: u32) -> Result<Sample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let get = |t: &str, k: &str| kib(t, k).ok_or_else(|| format!("no {k} in /proc"));
    Ok(Sample {
        vm_pin: get(&status, "VmPin")?,
        vm_rss: get(&status, "VmRSS")?,
        s_unreclaim: get(&meminfo, "SUnreclaim")?,
    })
}

/// The host's samples, by the pause they were taken at.
type Samples = Vec<(String, Result<Sample, String>)>;

/// Boots with `args`, answering the guest's `PV-SUITE-PAUSE <at>` lines
/// after sampling the VMM's memory; returns the run and the samples.
fn boot_paced(args: &[&str]) -> (Run, Samples) {
    let mut child = run_command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ringvisor");
    let pid = child.id();
    let mut err = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut answer = child.stdin.take();
    let mut stdout = String::new();
    let mut samples = Vec::new();
    let out = child.stdout.take().expect("stdout");
    // Raw lines, decoded lossily: a byte that is not UTF-8 must not end
    // the reading while the guest waits for its answer.
    for line in BufReader::new(out).split(b'\n') {
        let Ok(bytes) = line else { break };
        let line = String::from_utf8_lossy(&bytes);
        stdout.push_str(&line);
        stdout.push('\n');
        if let Some(at) = line.trim().strip_prefix("PV-SUITE-PAUSE ") {
            samples.push((at.to_string(), sample(pid)));
            if let Some(w) = answer.as_mut() {
                if w.write_all(b"\n").and_then(|()| w.flush()).is_err() {
                    answer = None;
                }
            }
        }
    }
    drop(answer);
    let status = child.wait().expect("waiting for ringvisor");
    let stderr = err_reader.join().unwrap_or_default();
    (
        Run {
            status: status.code(),
            stdout,
            stderr,
        },
        samples,
    )
}

/// The cases a summary's run reported, and the problems: a case that
/// failed, was skipped, ran twice, is missing or is not in `want`.
fn check_cases(stdout: &str, want: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut passed: Vec<&str> = Vec::new();
    for l in stdout.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("PASS ") {
            if passed.contains(&name) {
                problems.push(format!("{name} reported twice"));
            }
            passed.push(name);
        } else if l.starts_with("FAIL ") || l.starts_with("SKIP ") {
            problems.push(l.to_string());
        }
    }
    for w in want {
        if !passed.contains(w) {
            problems.push(format!("{w}: did not run (no PASS line)"));
        }
    }
    for p in &passed {
        if !want.contains(p) {
            problems.push(format!("{p}: not in the test's case list (update CASES)"));
        }
    }
    problems
}

#[test]
fn the_case_list_check_finds_missing_extra_and_failed_cases() {
    let ok = "PASS a\nPASS b\n2 passed, 0 failed\n";
    assert!(check_cases(ok, &["a", "b"]).is_empty());
    assert_eq!(check_cases("PASS a\n", &["a", "b"]).len(), 1, "missing b");
    assert_eq!(
        check_cases("PASS a\nPASS c\nPASS b\n", &["a", "b"]).len(),
        1
    );
    assert_eq!(check_cases("PASS a\nSKIP b: x\n", &["a", "b"]).len(), 2);
    assert_eq!(
        check_cases("PASS a\nPASS a\nPASS b\n", &["a", "b"]).len(),
        1
    );
    assert_eq!(kib("VmPin:\t    1234 kB\nVmRSS: 9 kB", "VmPin"), Some(1234));
    assert_eq!(kib("VmPinX: 1 kB", "VmPin"), None);
}

#[test]
fn pv_suite_passes_through_dev_vuring_and_the_host_sees_its_writes() {
    if skip_without_kvm() {
        return;
    }
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pv-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let rw = dir.0.join("backend0.img");
    let ro = dir.0.join("backend1.img");
    let mut image = blocks(0, READ_BLOCKS, 0x48);
    image.resize(((WRITE_BLOCK + WRITE_BLOCKS) as usize) * BLOCK, 0);
    std::fs::write(&rw, &image).unwrap();
    let ro_image = blocks(0, READ_BLOCKS, 0x48);
    std::fs::write(&ro, &ro_image).unwrap();

    let (run, samples) = boot_paced(&[
        "--timeout",
        "900",
        "--timings",
        "--uring",
        &format!("rings=80,polled=1,max-registered={MAX_REGISTERED}"),
        "--uring-backend",
        &format!("path={},direct=on", rw.display()),
        "--uring-backend",
        &format!("path={},readonly=on", ro.display()),
        "--cmdline",
        &format!(
            "-- /bin/sh -c \"/bin/pv-suite --pause --seed {SEED} --read-blocks {READ_BLOCKS} \
             --write-block {WRITE_BLOCK} --write-blocks {WRITE_BLOCKS} && \
             /bin/pv-suite --seed {SEED} --read-blocks {READ_BLOCKS} --cycles {CYCLES}\""
        ),
    ]);
    for (at, sample) in &samples {
        eprintln!("pv: host memory at {at}: {sample:?}");
    }
    // Every case once, passed (the most telling failure first).
    let mut want: Vec<&str> = CASES.to_vec();
    want.push("create-destroy-cycles");
    let problems = check_cases(&run.stdout, &want);
    run.check(
        problems.is_empty(),
        &format!(
            "every case must run once and pass:\n  {}",
            problems.join("\n  ")
        ),
    );
    // Two summaries: the whole suite, then the create/destroy cycles.
    let summaries: Vec<&str> = run
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" passed, ") && l.contains(" failed"))
        .collect();
    run.check(
        summaries.len() == 2,
        "pv-suite must print two summary lines (suite, cycles)",
    );
    run.check(
        summaries[0] == format!("{} passed, 0 failed", CASES.len()),
        &format!(
            "the suite's summary must say all {} cases passed",
            CASES.len()
        ),
    );
    run.check(
        summaries[1] == "1 passed, 0 failed",
        "the create/destroy cycles must pass",
    );
    run.check(run.status == Some(0), "pv-suite must exit 0");

    // The host's memory around the hostile phase.
    let at = |name: &str| -> Sample {
        let got = samples.iter().find(|(a, _)| a == name).map(|(_, s)| s);
        run.check(
            matches!(got, Some(Ok(_))),
            &format!("the host must have sampled its memory at the suite's pause {name}: {got:?}"),
        );
        got.and_then(|s| s.as_ref().ok()).copied().unwrap()
    };
    let (before, after) = (at("hostile-begin"), at("hostile-end"));
    let report = format!("before the hostile cases {before:?}, after {after:?} (KiB)");
    eprintln!("pv: {report}");
    run.check(
        after.vm_pin <= before.vm_pin + VMPIN_SLACK_KIB,
        &format!("VmPin must be back to its baseline: {report}"),
    );
    run.check(
        after.vm_rss <= before.vm_rss + RSS_SLACK_KIB,
        &format!("the VMM's RSS must be within +16 MiB of its baseline: {report}"),
    );
    run.check(
        after.s_unreclaim <= before.s_unreclaim + SUNRECLAIM_SLACK_KIB,
        &format!("the host's SUnreclaim must be within +32 MiB of its baseline: {report}"),
    );

    let after = std::fs::read(&rw).unwrap();
    let start = WRITE_BLOCK as usize * BLOCK;
    let written = &after[start..start + WRITE_BLOCKS as usize * BLOCK];
    run.check(
        written == blocks(WRITE_BLOCK, WRITE_BLOCKS, 0x47).as_slice(),
        "the guest's WRITE_FIXED blocks must be in the backend file",
    );
    run.check(
        after[..start] == image[..start],
        "the host-written blocks must be unchanged",
    );
    run.check(
        std::fs::read(&ro).unwrap() == ro_image,
        "the read-only backend must be unchanged",
    );
    let pinned = run.timings()["pinned_at_exit_bytes"].as_u64();
    run.check(
        pinned == Some(0),
        "after every ring is destroyed the VMM must pin no memory (VmPin 0)",
    );
}

/// The arena cases of pv-suite (`pv-suite --arena --list`), in order.
const ARENA_CASES: [&str; 13] = [
    "arena-info",
    "arena-write-guest-pattern",
    "arena-read-host-pattern",
    "arena-runs-and-clone",
    "arena-errors",
    "arena-chunk-of-another-file",
    "arena-chunk-beyond-the-arena",
    "arena-double-free",
    "arena-register-rings",
    "arena-register-rings-errors",
    "arena-unmap-and-free-while-held",
    "arena-close-with-io-in-flight",
    "arena-lifecycle",
];
/// The arena of the arena boot: 32 chunks of 2 MiB.
const ARENA_BYTES: u64 = 64 << 20;
/// Allocate/register/destroy/free cycles of `arena-lifecycle`.
const ARENA_CYCLES: u64 = 10_000;

/// The 2 MiB hugetlb pages every process maps now (`HugetlbPages` of
/// /proc/PID/status, in 2 MiB pages).
fn hugetlb_pages_of_processes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|s| kib(&s, "HugetlbPages"))
        .sum::<u64>()
        / 2048
}

/// The host's free 2 MiB hugepages.
fn free_hugepages_2m() -> Option<u64> {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The buffer arena end to end (docs/pv-uring.md, "The buffer arena"): a
/// boot with `--uring arena=64M` runs `pv-suite --arena`: data both ways
/// through arena chunks (the host checks what the guest wrote), ownership,
/// bounds, double frees, unmapping and closing while a ring holds chunks,
/// one pool on four rings with one ARENA_REGISTER_RINGS (data through
/// each) and its refusals (all or none), and 10,000 allocate/register/destroy/free cycles, around which the host
/// samples the VMM's VmPin and hugetlb pages (both back to where they
/// were). After the run the host's free 2 MiB hugepages are back to their
/// count before it (waiting up to 30 s for a concurrent VM elsewhere on
/// the machine to go).
#[test]
fn pv_arena_moves_data_keeps_chunks_owned_and_gives_everything_back() {
    if skip_without_kvm() {
        return;
    }
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pv-arena-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let rw = dir.0.join("backend0.img");
    let mut image = blocks(0, READ_BLOCKS, 0x48);
    image.resize(((WRITE_BLOCK + WRITE_BLOCKS) as usize) * BLOCK, 0);
    std::fs::write(&rw, &image).unwrap();
    // The arena on host 2 MiB pages: as root, the pool grows by the
    // arena's pages (and guest RAM's, which takes them first) for this boot and is restored after it (without them
    // the arena falls back to ordinary memory, with a warning, and the
    // run says so below).
    let reserve = HugepageReservation::grow((ARENA_BYTES >> 21) + 128 + 16);
    let free_before = free_hugepages_2m();
    let others_before = hugetlb_pages_of_processes();

    let (run, samples) = boot_paced(&[
        "--timeout",
        "900",
        "--timings",
        "--uring",
        &format!("rings=16,polled=0,arena={}M", ARENA_BYTES >> 20),
        "--uring-backend",
        &format!("path={},direct=on", rw.display()),
        "--cmdline",
        &format!(
            "-- /bin/pv-suite --arena --pause --seed {SEED} --read-blocks {READ_BLOCKS} \
             --write-block {WRITE_BLOCK} --write-blocks {WRITE_BLOCKS} \
             --arena-cycles {ARENA_CYCLES}"
        ),
    ]);
    for (at, sample) in &samples {
        eprintln!("pv-arena: host memory at {at}: {sample:?}");
    }
    for l in run
        .stdout
        .lines()
        .filter(|l| l.contains("arena-lifecycle: "))
    {
        eprintln!("pv-arena: {}", l.trim());
    }
    let problems = check_cases(&run.stdout, &ARENA_CASES);
    run.check(
        problems.is_empty(),
        &format!(
            "every arena case must run once and pass:\n  {}",
            problems.join("\n  ")
        ),
    );
    run.check(
        run.stdout
            .lines()
            .any(|l| l.trim() == format!("{} passed, 0 failed", ARENA_CASES.len())),
        "the arena suite's summary must say all cases passed",
    );
    run.check(run.status == Some(0), "pv-suite --arena must exit 0");
    run.check(
        run.stderr.contains("RINGVISOR_ARENA {"),
        "--timings must report the arena's set-up",
    );

    let at = |name: &str| -> Sample {
        let got = samples.iter().find(|(a, _)| a == name).map(|(_, s)| s);
        run.check(
            matches!(got, Some(Ok(_))),
            &format!("the host must have sampled its memory at the pause {name}: {got:?}"),
        );
        got.and_then(|s| s.as_ref().ok()).copied().unwrap()
    };
    let (before, after) = (at("arena-cycles-begin"), at("arena-cycles-end"));
    let report = format!("before the cycles {before:?}, after {after:?} (KiB)");
    eprintln!("pv-arena: {report}");
    run.check(
        before.vm_pin >= ARENA_BYTES >> 10,
        &format!("the arena's registration must show in VmPin: {report}"),
    );
    run.check(
        after.vm_pin == before.vm_pin,
        &format!("VmPin must be back to its baseline after the cycles: {report}"),
    );
    run.check(
        after.vm_rss <= before.vm_rss + RSS_SLACK_KIB,
        &format!("the VMM's RSS must be within +16 MiB of its baseline: {report}"),
    );

    let file = std::fs::read(&rw).unwrap();
    let start = WRITE_BLOCK as usize * BLOCK;
    run.check(
        file[start..start + WRITE_BLOCKS as usize * BLOCK]
            == *blocks(WRITE_BLOCK, WRITE_BLOCKS, 0x47).as_slice(),
        "the blocks the guest wrote from an arena chunk must be in the backend file",
    );
    run.check(
        file[..start] == image[..start],
        "the host-written blocks must be unchanged",
    );
    // run() samples VmPin with the device still alive: the arena only.
    let pinned = run.timings()["pinned_at_exit_bytes"].as_u64();
    run.check(
        pinned == Some(ARENA_BYTES),
        &format!("with every ring gone the VMM must pin only the arena: {pinned:?}"),
    );
    eprintln!(
        "pv-arena: {}",
        run.stderr
            .lines()
            .find(|l| l.contains("pv-uring arena:"))
            .unwrap_or("no arena line")
    );
    if let Some(before) = free_before {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Other processes (other VMs on a shared machine) may have taken
        // pages meanwhile: what they hold now more than at the start is
        // not ours.
        let taken = || hugetlb_pages_of_processes().saturating_sub(others_before);
        let mut now = free_hugepages_2m().map(|f| f + taken());
        while now < Some(before) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(500));
            now = free_hugepages_2m().map(|f| f + taken());
        }
        run.check(
            now >= Some(before),
            &format!(
                "the host's free 2 MiB hugepages must be back: {before} before, {now:?} after"
            ),
        );
    }
    drop(reserve);
}

/// Raises the host's 2 MiB hugepage pool by some pages for one test and
/// restores its size on drop (as root; otherwise it does nothing).
struct HugepageReservation(Option<u64>);

const NR_HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

impl HugepageReservation {
    fn grow(pages: u64) -> Self {
        let Some(nr) = std::fs::read_to_string(NR_HUGEPAGES_2M)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return Self(None);
        };
        match std::fs::write(NR_HUGEPAGES_2M, (nr + pages).to_string()) {
            Ok(()) => Self(Some(nr)),
            Err(e) => {
                eprintln!("pv-arena: cannot grow the 2 MiB hugepage pool by {pages}: {e}");
                Self(None)
            }
        }
    }
}

impl Drop for HugepageReservation {
    fn drop(&mut self) {
        if let Some(nr) = self.0 {
            let _ = std::fs::write(NR_HUGEPAGES_2M, nr.to_string());
        }
    }
}
