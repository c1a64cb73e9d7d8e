//! Parameters: defaults, the kernel command line (`rv.pvbench.*`), flags.

/// What to measure and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub dev: String,
    /// Ring counts of the registration measurement (ring 0 registers
    /// first), measured in turn on fresh rings and the same pool.
    pub rings: Vec<usize>,
    /// Pool bytes.
    pub size: u64,
    /// 2 MiB hugetlb pages (falls back to 4 KiB with a warning).
    pub huge: bool,
    /// Bytes per iovec of the pool (the driver may split each further).
    pub buf: u64,
    /// Backend index for the random reads.
    pub backend: u32,
    /// Bytes of the backend the random reads cover.
    pub span: u64,
    /// Queue depths of the random-read runs.
    pub qds: Vec<u32>,
    /// Milliseconds per random-read run.
    pub io_ms: u64,
    /// Operations of the I/O runs (`--op randread,randwrite`; writes need
    /// a writable backend).
    pub ops: Vec<Op>,
    /// How the I/O rings' host side learns of SQEs (`--submit
    /// doorbell,polled`), one ring per mode.
    pub submits: Vec<Submit>,
    /// Leave the I/O rings' completion eventfd (the guest interrupt) on
    /// (`--cq-eventfd on`); off by default: the runs busy-poll.
    pub cq_eventfd: bool,
    /// Run the registration measurement.
    pub reg: bool,
    /// Registration from the buffer arena only (`--only arena`): no guest
    /// pool, the arena methods at each ring count.
    pub arena_only: bool,
    /// Run the random-read measurement.
    pub io: bool,
    /// Guest CPU to run on (`--cpu N`): a `nohz_full` CPU keeps the guest
    /// timer tick out of the polling loops.
    pub cpu: Option<usize>,
    /// Before and after each I/O run, print a `pv-bench-pause` line and
    /// wait for a line on stdin (`--pause on`): the host runs its own
    /// reference for the same operation and depth in the same minute,
    /// while this guest sleeps.
    pub pause: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dev: pv_uring::DEFAULT_PATH.into(),
            rings: vec![8],
            size: 16 << 20,
            huge: true,
            buf: 16 << 20,
            backend: 0,
            span: 1 << 20,
            qds: vec![1, 32],
            io_ms: 2000,
            ops: vec![Op::Read],
            submits: vec![Submit::Doorbell],
            cq_eventfd: false,
            reg: true,
            arena_only: false,
            io: true,
            cpu: None,
            pause: false,
        }
    }
}

pub const USAGE: &str =
    "usage: pv-bench [--dev PATH] [--rings N[,N...]] [--size S] [--page 2M|4K] [--buf B] \
[--backend N] [--span S] [--qd 1,32] [--io-ms MS] [--op randread,randwrite] \
[--submit doorbell,polled] [--cq-eventfd on|off] [--only reg|arena|io] [--cpu N] [--pause on|off]
kernel command line: rv.pvbench.<same names, '_' for '-'>=VALUE";

/// Parses `4096`, `512K`, `64M`, `1G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (d, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = d.parse().map_err(|_| format!("bad size {s:?}"))?;
    let v = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .ok_or_else(|| format!("bad size {s:?}"))?;
    Ok(v)
}

fn int<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("bad value {v:?} for {k}"))
}

fn on_off(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("bad value {v:?} for {k} (on or off)")),
    }
}

impl guest_common::cli::Params for Params {
    type Error = String;
    const PREFIX: &'static str = "rv.pvbench.";

