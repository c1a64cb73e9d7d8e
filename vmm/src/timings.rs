//! What a run measured: time to /init, time inside and outside KVM_RUN,
//! memory overhead, and what PVM compatibility handled.

use std::collections::BTreeMap;
use std::time::Duration;

/// Measurements of one run.
#[derive(Debug, Clone)]
pub struct Timings {
    /// From VMM start to the first vCPU start.
    pub vmm_setup: Duration,
    /// From VMM start to the guest's boot marker (/init started).
    pub to_init: Option<Duration>,
    /// From VMM start to /init starting the workload.
    pub to_workload: Option<Duration>,
    /// Whether the guest was restored from a snapshot (no boot).
    pub restored: bool,
    /// From VMM start to the end of the run.
    pub wall: Duration,
    /// Time inside KVM_RUN, summed over vCPUs.
    pub in_kvm: Duration,
    /// Time handling exits in the VMM, summed over vCPUs.
    pub in_vmm: Duration,
    /// Exits handled by the VMM.
    pub exits: u64,
    /// Resident memory of the VMM that is not guest RAM (bytes).
    pub rss_beyond_guest_ram: Option<u64>,
    /// Memory pinned by the VMM process at exit (VmPin, bytes): what host
    /// io_uring still holds for the guest.
    pub pinned_at_exit: Option<u64>,
    /// CPU time of the VMM's own threads (devices, event loops, console;
    /// not the vCPU threads, whose time is the guest's), in seconds.
    pub vmm_threads_cpu: Option<f64>,
    /// Guest RAM (bytes).
    pub guest_ram: u64,
    /// What backs guest RAM.
    pub backing: String,
    /// Whether PVM compatibility was on.
    pub pvm: bool,
    /// The kernel image format booted.
    pub kernel_format: String,
    /// Instructions emulated for the host, by mnemonic.
    pub emulated: BTreeMap<&'static str, u64>,
}

/// Reads `key:` (in kB) from /proc/self/status text.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory that is not guest RAM: anonymous plus file-backed RSS.
/// Guest RAM is a shared memfd (RssShmem) or hugetlb (not in RSS at all).
pub fn rss_beyond_guest_ram_from(status: &str) -> Option<u64> {
    Some((status_kib(status, "RssAnon")? + status_kib(status, "RssFile")?) * 1024)
}

/// User + system CPU time, in clock ticks, from a /proc `stat` line
/// ("pid (comm) state ..."; comm may hold spaces and parentheses): the
/// comm and utime + stime.
fn stat_comm_and_ticks(stat: &str) -> Option<(&str, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state is field 3, utime 14 and stime 15.
    let cpu = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((stat.get(open + 1..close)?, cpu(14)? + cpu(15)?))
}

/// CPU time of the VMM's own threads, in seconds: the whole process's
/// user + system time (/proc/self/stat, which includes threads that have
/// exited, such as the SQ thread of a pv ring destroyed before the end)
/// minus that of the live threads named "vcpu*" (/proc/self/task/*/stat).
/// Call it while the vCPU threads are still alive.
pub fn vmm_threads_cpu() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let (_, process) = stat_comm_and_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let mut vcpus = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        match stat_comm_and_ticks(&stat) {
            Some((comm, t)) if comm.starts_with("vcpu") => vcpus += t,
            _ => {}
        }
    }
    Some(process.saturating_sub(vcpus) as f64 / ticks as f64)
}

/// VmPin of this process, in bytes.
pub fn pinned_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(status_kib(&status, "VmPin")? * 1024)
}

/// [`rss_beyond_guest_ram_from`] for this process.
pub fn rss_beyond_guest_ram() -> Option<u64> {
    rss_beyond_guest_ram_from(&std::fs::read_to_string("/proc/self/status").ok()?)
}

