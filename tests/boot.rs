//! Boots the real guest under the `ringvisor` binary. A boot costs tens of
//! seconds of emulated kernel work on nested PVM, so each test is one boot
//! that checks several things, and cargo runs them in parallel. The tests
//! that only need a booted guest (demo, panic, hang) restore the cached
//! snapshot of the test image instead (docs/snapshot.md); the first test
//! stays a cold boot.

mod common;

use common::{
    boot, cached_snapshot, cold_boot_asked, image, restore_cached, run_raw, skip_without_kvm, token,
};

/// A hung guest is given this long (VMM start to kill): enough for a restored
/// guest to start its workload on a loaded 2-core machine, so that the kill
/// provably hits a running guest.
const HANG_TIMEOUT_SECS: &str = "60";
/// Upper bound for any test boot that should finish by itself.
const BOOT_TIMEOUT_SECS: &str = "400";

#[test]
fn token_exit_status_and_two_vcpus_come_back_from_the_guest() {
    if skip_without_kvm() {
        return;
    }
    let token = token();
    let script = format!(
        "-- /bin/sh -c \"echo {token}; echo cpus=$(nproc); echo wall-clock $(date +%s); exit 3\""
    );
    // Both vCPU threads on one host CPU (the first this test may use):
    // --vcpu-affinity in a real boot.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let cpu: String = allowed.chars().take_while(char::is_ascii_digit).collect();
    let run = boot(&[
        "--cpus",
        "2",
        "--vcpu-affinity",
        &cpu,
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--timings",
        "--cmdline",
        &script,
    ]);
    run.check(
        run.status == Some(3),
        "guest exit status 3 must be the VMM's",
    );
    run.check(
        run.stdout.lines().any(|l| l.trim() == token),
        "the token on the command line must come back on the console",
    );
    run.check(
        run.stdout.lines().any(|l| l.trim() == "cpus=2"),
        "the guest must see 2 vCPUs",
    );
    // The guest's wall clock is the host's (kvm-clock's at boot; rv-init
    // sets it again, which matters after a restore: tests/snapshot.rs).
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let guest_wall: Option<f64> = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("wall-clock ")?.parse().ok());
    let timings = run.timings();
    let wall_s = timings["wall_s"].as_f64().unwrap_or(0.0);
    run.check(
        guest_wall.is_some_and(|g| g <= host_now + 1.0 && g >= host_now - wall_s - 1.0),
        &format!("the guest's wall clock must be the host's (guest {guest_wall:?}, host at exit {host_now})"),
    );
    let to_init = timings["to_init_s"].as_f64().unwrap_or(0.0);
    run.check(to_init > 0.0, "the boot marker must have been recorded");
    run.check(
        timings["wall_s"].as_f64().unwrap() >= to_init,
        "wall time covers the boot",
    );
}

#[test]
fn demo_workload_prints_the_kernel_version_and_exits_zero() {
    if skip_without_kvm() {
        return;
    }
    let run = restore_cached(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--cmdline",
        "rv.workload=demo",
    ]);
    run.check(run.status == Some(0), "the demo workload exits 0");
    // The demo's own lines, whole: "6.1." alone is also in the kernel's
    // banner, which is there whether or not the demo ran.
    let lines: Vec<&str> = run.stdout.lines().map(str::trim_end).collect();
    let uname = lines
        .iter()
        .find_map(|l| l.strip_prefix("demo: kernel "))
        .map(|u| u.split(' ').collect::<Vec<_>>());
    run.check(
        uname.is_some_and(|u| {
            u.len() == 3
                && u[0] == "Linux"
                && u[1]
                    .strip_prefix("6.1.")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                && u[2] == "x86_64"
        }),
        "the demo prints `demo: kernel Linux 6.1.N x86_64`",
    );
    run.check(
        lines.contains(&"demo: 1 CPU(s) online"),
        "the demo prints `demo: 1 CPU(s) online`",
    );
}

#[test]
fn guest_kernel_panic_gives_the_panic_exit_status() {
    if skip_without_kvm() {
        return;
    }
    let run = restore_cached(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--cmdline",
        "-- /bin/sh -c \"echo c > /proc/sysrq-trigger\"",
    ]);
    run.check(run.status == Some(120), "a guest panic exits with 120");
    run.check(
        run.stderr.contains("guest kernel panicked"),
        "the VMM names the panic",
    );
}