    /// Keys as written on the command line or with `_` for `-`.
    fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        match k.replace('_', "-").as_str() {
            "dev" => self.dev = v.into(),
            "rings" => {
                self.rings = v
                    .split(',')
                    .map(|n| int::<usize>(k, n))
                    .collect::<Result<_, _>>()?
            }
            "size" => {
                self.size = parse_size(v)?;
                self.buf = self.size.min(1 << 30);
            }
            "buf" => self.buf = parse_size(v)?,
            "page" => {
                self.huge = match v {
                    "2M" | "2m" => true,
                    "4K" | "4k" => false,
                    _ => return Err(format!("bad page {v:?} (2M or 4K)")),
                }
            }
            "backend" => self.backend = int(k, v)?,
            "span" => self.span = parse_size(v)?,
            "qd" => {
                self.qds = v
                    .split(',')
                    .map(|q| int::<u32>(k, q))
                    .collect::<Result<_, _>>()?
            }
            "io-ms" => self.io_ms = int(k, v)?,
            "cpu" => self.cpu = Some(int(k, v)?),
            "op" => self.ops = v.split(',').map(Op::parse).collect::<Result<_, _>>()?,
            "submit" => self.submits = v.split(',').map(Submit::parse).collect::<Result<_, _>>()?,
            "cq-eventfd" => self.cq_eventfd = on_off(k, v)?,
            "pause" => self.pause = on_off(k, v)?,
            "only" => match v {
                "reg" => (self.reg, self.io) = (true, false),
                "arena" => (self.reg, self.arena_only, self.io) = (true, true, false),
                "io" => (self.reg, self.io) = (false, true),
                _ => return Err(format!("bad value {v:?} for only (reg, arena or io)")),
            },
            _ => return Err(format!("unknown option {k}")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.rings.contains(&0) {
            return Err("ring counts must be at least 1".into());
        }
        if self.buf > self.size || self.buf > 1 << 30 {
            return Err(format!(
                "buf {} must be <= size {} and <= 1 GiB",
                self.buf, self.size
            ));
        }
        if self.span < 4096 {
            return Err("span must be at least 4096".into());
        }
        if self.qds.iter().any(|&q| q == 0 || q > 256) {
            return Err("queue depths must be 1..=256".into());
        }
        if self.ops.is_empty() || self.submits.is_empty() {
            return Err("--op and --submit need at least one value".into());
        }
        Ok(())
    }
}

/// What the requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// READ_FIXED.
    Read,
    /// WRITE_FIXED (the backend must be writable).
    Write,
    /// NOP: the pv path's own round trip, without the disk.
    Nop,
}

impl Op {
    /// The name in JSON lines and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "randread",
            Op::Write => "randwrite",
            Op::Nop => "nop",
        }
    }

    /// Parses `randread`/`read` or `randwrite`/`write`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "randread" | "read" => Ok(Op::Read),
            "randwrite" | "write" => Ok(Op::Write),
            "nop" => Ok(Op::Nop),
            _ => Err(format!("bad op {s:?} (randread, randwrite or nop)")),
        }
    }
}

/// How the host learns of new SQEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// A doorbell write per submission (ring flags 0).
    Doorbell,
    /// A polled submitter (`VURING_RING_POLLED`); the doorbell only when
    /// it sleeps.
    Polled,
}

impl Submit {
    /// The name in JSON lines and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Submit::Doorbell => "doorbell",
            Submit::Polled => "polled",
        }
    }

    /// Parses `doorbell` or `polled` (`sqpoll`, its ABI v1 name, too).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "doorbell" => Ok(Submit::Doorbell),
            "polled" | "sqpoll" => Ok(Submit::Polled),
            _ => Err(format!("bad submit mode {s:?} (doorbell or polled)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_common::cli::Params as _;

    #[test]
    fn parse() {
        let mut p = Params::default();
        p.apply_cmdline(
            "x rv.pvbench.rings=4 rv.pvbench.io_ms=500 rv.pvbench.qd=1,8,32 -- rv.pvbench.rings=9",
        )
        .unwrap();
        assert_eq!(
            (p.rings.clone(), p.io_ms, p.qds.clone()),
            (vec![4], 500, vec![1, 8, 32])
        );
        assert!(p
            .apply_args(["--size", "64M", "--page=4K", "--only", "io"].map(String::from))
            .unwrap());
        assert_eq!(
            (p.size, p.buf, p.huge, p.reg, p.io),
            (64 << 20, 64 << 20, false, false, true)
        );
        assert!(p.validate().is_ok());
        assert!(p.apply_args(["--bogus", "1"].map(String::from)).is_err());
        assert!(p
            .apply_args(["--op", "randread,randwrite", "--submit=sqpoll"].map(String::from))
            .unwrap());
        assert_eq!(
            (p.ops.clone(), p.submits.clone()),
            (vec![Op::Read, Op::Write], vec![Submit::Polled])
        );
        assert!(p.apply_args(["--op", "trim"].map(String::from)).is_err());
        assert!(!p.cq_eventfd);
        assert!(p
            .apply_args(["--cq-eventfd", "on"].map(String::from))
            .unwrap());
        assert!(p.cq_eventfd);
        assert!(p
            .apply_args(["--cq-eventfd", "1"].map(String::from))
            .is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert!(p
            .apply_args(["--rings", "1,2,64"].map(String::from))
            .unwrap());
        assert_eq!(p.rings, vec![1, 2, 64]);
        assert!(p.validate().is_ok());
        assert_eq!(p.cpu, None);
        assert!(p.apply_args(["--cpu", "1"].map(String::from)).unwrap());
        assert_eq!(p.cpu, Some(1));
        assert!(!p.pause);
        assert!(p.apply_args(["--pause=on"].map(String::from)).unwrap());
        assert!(p.pause);
        assert!(p.apply_args(["--pause", "yes"].map(String::from)).is_err());
        assert!(p.apply_args(["--cpu", "-1"].map(String::from)).is_err());
        p.rings = vec![2, 0];
        assert!(p.validate().is_err());
    }
}
