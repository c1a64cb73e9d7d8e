//! Snapshots end to end (docs/snapshot.md). One `ringvisor snapshot` boot
//! (2 vCPUs, a virtio-blk disk, pv-uring with two backends), shared by every
//! test of this file, then:
//! - one restore runs processes on the disk and on pv-uring (rings created,
//!   I/O, clone), each checked on the host, and its exit status comes back;
//! - three restores at once, each with its own disk: each sees its own
//!   guest (a file it makes is not there before), its clock goes on from the
//!   snapshot's (no jump over the time the snapshot sat on disk) and works,
//!   its writes reach only its disk, and the snapshot files do not change;
//! - every bad snapshot (another format or ringvisor version, a truncated or
//!   corrupted state, a truncated memory file, a machine the snapshot cannot
//!   be restored as) gives one error line and status 1, before any guest.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    pv_blocks as blocks, ringvisor, run_command, skip_without_kvm, Run, PV_BLOCK as BLOCK,
    PV_SEED as SEED,
};

const READ_BLOCKS: u64 = 256;
const WRITE_BLOCK: u64 = 256;
const WRITE_BLOCKS: u64 = 16;
/// The disk: 4 MiB; the host's block at 1 MiB, the guest's writes at 2 MiB
/// (past what the guest kernel read at boot: a restored guest keeps its
/// page cache, so its disk must hold what it held then).
const DISK_SIZE: usize = 4 << 20;
const HOST_AT: usize = 1 << 20;
const GUEST_AT: usize = 2 << 20;
/// The pv-suite cases a restored guest runs: rings created, I/O both
/// ways, buffers cloned.
const PV_CASES: [&str; 4] = [
    "create-layout",
    "read-host-pattern",
    "write-guest-pattern",
    "clone-all-to-empty",
];

/// The shared snapshot.
struct Snap {
    /// The snapshot directory.
    dir: PathBuf,
    /// Where the tests put their files.
    work: PathBuf,
    /// The guest's uptime when it said it was ready (just before the
    /// snapshot).
    ready_uptime: f64,
    /// When the snapshot was written.
    taken: Instant,
}

/// A disk image for a restore: zeros, with `line` at [`HOST_AT`].
fn disk_image(line: &str) -> Vec<u8> {
    let mut image = vec![0u8; DISK_SIZE];
    image[HOST_AT..HOST_AT + line.len()].copy_from_slice(line.as_bytes());
    image
}

fn backends(dir: &Path) -> (PathBuf, PathBuf) {
    let rw = dir.join("backend0.img");
    let ro = dir.join("backend1.img");
    let mut image = blocks(0, READ_BLOCKS, 0x48);
    image.resize(((WRITE_BLOCK + WRITE_BLOCKS) as usize) * BLOCK, 0);
    std::fs::write(&rw, &image).unwrap();
    std::fs::write(&ro, blocks(0, READ_BLOCKS, 0x48)).unwrap();
    (rw, ro)
}