impl Timings {
    /// Share of vCPU time spent in the VMM rather than in KVM_RUN.
    pub fn vmm_share(&self) -> f64 {
        let total = (self.in_kvm + self.in_vmm).as_secs_f64();
        if total == 0.0 {
            0.0
        } else {
            self.in_vmm.as_secs_f64() / total
        }
    }

    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let to_init = match (self.to_init, self.restored) {
            (Some(d), _) => format!("{:.3} s", d.as_secs_f64()),
            (None, true) => "(in the snapshot)".into(),
            (None, false) => "not reached".into(),
        };
        let to_workload = self
            .to_workload
            .map(|d| format!("{:.3} s", d.as_secs_f64()))
            .unwrap_or_else(|| "not reached".into());
        let start = if self.restored {
            "restored from a snapshot"
        } else {
            "booted"
        };
        let rss = self
            .rss_beyond_guest_ram
            .map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_else(|| "unknown".into());
        let emulated = if self.emulated.is_empty() {
            "none".to_string()
        } else {
            self.emulated
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "ringvisor: timings: {start}: VMM start to /init {to_init}, to the workload running {to_workload}; wall {:.3} s; VMM set-up {:.1} ms\n\
             ringvisor: vCPU time: in KVM_RUN {:.3} s, in the VMM {:.3} s ({:.3}% VMM share), {} exits\n\
             ringvisor: kernel: {}; memory: guest RAM {} MiB ({}), VMM RSS beyond guest RAM {rss}\n\
             ringvisor: PVM compatibility: {}; instructions emulated for the host: {emulated}",
            self.wall.as_secs_f64(),
            self.vmm_setup.as_secs_f64() * 1e3,
            self.in_kvm.as_secs_f64(),
            self.in_vmm.as_secs_f64(),
            self.vmm_share() * 100.0,
            self.exits,
            self.kernel_format,
            self.guest_ram >> 20,
            self.backing,
            if self.pvm { "on" } else { "off" },
        )
    }

    /// The same figures as one JSON object, for harnesses.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "vmm-timings",
            "to_init_s": self.to_init.map(|d| d.as_secs_f64()),
            "to_workload_s": self.to_workload.map(|d| d.as_secs_f64()),
            "restored": self.restored,
            "wall_s": self.wall.as_secs_f64(),
            "vmm_setup_s": self.vmm_setup.as_secs_f64(),
            "in_kvm_run_s": self.in_kvm.as_secs_f64(),
            "in_vmm_s": self.in_vmm.as_secs_f64(),
            "vmm_share": self.vmm_share(),
            "exits": self.exits,
            "rss_beyond_guest_ram_bytes": self.rss_beyond_guest_ram,
            "pinned_at_exit_bytes": self.pinned_at_exit,
            "vmm_threads_cpu_s": self.vmm_threads_cpu,
            "guest_ram_bytes": self.guest_ram,
            "backing": self.backing,
            "pvm": self.pvm,
            "kernel_format": self.kernel_format,
            "emulated": self.emulated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_beyond_guest_ram_excludes_shmem() {
        let status = "Name:\tringvisor\nVmRSS:\t  530000 kB\nRssAnon:\t    2048 kB\n\
                      RssFile:\t    1024 kB\nRssShmem:\t  526928 kB\n";
        assert_eq!(rss_beyond_guest_ram_from(status), Some(3072 * 1024));
        assert_eq!(rss_beyond_guest_ram_from("VmRSS: 1 kB\n"), None);
    }

    #[test]
    fn vmm_thread_cpu_time_is_measured() {
        // This test thread burns a little CPU; it is not named vcpu*.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(vmm_threads_cpu().unwrap() > 0.0);
    }

    #[test]
    fn cpu_time_of_an_exited_thread_still_counts() {
        let before = vmm_threads_cpu().unwrap();
        std::thread::Builder::new()
            .name("iou-sqp-test".into())
            .spawn(|| {
                // Spin until this thread has used 300 ms of CPU (not wall
                // time: on a loaded machine the thread may wait to run).
                let thread_cpu = || {
                    let mut ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: clock_gettime fills the timespec we own.
                    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
                };
                while thread_cpu() < Duration::from_millis(300) {
                    std::hint::black_box(0u64);
                }
            })
            .unwrap()
            .join()
            .unwrap();
        let after = vmm_threads_cpu().unwrap();
        // 300 ms of CPU at 100 ticks a second, less scheduling slack.
        assert!(after - before >= 0.2, "{before} -> {after}");
    }

    #[test]
    fn stat_lines_with_odd_comms() {
        let line = "42 (vcpu 0 (x)) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(stat_comm_and_ticks(line), Some(("vcpu 0 (x)", 300)));
        assert_eq!(stat_comm_and_ticks("42 (x) R 1"), None);
        assert_eq!(stat_comm_and_ticks("garbage"), None);
    }

    #[test]
    fn vmm_share_is_the_fraction_outside_kvm_run() {
        let t = Timings {
            vmm_setup: Duration::ZERO,
            to_init: Some(Duration::from_secs(5)),
            to_workload: Some(Duration::from_millis(5100)),
            restored: false,
            wall: Duration::from_secs(6),
            in_kvm: Duration::from_millis(990),
            in_vmm: Duration::from_millis(10),
            exits: 7,
            rss_beyond_guest_ram: Some(1 << 20),
            pinned_at_exit: Some(0),
            vmm_threads_cpu: Some(0.5),
            guest_ram: 512 << 20,
            backing: "Shared".into(),
            pvm: true,
            kernel_format: "Elf".into(),
            emulated: BTreeMap::from([("popcnt", 2)]),
        };
        assert!((t.vmm_share() - 0.01).abs() < 1e-9);
        let s = t.summary();
        assert!(
            s.contains("/init 5.000 s")
                && s.contains("workload running 5.100 s")
                && s.contains("popcnt x2"),
            "{s}"
        );
        assert_eq!(t.to_json()["exits"], 7);
    }
}
