//! Where the io suite's polling threads run.
//!
//! A pv ring with a host SQ thread keeps two threads spinning: the vCPU
//! (the guest polls its CQ) and the SQ thread. On a small host one of them
//! shares a CPU with the disk's interrupts and their completion work: when
//! that one is the vCPU, every interrupt is a guest exit and the guest's
//! polling loop stalls (measured on a 2-CPU PVM host: 7,000 stalls in 4 s
//! and 65-87k IOPS at QD32, against 1,000 stalls and 90-100k IOPS with the
//! vCPU on the other CPU). The suite finds the CPU that takes the target
//! disk's interrupts with a short probe, and puts SQ threads and the pv
//! device's worker there (`run --uring sq-cpu=`), vCPUs on the quietest
//! other CPU (`run --vcpu-affinity`); the host SQPOLL reference gets the
//! same placement for its SQ thread and its polling thread.

use serde_json::{json, Value};

/// Device interrupts per CPU: the sums of `/proc/interrupts`' numbered
/// lines, indexed by CPU number (the timer, IPIs and other named lines are
/// left out: they are not the disk's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqCounts(pub Vec<u64>);

impl IrqCounts {
    /// Reads `/proc/interrupts`.
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/interrupts")?))
    }

    /// Parses `/proc/interrupts` text: a header of `CPUn` columns, then one
    /// line per interrupt; numbered lines give one count per column.
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let cpus: Vec<usize> = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
            .collect();
        let mut counts = vec![0u64; cpus.iter().max().map_or(0, |m| m + 1)];
        for line in lines {
            let Some((label, rest)) = line.split_once(':') else {
                continue;
            };
            if label.trim().parse::<u32>().is_err() {
                continue;
            }
            for (&cpu, n) in cpus.iter().zip(rest.split_whitespace()) {
                match n.parse::<u64>() {
                    Ok(n) => counts[cpu] += n,
                    Err(_) => break,
                }
            }
        }
        IrqCounts(counts)
    }

    /// Interrupts per CPU since `before`.
    fn since(&self, before: &IrqCounts) -> Vec<u64> {
        (0..self.0.len())
            .map(|c| self.0[c].saturating_sub(before.0.get(c).copied().unwrap_or(0)))
            .collect()
    }
}

/// The suite's thread placement.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Submitting threads on `app_cpu`, SQ threads on `io_cpu`, which took
    /// `irq_share` of the device interrupts during the probe.
    Pinned {
        app_cpu: usize,
        io_cpu: usize,
        irq_share: f64,
    },
    /// Threads left where the scheduler puts them, and why.
    Unpinned(String),
}

/// Fewest device interrupts a probe must see to place anything.
const MIN_PROBE_IRQS: u64 = 100;

impl Placement {
    /// Decides from the device interrupts a probe on the target raised
    /// (`before`, `after`) and the CPUs this process may use.
    pub fn decide(allowed: &[usize], before: &IrqCounts, after: &IrqCounts) -> Placement {
        if allowed.len() < 2 {
            return Placement::Unpinned(format!(
                "{} CPU(s) available: nothing to separate",
                allowed.len()
            ));
        }
        let delta = after.since(before);
        let on = |c: usize| delta.get(c).copied().unwrap_or(0);
        let total: u64 = allowed.iter().map(|&c| on(c)).sum();
        if total < MIN_PROBE_IRQS {
            return Placement::Unpinned(format!(
                "the probe raised {total} device interrupts (completions polled or coalesced): \
                 no interrupt CPU to avoid"
            ));
        }
        // Ties go to the lowest CPU number: the same choice every run.
        let io_cpu = *allowed
            .iter()
            .max_by_key(|&&c| (on(c), std::cmp::Reverse(c)))
            .expect("two or more CPUs");
        let irq_share = on(io_cpu) as f64 / total as f64;
        if irq_share < 0.5 {
            return Placement::Unpinned(format!(
                "the disk's interrupts are spread over the CPUs (the busiest took {:.0}%)",
                irq_share * 100.0
            ));
        }
        let app_cpu = *allowed
            .iter()
            .filter(|&&c| c != io_cpu)
            .min_by_key(|&&c| (on(c), c))
            .expect("two or more CPUs");
        Placement::Pinned {
            app_cpu,
            io_cpu,
            irq_share,
        }
    }