/// The guest's uptime in a line `ready for a workload at uptime X s`.
fn ready_uptime(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.split("ready for a workload at uptime ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Takes the snapshot once per test process.
fn snapshot() -> &'static Snap {
    static SNAP: OnceLock<Snap> = OnceLock::new();
    SNAP.get_or_init(|| {
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshot-test");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let disk = work.join("disk.img");
        std::fs::write(&disk, disk_image("")).unwrap();
        let (rw, ro) = backends(&work);
        let dir = work.join("snap");
        let cmd = run_command(&[]);
        // `run_command` gives `run --kernel K --initramfs I`: make it
        // `snapshot --out DIR --kernel K --initramfs I`.
        let args: Vec<_> = cmd.get_args().skip(1).map(|a| a.to_owned()).collect();
        let mut cmd = ringvisor();
        cmd.arg("snapshot").arg("--out").arg(&dir).args(args);
        let out = cmd
            .args([
                "--cpus",
                "2",
                "--timeout",
                "600",
                "--disk",
                &format!("path={}", disk.display()),
                "--uring",
                "rings=8",
                "--uring-backend",
                &format!("path={},direct=on", rw.display()),
                "--uring-backend",
                &format!("path={},readonly=on", ro.display()),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("spawning ringvisor snapshot");
        let run = Run {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        run.check(run.status == Some(0), "ringvisor snapshot must exit 0");
        run.check(
            run.stderr.contains("ringvisor: snapshot written to"),
            "ringvisor snapshot must say what it wrote",
        );
        let ready_uptime = ready_uptime(&run.stdout);
        run.check(
            ready_uptime.is_some(),
            "rv-init must say it is ready, with its uptime",
        );
        run.check(
            !run.stdout.contains("rv-init: running"),
            "no workload may run before the snapshot",
        );
        Snap {
            dir,
            work,
            ready_uptime: ready_uptime.unwrap(),
            taken: Instant::now(),
        }
    })
}

/// `ringvisor run --restore DIR ARGS`.
fn restore(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = ringvisor();
    cmd.arg("run").arg("--restore").arg(dir).args(args);
    cmd.stdin(Stdio::null());
    cmd
}

fn finish(out: std::process::Output) -> Run {
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `/proc/uptime` figures a workload printed, in order.
fn uptimes(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (a, b) = (it.next()?, it.next()?);
            if it.next().is_some() || !a.contains('.') || !b.contains('.') {
                return None;
            }
            b.parse::<f64>().ok()?;
            a.parse().ok()
        })
        .collect()
}

#[test]
fn a_restored_guest_runs_processes_on_its_disk_and_pv_uring_and_exits_with_their_status() {
    if skip_without_kvm() {
        return;
    }
    let snap = snapshot();
    let dir = snap.work.join("first");
    std::fs::create_dir_all(&dir).unwrap();
    let token = common::token();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, disk_image(&format!("HOST-{token}\n"))).unwrap();
    let (rw, ro) = backends(&dir);
    let pv_cases = PV_CASES.join(" ");
    let run = finish(
        restore(
            &snap.dir,
            &[
                "--timeout",
                "600",
                "--timings",
                "--disk",
                &format!("path={}", disk.display()),
                "--uring-backend",
                &format!("path={},direct=on", rw.display()),
                "--uring-backend",
                &format!("path={},readonly=on", ro.display()),
                "--cmdline",
                &format!(
                    "-- /bin/sh -c \"dd if=/dev/vda bs=4096 skip=256 count=1 2>/dev/null | head -n 1; \
                     echo GUEST-{token} | dd of=/dev/vda bs=4096 seek=512 conv=notrunc 2>/dev/null; \
                     sync; /bin/pv-suite --seed {SEED} --read-blocks {READ_BLOCKS} \
                     --write-block {WRITE_BLOCK} --write-blocks {WRITE_BLOCKS} {pv_cases} && exit 7\""
                ),
            ],
        )
        .output()
        .unwrap(),
    );
    run.check(
        run.status == Some(7),
        "the workload's status (7) must come back",
    );
    run.check(
        run.stdout
            .contains("rv-init: workload exited with status 7"),
        "rv-init must run the workload from the mailbox",
    );
    run.check(
        !run.stdout.contains("ready for a workload"),
        "a restored guest goes on from the snapshot: no boot, no second READY",
    );
    // virtio-blk: the guest read the host's block, and its write is in the
    // host file.
    run.check(
        run.stdout
            .lines()
            .any(|l| l.trim() == format!("HOST-{token}")),
        "the restored guest must read the host's block from /dev/vda",
    );
    let after = std::fs::read(&disk).unwrap();
    let want = format!("GUEST-{token}\n");
    run.check(
        &after[GUEST_AT..GUEST_AT + want.len()] == want.as_bytes(),
        "the guest's write must be in the host's disk file",
    );
    // pv-uring: rings created, reads, writes, clones after the restore.
    for case in PV_CASES {
        run.check(
            run.stdout
                .lines()
                .any(|l| l.trim() == format!("PASS {case}")),
            &format!("pv-suite case {case} must pass after the restore"),
        );
    }
    run.check(
        !run.stdout.lines().any(|l| l.trim().starts_with("FAIL ")),
        "no pv-suite case may fail",
    );
    let backend = std::fs::read(&rw).unwrap();
    let start = WRITE_BLOCK as usize * BLOCK;
    run.check(
        backend[start..start + WRITE_BLOCKS as usize * BLOCK]
            == blocks(WRITE_BLOCK, WRITE_BLOCKS, 0x47)[..],
        "the guest's pv-uring writes must be in the backend file",
    );
    // --timings after a restore.
    let t = run.timings();
    run.check(
        t["restored"] == true && t["to_workload_s"].as_f64().is_some_and(|s| s > 0.0),
        "--timings must say the guest was restored and when the workload ran",
    );
    run.check(
        t["backing"] == "Snapshot",
        "guest RAM must be the snapshot's memory file, mapped",
    );
}

/// How long the snapshot of the clock test sits on disk before the restores.
const ON_DISK_S: u64 = 30;
/// How far the guest's clocks may be off what the host saw: its uptime
/// ahead of the host's time since the restore started (the guest printed
/// its `ready` uptime before it drained the console and wrote READY, which
/// takes seconds on a loaded host), and its `date` behind the host's when
/// the line arrived. Half the time on disk: a clock that jumped over that
/// time, or a wall clock left at the snapshot's, is caught.
const CLOCK_SLACK_S: f64 = ON_DISK_S as f64 / 2.0;

#[test]
fn one_snapshot_restores_at_once_in_three_vmms_each_independent_with_its_clock_going_on() {
    if skip_without_kvm() {
        return;
    }
    let snap = snapshot();
    let crc = |p: &Path| crc32fast::hash(&std::fs::read(p).unwrap());
    let memory = snap.dir.join("memory");
    let state = snap.dir.join("state");
    let (memory_crc, state_crc) = (crc(&memory), crc(&state));
    // The snapshot sits on disk a while: a guest clock that jumped over
    // that time would show it.
    let on_disk = Duration::from_secs(ON_DISK_S);
    if let Some(left) = on_disk.checked_sub(snap.taken.elapsed()) {
        std::thread::sleep(left);
    }
    let on_disk = snap.taken.elapsed();
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut children = Vec::new();
    for i in 0..3 {
        let dir = snap.work.join(format!("vm{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.img");
        std::fs::write(&disk, disk_image("")).unwrap();
        let mut child = restore(
            &snap.dir,
            &[
                "--timeout",
                "600",
                "--disk",
                &format!("path={}", disk.display()),
                "--cmdline",
                &format!(
                    "-- /bin/sh -c \"cat /proc/uptime; echo wall-clock $(date +%s); test ! -e /tmp/mark && echo vm-{i} > /tmp/mark; \
                     echo mark $(cat /tmp/mark); echo GUEST-vm-{i} | dd of=/dev/vda bs=4096 seek=512 \
                     conv=notrunc 2>/dev/null; sync; cat /proc/uptime; sleep 1; cat /proc/uptime; exit 1{i}\""
                ),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        // The console's lines with the host time each arrived.
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|l| (started.elapsed().as_secs_f64(), l))
                .collect::<Vec<_>>()
        });
        children.push((i, disk, child, lines));
    }
    for (i, disk, child, lines) in children {
        let out = child.wait_with_output().unwrap();
        let lines = lines.join().unwrap();
        let mut run = finish(out);
        run.stdout = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        run.check(
            run.status == Some(10 + i),
            &format!("restore {i} must exit with its own status {}", 10 + i),
        );
        run.check(
            run.stdout
                .lines()
                .any(|l| l.trim() == format!("mark vm-{i}")),
            &format!("restore {i} must see only its own guest's files"),
        );
        let after = std::fs::read(&disk).unwrap();
        let want = format!("GUEST-vm-{i}\n");
        run.check(
            &after[GUEST_AT..GUEST_AT + want.len()] == want.as_bytes(),
            &format!("restore {i}'s write must be in its own disk file"),
        );
        let up = uptimes(&run.stdout);
        run.check(
            up.len() == 3,
            "the workload must print its uptime three times",
        );
        // The guest gained at most the host time from the restore's start
        // to its first uptime line (plus a console's slack), not the time
        // the snapshot sat on disk as well.
        let first_line = lines
            .iter()
            .find(|(_, l)| !uptimes(l).is_empty())
            .map_or(f64::MAX, |(t, _)| *t);
        let gained = up[0] - snap.ready_uptime;
        run.check(
            gained >= 0.0
                && gained <= first_line + CLOCK_SLACK_S
                && on_disk.as_secs_f64() >= ON_DISK_S as f64,
            &format!(
                "the guest clock must go on from the snapshot's ({} s): it gained {gained:.2} s \
                 by its first line, {first_line:.1} s after the restore started, after {:.1} s on disk",
                snap.ready_uptime,
                on_disk.as_secs_f64()
            ),
        );
        // The wall clock is the host's, not the snapshot's (which is
        // `on_disk` seconds behind).
        let wall = lines.iter().find_map(|(t, l)| {
            let guest: f64 = l.trim().strip_prefix("wall-clock ")?.parse().ok()?;
            Some((guest, started_wall + t))
        });
        // `date` ran shortly before its line arrived (a loaded host takes
        // a few seconds from `date` to the console); a guest that kept the
        // snapshot's wall clock is `on_disk` seconds behind that.
        run.check(
            wall.is_some_and(|(guest, host)| guest <= host + 1.0 && guest >= host - CLOCK_SLACK_S),
            &format!(
                "the guest's wall clock must be the host's after a restore: (guest, host when \
                 the line arrived) {wall:?}, after {:.0} s on disk",
                on_disk.as_secs_f64()
            ),
        );
        let slept = up[2] - up[1];
        run.check(
            slept >= 1.0 && slept < started.elapsed().as_secs_f64(),
            &format!("`sleep 1` must take at least a second of guest time (took {slept:.2} s)"),
        );
    }
    assert_eq!(
        crc(&memory),
        memory_crc,
        "restores must not write the memory file"
    );
    assert_eq!(
        crc(&state),
        state_crc,
        "restores must not write the state file"
    );
}

/// A copy of the snapshot (the memory file linked) for a bad case.
fn copy_snapshot(snap: &Snap, name: &str) -> (PathBuf, Vec<u8>) {
    let dir = snap.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::hard_link(snap.dir.join("memory"), dir.join("memory")).unwrap();
    let state = std::fs::read(snap.dir.join("state")).unwrap();
    (dir, state)
}

/// Runs a restore that must fail: status 1, one line on stderr that
/// contains `want`, nothing from a guest.
fn refused(dir: &Path, args: &[&str], want: &str) {
    let mut full = vec!["--cmdline", "-- /bin/true"];
    full.extend_from_slice(args);
    let run = finish(restore(dir, &full).output().unwrap());
    let lines: Vec<&str> = run.stderr.lines().collect();
    run.check(
        run.status == Some(1) && lines.len() == 1 && lines[0].contains(want),
        &format!("the restore must be refused with one line saying {want:?}"),
    );
    run.check(
        lines[0].starts_with("ringvisor: error: snapshot "),
        "the line must name the snapshot",
    );
    run.check(run.stdout.is_empty(), "no guest may have run");
}

#[test]
fn bad_snapshots_give_one_clear_error_and_status_1() {
    if skip_without_kvm() {
        return;
    }
    let snap = snapshot();
    let crc_fix = |state: &mut Vec<u8>| {
        let crc = crc32fast::hash(&state[24..]);
        state[12..16].copy_from_slice(&crc.to_le_bytes());
    };

    let (dir, mut state) = copy_snapshot(snap, "bad-format");
    let version = u32::from_le_bytes(state[8..12].try_into().unwrap());
    state[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    std::fs::write(dir.join("state"), &state).unwrap();
    refused(
        &dir,
        &[],
        &format!(
            "snapshot format version {}; this ringvisor reads version {version}",
            version + 1
        ),
    );

    let (dir, mut state) = copy_snapshot(snap, "bad-version");
    let ours = env!("CARGO_PKG_VERSION");
    let at = 25; // after the header and the string's length byte
    assert_eq!(&state[at..at + ours.len()], ours.as_bytes());
    let other = "9".repeat(ours.len());
    state[at..at + ours.len()].copy_from_slice(other.as_bytes());
    crc_fix(&mut state);
    std::fs::write(dir.join("state"), &state).unwrap();
    refused(
        &dir,
        &[],
        &format!("written by ringvisor {other}; this is ringvisor {ours}"),
    );

    let (dir, state) = copy_snapshot(snap, "bad-truncated");
    std::fs::write(dir.join("state"), &state[..state.len() - 100]).unwrap();
    refused(&dir, &[], "truncated or extended");

    let (dir, mut state) = copy_snapshot(snap, "bad-corrupted");
    let mid = state.len() / 2;
    state[mid] ^= 0x40;
    std::fs::write(dir.join("state"), &state).unwrap();
    refused(&dir, &[], "corrupted: the state's CRC-32");

    let (dir, state) = copy_snapshot(snap, "bad-memory");
    std::fs::remove_file(dir.join("memory")).unwrap();
    let memory = std::fs::File::create(dir.join("memory")).unwrap();
    memory.set_len(128 << 20).unwrap();
    std::fs::write(dir.join("state"), &state).unwrap();
    refused(&dir, &[], "(truncated?)");

    // The memory file of the right size with one byte changed, where the
    // guest's RAM was in use: its first data page (a copy, so that the
    // snapshot itself stays whole).
    let (dir, state) = copy_snapshot(snap, "bad-memory-byte");
    let memory = dir.join("memory");
    std::fs::remove_file(&memory).unwrap();
    std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(snap.dir.join("memory"))
        .arg(&memory)
        .status()
        .unwrap();
    std::fs::write(dir.join("state"), &state).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&memory)
            .unwrap();
        let mut at = 0u64;
        let mut byte = [0u8];
        loop {
            file.read_exact_at(&mut byte, at).unwrap();
            if byte[0] != 0 {
                break;
            }
            at += 1;
        }
        file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
    }
    refused(&dir, &[], "memory is corrupted: ");

    refused(&snap.work.join("no-such-snapshot"), &[], "No such file");

    // A machine the snapshot cannot be restored as.
    let (dir, state) = copy_snapshot(snap, "mismatch");
    std::fs::write(dir.join("state"), &state).unwrap();
    refused(
        &dir,
        &["--cpus", "1"],
        "the snapshot has 2 vCPUs, --cpus asks 1",
    );
    refused(
        &dir,
        &["--memory", "size=512M"],
        "the snapshot has 256 MiB of guest RAM, --memory asks 512 MiB",
    );
    let small = snap.work.join("small.img");
    std::fs::write(&small, vec![0u8; 1 << 20]).unwrap();
    let spec = format!("path={}", small.display());
    refused(
        &dir,
        &["--disk", &spec, "--disk", &spec],
        "the snapshot has 1 disk(s), 2 given",
    );
    refused(&dir, &["--disk", &spec], "the snapshot's had 4194304");
}