#[test]
fn hung_guest_is_killed_by_timeout() {
    if skip_without_kvm() {
        return;
    }
    if !cold_boot_asked() {
        cached_snapshot(); // taken (once) before the clock starts
    }
    let started = std::time::Instant::now();
    let run = restore_cached(&[
        "--timeout",
        HANG_TIMEOUT_SECS,
        "--cmdline",
        // The shell computes what it prints: the kernel echoes init's
        // arguments on the console, so a literal word would be there even
        // if the shell never ran.
        "-- /bin/sh -c \"echo guest-is-up-$((40+2)); sleep 100000\"",
    ]);
    let elapsed = started.elapsed().as_secs_f64();
    run.check(run.status == Some(124), "a timeout exits with 124");
    run.check(
        run.stdout.lines().any(|l| l.trim_end() == "guest-is-up-42"),
        "the guest was running (not still booting) when it was killed",
    );
    run.check(
        run.stderr.contains("--timeout") && run.stderr.contains("killed"),
        "the VMM says the guest was killed by --timeout",
    );
    let limit: f64 = HANG_TIMEOUT_SECS.parse().unwrap();
    run.check(
        elapsed >= limit && elapsed < limit + 30.0,
        "the kill happens at the timeout",
    );
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let run = run_raw(&["run", "--kernel", "/nonexistent/ringvisor-vmlinux"]);
    run.check(run.status == Some(1), "a missing kernel exits with 1");
    run.check(
        run.stderr.contains("/nonexistent/ringvisor-vmlinux"),
        "the error names the path",
    );
}

#[test]
fn unavailable_host_cpus_are_refused_with_status_2() {
    for (args, says) in [
        (
            &["run", "--kernel", "k", "--vcpu-affinity", "999"][..],
            "--vcpu-affinity 999: host CPU 999 is not available to ringvisor (allowed: ",
        ),
        (
            &["run", "--kernel", "k", "--uring", "rings=2,sq-cpu=999"],
            "--uring sq-cpu=999: host CPU 999 is not available to ringvisor (allowed: ",
        ),
        (
            &["run", "--kernel", "k", "--vcpu-affinity", "2-1"],
            "invalid --vcpu-affinity \"2-1\"",
        ),
    ] {
        let run = run_raw(args);
        run.check(run.status == Some(2), "unusable host CPUs exit with 2");
        run.check(
            run.stderr.trim().lines().count() == 1 && run.stderr.contains(says),
            "the one-line error names the flag, the value and the allowed set",
        );
    }
}

#[test]
fn bad_flags_give_one_line_and_status_2() {
    for args in [
        &["run", "--kernel", "k", "--frobnicate"][..],
        &["run", "--kernel", "k", "--memory", "size=lots"],
        &["run", "--kernel", "k", "--cpus", "0"],
        &["run", "--kernel", "k", "--guest-profile", "p,hz=0"],
        &["fly"],
    ] {
        let run = run_raw(args);
        run.check(run.status == Some(2), "usage errors exit with 2");
        run.check(
            run.stderr.trim().lines().count() == 1 && run.stderr.starts_with("ringvisor:"),
            "usage errors are one line",
        );
    }
}

/// `--guest-profile`: a guest reading /dev/zero 512 bytes at a time spends
/// most of its time in its kernel's read path (each system call is
/// emulated kernel work on nested PVM, and kernel work on any host); the
/// report names those functions from the vmlinux symbols. A symbol file
/// that cannot be read is refused before the guest runs.
#[test]
fn guest_profile_names_the_kernel_functions_a_workload_runs() {
    if skip_without_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rv-guest-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("profile.txt");
    let spec = format!(
        "{},hz=997,symbols={}",
        out.display(),
        image().kernel.display()
    );
    let run = restore_cached(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--guest-profile",
        &spec,
        "--cmdline",
        "-- /bin/sh -c \"dd if=/dev/zero of=/dev/null bs=512 count=4000\"",
    ]);
    run.check(run.status == Some(0), "the workload exits 0");
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    eprintln!("--- the profile:\n{report}");
    let rows: Vec<(u64, f64, &str)> = report
        .lines()
        .take_while(|l| !l.starts_with("# samples  share  address"))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next()?.parse().ok()?;
            let share = w.next()?.strip_suffix('%')?.parse().ok()?;
            Some((n, share, w.next()?))
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.0).sum();
    let named_kernel: f64 = rows
        .iter()
        .filter(|r| !r.2.starts_with('[') && !r.2.starts_with('('))
        .map(|r| r.1)
        .sum();
    let unnamed: f64 = rows.iter().filter(|r| r.2 == "[guest").map(|r| r.1).sum();
    run.check(
        run.stderr
            .contains(&format!("guest profile: {total} samples in ")),
        "the VMM says how many samples it wrote, and where",
    );
    run.check(total >= 100, "the profile has at least 100 samples");
    run.check(
        named_kernel >= 50.0,
        "at least half the samples are in named guest kernel functions",
    );
    run.check(
        unnamed < named_kernel,
        "fewer samples in guest user mode or unnamed than in named kernel functions",
    );
    let bad = restore_cached(&[
        "--timeout",
        BOOT_TIMEOUT_SECS,
        "--guest-profile",
        &format!(
            "{},symbols={}",
            out.display(),
            dir.join("no-such-vmlinux").display()
        ),
        "--cmdline",
        "rv.workload=demo",
    ]);
    bad.check(
        bad.status == Some(1) && bad.stderr.contains("reading the guest kernel symbols"),
        "a missing symbol file is a clear error",
    );
    bad.check(
        !bad.stdout.contains("demo: kernel"),
        "the guest does not run when the profile cannot start",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