    /// `ringvisor run` arguments that put the vCPUs on `app_cpu`.
    pub fn vcpu_args(&self) -> Vec<String> {
        match self {
            Placement::Pinned { app_cpu, .. } => {
                vec!["--vcpu-affinity".into(), app_cpu.to_string()]
            }
            Placement::Unpinned(_) => Vec::new(),
        }
    }

    /// The `--uring` value for `rings`, with the SQ threads on `io_cpu`.
    pub fn uring_arg(&self, rings: u32) -> String {
        match self {
            Placement::Pinned { io_cpu, .. } => format!("rings={rings},sq-cpu={io_cpu}"),
            Placement::Unpinned(_) => format!("rings={rings}"),
        }
    }

    /// The host SQPOLL reference's (polling thread CPU, SQ thread CPU).
    pub fn host_cpus(&self) -> Option<(usize, usize)> {
        match self {
            Placement::Pinned {
                app_cpu, io_cpu, ..
            } => Some((*app_cpu, *io_cpu)),
            Placement::Unpinned(_) => None,
        }
    }

    /// The record in results.json.
    pub fn json(&self) -> Value {
        match self {
            Placement::Pinned {
                app_cpu,
                io_cpu,
                irq_share,
            } => json!({
                "pinned": true,
                "app_cpu": app_cpu,
                "io_cpu": io_cpu,
                "io_cpu_irq_share": irq_share,
            }),
            Placement::Unpinned(why) => json!({"pinned": false, "why": why}),
        }
    }

    /// One line for the summary table.
    pub fn describe(&self) -> String {
        match self {
            Placement::Pinned {
                app_cpu,
                io_cpu,
                irq_share,
            } => format!(
                "vCPU / submitting thread on CPU {app_cpu}, SQ threads on CPU {io_cpu} \
                 (took {:.0}% of the disk's interrupts)",
                irq_share * 100.0
            ),
            Placement::Unpinned(why) => format!("threads not pinned: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "           CPU0       CPU1       \n\
  28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config\n\
  36:         10    4567801 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n\
  39:       5719          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
 NMI:          0          0   Non-maskable interrupts\n\
 LOC:    5400071    4465565   Local timer interrupts\n\
 ERR:          0\n";

    #[test]
    fn parses_numbered_lines_only() {
        assert_eq!(IrqCounts::parse(TEXT), IrqCounts(vec![5729, 4567801]));
        assert_eq!(IrqCounts::parse(""), IrqCounts(vec![]));
    }

    #[test]
    fn puts_sq_threads_on_the_interrupt_cpu() {
        let before = IrqCounts(vec![100, 100, 100]);
        let after = IrqCounts(vec![150, 5100, 100]);
        let p = Placement::decide(&[0, 1, 2], &before, &after);
        let Placement::Pinned {
            app_cpu,
            io_cpu,
            irq_share,
        } = p
        else {
            panic!("{p:?}")
        };
        // CPU 2 took none: the quietest for the vCPU.
        assert_eq!((app_cpu, io_cpu), (2, 1));
        assert!((irq_share - 5000.0 / 5050.0).abs() < 1e-9);
        assert_eq!(p.vcpu_args(), ["--vcpu-affinity", "2"]);
        assert_eq!(p.uring_arg(8), "rings=8,sq-cpu=1");
        assert_eq!(p.host_cpus(), Some((2, 1)));
        assert_eq!(p.json()["io_cpu"], 1);
        // CPUs this process may not use are never chosen.
        let p = Placement::decide(&[0, 2], &before, &IrqCounts(vec![700, 5100, 100]));
        assert_eq!(p.host_cpus(), Some((2, 0)));
    }

    #[test]
    fn leaves_threads_alone_without_a_clear_interrupt_cpu() {
        let before = IrqCounts(vec![0, 0]);
        for (allowed, after, why) in [
            (&[0][..], vec![0, 5000], "1 CPU"),
            (&[0, 1][..], vec![40, 50], "raised 90"),
            (&[0, 1, 2][..], vec![400, 300, 300], "spread"),
        ] {
            let p = Placement::decide(allowed, &before, &IrqCounts(after));
            match &p {
                Placement::Unpinned(w) => assert!(w.contains(why), "{w}"),
                p => panic!("{p:?}"),
            }
            assert!(p.vcpu_args().is_empty());
            assert_eq!(p.uring_arg(2), "rings=2");
            assert_eq!(p.host_cpus(), None);
        }
    }
}
